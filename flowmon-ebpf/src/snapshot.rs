//! The snapshot program's walk: every flow's key and block copied into the snapshot arrays,
//! the walk checked as it goes (see `flowmon_common::snapshot`).

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::generated::{bpf_for_each_map_elem, bpf_probe_read_kernel},
    macros::map,
    maps::Array,
};
use flowmon_common::{
    FlowBlock, FlowKey,
    snapshot::{ElementHeader, HALVES, SnapshotRun, SnapshotWalk, outcome},
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

/// Called by the kernel for each element: copies the flow into the next slot, checking the walk
/// and that the element was not reused meanwhile. Returns 1 to stop the walk.
///
/// The order of the reads is what makes the copy whole. The LRU reuses an element in this
/// order: unlink (its `pprev` becomes [`UNLINKED`]), new hash, new key, new block, link
/// elsewhere. The key is read first, then the header, then the block, then the key again. A
/// linked header means that a reuse unlinked the element after the first key was read (or was
/// over before the header was read, leaving a whole new flow); a reuse that then wrote into
/// the block as it was copied had already written the new key, so the second key differs.
/// The reads are volatile, so the compiler keeps their order; x86 keeps loads in program order,
/// and the kernel's stores in theirs.
///
/// [`UNLINKED`]: flowmon_common::snapshot::UNLINKED
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
    // call; its header is read with the fault-tolerant helper.
    unsafe {
        let walk = &mut *walk;
        let first_key: Words<KEY_WORDS> = read_words(key.cast());
        let Some(header) = header_of(key) else {
            walk.run.outcome = outcome::UNREADABLE;
            return 1;
        };
        if let Err(ended) = walk.visit(&header, key as u64) {
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
        copy_words::<BLOCK_WORDS>(block.cast(), block_slot.cast());
        if read_words::<KEY_WORDS>(key.cast()) != first_key {
            walk.run.outcome = outcome::CHANGED;
            return 1;
        }
        *(key_slot as *mut Words<KEY_WORDS>) = first_key;
        walk.run.flows += 1;
    }
    0
}

/// A key or a block as the 8-byte words of its memory (both are whole words, 8-aligned in the
/// element).
type Words<const N: usize> = [u64; N];
const KEY_WORDS: usize = size_of::<FlowKey>() / 8;
const BLOCK_WORDS: usize = size_of::<FlowBlock>() / 8;

/// Reads `N` words at `at`, each a volatile load: in program order, none left out.
///
/// # Safety
/// `at` must be readable for `N` words.
#[inline(always)]
unsafe fn read_words<const N: usize>(at: *const u64) -> Words<N> {
    let mut words = [0u64; N];
    for (i, word) in words.iter_mut().enumerate() {
        // SAFETY: within the `N` words the caller vouches for.
        *word = unsafe { core::ptr::read_volatile(at.add(i)) };
    }
    words
}

/// Copies `N` words from `from` to `to`, each load volatile: all of them before any later
/// volatile load.
///
/// # Safety
/// `from` must be readable and `to` writable for `N` words.
#[inline(always)]
unsafe fn copy_words<const N: usize>(from: *const u64, to: *mut u64) {
    for i in 0..N {
        // SAFETY: within the `N` words the caller vouches for.
        unsafe { to.add(i).write(core::ptr::read_volatile(from.add(i))) };
    }
}

/// The header the kernel keeps right before an element's key.
///
/// # Safety
/// `key` must be the key of a hash map element.
#[inline(always)]
unsafe fn header_of(key: *const FlowKey) -> Option<ElementHeader> {
    let mut header = ElementHeader::default();
    let at = (key as u64).wrapping_sub(size_of::<ElementHeader>() as u64) as *const c_void;
    // SAFETY: the helper reads kernel memory and reports a fault instead of taking it.
    let read = unsafe {
        bpf_probe_read_kernel(
            &mut header as *mut ElementHeader as *mut c_void,
            size_of::<ElementHeader>() as u32,
            at,
        )
    };
    (read == 0).then_some(header)
}
