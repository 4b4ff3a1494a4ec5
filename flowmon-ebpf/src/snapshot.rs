//! The snapshot program's walk: every flow's key and block copied into the snapshot arrays,
//! the walk checked as it goes (see `flowmon_common::snapshot`).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::generated::{bpf_for_each_map_elem, bpf_probe_read_kernel},
    macros::map,
    maps::Array,
};
use flowmon_common::{
    FlowBlock, FlowKey,
    snapshot::{HALVES, HASH_BEFORE_KEY, SnapshotRun, SnapshotWalk, outcome},
};

use crate::flow::FLOWS;

/// The snapshot arrays, which the agent maps into its memory; it sizes them at load time.
#[map(name = "SNAPSHOT_KEYS")]
static SNAPSHOT_KEYS: Array<FlowKey> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "SNAPSHOT_BLOCKS")]
static SNAPSHOT_BLOCKS: Array<FlowBlock> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each half's walk: its state while it runs (too large for the stack, and kept out of the
/// verifier's sight, which would otherwise follow its every value through the callback), then
/// its outcome for the agent. Only the table that holds a half walks into it.
#[map(name = "SNAPSHOT_WALKS")]
static SNAPSHOT_WALKS: Array<SnapshotWalk> = Array::with_max_entries(HALVES, 0);

/// Walks the flow map into `half` for `run`, leaving the outcome in the half's walk slot.
#[inline(always)]
pub fn take(half: u32, run: SnapshotRun) {
    let Some(walk) = SNAPSHOT_WALKS.get_ptr_mut(half) else {
        return;
    };
    // SAFETY: the slot is this walk's alone (one table per half, one read at a time); the
    // helper gets the flow map and a callback of the signature it calls, with the half's
    // index on this stack as its context.
    unsafe {
        *walk = SnapshotWalk::start(run);
        let mut context = half;
        bpf_for_each_map_elem(
            &FLOWS as *const _ as *mut c_void,
            copy_flow as *mut c_void,
            &mut context as *mut u32 as *mut c_void,
            0,
        );
    }
}

/// Called by the kernel for each element: checks the walk, then copies the flow into the next
/// slot. Returns 1 to stop the walk.
extern "C" fn copy_flow(
    _map: *mut c_void,
    key: *const FlowKey,
    block: *const FlowBlock,
    half: *mut c_void,
) -> i64 {
    // SAFETY: `half` points to the index `take` put on its stack.
    let Some(walk) = SNAPSHOT_WALKS.get_ptr_mut(unsafe { *(half as *const u32) }) else {
        return 1;
    };
    // SAFETY: `walk` is this walk's slot; `key` and `block` are the element's, valid for the
    // call; the hash is read with the fault-tolerant helper, from inside the element's header.
    unsafe {
        let walk = &mut *walk;
        let mut hash: u32 = 0;
        let at = (key as u64).wrapping_sub(HASH_BEFORE_KEY) as *const c_void;
        if bpf_probe_read_kernel(&mut hash as *mut u32 as *mut c_void, 4, at) != 0 {
            walk.run.outcome = outcome::UNREADABLE;
            return 1;
        }
        if let Err(ended) = walk.visit(hash, key as u64) {
            walk.run.outcome = ended;
            return 1;
        }
        if walk.run.flows >= walk.run.slots {
            walk.run.outcome = outcome::FULL;
            return 1;
        }
        let slot = walk.run.first_slot + walk.run.flows;
        let (Some(key_slot), Some(block_slot)) = (
            SNAPSHOT_KEYS.get_ptr_mut(slot),
            SNAPSHOT_BLOCKS.get_ptr_mut(slot),
        ) else {
            walk.run.outcome = outcome::FULL;
            return 1;
        };
        core::ptr::copy_nonoverlapping(key, key_slot, 1);
        core::ptr::copy_nonoverlapping(block, block_slot, 1);
        walk.run.flows += 1;
    }
    0
}
