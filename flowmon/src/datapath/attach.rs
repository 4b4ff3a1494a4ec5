//! Attaching the programs to an interface, and one-line errors for the ways that fails.

use std::ffi::CString;

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use flowmon_common::{TC_PROGRAM, XDP_PROGRAM};

/// How XDP is attached: `auto` tries the driver (native) mode and falls back to generic.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    #[default]
    Auto,
    Native,
    Generic,
}

/// Where the programs were attached, for the log.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: &'static str,
}

pub fn ifindex(iface: &str) -> Result<u32> {
    let name = CString::new(iface).map_err(|_| anyhow!("invalid interface name {iface:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(anyhow!("interface {iface} does not exist")),
        index => Ok(index),
    }
}

pub(super) fn attach(ebpf: &mut Ebpf, iface: &str, mode: XdpModeChoice) -> Result<Attachment> {
    let ifindex = ifindex(iface)?;
    let xdp: &mut Xdp = super::program(ebpf, XDP_PROGRAM)?.try_into()?;
    let xdp_mode = match mode {
        XdpModeChoice::Native => {
            attach_xdp(xdp, ifindex, iface, XdpMode::Driver)?;
            "native"
        }
        XdpModeChoice::Generic => {
            attach_xdp(xdp, ifindex, iface, XdpMode::Skb)?;
            "generic"
        }
        XdpModeChoice::Auto => match attach_xdp(xdp, ifindex, iface, XdpMode::Driver) {
            Ok(()) => "native",
            Err(err) => {
                tracing::warn!("native XDP unavailable on {iface} ({err:#}); using generic mode");
                attach_xdp(xdp, ifindex, iface, XdpMode::Skb)?;
                "generic"
            }
        },
    };
    let tc: &mut SchedClassifier = super::program(ebpf, TC_PROGRAM)?.try_into()?;
    tc.attach(iface, TcAttachType::Egress).map_err(|err| {
        explain(
            err.into(),
            &format!("attach the TC egress program to {iface}"),
        )
    })?;
    Ok(Attachment {
        iface: iface.to_owned(),
        ifindex,
        xdp_mode,
    })
}

fn attach_xdp(xdp: &mut Xdp, ifindex: u32, iface: &str, mode: XdpMode) -> Result<()> {
    xdp.attach_to_if_index(ifindex, mode)
        .map(drop)
        .map_err(|err| explain(err.into(), &format!("attach XDP to {iface}")))
}

/// Turns an aya error into one line that says what went wrong and what to do about it.
pub(super) fn explain(err: anyhow::Error, what: &str) -> anyhow::Error {
    let errno = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    // EACCES is the verifier's refusal, not a privilege problem: keep its log in the message.
    match errno {
        Some(libc::EPERM) => anyhow!(
            "permission denied trying to {what}: flowmon needs root (CAP_BPF, CAP_NET_ADMIN and \
             CAP_PERFMON)"
        ),
        _ => anyhow!("the kernel refused to {what}: {err:#}"),
    }
}
