//! The kernel half as seen from userspace: load the object, attach it to interfaces, read its
//! maps.

mod attach;
mod capabilities;
mod error;
mod flow_map;
mod hook;
mod jiffies;
mod pinning;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, Xdp},
};
use aya_log::EbpfLogger;
use flowmon_common::{
    CLOCK_PROGRAM, COUNTERS_MAP, CREATE_ERRORS_MAP, DatapathCounters, EVENTS_MAP, FLOWS_MAP,
    FRAGMENTS_MAP, KernelSettings, SETTINGS_MAP, TC_PROGRAM, XDP_PROGRAM,
};

pub use attach::{Attachment, XdpModeChoice, ifindex};
pub use error::{DatapathError, KernelError};
pub use flow_map::{FlowMap, FlowTable};
pub use hook::{IngressHook, IngressHookChoice};
pub use jiffies::KernelClock;

/// Where the maps and the links are pinned on bpffs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/flowmon";

/// What is loaded, and where it is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Interfaces to attach to; each exists.
    pub ifaces: Vec<String>,
    /// The hook that counts what each interface receives.
    pub ingress_hook: IngressHookChoice,
    pub xdp_mode: XdpModeChoice,
    /// Capacity of the flow map, at least 1.
    pub max_flows: u32,
    pub pin_dir: PathBuf,
}

/// The kernel object built by `build.rs` from `flowmon-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowmon"));

/// The loaded kernel programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// The maps were pinned by this run, not taken over from an earlier one.
    pinned_here: bool,
    attachments: Vec<Attachment>,
    clock: KernelClock,
    /// The ring of [`flowmon_common::FlowEvent`]s, taken out of the object to be read on its own.
    events: RingBuf<MapData>,
    /// What the programs log (rare: refusals of the flow or fragment map).
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
}

/// Every map of the object; all are pinned together so that a restarted agent finds the flows
/// and the counters the programs kept meanwhile.
const MAPS: [&str; 4] = [FLOWS_MAP, COUNTERS_MAP, CREATE_ERRORS_MAP, FRAGMENTS_MAP];

impl Datapath {
    /// Loads the object with a flow map of `max_flows` entries and loads (verifies) both
    /// programs, without attaching them anywhere. With `pin_dir`, the maps are pinned there,
    /// or taken over when a previous run pinned them.
    pub fn load(max_flows: u32, pin_dir: Option<&Path>) -> Result<Self> {
        capabilities::check()?;
        raise_memlock_limit();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(FLOWS_MAP, max_flows);
        let pinned_here = pin_dir.is_some_and(|dir| !dir.join(FLOWS_MAP).exists());
        if let Some(dir) = pin_dir {
            pinning::prepare(dir)?;
            pinning::check_layouts(dir)?;
            for map in MAPS {
                loader.map_pin_path(map, dir.join(map));
            }
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|err| DatapathError::new("load the eBPF object", err))?;
        let xdp: &mut Xdp = program_mut(&mut ebpf, XDP_PROGRAM)?.try_into()?;
        xdp.load()
            .map_err(|err| DatapathError::new("load the XDP program", err))?;
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, TC_PROGRAM)?.try_into()?;
        tc.load()
            .map_err(|err| DatapathError::new("load the TC program", err))?;
        let clock_program: &mut Xdp = program_mut(&mut ebpf, CLOCK_PROGRAM)?.try_into()?;
        clock_program
            .load()
            .map_err(|err| DatapathError::new("load the clock program", err))?;
        let clock = KernelClock::calibrate(clock_program)?;
        let events = ebpf
            .take_map(EVENTS_MAP)
            .with_context(|| format!("map {EVENTS_MAP} missing from the object"))?
            .try_into()?;
        let logger = EbpfLogger::init(&mut ebpf)
            .inspect_err(|err| tracing::warn!("the programs' log is not read: {err}"))
            .ok();
        let datapath = Self {
            ebpf,
            pin_dir: pin_dir.map(Path::to_owned),
            pinned_here,
            attachments: Vec::new(),
            clock,
            events,
            logger,
        };
        let capacity = datapath.flow_map()?.capacity()?;
        if capacity != max_flows {
            tracing::warn!(
                capacity,
                max_flows,
                "the pinned flow map keeps its size; remove the pins to resize it"
            );
        }
        Ok(datapath)
    }

    /// Attaches the ingress hook `hook` picks and TC on egress of `iface` (taking over links a
    /// previous run pinned); they stay attached until [`Datapath::detach_programs`], or for good
    /// when pinned.
    pub fn attach(
        &mut self,
        iface: &str,
        hook: IngressHookChoice,
        xdp_mode: XdpModeChoice,
    ) -> Result<&Attachment> {
        let links_dir = self.pin_dir.as_ref().map(|dir| dir.join("links"));
        if let Some(dir) = &links_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let attachment =
            attach::attach(&mut self.ebpf, iface, hook, xdp_mode, links_dir.as_deref())?;
        self.attachments.push(attachment);
        Ok(self.attachments.last().expect("just pushed"))
    }

    /// Detaches the programs from every interface by removing their pinned links (the pins
    /// were the links' only holders). The maps stay readable.
    pub fn detach_programs(&mut self) -> Result<()> {
        for pin in self.attachments.drain(..).flat_map(|a| a.pins) {
            std::fs::remove_file(&pin)
                .with_context(|| format!("cannot remove pinned link {}", pin.display()))?;
        }
        Ok(())
    }

    /// After a failed start: removes what this run attached and pinned, and leaves alone what
    /// an earlier run left for it to take over.
    pub fn abandon(mut self) {
        let _ = self.detach_programs();
        if self.pinned_here {
            self.unpin_maps();
        }
    }

    /// Removes the pinned maps, so nothing of this run stays in the kernel once it exits.
    /// Without this (`--keep-attached`), the next run takes the maps over.
    pub fn unpin_maps(self) {
        if let Some(dir) = &self.pin_dir {
            for map in MAPS {
                let _ = std::fs::remove_file(dir.join(map));
            }
            let _ = std::fs::remove_dir(dir.join("links"));
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Tells the programs the interim interval in jiffies, the tracker's own, so that they mark
    /// a flow's first packet of each interval ([`flowmon_common::event::ACTIVE`]).
    pub fn set_interim_ticks(&mut self, ticks: u64) -> Result<()> {
        let settings = KernelSettings {
            interim_jiffies: ticks.max(1),
        };
        let map = self
            .ebpf
            .map_mut(SETTINGS_MAP)
            .with_context(|| format!("map {SETTINGS_MAP} missing from the object"))?;
        Array::<_, KernelSettings>::try_from(map)?.set(0, settings, 0)?;
        Ok(())
    }

    /// The ring of events the programs write about flows.
    pub fn events(&mut self) -> &mut RingBuf<MapData> {
        &mut self.events
    }

    /// Hands what the programs logged to the agent's log.
    pub fn flush_log(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// The kernel clock the flow map's times are read with.
    pub fn clock(&self) -> &KernelClock {
        &self.clock
    }

    /// The XDP program, for BPF_PROG_TEST_RUN (tests, benchmarks).
    pub fn xdp_program(&self) -> Result<&Xdp> {
        Ok(self.program(XDP_PROGRAM)?.try_into()?)
    }

    /// The TC egress program, for BPF_PROG_TEST_RUN.
    pub fn tc_program(&self) -> Result<&SchedClassifier> {
        Ok(self.program(TC_PROGRAM)?.try_into()?)
    }

    fn program(&self, name: &str) -> Result<&aya::programs::Program> {
        self.ebpf
            .program(name)
            .with_context(|| format!("program {name} missing from the object"))
    }

    pub fn flow_map(&self) -> Result<FlowMap<'_>> {
        let map = self
            .ebpf
            .map(FLOWS_MAP)
            .with_context(|| format!("map {FLOWS_MAP} missing from the object"))?;
        FlowMap::new(map, self.clock)
    }

    /// The datapath counters summed over all CPUs.
    pub fn counters(&self) -> Result<DatapathCounters> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .context("map COUNTERS missing")?;
        let array = PerCpuArray::<_, DatapathCounters>::try_from(map)?;
        let mut sum = DatapathCounters::default();
        for c in array.get(&0, 0)?.iter() {
            sum.packets += c.packets;
            sum.bytes += c.bytes;
            sum.truncated += c.truncated;
            sum.unsupported += c.unsupported;
            sum.non_ip += c.non_ip;
            sum.flows_created += c.flows_created;
            sum.create_failures += c.create_failures;
            sum.fragments += c.fragments;
            sum.fragments_unmatched += c.fragments_unmatched;
            sum.events_lost += c.events_lost;
        }
        Ok(sum)
    }

    /// Failed flow creations by errno, summed over all CPUs; only errnos that occurred.
    pub fn create_errors(&self) -> Result<Vec<(u32, u64)>> {
        let map = self
            .ebpf
            .map(CREATE_ERRORS_MAP)
            .context("map CREATE_ERRORS missing")?;
        let array = PerCpuArray::<_, u64>::try_from(map)?;
        let mut errors = Vec::new();
        for (errno, values) in array.iter().enumerate() {
            let count: u64 = values?.iter().sum();
            if count > 0 {
                errors.push((errno as u32, count));
            }
        }
        Ok(errors)
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the object"))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}
