//! Running flowmon's programs under BPF_PROG_TEST_RUN and reading back what they counted.

use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, TestRunResult, Xdp};
use flowmon::{
    datapath::{Datapath, EBPF_OBJECT},
    flow::Flow,
};
use flowmon_common::{BASELINE_PROGRAM, DatapathCounters, TC_BASELINE_PROGRAM};

use crate::frames::{ACK, Frame};

/// XDP_PASS, the only verdict flowmon ever gives.
pub const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC as the u32 the kernel reports: "continue", the packet goes on unchanged.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// Size of `struct __sk_buff` and the offsets of the fields BPF_PROG_TEST_RUN lets a test set.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_GSO_SEGS: usize = 164;
const SK_BUFF_GSO_SIZE: usize = 176;

/// The hook a frame is received through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    Xdp,
    Tc,
}

/// A freshly loaded datapath (its own maps), attached nowhere.
pub struct Harness {
    pub datapath: Datapath,
    ingress: Ingress,
}

impl Harness {
    pub fn new() -> Self {
        Self::receiving(Ingress::Xdp)
    }

    /// A harness whose [`Harness::receive`] runs `ingress`.
    pub fn receiving(ingress: Ingress) -> Self {
        Self {
            datapath: Datapath::load(1024, None).expect("load flowmon's eBPF object (run as root)"),
            ingress,
        }
    }

    /// Runs the ingress program of this harness once on `frame`, asserting that it passes.
    pub fn receive(&self, frame: &[u8]) {
        match self.ingress {
            Ingress::Xdp => self.xdp(frame),
            Ingress::Tc => self.tc(frame),
        }
    }

    /// Runs the XDP program once on `frame`; asserts that the frame passes unchanged.
    pub fn xdp(&self, frame: &[u8]) {
        let mut out = vec![0u8; frame.len() + 256];
        let result = run_xdp(&self.datapath, frame, Some(&mut out), 1);
        assert_eq!(result.return_value, XDP_PASS, "XDP verdict");
        assert_eq!(
            &out[..result.data_size_out as usize],
            frame,
            "frame altered"
        );
    }

    /// Runs the TC egress program once on `frame`; asserts that it lets the frame go on.
    pub fn tc(&self, frame: &[u8]) {
        self.tc_with_context(frame, None);
    }

    /// Runs the TC program on `frame` as a segmentation-offload super-packet of `segments`
    /// segments of `segment_size` payload bytes.
    pub fn tc_gso(&self, frame: &[u8], segments: u32, segment_size: u32) {
        let mut skb = [0u8; SK_BUFF_SIZE];
        skb[SK_BUFF_GSO_SEGS..SK_BUFF_GSO_SEGS + 4].copy_from_slice(&segments.to_ne_bytes());
        skb[SK_BUFF_GSO_SIZE..SK_BUFF_GSO_SIZE + 4].copy_from_slice(&segment_size.to_ne_bytes());
        self.tc_with_context(frame, Some(&skb));
    }

    fn tc_with_context(&self, frame: &[u8], skb: Option<&[u8]>) {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .datapath
            .tc_program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: skb,
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN on the TC program");
        assert_eq!(result.return_value, TC_ACT_UNSPEC, "TC verdict");
        assert_eq!(
            &out[..result.data_size_out as usize],
            frame,
            "frame altered"
        );
    }

    /// Runs the XDP program `repeat` times per (cpu, frame) pair, each pair on a thread pinned
    /// to its CPU, all at once.
    pub fn run_on_cpus_concurrently(&self, work: &[(usize, &[u8])], repeat: u32) {
        let start = std::sync::Barrier::new(work.len());
        std::thread::scope(|scope| {
            for &(cpu, frame) in work {
                let start = &start;
                scope.spawn(move || {
                    pin_to_cpu(cpu);
                    start.wait();
                    let result = run_xdp(&self.datapath, frame, None, repeat);
                    assert_eq!(result.return_value, XDP_PASS);
                });
            }
        });
    }

    /// Every flow in the map, merged.
    pub fn flows(&self) -> Vec<Flow> {
        Flow::all(&self.datapath.flow_map().unwrap().read_all().unwrap())
    }

    /// The only flow in the map.
    pub fn only_flow(&self) -> Flow {
        let flows = self.flows();
        assert_eq!(flows.len(), 1, "expected exactly one flow: {flows:#?}");
        flows.into_iter().next().unwrap()
    }

    pub fn counters(&self) -> DatapathCounters {
        self.datapath.counters().unwrap()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// One BPF_PROG_TEST_RUN of flowmon's XDP program: `repeat` runs on this thread's CPU.
pub fn run_xdp(
    datapath: &Datapath,
    frame: &[u8],
    out: Option<&mut [u8]>,
    repeat: u32,
) -> TestRunResult {
    datapath
        .xdp_program()
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: out,
            repeat,
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN on the XDP program")
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "pin to CPU {cpu}");
    }
}

/// flowmon's object loaded once more, with only its empty programs (which pass every packet)
/// loaded: the baselines of the benchmarks. Get them with [`empty_programs`] (or the XDP one
/// alone with [`empty_program`]).
pub fn load_empty_program() -> aya::Ebpf {
    let mut object = aya::Ebpf::load(EBPF_OBJECT).expect("load the object again");
    empty_program(&mut object)
        .load()
        .expect("load the empty program");
    empty_tc_program(&mut object)
        .load()
        .expect("load the empty TC program");
    object
}

/// The empty XDP program of an object from [`load_empty_program`].
pub fn empty_program(object: &mut aya::Ebpf) -> &mut Xdp {
    object
        .program_mut(BASELINE_PROGRAM)
        .expect("the empty program")
        .try_into()
        .expect("an XDP program")
}

/// The empty TC program of an object from [`load_empty_program`].
fn empty_tc_program(object: &mut aya::Ebpf) -> &mut SchedClassifier {
    object
        .program_mut(TC_BASELINE_PROGRAM)
        .expect("the empty TC program")
        .try_into()
        .expect("a TC program")
}

/// Both empty programs of an object from [`load_empty_program`], to run side by side.
pub fn empty_programs(object: &aya::Ebpf) -> (&Xdp, &SchedClassifier) {
    let program = |name| object.program(name).expect("an empty program");
    (
        program(BASELINE_PROGRAM)
            .try_into()
            .expect("an XDP program"),
        program(TC_BASELINE_PROGRAM)
            .try_into()
            .expect("a TC program"),
    )
}

/// A datapath holding `flows` live TCP flows, each made by the XDP program from a packet.
pub fn filled(flows: u32) -> Datapath {
    let datapath = Datapath::load(flows * 2, None).expect("load flowmon (run as root)");
    touch(&datapath, flows);
    let live = datapath.flow_map().unwrap().read_all().unwrap().len();
    assert_eq!(live, flows as usize, "every flow in the map");
    datapath
}

/// A packet through the XDP program for each of the flows [`filled`] makes, the first `flows`
/// of them: TCP from 10.0.0.0 + its number to 192.0.2.1:80.
pub fn touch(datapath: &Datapath, flows: u32) {
    for i in 0..flows {
        let client = Ipv4Addr::from(0x0a00_0000 + i).to_string();
        let frame = Frame::tcp(&client, 40000, "192.0.2.1", 80, ACK).build();
        run_xdp(datapath, &frame, None, 1);
    }
}
