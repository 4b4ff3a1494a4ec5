//! Running flowmon's programs under BPF_PROG_TEST_RUN and reading back what they counted.

use aya::programs::{TestRun as _, TestRunOptions};
use flowmon::{datapath::Datapath, flow::Flow};
use flowmon_common::DatapathCounters;

/// XDP_PASS, the only verdict flowmon ever gives.
pub const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC as the u32 the kernel reports: "continue", the packet goes on unchanged.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// A freshly loaded datapath (its own maps), attached nowhere.
pub struct Harness {
    pub datapath: Datapath,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_max_flows(1024)
    }

    pub fn with_max_flows(max_flows: u32) -> Self {
        Self {
            datapath: Datapath::load(max_flows).expect("load flowmon's eBPF object (run as root)"),
        }
    }

    /// Runs the XDP program once on `frame`; asserts that the frame passes unchanged.
    pub fn xdp(&mut self, frame: &[u8]) {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .datapath
            .xdp_program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN on the XDP program");
        assert_eq!(result.return_value, XDP_PASS, "XDP verdict");
        assert_eq!(
            &out[..result.data_size_out as usize],
            frame,
            "frame altered"
        );
    }

    /// Runs the TC egress program once on `frame`; asserts that it lets the frame go on.
    pub fn tc(&mut self, frame: &[u8]) {
        let result = self
            .datapath
            .tc_program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN on the TC program");
        assert_eq!(result.return_value, TC_ACT_UNSPEC, "TC verdict");
    }

    /// Every flow in the map, merged.
    pub fn flows(&self) -> Vec<Flow> {
        self.datapath
            .flow_map()
            .unwrap()
            .read_all()
            .unwrap()
            .into_iter()
            .filter_map(|entry| Flow::merge(entry.key, &entry.blocks))
            .collect()
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
