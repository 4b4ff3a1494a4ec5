//! Attaching the programs to an interface (the ingress hook `hook` picks, TC on egress), pinning
//! the links so the programs keep counting while the agent restarts.

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

use super::{
    error::DatapathError,
    hook::{Device, IngressHook, IngressHookChoice, Plan},
};

/// How XDP is attached (with `--ingress-hook xdp`): `auto` tries the driver (native) mode and
/// falls back to generic.
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

/// Where the programs were attached, for the log, the metrics and detaching.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// The hook that counts what the interface receives.
    pub ingress: IngressHook,
    /// Why it is that hook (and, for XDP, in which mode).
    pub reason: String,
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

/// Links pinned for an interface: what counts its ingress (one of the first two) and its egress.
struct Pins {
    xdp: Option<PathBuf>,
    tc_ingress: Option<PathBuf>,
    tc_egress: Option<PathBuf>,
}

impl Pins {
    fn new(dir: Option<&Path>, iface: &str) -> Self {
        // bpffs refuses names with a dot; interface names never contain a colon.
        let pin =
            |hook: &str| dir.map(|dir| dir.join(format!("{}:{hook}", iface.replace('.', ":"))));
        Self {
            xdp: pin("xdp"),
            tc_ingress: pin("tc-ingress"),
            tc_egress: pin("tc"),
        }
    }
}

/// Attaches the ingress hook `choice` picks (XDP in `xdp_mode`, or TC) and TC egress to `iface`.
/// With `pin_dir`, links pinned there by a previous run are taken over (their program replaced
/// atomically, no packet missed), whatever hook they are, and new links are pinned.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    choice: IngressHookChoice,
    xdp_mode: XdpModeChoice,
    pin_dir: Option<&Path>,
) -> Result<Attachment> {
    let ifindex = ifindex(iface)?;
    let pins = Pins::new(pin_dir, iface);
    let (ingress, reason) = match (
        take_over(pins.xdp.as_deref())?,
        take_over(pins.tc_ingress.as_deref())?,
    ) {
        (Some(link), _) => {
            let xdp: &mut Xdp = super::program_mut(ebpf, XDP_PROGRAM)?.try_into()?;
            xdp.attach_to_link(XdpLink::try_from(link)?)
                .map_err(|err| DatapathError::new(format!("replace XDP on {iface}"), err))?;
            (IngressHook::Xdp, KEPT.to_owned())
        }
        (None, Some(link)) => {
            let tc: &mut SchedClassifier = super::program_mut(ebpf, TC_PROGRAM)?.try_into()?;
            tc.attach_to_link(SchedClassifierLink::try_from(link)?)
                .map_err(|err| DatapathError::new(format!("replace TC ingress on {iface}"), err))?;
            (IngressHook::Tc, KEPT.to_owned())
        }
        (None, None) => attach_ingress(ebpf, iface, ifindex, choice, xdp_mode, &pins)?,
    };
    if reason == KEPT && choice != IngressHookChoice::Auto && choice.hook() != Some(ingress) {
        tracing::warn!(
            iface,
            kept = ingress.as_str(),
            "--ingress-hook is not applied: the previous run's pinned link is kept so that no \
             packet is missed or counted twice; remove the pins to change the hook"
        );
    }
    let tc: &mut SchedClassifier = super::program_mut(ebpf, TC_PROGRAM)?.try_into()?;
    match take_over(pins.tc_egress.as_deref())? {
        Some(link) => {
            tc.attach_to_link(SchedClassifierLink::try_from(link)?)
                .map_err(|err| DatapathError::new(format!("replace TC on {iface}"), err))?;
        }
        None => {
            let link = tc.attach(iface, TcAttachType::Egress).map_err(|err| {
                DatapathError::new(format!("attach the TC egress program to {iface}"), err)
            })?;
            if let Some(path) = &pins.tc_egress {
                pin_link(tc.take_link(link)?.try_into(), path)?;
            }
        }
    }
    let ingress_pin = match ingress {
        IngressHook::Xdp => pins.xdp,
        IngressHook::Tc => pins.tc_ingress,
    };
    Ok(Attachment {
        iface: iface.to_owned(),
        ifindex,
        ingress,
        reason,
        pins: [ingress_pin, pins.tc_egress]
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// The reason of a hook taken over from a previous run.
const KEPT: &str = "kept: the previous run's pinned link";

/// Attaches the ingress hook anew; returns it and why it is that one.
fn attach_ingress(
    ebpf: &mut Ebpf,
    iface: &str,
    ifindex: u32,
    choice: IngressHookChoice,
    xdp_mode: XdpModeChoice,
    pins: &Pins,
) -> Result<(IngressHook, String)> {
    let tc = |ebpf: &mut Ebpf, reason: String| -> Result<(IngressHook, String)> {
        let tc: &mut SchedClassifier = super::program_mut(ebpf, TC_PROGRAM)?.try_into()?;
        let link = tc.attach(iface, TcAttachType::Ingress).map_err(|err| {
            DatapathError::new(format!("attach the TC ingress program to {iface}"), err)
        })?;
        if let Some(path) = &pins.tc_ingress {
            pin_link(tc.take_link(link)?.try_into(), path)?;
        }
        Ok((IngressHook::Tc, reason))
    };
    let xdp = |ebpf: &mut Ebpf, mode: XdpModeChoice| -> Result<(IngressHook, String)> {
        let xdp: &mut Xdp = super::program_mut(ebpf, XDP_PROGRAM)?.try_into()?;
        let (link, mode) = attach_xdp_mode(xdp, ifindex, iface, mode)?;
        if let Some(path) = &pins.xdp {
            pin_link(xdp.take_link(link)?.try_into(), path)?;
        }
        Ok((
            IngressHook::Xdp,
            format!("{mode} XDP, as --ingress-hook xdp asks"),
        ))
    };
    match choice {
        IngressHookChoice::Tc => tc(ebpf, "as --ingress-hook tc asks".to_owned()),
        IngressHookChoice::Xdp => xdp(ebpf, xdp_mode),
        IngressHookChoice::Auto => match Device::probe(iface, ifindex).plan() {
            Plan::Tc(why) => tc(ebpf, why),
            Plan::TryNativeXdp => {
                let program: &mut Xdp = super::program_mut(ebpf, XDP_PROGRAM)?.try_into()?;
                match program.attach_to_if_index(ifindex, XdpMode::Driver) {
                    Ok(link) => {
                        if let Some(path) = &pins.xdp {
                            pin_link(program.take_link(link)?.try_into(), path)?;
                        }
                        Ok((
                            IngressHook::Xdp,
                            "native XDP, on the driver's own receive buffers".to_owned(),
                        ))
                    }
                    Err(err) => match DatapathError::new(format!("attach XDP to {iface}"), err) {
                        denied @ DatapathError::PermissionDenied { .. } => Err(denied.into()),
                        refused => tc(
                            ebpf,
                            format!("the driver refused native XDP ({:#})", anyhow!(refused)),
                        ),
                    },
                }
            }
        },
    }
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
            .map_err(|err| DatapathError::new(format!("attach XDP to {iface}"), err))
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
