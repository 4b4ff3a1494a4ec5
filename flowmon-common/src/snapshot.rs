//! The snapshot: the whole flow map copied by the kernel itself into two arrays the agent has
//! mapped into its memory, in one `BPF_PROG_TEST_RUN` of [`crate::SNAPSHOT_PROGRAM`]. The
//! arrays have [`HALVES`] halves, each with its own [`SnapshotWalk`] slot in
//! [`crate::SNAPSHOT_WALKS_MAP`].
//!
//! The program walks the map with `bpf_for_each_map_elem`, bucket after bucket, without the
//! bucket locks a `BPF_MAP_LOOKUP_BATCH` takes. The LRU can evict an element as the walk goes
//! and reuse it for a new flow in another bucket. If that happens to the element the walk is
//! copying, the copy may mix two flows; if it happens to the element the walk steps to next,
//! the walk follows it into the other bucket's chain, may visit flows twice and misses the
//! rest of its own chain. So the walk checks every element from the header the kernel keeps
//! before its key ([`ElementHeader`]):
//! - it must be linked, and its key the same before and after its block is copied (see the
//!   program's `copy_flow` for why that order of reads makes the copy whole);
//! - buckets, from the stored hash, must come in ascending order, and no element twice in one
//!   bucket ([`SnapshotWalk::visit`]).
//!
//! A walk that breaks a rule is thrown away and the agent reads the map with batch lookups. A
//! diversion that breaks none (into a bucket between the last one visited and its own, all
//! empty when the walk passed them) only loses flows: the agent looks up every flow it knew that
//! a snapshot lacks, and reads with batch lookups if one is still there. The argument holds
//! whether the kernel reads an element's successor before the callback (6.15 on) or after, and
//! relies on x86's ordering of loads.

/// Elements of one bucket the walk remembers to catch a second visit. Buckets hold one element
/// on average in a full map (there are at least as many as the map has entries); more than
/// sixteen in one bucket happens about once in 10^15 buckets.
pub const CHAIN_CHECKED: usize = 16;

/// Halves of the snapshot arrays: one for each of the agent's two tables.
pub const HALVES: u32 = 2;

/// The kernel's `struct htab_elem` header of an LRU hash map element (5.x to 6.18): the chain
/// links, the LRU node, the hash, then the key at byte 48.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElementHeader {
    pub next: u64,
    /// Where the element is linked from; [`UNLINKED`] once it is taken out of its chain.
    pub pprev: u64,
    pub lru_node: [u64; 3],
    pub hash: u32,
    pub _pad: u32,
}

/// The kernel's `LIST_POISON2` (its default on x86-64 and arm64), which an element's `pprev`
/// holds from its removal from a chain until it is linked again.
pub const UNLINKED: u64 = 0xdead_0000_0000_0122;

/// How a snapshot walk ended.
pub mod outcome {
    /// Every flow of the map is in the snapshot.
    pub const COMPLETE: u32 = 0;
    /// The map held more flows than the snapshot has slots.
    pub const FULL: u32 = 1;
    /// A bucket came after a later one: the walk was diverted.
    pub const WENT_BACK: u32 = 2;
    /// An element came twice in one bucket: the walk was diverted.
    pub const REVISITED: u32 = 3;
    /// A bucket held more elements than the walk can check.
    pub const LONG_CHAIN: u32 = 4;
    /// An element's header could not be read.
    pub const UNREADABLE: u32 = 5;
    /// An element was unlinked or reused as the walk copied it.
    pub const CHANGED: u32 = 6;
    /// Found by the agent: a flow it knew, missing from the snapshot, is still in the map.
    pub const MISSED: u32 = 7;

    /// The label of an outcome, for logs and metrics.
    pub fn name(outcome: u32) -> &'static str {
        match outcome {
            COMPLETE => "complete",
            FULL => "full",
            WENT_BACK => "went_back",
            REVISITED => "revisited",
            LONG_CHAIN => "long_chain",
            UNREADABLE => "unreadable",
            CHANGED => "changed",
            MISSED => "missed",
            _ => "unknown",
        }
    }
}

/// What the agent asks of one snapshot (the program's arguments) and what it gets back (in the
/// half's walk slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRun {
    /// In: the first slot of the snapshot arrays to fill, and how many may be filled.
    pub first_slot: u32,
    pub slots: u32,
    /// In: the flow map's bucket count (a power of two) minus one.
    pub bucket_mask: u32,
    /// In and out: the agent's number for this run, which the walk copies, so that an outcome
    /// is known to be this run's.
    pub ticket: u32,
    /// Out: flows copied, and one of [`outcome`].
    pub flows: u32,
    pub outcome: u32,
}

/// The state of one walk while it runs, and its outcome after.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SnapshotWalk {
    pub run: SnapshotRun,
    /// The bucket of the latest element, and the elements seen in it so far (kernel
    /// addresses, compared only).
    bucket: u32,
    chain_len: u32,
    chain: [u64; CHAIN_CHECKED],
}

impl SnapshotWalk {
    pub fn start(run: SnapshotRun) -> Self {
        Self {
            run: SnapshotRun {
                flows: 0,
                outcome: outcome::COMPLETE,
                ..run
            },
            bucket: 0,
            chain_len: 0,
            chain: [0; CHAIN_CHECKED],
        }
    }

    /// Checks that the element at `element`, whose header reads `header` before its copy, is
    /// linked and continues an untorn walk; else the [`outcome`] that ends it.
    #[inline(always)]
    pub fn visit(&mut self, header: &ElementHeader, element: u64) -> Result<(), u32> {
        if header.pprev == UNLINKED {
            return Err(outcome::CHANGED);
        }
        let bucket = header.hash & self.run.bucket_mask;
        if self.chain_len == 0 || bucket > self.bucket {
            self.bucket = bucket;
            self.chain[0] = element;
            self.chain_len = 1;
            return Ok(());
        }
        if bucket < self.bucket {
            return Err(outcome::WENT_BACK);
        }
        let len = self.chain_len as usize;
        for seen in 0..CHAIN_CHECKED {
            if seen >= len {
                break;
            }
            if self.chain[seen] == element {
                return Err(outcome::REVISITED);
            }
        }
        if len >= CHAIN_CHECKED {
            return Err(outcome::LONG_CHAIN);
        }
        self.chain[len] = element;
        self.chain_len += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    const MASK: u32 = 0xff;

    fn linked(hash: u32) -> ElementHeader {
        ElementHeader {
            pprev: 0xffff_8880_0000_1000,
            hash,
            ..ElementHeader::default()
        }
    }

    /// Visits (bucket, element) pairs in order; the outcome of the walk.
    fn walk(visits: &[(u32, u64)]) -> u32 {
        let mut walk = SnapshotWalk::start(SnapshotRun {
            bucket_mask: MASK,
            ..SnapshotRun::default()
        });
        for &(bucket, element) in visits {
            // A hash's bits above the mask do not matter.
            if let Err(outcome) = walk.visit(&linked(0xab00 | bucket), element) {
                return outcome;
            }
        }
        outcome::COMPLETE
    }

    #[test]
    fn an_ordered_walk_is_complete() {
        assert_eq!(walk(&[]), outcome::COMPLETE);
        assert_eq!(
            walk(&[(0, 1), (0, 2), (3, 3), (7, 4), (7, 5), (7, 6), (200, 7)]),
            outcome::COMPLETE
        );
    }

    #[test]
    fn a_walk_diverted_to_an_earlier_bucket_went_back() {
        // Element 3 of bucket 5 was reused in bucket 2: the walk follows it there.
        assert_eq!(walk(&[(1, 1), (5, 2), (2, 3), (2, 9)]), outcome::WENT_BACK);
    }

    #[test]
    fn a_walk_diverted_to_a_later_bucket_is_caught_there() {
        // Diverted from bucket 5 into bucket 9 (elements 3, 4), with no flow between: bucket 9
        // is then walked again from its head, a new flow 8 before 3.
        assert_eq!(
            walk(&[(5, 1), (9, 3), (9, 4), (9, 8), (9, 3), (9, 4)]),
            outcome::REVISITED
        );
        // With a flow between, the walk goes back to it.
        assert_eq!(walk(&[(5, 1), (9, 3), (9, 4), (7, 6)]), outcome::WENT_BACK);
    }

    #[test]
    fn a_walk_diverted_within_its_bucket_revisits() {
        // Element 2 was reused in its own bucket: at its head, it leads back to element 1.
        assert_eq!(walk(&[(4, 1), (4, 2), (4, 1)]), outcome::REVISITED);
    }

    #[test]
    fn a_chain_longer_than_the_check_ends_the_walk() {
        let chain: Vec<(u32, u64)> = (0..CHAIN_CHECKED as u64).map(|e| (6, e)).collect();
        assert_eq!(walk(&chain), outcome::COMPLETE);
        let longer: Vec<(u32, u64)> = (0..=CHAIN_CHECKED as u64).map(|e| (6, e)).collect();
        assert_eq!(walk(&longer), outcome::LONG_CHAIN);
    }

    #[test]
    fn an_unlinked_element_ends_the_walk() {
        let mut walk = SnapshotWalk::start(SnapshotRun {
            bucket_mask: MASK,
            ..SnapshotRun::default()
        });
        let unlinked = ElementHeader {
            pprev: UNLINKED,
            ..linked(1)
        };
        assert_eq!(walk.visit(&unlinked, 1), Err(outcome::CHANGED));
        assert_eq!(walk.visit(&linked(1), 1), Ok(()));
    }
}
