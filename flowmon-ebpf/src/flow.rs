//! The flow table: the direction-free key of a packet, the update of the flow's control block
//! for it, and the events that tell the agent when a flow needs its attention soon (closing,
//! active in a new interim interval), so that it never has to read the whole table at once.

use core::{
    cmp::Ordering,
    intrinsics::{AtomicOrdering::Relaxed, atomic_or, atomic_xadd},
    ptr::write_volatile,
};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_jiffies64,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use aya_log_ebpf::warn;
use flowmon_common::{
    Address, CREATE_ERROR_SLOTS, DEFAULT_MAX_FLOWS, DatapathCounters, EVENTS_BYTES, FlowBlock,
    FlowEvent, FlowKey, FlowSide, FragmentKey, FragmentPorts, KernelSettings,
    MAX_FRAGMENTED_DATAGRAMS, SIDE_HI, SIDE_LO, event, key_kind, tcp_flags,
};

use crate::parse::{Fragment, Packet, ipv4_mapped, source_mac};

const EEXIST: i32 = 17;

/// One control block per flow, shared by all CPUs, with the common LRU. The agent sets the
/// size at load time.
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowBlock> = LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

/// Where a new flow's block is put together before it is inserted: the block is too large for
/// the BPF stack beside everything else, and its gaps stay zero from the map's creation on.
#[map(name = "NEW_BLOCK")]
static NEW_BLOCK: PerCpuArray<FlowBlock> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<DatapathCounters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CREATE_ERRORS")]
static CREATE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CREATE_ERROR_SLOTS, 0);

/// Ports of fragmented datagrams, so that later fragments land on their datagram's flow.
#[map(name = "FRAGMENTS")]
static FRAGMENTS: LruHashMap<FragmentKey, FragmentPorts> =
    LruHashMap::with_max_entries(MAX_FRAGMENTED_DATAGRAMS, 0);

/// What the agent needs to hear about flows (see [`flowmon_common::event`]).
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "SETTINGS")]
static SETTINGS: Array<KernelSettings> = Array::with_max_entries(1, 0);

/// This CPU's counters. The slot always exists in a per-CPU array of one entry.
#[inline(always)]
pub fn counters() -> Option<&'static mut DatapathCounters> {
    // SAFETY: a per-CPU slot is only touched by programs on this CPU, one at a time.
    COUNTERS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Accounts `packets` packets of `bytes` layer-2 bytes that `packet` stands for.
#[inline(always)]
pub fn account(
    ctx: &impl EbpfContext,
    counters: &mut DatapathCounters,
    packet: &mut Packet,
    ifindex: impl FnOnce() -> u32,
    packets: u64,
    bytes: u64,
) {
    resolve_fragment(ctx, counters, packet);
    let (key, sender) = flow_key(packet);
    count(ctx, counters, &key, sender, packet, ifindex, packets, bytes);
}

/// [`account`] for a packet of [`crate::parse::parse_common`]: an IPv4 key is ordered on the
/// addresses' last words alone, and this path gets a copy of [`count`] of its own, so that the
/// compiler keeps the mapped prefix constant instead of merging it with the general path's.
#[inline(always)]
pub fn account_ipv4(
    ctx: &impl EbpfContext,
    counters: &mut DatapathCounters,
    packet: &Packet,
    ifindex: impl FnOnce() -> u32,
    bytes: u64,
) {
    let (src, dst) = (packet.src[3], packet.dst[3]);
    let sender_is_lo = match u32::from_be(src).cmp(&u32::from_be(dst)) {
        Ordering::Equal => packet.src_port <= packet.dst_port,
        order => order == Ordering::Less,
    };
    let (lo, hi) = if sender_is_lo { (src, dst) } else { (dst, src) };
    let (key, sender) = ordered_key(packet, ipv4_mapped(lo), ipv4_mapped(hi), sender_is_lo);
    count(ctx, counters, &key, sender, packet, ifindex, 1, bytes);
}

/// Adds a packet of `sender` to the block of `key`, creating it when the flow is new. The
/// interface is only read then (at XDP it is three dependent loads).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn count(
    ctx: &impl EbpfContext,
    counters: &mut DatapathCounters,
    key: &FlowKey,
    sender: usize,
    packet: &Packet,
    ifindex: impl FnOnce() -> u32,
    packets: u64,
    bytes: u64,
) {
    // SAFETY: a helper without arguments; the verifier inlines it into one load.
    let now = unsafe { bpf_jiffies64() };
    let block = match FLOWS.get_ptr_mut(key) {
        Some(block) => block,
        None => {
            let Some(block) = NEW_BLOCK.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: this CPU's slot, used by one program run at a time.
            let block = unsafe { &mut *block };
            block.first_seen = now;
            block.ifindex = ifindex();
            block.first_sender = sender as u8;
            // A packet in any later tick is news: the flow is more than its first packet.
            block.active_from = now + 1;
            clear(&mut block.lo);
            clear(&mut block.hi);
            let news = update(block, packet, sender, packets, bytes, now);
            match FLOWS.insert(key, block, BPF_NOEXIST as u64) {
                Ok(()) => {
                    counters.flows_created += 1;
                    // The agent finds new flows by reading the map in slices; one whose first
                    // packet closes it cannot wait for that.
                    if news != 0 {
                        tell(counters, key, now, event::CREATED | news);
                    }
                    return;
                }
                // Another CPU created it in the meantime: add to the block it made.
                Err(err) if -err == EEXIST => match FLOWS.get_ptr_mut(key) {
                    Some(block) => block,
                    None => return,
                },
                Err(err) => {
                    counters.create_failures += 1;
                    let errno = (-err) as u32;
                    let slot = errno.min(CREATE_ERROR_SLOTS - 1);
                    if let Some(errors) = CREATE_ERRORS.get_ptr_mut(slot) {
                        // SAFETY: this CPU's slot of a per-CPU array, one program run at a time.
                        unsafe { *errors += 1 };
                    }
                    warn!(ctx, "flow map refused a new flow: errno {}", errno);
                    return;
                }
            }
        }
    };
    // SAFETY: a live entry of the map; every write below is atomic, idempotent or benign.
    let news = update(unsafe { &mut *block }, packet, sender, packets, bytes, now);
    if news != 0 {
        tell(counters, key, now, news);
    }
}

/// Bytes an event takes in the ring: the event and the ring's 8-byte header, 8-aligned.
const EVENT_RECORD_BYTES: u64 = (core::mem::size_of::<FlowEvent>() as u64 + 8 + 7) & !7;

/// Puts an event for the agent in the ring. The agent drains it at every poll; the event that
/// fills the ring past half wakes it at once (a wakeup is an interrupt's worth of work: one
/// per event would cost more than the event). An event without room is counted, and the agent
/// then reads the whole flow map instead.
#[inline(always)]
fn tell(counters: &mut DatapathCounters, key: &FlowKey, at: u64, what: u8) {
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            entry.write(FlowEvent {
                key: *key,
                at,
                what,
                _pad: [0; 7],
            });
            // What the ring holds, this event included.
            let held = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
            let half = EVENTS_BYTES as u64 / 2;
            let wakeup = if held >= half && held < half + EVENT_RECORD_BYTES {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(wakeup as u64);
        }
        None => counters.events_lost += 1,
    }
}

/// The first jiffy of the interim interval after the one `now` falls in, counted from the
/// flow's first packet.
#[inline(always)]
fn next_interval(first_seen: u64, now: u64) -> u64 {
    let interval = SETTINGS
        .get(0)
        .map_or(0, |settings| settings.interim_jiffies);
    if interval == 0 {
        // Not told yet: every tick is news.
        return now + 1;
    }
    first_seen + ((now - first_seen) / interval + 1) * interval
}

/// Zeroes a side field by field, with stores the compiler may not merge: merged, they become a
/// call to a byte-at-a-time `memset`, a loop of a hundred instructions.
#[inline(always)]
fn clear(side: &mut FlowSide) {
    // SAFETY: writes to fields of a live, exclusively borrowed side.
    unsafe {
        write_volatile(&mut side.packets, 0);
        write_volatile(&mut side.bytes, 0);
        write_volatile(&mut side.last_seen, 0);
        write_volatile(&mut side.marks, 0);
        write_volatile(&mut side.mac, [0; 6]);
        write_volatile(&mut side.ttl, 0);
    }
}

/// Later fragments take the ports their first fragment recorded; the first records them.
#[inline(always)]
fn resolve_fragment(ctx: &impl EbpfContext, counters: &mut DatapathCounters, packet: &mut Packet) {
    if packet.fragment == Fragment::Whole {
        return;
    }
    let key = FragmentKey {
        src: packet.src,
        dst: packet.dst,
        id: packet.fragment_id,
        vlan: packet.vlan,
        protocol: packet.protocol,
        _pad: 0,
    };
    if packet.fragment == Fragment::First {
        let ports = FragmentPorts {
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            kind: packet.kind,
            _pad: 0,
        };
        // A full fragment map evicts its oldest datagram; a refusal means something else.
        if let Err(err) = FRAGMENTS.insert(key, ports, 0) {
            warn!(ctx, "fragment map refused a datagram: errno {}", -err);
        }
        return;
    }
    counters.fragments += 1;
    // SAFETY: a copy is taken at once; a concurrent eviction at worst yields stale ports.
    match unsafe { FRAGMENTS.get(key) } {
        Some(ports) => {
            packet.src_port = ports.src_port;
            packet.dst_port = ports.dst_port;
            packet.kind = ports.kind;
        }
        None => counters.fragments_unmatched += 1,
    }
}

/// Whether `a` sorts before `b` as address bytes, `None` when they are equal. Most words are
/// equal (the IPv4-mapped prefix), so only the first differing one is swapped to host order.
#[inline(always)]
fn addr_less(a: &Address, b: &Address) -> Option<bool> {
    for i in 0..4 {
        if a[i] != b[i] {
            return Some(u32::from_be(a[i]) < u32::from_be(b[i]));
        }
    }
    None
}

/// The key shared by both directions and the side (`SIDE_LO`/`SIDE_HI`) that sent `packet`.
#[inline(always)]
fn flow_key(packet: &Packet) -> (FlowKey, usize) {
    let sender_is_lo =
        addr_less(&packet.src, &packet.dst).unwrap_or(packet.src_port <= packet.dst_port);
    let (lo, hi) = if sender_is_lo {
        (packet.src, packet.dst)
    } else {
        (packet.dst, packet.src)
    };
    ordered_key(packet, lo, hi, sender_is_lo)
}

#[inline(always)]
fn ordered_key(
    packet: &Packet,
    addr_lo: Address,
    addr_hi: Address,
    sender_is_lo: bool,
) -> (FlowKey, usize) {
    // ICMP type and code are not a port pair: they keep their places.
    let (port_lo, port_hi) = if sender_is_lo || packet.kind == key_kind::ICMP_MESSAGE {
        (packet.src_port, packet.dst_port)
    } else {
        (packet.dst_port, packet.src_port)
    };
    let key = FlowKey {
        addr_lo,
        addr_hi,
        port_lo,
        port_hi,
        vlan: packet.vlan,
        protocol: packet.protocol,
        kind: packet.kind,
    };
    (key, if sender_is_lo { SIDE_LO } else { SIDE_HI })
}

/// Updates the sender's side of `block`, picked by a constant field offset in each branch, and
/// returns what the agent must hear of it ([`event`] bits, mostly none).
#[inline(always)]
fn update(
    block: &mut FlowBlock,
    packet: &Packet,
    sender: usize,
    packets: u64,
    bytes: u64,
    now: u64,
) -> u8 {
    let side = if sender == SIDE_LO {
        &mut block.lo
    } else {
        &mut block.hi
    };
    let mut news = update_side(side, packet, packets, bytes, now);
    // Beside the key, which the lookup has just read: one load and one compare a packet.
    if now >= block.active_from {
        block.active_from = next_interval(block.first_seen, now);
        news |= event::ACTIVE;
    }
    news
}

/// Counts with atomic adds, so two CPUs updating one side never lose a packet; the marks only
/// ever gain bits, so they are read first and ORed in (atomically) only when a bit is new.
/// The first packet's TTL and MAC, and the latest time, are plain stores: two CPUs racing there
/// write values one tick or one packet apart. Returns [`event::CLOSING`] for a side's first FIN
/// or RST.
#[inline(always)]
fn update_side(side: &mut FlowSide, packet: &Packet, packets: u64, bytes: u64, now: u64) -> u8 {
    if side.packets == 0 {
        side.ttl = packet.ttl;
        side.mac = source_mac(packet.frame_start, packet.frame_end);
    }
    // SAFETY: aligned u64 fields of a block that lives as long as this program run.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&mut side.packets, packets);
        atomic_xadd::<u64, u64, { Relaxed }>(&mut side.bytes, bytes);
    }
    side.last_seen = now;
    let new_marks = packet.marks & !side.marks;
    if new_marks == 0 {
        return 0;
    }
    // SAFETY: as above.
    unsafe { atomic_or::<u64, u64, { Relaxed }>(&mut side.marks, packet.marks) };
    if new_marks & (tcp_flags::FIN | tcp_flags::RST) as u64 != 0 {
        event::CLOSING
    } else {
        0
    }
}
