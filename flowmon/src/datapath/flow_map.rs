//! Reading and pruning the flow map at batch-operation speed.
//!
//! aya 0.14 has no batch map operations, so `BPF_MAP_LOOKUP_BATCH` is issued through the raw
//! `bpf()` syscall on the map's fd, with the command numbers and `union bpf_attr` of the kernel
//! headers as aya-obj's generated bindings give them. A walk never deletes the key it stands on (the kernel's
//! get_next_key would restart from the first key): the agent reads the whole map, decides, and
//! only then removes what ended, each with `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, so that the final
//! counts are the ones removed, not the ones read up to a poll earlier.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map};
use aya_obj::generated::{
    bpf_attr, bpf_attr__bindgen_ty_2, bpf_attr__bindgen_ty_2__bindgen_ty_1, bpf_attr__bindgen_ty_3,
    bpf_cmd,
};
use flowmon_common::{FlowBlock, FlowKey};

use super::jiffies::KernelClock;

/// The kernel's internal "operation not supported" errno, which leaks to userspace.
const ENOTSUPP: i32 = 524;
/// Entries asked for per batch call; also bounds how many keys one hash bucket may hold.
const BATCH_ENTRIES: usize = 4096;

/// Flows as the map holds them, keys and blocks in two flat vectors (a million flows are two
/// allocations, not a million), with the clock that reads their times.
#[derive(Debug)]
pub struct FlowTable {
    keys: Vec<FlowKey>,
    blocks: Vec<FlowBlock>,
    clock: KernelClock,
}

impl FlowTable {
    fn new(clock: KernelClock) -> Self {
        Self {
            keys: Vec::new(),
            blocks: Vec::new(),
            clock,
        }
    }

    fn push(&mut self, key: FlowKey, block: FlowBlock) {
        self.keys.push(key);
        self.blocks.push(block);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each flow's key and block.
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, &FlowBlock)> {
        self.keys.iter().copied().zip(&self.blocks)
    }

    /// A table of made-up flows, for unit tests of what is made of tables.
    #[cfg(test)]
    pub fn from_blocks(clock: KernelClock, flows: &[(FlowKey, FlowBlock)]) -> Self {
        let mut table = Self::new(clock);
        for (key, block) in flows {
            table.push(*key, *block);
        }
        table
    }

    /// The flow at `index` of [`FlowTable::iter`].
    pub fn get(&self, index: usize) -> (FlowKey, &FlowBlock) {
        (self.keys[index], &self.blocks[index])
    }

    /// Indices of this table's flows that `later`, a later read of the same map, no longer
    /// holds (or holds as a new flow of the same key).
    ///
    /// A batch read walks the map's buckets in order, and a flow keeps its place among the
    /// others as long as it lives, so the two tables are walked side by side: survivors pair
    /// up by comparing keys, with no hashing. New and gone flows only shift the walk (a short
    /// look-ahead finds where it resumes); whatever stays unpaired on both sides is settled
    /// through a set, so the answer is exact even if the order were not kept.
    pub fn missing_from(&self, later: &FlowTable) -> Vec<usize> {
        const LOOK_AHEAD: usize = 8;
        let (before, after) = (&self.keys, &later.keys);
        let same_flow = |i: usize, j: usize| {
            before[i] == after[j] && self.blocks[i].first_seen == later.blocks[j].first_seen
        };
        let (mut i, mut j) = (0, 0);
        let (mut gone, mut unpaired) = (Vec::new(), Vec::new());
        while i < before.len() && j < after.len() {
            if same_flow(i, j) {
                (i, j) = (i + 1, j + 1);
            } else if let Some(k) =
                (1..=LOOK_AHEAD).find(|&k| j + k < after.len() && same_flow(i, j + k))
            {
                // New flows before this one.
                unpaired.extend(j..j + k);
                j += k;
            } else if let Some(k) =
                (1..=LOOK_AHEAD).find(|&k| i + k < before.len() && same_flow(i + k, j))
            {
                gone.extend(i..i + k);
                i += k;
            } else {
                gone.push(i);
                unpaired.push(j);
                (i, j) = (i + 1, j + 1);
            }
        }
        gone.extend(i..before.len());
        unpaired.extend(j..after.len());
        if !gone.is_empty() && !unpaired.is_empty() {
            let found: rustc_hash::FxHashSet<(FlowKey, u64)> = unpaired
                .iter()
                .map(|&j| (after[j], later.blocks[j].first_seen))
                .collect();
            gone.retain(|&i| !found.contains(&(before[i], self.blocks[i].first_seen)));
        }
        gone
    }

    /// The clock of the kernel the blocks were read from.
    pub fn clock(&self) -> &KernelClock {
        &self.clock
    }
}

/// The flow map of a loaded datapath.
pub struct FlowMap<'a> {
    map: &'a Map,
    fd: RawFd,
    clock: KernelClock,
}

impl<'a> FlowMap<'a> {
    pub(super) fn new(map: &'a Map, clock: KernelClock) -> Result<Self> {
        let Map::LruHashMap(data) = map else {
            anyhow::bail!("the flow map is not an LRU hash");
        };
        let fd = data.fd().as_fd().as_raw_fd();
        Ok(Self { map, fd, clock })
    }

    /// Capacity the map was created with.
    pub fn capacity(&self) -> Result<u32> {
        let Map::LruHashMap(data) = self.map else {
            unreachable!("checked in new")
        };
        Ok(data.info()?.max_entries())
    }

    /// An empty table for [`FlowMap::read_into`], with room for the whole map from the start
    /// (address space only: pages are touched as flows arrive), so it never moves.
    pub fn empty_table(&self) -> Result<FlowTable> {
        let mut table = FlowTable::new(self.clock);
        let room = self.capacity()? as usize + BATCH_ENTRIES;
        table.keys.reserve_exact(room);
        table.blocks.reserve_exact(room);
        Ok(table)
    }

    /// Every flow in the map: batch lookup, or the key-by-key walk where the kernel refuses
    /// batch operations.
    pub fn read_all(&self) -> Result<FlowTable> {
        let mut table = self.empty_table()?;
        self.read_into(&mut table)?;
        Ok(table)
    }

    /// An empty table, for [`FlowMap::read_buckets`].
    pub fn new_table(&self) -> FlowTable {
        FlowTable::new(self.clock)
    }

    /// [`FlowMap::read_all`] into `table`, whose memory is reused: a poll of a million flows
    /// then neither faults in nor zeroes a quarter gigabyte each time.
    pub fn read_into(&self, table: &mut FlowTable) -> Result<()> {
        table.keys.clear();
        table.blocks.clear();
        table.clock = self.clock;
        match self.lookup_batch(table) {
            Ok(()) => Ok(()),
            Err(err) if batch_unsupported(&err) => {
                *table = self.read_by_iteration()?;
                Ok(())
            }
            Err(err) => Err(err).context("BPF_MAP_LOOKUP_BATCH on the flow map"),
        }
    }

    /// The plain iterator (get_next_key + lookup per entry): the fallback, and the baseline
    /// of the drain benchmark.
    pub fn read_by_iteration(&self) -> Result<FlowTable> {
        let map = HashMap::<_, FlowKey, FlowBlock>::try_from(self.map)?;
        let mut table = FlowTable::new(self.clock);
        for item in map.iter() {
            match item {
                Ok((key, block)) => table.push(key, block),
                // Evicted between get_next_key and lookup: nothing left to read.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(table)
    }

    /// Reads batch after batch straight into the spare capacity of the table's vectors.
    fn lookup_batch(&self, table: &mut FlowTable) -> io::Result<()> {
        self.lookup_buckets(table, 0, u32::MAX, BATCH_ENTRIES)
            .map(|_| ())
    }

    /// Hash buckets of the map: its capacity, rounded up to a power of two.
    pub fn buckets(&self) -> Result<u32> {
        Ok(self.capacity()?.next_power_of_two())
    }

    /// The flows of the buckets from `from` up to at least `to` (whole batches of about
    /// `batch` flows, so a few more may come), into `table` (emptied first); returns the bucket
    /// the next slice starts at, or `None` when the map's last bucket was read. A hash map's
    /// batch token is a bucket index, so a read resumes from any bucket.
    pub fn read_buckets(
        &self,
        table: &mut FlowTable,
        from: u32,
        to: u32,
        batch: usize,
    ) -> Result<Option<u32>> {
        table.keys.clear();
        table.blocks.clear();
        table.clock = self.clock;
        // A batch must hold a whole bucket, which rarely holds more than a few flows.
        self.lookup_buckets(table, from, to, batch.clamp(256, BATCH_ENTRIES))
            .context("BPF_MAP_LOOKUP_BATCH on the flow map")
    }

    /// Batch lookups from bucket `from` until the token passes `to` or the map ends.
    fn lookup_buckets(
        &self,
        table: &mut FlowTable,
        from: u32,
        to: u32,
        batch: usize,
    ) -> io::Result<Option<u32>> {
        let mut token = from;
        loop {
            let filled = table.keys.len();
            table.keys.reserve(batch);
            table.blocks.reserve(batch);
            let mut next_token: u32 = 0;
            let mut attr = zeroed_attr();
            attr.batch = bpf_attr__bindgen_ty_3 {
                in_batch: &token as *const u32 as u64,
                out_batch: &mut next_token as *mut u32 as u64,
                keys: table.keys.spare_capacity_mut().as_mut_ptr() as u64,
                values: table.blocks.spare_capacity_mut().as_mut_ptr() as u64,
                count: batch as u32,
                map_fd: self.fd as u32,
                elem_flags: 0,
                flags: 0,
            };
            let result = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
            // SAFETY: the kernel answers a batch command in the `batch` member.
            let count = (unsafe { attr.batch.count } as usize).min(batch);
            // SAFETY: the kernel wrote `count` whole keys and blocks (plain integers, any bytes
            // are valid) into the reserved capacity, also when it then reports ENOENT.
            unsafe {
                table.keys.set_len(filled + count);
                table.blocks.set_len(filled + count);
            }
            // ENOENT ends the walk, possibly with a last partial batch.
            match result {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(err) => return Err(err),
            }
            token = next_token;
            if token >= to {
                return Ok(Some(token));
            }
        }
    }

    /// Removes `keys` from the map and returns each one's block as it was at removal:
    /// exact final counts, with no packet slipping in between a read and a delete. Keys
    /// already gone (evicted meanwhile) are left out.
    pub fn take(&self, keys: &[FlowKey]) -> Result<FlowTable> {
        let mut table = FlowTable::new(self.clock);
        for key in keys {
            if let Some(block) = self.element(bpf_cmd::BPF_MAP_LOOKUP_AND_DELETE_ELEM, key)? {
                table.push(*key, block);
            }
        }
        Ok(table)
    }

    /// The block of `key` as it is now; `None` when the map no longer holds the flow.
    pub fn lookup(&self, key: &FlowKey) -> Result<Option<FlowBlock>> {
        self.element(bpf_cmd::BPF_MAP_LOOKUP_ELEM, key)
    }

    /// One element command (lookup, or lookup and delete) on `key`.
    fn element(&self, cmd: bpf_cmd, key: &FlowKey) -> Result<Option<FlowBlock>> {
        let mut block = FlowBlock::default();
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_2 = bpf_attr__bindgen_ty_2 {
            map_fd: self.fd as u32,
            key: key as *const FlowKey as u64,
            __bindgen_anon_1: bpf_attr__bindgen_ty_2__bindgen_ty_1 {
                value: &mut block as *mut FlowBlock as u64,
            },
            flags: 0,
        };
        match bpf(cmd, &mut attr) {
            Ok(()) => Ok(Some(block)),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err).with_context(|| format!("{cmd:?} on the flow map")),
        }
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: `union bpf_attr` is plain integers; all zeroes is its "nothing set".
    unsafe { std::mem::zeroed() }
}

fn batch_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL) | Some(ENOTSUPP) | Some(libc::EOPNOTSUPP)
    )
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<()> {
    // SAFETY: `attr` holds the member of `union bpf_attr` that `cmd` reads, and every pointer
    // in it points to a live buffer of the size the kernel will use.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr as *mut libc::c_void,
            size_of::<bpf_attr>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(id: u16, first_seen: u64) -> (FlowKey, FlowBlock) {
        let key = FlowKey {
            port_lo: id,
            ..FlowKey::default()
        };
        let block = FlowBlock {
            first_seen,
            ..FlowBlock::default()
        };
        (key, block)
    }

    fn table(ids: &[u16]) -> FlowTable {
        let flows: Vec<_> = ids.iter().map(|&id| flow(id, 1)).collect();
        FlowTable::from_blocks(KernelClock::test_clock(), &flows)
    }

    #[test]
    fn a_later_read_lacks_exactly_the_flows_that_went() {
        let before = table(&[1, 2, 3, 4, 5, 6, 7, 8]);
        // 2 and 6 went, 10 and 11 came, in the kernel's bucket order.
        let after = table(&[1, 10, 3, 4, 5, 11, 7, 8]);
        assert_eq!(before.missing_from(&after), [1, 5]);
        // Long runs of new and of gone flows, longer than the look-ahead.
        let many_new: Vec<u16> = (100..140).chain([4, 5]).collect();
        assert_eq!(
            table(&[1, 2, 3, 4, 5]).missing_from(&table(&many_new)),
            [0, 1, 2]
        );
        let before: Vec<u16> = (100..140).chain([4, 5]).collect();
        let gone: Vec<usize> = (0..40).collect();
        assert_eq!(table(&before).missing_from(&table(&[4, 5, 6])), gone);
        // Shuffled (the order is not kept): still exact.
        assert_eq!(table(&[1, 2, 3, 4]).missing_from(&table(&[4, 3, 1])), [1]);
        assert!(table(&[]).missing_from(&table(&[1])).is_empty());
        assert_eq!(table(&[1]).missing_from(&table(&[])), [0]);
    }

    #[test]
    fn a_flow_evicted_and_made_anew_under_its_key_went() {
        let clock = KernelClock::test_clock();
        let before = FlowTable::from_blocks(clock, &[flow(1, 1), flow(2, 1)]);
        let after = FlowTable::from_blocks(clock, &[flow(1, 1), flow(2, 9)]);
        assert_eq!(before.missing_from(&after), [1]);
    }
}
