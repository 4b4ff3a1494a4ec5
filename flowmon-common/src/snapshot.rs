//! The snapshot: the whole flow map copied by the kernel itself into two arrays the agent has
//! mapped into its memory, in one `BPF_PROG_TEST_RUN` of [`crate::SNAPSHOT_PROGRAM`]. The
//! arrays have [`HALVES`] halves, each with its own [`SnapshotWalk`] slot in
//! [`crate::SNAPSHOT_WALKS_MAP`].
//!
//! The program walks the map with `bpf_for_each_map_elem`, bucket after bucket, without the
//! bucket locks a `BPF_MAP_LOOKUP_BATCH` takes. That walk can be torn: when the LRU evicts the
//! element the walk is about to step on and reuses it for a new flow in another bucket, the
//! walk follows it into that bucket's chain, visits flows twice and misses the rest of its own
//! chain. So the walk checks itself with [`SnapshotWalk::visit`]: buckets must come in
//! ascending order (each element's bucket is read from the hash the kernel stores before the
//! key), and no element may come twice within one bucket. A diverted walk breaks one rule or
//! the other, and its snapshot is thrown away; the agent then reads the map with batch
//! operations.

/// Elements of one bucket the walk remembers to catch a second visit. Buckets hold one element
/// on average in a full map (there are at least as many as the map has entries); more than
/// sixteen in one bucket happens about once in 10^15 buckets.
pub const CHAIN_CHECKED: usize = 16;

/// Halves of the snapshot arrays: one for each of the agent's two tables.
pub const HALVES: u32 = 2;

/// Bytes from a hash element's `hash` field to its key: the `u32` hash ends the kernel's
/// 48-byte `struct htab_elem` header, padded to 8.
pub const HASH_BEFORE_KEY: u64 = 8;

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
    /// An element's hash could not be read.
    pub const UNREADABLE: u32 = 5;

    /// The label of an outcome, for logs and metrics.
    pub fn name(outcome: u32) -> &'static str {
        match outcome {
            COMPLETE => "complete",
            FULL => "full",
            WENT_BACK => "went_back",
            REVISITED => "revisited",
            LONG_CHAIN => "long_chain",
            UNREADABLE => "unreadable",
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
    /// Out: flows copied, and one of [`outcome`].
    pub flows: u32,
    pub outcome: u32,
    pub _pad: u32,
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

    /// Checks that the element at `element`, whose stored hash is `hash`, continues an untorn
    /// walk; else the [`outcome`] that ends it.
    #[inline(always)]
    pub fn visit(&mut self, hash: u32, element: u64) -> Result<(), u32> {
        let bucket = hash & self.run.bucket_mask;
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

    /// Visits (bucket, element) pairs in order; the outcome of the walk.
    fn walk(visits: &[(u32, u64)]) -> u32 {
        let mut walk = SnapshotWalk::start(SnapshotRun {
            bucket_mask: MASK,
            ..SnapshotRun::default()
        });
        for &(bucket, element) in visits {
            // A hash's bits above the mask do not matter.
            if let Err(outcome) = walk.visit(0xab00 | bucket, element) {
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
}
