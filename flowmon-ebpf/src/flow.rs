//! The flow table: the direction-free key of a packet, and the update of this CPU's control
//! block for it.

use core::cmp::Ordering;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use flowmon_common::{
    Address, CREATE_ERROR_SLOTS, DEFAULT_MAX_FLOWS, DatapathCounters, FlowBlock, FlowKey,
    FragmentKey, FragmentPorts, MAX_FRAGMENTED_DATAGRAMS, SIDE_HI, SIDE_LO, key_kind, orientation,
};

use crate::parse::{Fragment, Packet, source_mac};

const EEXIST: i32 = 17;

/// One control block per flow and CPU, with the common LRU (not `BPF_F_NO_COMMON_LRU`, which
/// would split the capacity per CPU). The agent sets the size at load time.
#[map(name = "FLOWS")]
static FLOWS: LruPerCpuHashMap<FlowKey, FlowBlock> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<DatapathCounters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CREATE_ERRORS")]
static CREATE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CREATE_ERROR_SLOTS, 0);

/// Ports of fragmented datagrams, so that later fragments land on their datagram's flow.
#[map(name = "FRAGMENTS")]
static FRAGMENTS: LruHashMap<FragmentKey, FragmentPorts> =
    LruHashMap::with_max_entries(MAX_FRAGMENTED_DATAGRAMS, 0);

/// This CPU's counters. The slot always exists in a per-CPU array of one entry.
#[inline(always)]
pub fn counters() -> Option<&'static mut DatapathCounters> {
    // SAFETY: a per-CPU slot is only touched by programs on this CPU, one at a time.
    COUNTERS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Accounts `packets` packets of `bytes` layer-2 bytes that `packet` stands for.
#[inline(always)]
pub fn account(
    counters: &mut DatapathCounters,
    packet: &mut Packet,
    ifindex: u32,
    packets: u64,
    bytes: u64,
) {
    resolve_fragment(counters, packet);
    let (key, sender) = flow_key(packet);
    // The coarse clock (one tick of resolution) costs half of bpf_ktime_get_ns per packet.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let block = match FLOWS.get_ptr_mut(key) {
        Some(block) => block,
        None => {
            let mut block = FlowBlock::default();
            update(&mut block, packet, sender, ifindex, packets, bytes, now);
            match FLOWS.insert(key, block, BPF_NOEXIST as u64) {
                Ok(()) => {
                    counters.flows_created += 1;
                    return;
                }
                // Another CPU created it in the meantime: add to the block it made for us.
                Err(err) if -err == EEXIST => match FLOWS.get_ptr_mut(key) {
                    Some(block) => block,
                    None => return,
                },
                Err(err) => {
                    counters.create_failures += 1;
                    let slot = ((-err) as u32).min(CREATE_ERROR_SLOTS - 1);
                    if let Some(errors) = CREATE_ERRORS.get_ptr_mut(slot) {
                        unsafe { *errors += 1 };
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's block of a live entry; see `counters` for exclusivity.
    update(
        unsafe { &mut *block },
        packet,
        sender,
        ifindex,
        packets,
        bytes,
        now,
    );
}

/// Later fragments take the ports their first fragment recorded; the first records them.
#[inline(always)]
fn resolve_fragment(counters: &mut DatapathCounters, packet: &mut Packet) {
    let id = match packet.fragment {
        Fragment::Whole => return,
        Fragment::First { id } | Fragment::Later { id } => id,
    };
    let key = FragmentKey {
        src: packet.src,
        dst: packet.dst,
        id,
        vlan: packet.vlan,
        protocol: packet.protocol,
        _pad: 0,
    };
    if let Fragment::First { .. } = packet.fragment {
        let ports = FragmentPorts {
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            kind: packet.kind,
            _pad: 0,
        };
        // A full fragment map evicts its oldest datagram; nothing to count here.
        let _ = FRAGMENTS.insert(key, ports, 0);
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

/// Orders addresses as their bytes compare.
#[inline(always)]
fn compare_addr(a: &Address, b: &Address) -> Ordering {
    let word = |i: usize| u32::from_be(a[i]).cmp(&u32::from_be(b[i]));
    word(0).then(word(1)).then(word(2)).then(word(3))
}

/// The key shared by both directions and the side (`SIDE_LO`/`SIDE_HI`) that sent `packet`.
#[inline(always)]
fn flow_key(packet: &Packet) -> (FlowKey, usize) {
    let sender_is_lo = match compare_addr(&packet.src, &packet.dst) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => packet.src_port <= packet.dst_port,
    };
    let (addr_lo, addr_hi, mut port_lo, mut port_hi) = if sender_is_lo {
        (packet.src, packet.dst, packet.src_port, packet.dst_port)
    } else {
        (packet.dst, packet.src, packet.dst_port, packet.src_port)
    };
    if packet.kind == key_kind::ICMP_MESSAGE {
        // Type and code are not a port pair: they keep their places.
        (port_lo, port_hi) = (packet.src_port, packet.dst_port);
    }
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

/// A block update is a per-side update written twice, once per constant side: an index into
/// the block that the verifier can follow (a variable one becomes pointer arithmetic it refuses).
#[inline(always)]
fn update(
    block: &mut FlowBlock,
    packet: &Packet,
    sender: usize,
    ifindex: u32,
    packets: u64,
    bytes: u64,
    now: u64,
) {
    if sender == SIDE_LO {
        update_from::<SIDE_LO>(block, packet, ifindex, packets, bytes, now);
    } else {
        update_from::<SIDE_HI>(block, packet, ifindex, packets, bytes, now);
    }
}

#[inline(always)]
fn update_from<const SENDER: usize>(
    block: &mut FlowBlock,
    packet: &Packet,
    ifindex: u32,
    packets: u64,
    bytes: u64,
    now: u64,
) {
    let strength = block.orientation & orientation::STRENGTH;
    if strength == 0 || packet.evidence > strength {
        let client_is_hi = (SENDER == SIDE_HI) == packet.sender_is_client;
        block.orientation = orientation::encode(client_is_hi, packet.evidence);
    }
    if block.first_seen_ns == 0 {
        // This CPU's first packet of the flow (another CPU may have created the entry).
        block.first_seen_ns = now;
        block.ifindex = ifindex;
    }
    block.last_seen_ns = now;
    if block.packets[SENDER] == 0 {
        block.ttl[SENDER] = packet.ttl;
        block.mac[SENDER] = source_mac(packet.frame_start, packet.frame_end);
    }
    block.packets[SENDER] += packets;
    block.bytes[SENDER] += bytes;
    block.tcp_flags[SENDER] |= packet.tcp_flags;
}
