//! Which hook counts what an interface receives. XDP costs next to nothing where the driver runs
//! it on its own receive buffers, before any socket buffer exists; elsewhere it is the dearest
//! hook there is: veth copies every packet a local socket made into a page with XDP's headroom
//! before it can run the program, and a driver without native XDP leaves only generic XDP, which
//! runs on the socket buffer after it was built. There TC (tcx) ingress, which runs on the socket
//! buffer the stack makes anyway, is the cheap one.
//!
//! `auto` tells the cases apart from what the kernel says about the device: its XDP features
//! (generic netlink, `NETDEV_CMD_DEV_GET`, kernels from 6.3), its driver's name (the ethtool
//! ioctl), and in the end whether the driver accepts the program in native mode.

use std::{ffi::CString, iter::once};

use neli::{
    consts::{nl::NlmF, socket::NlFamily},
    genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, NlattrBuilder},
    neli_enum,
    nl::NlPayload,
    router::synchronous::NlRouter,
    types::GenlBuffer,
    utils::Groups,
};

/// The ingress hook asked for (`--ingress-hook`).
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
pub enum IngressHookChoice {
    /// Native XDP where the driver runs it on its own receive buffers, TC elsewhere.
    #[default]
    Auto,
    /// XDP, in the mode `--xdp-mode` names.
    Xdp,
    /// TC (tcx) ingress.
    Tc,
}

impl IngressHookChoice {
    /// The hook asked for, unless it is for `auto` to pick.
    pub fn hook(self) -> Option<IngressHook> {
        match self {
            Self::Auto => None,
            Self::Xdp => Some(IngressHook::Xdp),
            Self::Tc => Some(IngressHook::Tc),
        }
    }
}

/// The hook an interface's ingress got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressHook {
    Xdp,
    Tc,
}

impl IngressHook {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
        }
    }
}

/// Drivers whose native XDP runs on a copy of the packet, made for XDP alone.
const COPYING_DRIVERS: [(&str, &str); 1] = [(
    "veth",
    "veth copies each packet a local socket made into a page for XDP",
)];

/// `NETDEV_XDP_ACT_BASIC` (uapi `linux/netdev.h`): the driver runs XDP programs itself.
const XDP_ACT_BASIC: u64 = 1;

/// What the kernel says about a device; `None` where it would not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub driver: Option<String>,
    pub xdp_features: Option<u64>,
}

/// What `auto` does with a device before trying anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// TC ingress, for the reason given.
    Tc(String),
    /// Native XDP, if the driver accepts it; TC otherwise.
    TryNativeXdp,
}

impl Device {
    /// Asks the kernel about the interface `iface` (index `ifindex`).
    pub fn probe(iface: &str, ifindex: u32) -> Self {
        let driver = driver_name(iface)
            .inspect_err(|err| tracing::debug!(iface, "no driver name: {err}"))
            .ok();
        let xdp_features = xdp_features(ifindex)
            .inspect_err(|err| tracing::debug!(iface, "no XDP features: {err}"))
            .ok();
        Self {
            driver,
            xdp_features,
        }
    }

    /// The hook `auto` would give this device, or that it must try native XDP to know.
    pub fn plan(&self) -> Plan {
        let driver = self.driver.as_deref().unwrap_or("unknown");
        if let Some((_, why)) = COPYING_DRIVERS.iter().find(|(name, _)| *name == driver) {
            return Plan::Tc((*why).to_owned());
        }
        match self.xdp_features {
            Some(features) if features & XDP_ACT_BASIC == 0 => Plan::Tc(format!(
                "driver {driver} has no native XDP (only generic XDP, on the socket buffer)"
            )),
            _ => Plan::TryNativeXdp,
        }
    }
}

/// The driver's name, from the ethtool ioctl (`ETHTOOL_GDRVINFO`); virtual devices have one too.
fn driver_name(iface: &str) -> std::io::Result<String> {
    /// `struct ethtool_drvinfo` (uapi `linux/ethtool.h`).
    #[repr(C)]
    struct DriverInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved: [u8; 12],
        counts: [u32; 5],
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    let name = CString::new(iface)?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut info = DriverInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved: [0; 12],
        counts: [0; 5],
    };
    // SAFETY: a socket this function owns; the ioctl reads the interface name from `request`
    // and writes at most a `struct ethtool_drvinfo` into `info`, both of which outlive the call.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (to, from) in request.ifr_name.iter_mut().zip(bytes) {
            *to = *from as libc::c_char;
        }
        request.ifr_ifru.ifru_data = (&raw mut info).cast();
        let rc = libc::ioctl(socket, libc::SIOCETHTOOL, &mut request);
        let err = std::io::Error::last_os_error();
        libc::close(socket);
        if rc < 0 {
            return Err(err);
        }
    }
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

/// Commands of the `netdev` generic netlink family (uapi `linux/netdev.h`).
#[neli_enum(serialized_type = "u8")]
enum NetdevCommand {
    Unspec = 0,
    DevGet = 1,
}

impl neli::consts::genl::Cmd for NetdevCommand {}

/// Attributes of a `netdev` device (uapi `linux/netdev.h`, `NETDEV_A_DEV_*`).
#[neli_enum(serialized_type = "u16")]
enum NetdevAttribute {
    Unspec = 0,
    Ifindex = 1,
    Pad = 2,
    XdpFeatures = 3,
}

impl neli::consts::genl::NlAttrType for NetdevAttribute {}

/// The device's XDP features (`NETDEV_XDP_ACT_*` bits), as the `netdev` family reports them.
fn xdp_features(ifindex: u32) -> Result<u64, String> {
    let fail = |err: &dyn std::fmt::Display| err.to_string();
    let (socket, _) =
        NlRouter::connect(NlFamily::Generic, Some(0), Groups::empty()).map_err(|err| fail(&err))?;
    let family = socket
        .resolve_genl_family("netdev")
        .map_err(|err| fail(&err))?;
    let ifindex_attribute = NlattrBuilder::default()
        .nla_type(
            AttrTypeBuilder::default()
                .nla_type(NetdevAttribute::Ifindex)
                .build()
                .map_err(|err| fail(&err))?,
        )
        .nla_payload(ifindex)
        .build()
        .map_err(|err| fail(&err))?;
    let request = GenlmsghdrBuilder::default()
        .cmd(NetdevCommand::DevGet)
        .version(1)
        .attrs(once(ifindex_attribute).collect::<GenlBuffer<_, _>>())
        .build()
        .map_err(|err| fail(&err))?;
    let mut replies = socket
        .send::<_, _, u16, Genlmsghdr<NetdevCommand, NetdevAttribute>>(
            family,
            NlmF::empty(),
            NlPayload::Payload(request),
        )
        .map_err(|err| fail(&err))?;
    let reply = replies
        .next()
        .ok_or("no reply")?
        .map_err(|err| fail(&err))?;
    let payload = reply.get_payload().ok_or("an empty reply")?;
    payload
        .attrs()
        .get_attr_handle()
        .get_attr_payload_as::<u64>(NetdevAttribute::XdpFeatures)
        .map_err(|err| fail(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(driver: &str, xdp_features: Option<u64>) -> Device {
        Device {
            driver: Some(driver.into()),
            xdp_features,
        }
    }

    #[test]
    fn auto_keeps_xdp_for_drivers_that_run_it_on_their_own_buffers() {
        // virtio_net and a physical NIC: native XDP, basic features at least.
        assert_eq!(device("virtio_net", Some(0x2b)).plan(), Plan::TryNativeXdp);
        assert_eq!(device("ixgbe", Some(0x7f)).plan(), Plan::TryNativeXdp);
        // A kernel that does not report features: the driver decides when asked.
        assert_eq!(device("mlx5_core", None).plan(), Plan::TryNativeXdp);
    }

    #[test]
    fn auto_takes_tc_where_xdp_would_copy_or_is_only_generic() {
        // veth reports native XDP, but runs it on a copy.
        assert!(
            matches!(device("veth", Some(0x23)).plan(), Plan::Tc(why) if why.contains("copies"))
        );
        for driver in ["macvlan", "bridge", "vxlan", "ifb"] {
            let plan = device(driver, Some(0)).plan();
            assert!(
                matches!(&plan, Plan::Tc(why) if why.contains("no native XDP")),
                "{driver}: {plan:?}"
            );
        }
    }

    #[test]
    fn the_kernel_says_loopback_has_no_native_xdp() {
        // The loopback device exists in every namespace; it names no driver to ethtool.
        let lo = Device::probe("lo", 1);
        assert_eq!(
            lo.xdp_features,
            Some(0),
            "the netdev family answers on this kernel"
        );
        assert!(matches!(lo.plan(), Plan::Tc(why) if why.contains("no native XDP")));
    }
}
