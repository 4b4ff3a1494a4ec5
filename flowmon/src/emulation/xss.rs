//! `xss`: the triggering values reflected into the session's latest page, joined by newlines
//! (Tanner's answer, `page` true). Two probes that Tanner's scanner order sends here are
//! answered as what they probe for, since their answer is what the scanner looks for: PHP in
//! tags (`<?php echo md5("x"); ?>`) is evaluated, as a page that includes its input would;
//! XML that declares entities is loaded as the `xxe` emulator loads it (whose own detection
//! Tanner's order makes unreachable: every XML document fires `xss` first).

use super::{Answer, Machine, Param, budget::Overrun, php, xxe};

pub fn emulate(machine: &mut Machine<'_>, params: &[Param]) -> Result<Answer, Overrun> {
    let mut reflected = Vec::with_capacity(params.len());
    for param in params {
        if php::has_php_tags(&param.value) {
            let output = php::render(machine, &param.value)?;
            machine.evidence.code(&param.value, &output);
            reflected.push(output);
        } else if xxe::declares_entities(&param.value) {
            reflected.push(xxe::load(machine, &param.value)?);
        } else {
            reflected.push(param.value.clone());
        }
    }
    Ok(Answer::text(reflected.join("\n"), true))
}
