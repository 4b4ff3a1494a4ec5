//! Reading the flow map through the snapshot program (see `flowmon_common::snapshot`): the
//! kernel copies every flow into two arrays mapped into the agent's memory, in one walk that
//! takes no bucket locks and makes no copies to userspace. At a million flows that costs about
//! 60 % of what `BPF_MAP_LOOKUP_BATCH` does with its lock and two checked copies per bucket.
//! The walk runs without preemption on the agent's CPU (about 0.3 s at a million flows), with
//! interrupts and softirqs, packet processing among them, going on.
//!
//! The arrays have two halves, one for each of the monitor's two tables (the latest read and
//! the one before it, against which evictions are found); a table holds its half for life.

use std::{
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, Map},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use flowmon_common::{
    FlowBlock, FlowKey, SNAPSHOT_BLOCKS_MAP, SNAPSHOT_KEYS_MAP, SNAPSHOT_PROGRAM,
    SNAPSHOT_WALKS_MAP,
    snapshot::{HALVES, SnapshotWalk, outcome},
};
use memmap2::{MmapOptions, MmapRaw};
// Array elements are 8-byte aligned in the kernel: these sizes make the mapped arrays plain
// Rust slices.
const _: () =
    assert!(size_of::<FlowKey>().is_multiple_of(8) && size_of::<FlowBlock>().is_multiple_of(8));

/// The two snapshot arrays, mapped read-only.
pub struct SnapshotArea {
    keys: MmapRaw,
    blocks: MmapRaw,
    /// Slots of one half: the flow map's capacity.
    half_slots: u32,
    bucket_mask: u32,
    taken: [AtomicBool; HALVES as usize],
}

impl SnapshotArea {
    /// The snapshot arrays' sizes for a flow map of `capacity` flows: two halves of `capacity`
    /// slots. Set before the object is loaded.
    pub fn slots(capacity: u32) -> Result<u32> {
        capacity
            .checked_mul(2)
            .context("--max-flows too large for the snapshot arrays")
    }

    /// Loads the snapshot program of `ebpf` and maps its arrays, made for a flow map of
    /// `capacity` flows.
    pub fn prepare(ebpf: &mut Ebpf, capacity: u32) -> Result<Arc<Self>> {
        let program: &mut RawTracePoint = ebpf
            .program_mut(SNAPSHOT_PROGRAM)
            .context("snapshot program missing from the object")?
            .try_into()?;
        program.load().context("cannot load the snapshot program")?;
        let slots = Self::slots(capacity)? as usize;
        let map = |name: &str, element: usize| -> Result<MmapRaw> {
            let Some(Map::Array(data)) = ebpf.map(name) else {
                anyhow::bail!("array {name} missing from the object");
            };
            MmapOptions::new()
                .len(slots * element)
                .map_raw_read_only(data.fd().as_fd().as_raw_fd())
                .with_context(|| format!("cannot map {name} into memory"))
        };
        Ok(Arc::new(Self {
            keys: map(SNAPSHOT_KEYS_MAP, size_of::<FlowKey>())?,
            blocks: map(SNAPSHOT_BLOCKS_MAP, size_of::<FlowBlock>())?,
            half_slots: capacity,
            // The kernel gives a hash map the next power of two of its capacity in buckets.
            bucket_mask: capacity.next_power_of_two() - 1,
            taken: [const { AtomicBool::new(false) }; HALVES as usize],
        }))
    }

    fn lease(self: &Arc<Self>) -> Option<SnapshotHalf> {
        let index = self.taken.iter().position(|taken| {
            taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        Some(SnapshotHalf {
            area: Arc::clone(self),
            index,
            runs: 0,
        })
    }
}

/// The snapshot program, its walk slots and its arrays, borrowed from the loaded datapath.
#[derive(Clone, Copy)]
pub struct SnapshotProgram<'a> {
    program: &'a RawTracePoint,
    walks: &'a Map,
    area: &'a Arc<SnapshotArea>,
}

impl<'a> SnapshotProgram<'a> {
    pub fn of(ebpf: &'a Ebpf, area: &'a Arc<SnapshotArea>) -> Result<Self> {
        Ok(Self {
            program: ebpf
                .program(SNAPSHOT_PROGRAM)
                .context("snapshot program missing from the object")?
                .try_into()?,
            walks: ebpf
                .map(SNAPSHOT_WALKS_MAP)
                .context("snapshot walks missing from the object")?,
            area,
        })
    }

    /// A half of the arrays nobody holds, if any.
    pub fn lease(&self) -> Option<SnapshotHalf> {
        self.area.lease()
    }

    /// Runs the snapshot into `half`: the number of flows copied, or the [`outcome`] for which
    /// the snapshot is unusable. The half is borrowed mutably because the kernel rewrites it:
    /// no slice of it may be alive meanwhile.
    pub fn take(&self, half: &mut SnapshotHalf) -> Result<Result<usize, u32>> {
        anyhow::ensure!(
            Arc::ptr_eq(&half.area, self.area),
            "the table's snapshot half belongs to another datapath"
        );
        half.runs = half.runs.wrapping_add(1);
        let area = &half.area;
        let mut options = RawTracePointRunOptions::new();
        options.args[..5].copy_from_slice(&[
            half.index as u64,
            (half.index as u32 * area.half_slots).into(),
            area.half_slots.into(),
            area.bucket_mask.into(),
            half.runs.into(),
        ]);
        self.program
            .test_run(options)
            .context("BPF_PROG_TEST_RUN on the snapshot program")?;
        let walk: SnapshotWalk = Array::<_, SnapshotWalk>::try_from(self.walks)?
            .get(&(half.index as u32), 0)
            .context("cannot read the snapshot's outcome")?;
        anyhow::ensure!(
            walk.run.ticket == half.runs,
            "the snapshot program left no outcome"
        );
        Ok(match walk.run.outcome {
            outcome::COMPLETE => Ok(walk.run.flows as usize),
            other => Err(other),
        })
    }
}

/// One half of the snapshot arrays, held by one table.
pub struct SnapshotHalf {
    area: Arc<SnapshotArea>,
    index: usize,
    /// Snapshots taken into this half: the ticket of each run.
    runs: u32,
}

impl SnapshotHalf {
    /// The first `len` keys of this half.
    pub fn keys(&self, len: usize) -> &[FlowKey] {
        // SAFETY: see `slice`.
        unsafe { self.slice(&self.area.keys, len) }
    }

    /// The first `len` blocks of this half.
    pub fn blocks(&self, len: usize) -> &[FlowBlock] {
        // SAFETY: see `slice`.
        unsafe { self.slice(&self.area.blocks, len) }
    }

    /// # Safety
    /// `T` must be the element type of `array`. The slice is sound because the kernel writes
    /// the half only during [`SnapshotProgram::take`], which borrows the half mutably; it
    /// stays within the half whatever `len` says.
    unsafe fn slice<T>(&self, array: &MmapRaw, len: usize) -> &[T] {
        let half_slots = self.area.half_slots as usize;
        let start = array
            .as_ptr()
            .cast::<T>()
            .wrapping_add(self.index * half_slots);
        // SAFETY: the mapping is page-aligned and holds two halves of `half_slots` elements;
        // the caller vouches for the type.
        unsafe { std::slice::from_raw_parts(start, len.min(half_slots)) }
    }
}

impl Drop for SnapshotHalf {
    fn drop(&mut self) {
        self.area.taken[self.index].store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for SnapshotHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotHalf({})", self.index)
    }
}
