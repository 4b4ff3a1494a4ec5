//! The capabilities loading and attaching the programs takes, checked before the kernel is
//! asked: a process without CAP_PERFMON gets a verifier log from the kernel, not the name of
//! what it lacks.

use anyhow::{Result, bail};

/// Capability numbers (`linux/capability.h`) and names.
const CAP_NET_ADMIN: (u32, &str) = (12, "CAP_NET_ADMIN");
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: (u32, &str) = (38, "CAP_PERFMON");
const CAP_BPF: (u32, &str) = (39, "CAP_BPF");

/// What the datapath needs: CAP_BPF for maps, BTF and programs; CAP_NET_ADMIN for XDP and TC
/// programs; CAP_PERFMON for the verifier to allow the programs' arithmetic on packet pointers
/// (and to spare them its Spectre mitigations). CAP_SYS_ADMIN stands in for each of them.
const NEEDED: [(u32, &str); 3] = [CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON];

/// Fails with one line naming the capabilities this process lacks, if it lacks any. Where the
/// effective set cannot be read, the kernel's answer decides.
pub(super) fn check() -> Result<()> {
    let Some(effective) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective_set)
    else {
        return Ok(());
    };
    let missing = missing(effective);
    if !missing.is_empty() {
        bail!(
            "permission denied: flowmon needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON), and \
             this process lacks {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The effective capability set, from the text of `/proc/<pid>/status`.
fn effective_set(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn missing(effective: u64) -> Vec<&'static str> {
    let has = |capability: u32| effective & (1 << capability) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    NEEDED
        .iter()
        .filter(|(capability, _)| !has(*capability))
        .map(|(_, name)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_capabilities_are_named() {
        let status = "Name:\tflowmon\nCapInh:\t0000000000000000\nCapEff:\t0000004000001000\n";
        let effective = effective_set(status).unwrap();
        assert_eq!(missing(effective), ["CAP_BPF"]);
        assert_eq!(missing(0), ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
        assert!(missing(0xc0_0000_1000).is_empty(), "the unit's three");
        assert!(
            missing(1 << CAP_SYS_ADMIN).is_empty(),
            "CAP_SYS_ADMIN covers them"
        );
        assert!(missing(0x1ff_ffff_ffff).is_empty(), "root");
        assert_eq!(effective_set("Name:\tx\n"), None);
    }
}
