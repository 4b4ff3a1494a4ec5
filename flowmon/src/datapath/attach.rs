//! Attaching the programs to an interface, pinning the links so the programs keep counting
//! while the agent restarts, and one-line errors for the ways that fails.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
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

/// Where the programs were attached, for the log and for detaching.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// "native", "generic", or "kept" when a pinned link from a previous run was taken over.
    pub xdp_mode: &'static str,
    /// Pinned links, removed at shutdown unless the programs are to stay attached.
    pub pins: Vec<PathBuf>,
}

pub fn ifindex(iface: &str) -> Result<u32> {
    let name = CString::new(iface).map_err(|_| anyhow!("invalid interface name {iface:?}"))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(anyhow!("interface {iface} does not exist")),
        index => Ok(index),
    }
}

/// Attaches XDP and TC to `iface`. With `pin_dir`, links pinned there by a previous run are
/// taken over (their program replaced atomically, no packet missed) and new links are pinned.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: XdpModeChoice,
    pin_dir: Option<&Path>,
) -> Result<Attachment> {
    let ifindex = ifindex(iface)?;
    // bpffs refuses names with a dot; interface names never contain a colon.
    let pin =
        |hook: &str| pin_dir.map(|dir| dir.join(format!("{}:{hook}", iface.replace('.', ":"))));
    let (xdp_pin, tc_pin) = (pin("xdp"), pin("tc"));
    let xdp: &mut Xdp = super::program_mut(ebpf, XDP_PROGRAM)?.try_into()?;
    let xdp_mode = match take_over(xdp_pin.as_deref())? {
        Some(link) => {
            xdp.attach_to_link(XdpLink::try_from(link)?)
                .map_err(|err| explain(err.into(), &format!("replace XDP on {iface}")))?;
            "kept"
        }
        None => {
            let (link, mode) = attach_xdp_mode(xdp, ifindex, iface, mode)?;
            if let Some(path) = &xdp_pin {
                pin_link(xdp.take_link(link)?.try_into(), path)?;
            }
            mode
        }
    };
    let tc: &mut SchedClassifier = super::program_mut(ebpf, TC_PROGRAM)?.try_into()?;
    match take_over(tc_pin.as_deref())? {
        Some(link) => {
            tc.attach_to_link(SchedClassifierLink::try_from(link)?)
                .map_err(|err| explain(err.into(), &format!("replace TC on {iface}")))?;
        }
        None => {
            let link = tc.attach(iface, TcAttachType::Egress).map_err(|err| {
                explain(
                    err.into(),
                    &format!("attach the TC egress program to {iface}"),
                )
            })?;
            if let Some(path) = &tc_pin {
                pin_link(tc.take_link(link)?.try_into(), path)?;
            }
        }
    }
    Ok(Attachment {
        iface: iface.to_owned(),
        ifindex,
        xdp_mode,
        pins: [xdp_pin, tc_pin].into_iter().flatten().collect(),
    })
}

/// The link pinned at `pin` by a previous run, if there is one.
fn take_over(pin: Option<&Path>) -> Result<Option<FdLink>> {
    match pin {
        Some(path) if path.exists() => Ok(Some(
            PinnedLink::from_pin(path)
                .with_context(|| format!("cannot open pinned link {}", path.display()))?
                .into(),
        )),
        _ => Ok(None),
    }
}

/// Pins `link` at `path`: from then on the pin, not this process, keeps the program attached.
/// (Without a pin directory links stay with the program and detach when flowmon exits.)
fn pin_link(link: Result<FdLink, aya::programs::links::LinkError>, path: &Path) -> Result<()> {
    let link = link.with_context(|| format!("cannot pin {}: not a bpf_link", path.display()))?;
    link.pin(path)
        .with_context(|| format!("cannot pin link at {}", path.display()))?;
    Ok(())
}

fn attach_xdp_mode(
    xdp: &mut Xdp,
    ifindex: u32,
    iface: &str,
    mode: XdpModeChoice,
) -> Result<(aya::programs::xdp::XdpLinkId, &'static str)> {
    let attach = |xdp: &mut Xdp, mode| {
        xdp.attach_to_if_index(ifindex, mode)
            .map_err(|err| explain(err.into(), &format!("attach XDP to {iface}")))
    };
    match mode {
        XdpModeChoice::Native => Ok((attach(xdp, XdpMode::Driver)?, "native")),
        XdpModeChoice::Generic => Ok((attach(xdp, XdpMode::Skb)?, "generic")),
        XdpModeChoice::Auto => match attach(xdp, XdpMode::Driver) {
            Ok(link) => Ok((link, "native")),
            Err(err) => {
                tracing::warn!("native XDP unavailable on {iface} ({err:#}); using generic mode");
                Ok((attach(xdp, XdpMode::Skb)?, "generic"))
            }
        },
    }
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
