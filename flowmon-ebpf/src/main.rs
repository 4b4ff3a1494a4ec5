//! flowmon's kernel half: an XDP program and a TC (tcx) program share one flow table. TC counts
//! what a host sends, and what it receives where XDP would be dear (veth, drivers without native
//! XDP); XDP counts what it receives elsewhere. Both always pass the packet on unchanged.
#![no_std]
#![no_main]
// Atomic adds and ORs: `AtomicU64` has no read-modify-write operations on the BPF target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod flow;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use flowmon_common::{ClockSample, DatapathCounters};

use crate::parse::{Packet, ParseError, parse, parse_common, vlan};

/// Enough of a frame for any header chain the parser follows.
const MAX_HEADERS_LEN: u32 = 256;

#[xdp]
pub fn flowmon_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let bytes = (end - start) as u64;
    if let Some(counters) = flow::counters() {
        counters.packets += 1;
        counters.bytes += bytes;
        let mut packet = Packet::new();
        if parse_common(start, end, &mut packet) {
            flow::account_ipv4(
                &ctx,
                counters,
                &packet,
                || ctx.ingress_ifindex() as u32,
                bytes,
            );
            return xdp_action::XDP_PASS;
        }
        match parse(start, end, 0, &mut packet) {
            Ok(()) => flow::account(
                &ctx,
                counters,
                &mut packet,
                || ctx.ingress_ifindex() as u32,
                1,
                bytes,
            ),
            Err(err) => count_failure(counters, err),
        }
    }
    xdp_action::XDP_PASS
}

/// The TC program, attached to egress (what the host sends, so the responder side of the host's
/// own connections is counted too) and to ingress where XDP would be dear. At either hook the
/// frame starts at its Ethernet header. A segmentation-offload or GRO super-packet counts as the
/// segments that cross the wire; the outer VLAN tag, which the stack keeps out of band (always at
/// ingress, at egress with VLAN offload), as the 4 bytes it is on the wire.
#[classifier]
pub fn flowmon_tc(ctx: TcContext) -> i32 {
    // SAFETY: the kernel's socket buffer of this program run, valid for all of it; the
    // verifier checks each field read against the context's layout.
    let skb = unsafe { &*ctx.skb.skb };
    let segments = (skb.gso_segs as u64).max(1);
    let (outer_vlan, tag_bytes) = if skb.vlan_present != 0 {
        (skb.vlan_tci as u16 & vlan::VID_MASK, 4)
    } else {
        (0, 0)
    };
    if let Some(counters) = flow::counters() {
        let (start, end) = (ctx.data(), ctx.data_end());
        let mut packet = Packet::new();
        // A plain IPv4 TCP or UDP frame, whole (no segmentation, no tag kept out of band): the
        // XDP program's fast path.
        if segments == 1 && tag_bytes == 0 && parse_common(start, end, &mut packet) {
            let bytes = skb.len as u64;
            counters.packets += 1;
            counters.bytes += bytes;
            flow::account_ipv4(&ctx, counters, &packet, || skb.ifindex, bytes);
            return TC_ACT_UNSPEC;
        }
        let mut parsed = parse(start, end, outer_vlan, &mut packet);
        // Headers beyond the linear area (rare): pull them in and read again. Pulling costs a
        // copy, so only a frame that needs it pays.
        if matches!(parsed, Err(ParseError::Truncated))
            && ((end - start) as u32) < ctx.len()
            && ctx.pull_data(ctx.len().min(MAX_HEADERS_LEN)).is_ok()
        {
            packet = Packet::new();
            parsed = parse(ctx.data(), ctx.data_end(), outer_vlan, &mut packet);
        }
        let first_bytes = skb.len as u64 + tag_bytes;
        let (packets, bytes) = match parsed {
            Ok(()) if segments > 1 => (
                segments,
                first_bytes + (segments - 1) * (packet.headers_len as u64 + tag_bytes),
            ),
            _ => (1, first_bytes),
        };
        counters.packets += packets;
        counters.bytes += bytes;
        match parsed {
            Ok(()) => flow::account(&ctx, counters, &mut packet, || skb.ifindex, packets, bytes),
            Err(err) => count_failure(counters, err),
        }
    }
    TC_ACT_UNSPEC
}

/// Does nothing but pass the packet: the reference point of `cargo xtask bench datapath`.
/// Never attached; loaded only by the benchmark.
#[xdp]
pub fn flowmon_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// [`flowmon_baseline`] at TC: the reference point of the egress figures.
#[classifier]
pub fn flowmon_tc_baseline(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Writes the kernel's clocks at one instant over the start of the frame it is run on: the
/// agent runs it under BPF_PROG_TEST_RUN to convert jiffies into time. Never attached.
#[xdp]
pub fn flowmon_clock(ctx: XdpContext) -> u32 {
    let at = ctx.data();
    if at + core::mem::size_of::<ClockSample>() <= ctx.data_end() {
        // SAFETY: helpers without arguments; the write is inside the checked frame.
        unsafe {
            let sample = ClockSample {
                jiffies: bpf_jiffies64(),
                coarse_ns: bpf_ktime_get_coarse_ns(),
            };
            core::ptr::write_unaligned(at as *mut ClockSample, sample);
        }
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count_failure(counters: &mut DatapathCounters, err: ParseError) {
    match err {
        ParseError::Truncated => counters.truncated += 1,
        ParseError::Unsupported => counters.unsupported += 1,
        ParseError::NonIp => counters.non_ip += 1,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
