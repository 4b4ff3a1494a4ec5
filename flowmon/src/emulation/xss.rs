//! `xss`: the triggering values reflected into the session's latest page, joined by newlines
//! (Tanner's answer, `page` true). A value holding PHP in tags (`<?php echo md5("x"); ?>`) is
//! evaluated as a page that includes its input would, since the digest is what that probe
//! looks for.

use super::{Answer, Machine, Param, budget::Overrun, php};

pub fn emulate(machine: &mut Machine<'_>, params: &[Param]) -> Result<Answer, Overrun> {
    let mut reflected = Vec::with_capacity(params.len());
    for param in params {
        if php::has_php_tags(&param.value) {
            let output = php::render(machine, &param.value)?;
            machine.evidence.code(&param.value, &output);
            reflected.push(output);
        } else {
            reflected.push(param.value.clone());
        }
    }
    Ok(Answer::text(reflected.join("\n"), true))
}
