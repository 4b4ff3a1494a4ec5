//! The kernel programs under BPF_PROG_TEST_RUN with crafted frames: every parse path, every
//! truncation point, both directions on one key, orientation, TCP state, echo pairing and
//! fragments, each received through XDP and through TC ingress. Each test loads its own copy of
//! the programs, so the counts are its own.

use flowmon::flow::{Flow, wall_clock::monotonic_ns};
use flowmon_common::TcpState;
use flowmon_tests::{
    frames::{ACK, CLIENT_MAC, FIN, Frame, Ipv6Ext, PSH, RST, SERVER_MAC, SYN},
    kernel::{Harness, Ingress},
};

/// A test of what a received frame counts, once through XDP and once through TC ingress.
macro_rules! through_each_ingress {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            use super::*;
            #[test]
            fn xdp() {
                super::$name(Ingress::Xdp);
            }
            #[test]
            fn tc() {
                super::$name(Ingress::Tc);
            }
        })*
    };
}

through_each_ingress!(
    tcp_handshake_data_and_teardown_on_one_key,
    rst_ends_the_connection,
    udp_both_directions_share_a_key_and_the_first_sender_is_the_client,
    mid_stream_pickup_trusts_the_well_known_port_then_the_first_sender,
    a_syn_ack_seen_first_names_its_receiver_the_client,
    echo_request_and_reply_pair_on_the_identifier,
    a_reply_seen_first_still_names_the_requester_the_client,
    other_icmp_is_keyed_on_type_and_code,
    ipv4_options_and_ipv6_extension_headers_are_skipped,
    vlan_tags_separate_flows_and_the_inner_tag_is_the_key,
    any_other_protocol_is_a_flow_of_its_addresses,
    later_fragments_count_to_their_datagram_flow,
    non_ip_and_odd_ip_headers_pass_and_are_counted,
);

fn assert_side(flow: &Flow, client: (u64, u64), server: (u64, u64)) {
    assert_eq!(
        (flow.client.packets, flow.client.bytes),
        client,
        "client packets/bytes"
    );
    assert_eq!(
        (flow.server.packets, flow.server.bytes),
        server,
        "server packets/bytes"
    );
}

fn tcp_handshake_data_and_teardown_on_one_key(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    // The client has the higher address, so orientation is not the key's order.
    let c = |flags| {
        Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, flags)
            .macs(CLIENT_MAC, SERVER_MAC)
            .ttl(64)
    };
    let s = |flags| {
        Frame::tcp("10.0.0.1", 80, "10.0.0.2", 40000, flags)
            .macs(SERVER_MAC, CLIENT_MAC)
            .ttl(128)
    };
    let steps: [(Frame, TcpState); 7] = [
        (c(SYN), TcpState::Syn),
        (s(SYN | ACK), TcpState::SynAck),
        (c(ACK), TcpState::Established),
        (c(ACK | PSH).payload(100), TcpState::Established),
        (s(ACK | PSH).payload(1000), TcpState::Established),
        (c(FIN | ACK), TcpState::FinClient),
        (s(FIN | ACK), TcpState::Closed),
    ];
    let (mut client, mut server) = ((0, 0), (0, 0));
    for (frame, state) in steps {
        let bytes = frame.build();
        if bytes[6..12] == CLIENT_MAC {
            client = (client.0 + 1, client.1 + bytes.len() as u64);
        } else {
            server = (server.0 + 1, server.1 + bytes.len() as u64);
        }
        h.receive(&bytes);
        let flow = h.only_flow();
        assert_eq!(flow.tcp_state(), state);
        assert_side(&flow, client, server);
    }
    let flow = h.only_flow();
    assert_eq!(client, (4, 54 * 3 + 154));
    assert_eq!(server, (3, 54 * 2 + 1054));
    assert_eq!(flow.client.ip.to_string(), "10.0.0.2");
    assert_eq!((flow.client.port, flow.server.port), (40000, 80));
    assert_eq!(flow.client.tcp_flags, SYN | ACK | PSH | FIN);
    assert_eq!(flow.server.tcp_flags, SYN | ACK | PSH | FIN);
    assert_eq!((flow.client.ttl, flow.server.ttl), (64, 128));
    assert_eq!((flow.client.mac, flow.server.mac), (CLIENT_MAC, SERVER_MAC));
    assert_eq!(flow.protocol_name(), "tcp");
    let counters = h.counters();
    assert_eq!((counters.packets, counters.flows_created), (7, 1));
    assert_eq!(counters.bytes, client.1 + server.1);
}

fn rst_ends_the_connection(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    h.receive(&Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 22, SYN).build());
    h.receive(&Frame::tcp("10.0.0.1", 22, "10.0.0.2", 40000, RST | ACK).build());
    let flow = h.only_flow();
    assert_eq!(flow.tcp_state(), TcpState::Rst);
    assert!(flow.tcp_state().is_closing());
}

fn udp_both_directions_share_a_key_and_the_first_sender_is_the_client(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    let query = Frame::udp("192.0.2.10", 5353, "192.0.2.1", 53)
        .payload(30)
        .build();
    let answer = Frame::udp("192.0.2.1", 53, "192.0.2.10", 5353)
        .payload(200)
        .build();
    h.receive(&query);
    h.receive(&answer);
    h.receive(&answer);
    let flow = h.only_flow();
    assert_eq!(flow.client.ip.to_string(), "192.0.2.10");
    assert_eq!((flow.client.port, flow.server.port), (5353, 53));
    assert_side(&flow, (1, 14 + 20 + 8 + 30), (2, 2 * (14 + 20 + 8 + 200)));
    assert_eq!(flow.protocol_name(), "udp");
    assert_eq!(flow.tcp_state(), TcpState::None);
}

fn mid_stream_pickup_trusts_the_well_known_port_then_the_first_sender(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    // The first packet seen comes from the server's port 443.
    h.receive(
        &Frame::tcp("10.0.0.1", 443, "10.0.0.9", 51000, ACK | PSH)
            .payload(10)
            .build(),
    );
    h.receive(&Frame::tcp("10.0.0.9", 51000, "10.0.0.1", 443, ACK).build());
    let flow = h.only_flow();
    assert_eq!(
        (flow.client.ip.to_string(), flow.client.port),
        ("10.0.0.9".into(), 51000)
    );
    assert_side(&flow, (1, 54), (1, 64));

    // Both ports high: nothing to go by but who spoke first.
    let h = Harness::receiving(ingress);
    h.receive(&Frame::tcp("10.0.0.1", 8443, "10.0.0.9", 51000, ACK).build());
    let flow = h.only_flow();
    assert_eq!(
        (flow.client.ip.to_string(), flow.client.port),
        ("10.0.0.1".into(), 8443)
    );
}

fn a_syn_ack_seen_first_names_its_receiver_the_client(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    h.receive(&Frame::tcp("10.0.0.1", 80, "10.0.0.9", 40000, SYN | ACK).build());
    let flow = h.only_flow();
    assert_eq!(flow.client.ip.to_string(), "10.0.0.9");
    assert_side(&flow, (0, 0), (1, 54));
    assert_eq!(flow.tcp_state(), TcpState::SynAck);
}

fn echo_request_and_reply_pair_on_the_identifier(ingress: Ingress) {
    for (client, server, ports) in [
        ("10.1.1.9", "10.1.1.1", (8, 0)),
        ("2001:db8::9", "2001:db8::1", (128, 129)),
    ] {
        let h = Harness::receiving(ingress);
        h.receive(&Frame::echo_request(client, server, 77).payload(56).build());
        h.receive(&Frame::echo_reply(server, client, 77).payload(56).build());
        h.receive(&Frame::echo_request(client, server, 78).payload(56).build());
        let flows = h.flows();
        assert_eq!(flows.len(), 2, "one flow per echo identifier");
        let flow = flows.iter().find(|f| f.icmp_id() == Some(77)).unwrap();
        let frame_len = Frame::echo_request(client, server, 77)
            .payload(56)
            .build()
            .len() as u64;
        assert_eq!(flow.client.ip.to_string(), client);
        assert_eq!((flow.client.port, flow.server.port), ports);
        assert_side(flow, (1, frame_len), (1, frame_len));
    }
}

fn a_reply_seen_first_still_names_the_requester_the_client(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    h.receive(&Frame::echo_reply("10.1.1.1", "10.1.1.9", 5).build());
    let flow = h.only_flow();
    assert_eq!(flow.client.ip.to_string(), "10.1.1.9");
}

fn other_icmp_is_keyed_on_type_and_code(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    // Destination unreachable (3), port unreachable (3), twice; then host unreachable (1).
    h.receive(&Frame::icmp("10.1.1.1", "10.1.1.9", 3, 3, 0).build());
    h.receive(&Frame::icmp("10.1.1.1", "10.1.1.9", 3, 3, 0).build());
    h.receive(&Frame::icmp("10.1.1.1", "10.1.1.9", 3, 1, 0).build());
    let mut flows = h.flows();
    flows.sort_by_key(|f| f.server.port);
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].client.port, flows[0].server.port), (3, 1));
    assert_eq!((flows[1].client.port, flows[1].server.port), (3, 3));
    assert_eq!(flows[1].client.packets, 2);
    assert_eq!(flows[1].client.ip.to_string(), "10.1.1.1");
    assert_eq!(flows[1].icmp_id(), None);
}

fn ipv4_options_and_ipv6_extension_headers_are_skipped(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    // Record-route option, 8 bytes.
    let v4 = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, SYN)
        .ipv4_options(&[7, 7, 4, 0, 0, 0, 0, 1])
        .build();
    h.receive(&v4);
    let v6 = Frame::tcp("2001:db8::2", 40001, "2001:db8::1", 443, SYN)
        .ipv6_ext(Ipv6Ext::HopByHop)
        .ipv6_ext(Ipv6Ext::Routing)
        .ipv6_ext(Ipv6Ext::DestinationOptions)
        .build();
    h.receive(&v6);
    let mut flows = h.flows();
    flows.sort_by_key(|f| f.server.port);
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].client.port, flows[0].server.port), (40000, 80));
    assert_eq!(flows[0].client.bytes, v4.len() as u64);
    assert_eq!((flows[1].client.port, flows[1].server.port), (40001, 443));
    assert_eq!(flows[1].client.ip.to_string(), "2001:db8::2");
    assert_eq!(flows[1].client.bytes, v6.len() as u64);
    assert_eq!(flows[1].client.bytes, 14 + 40 + 24 + 20);
}

fn vlan_tags_separate_flows_and_the_inner_tag_is_the_key(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    let base = || Frame::udp("10.0.0.2", 1000, "10.0.0.1", 2000);
    h.receive(&base().build());
    h.receive(&base().vlan(10).build());
    h.receive(&base().vlan(10).build());
    let qinq = base().vlan(100).vlan(20).build();
    h.receive(&qinq);
    let mut flows = h.flows();
    flows.sort_by_key(|f| f.key.vlan);
    let vlans: Vec<(u16, u64)> = flows
        .iter()
        .map(|f| (f.key.vlan, f.client.packets))
        .collect();
    assert_eq!(vlans, [(0, 1), (10, 2), (20, 1)]);
    assert_eq!(flows[2].client.bytes, (14 + 8 + 20 + 8) as u64);
    assert_eq!(qinq.len(), 14 + 8 + 20 + 8);
}

fn any_other_protocol_is_a_flow_of_its_addresses(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    h.receive(&Frame::other("10.0.0.2", "10.0.0.1", 47).payload(40).build());
    h.receive(&Frame::other("10.0.0.1", "10.0.0.2", 47).payload(40).build());
    let flow = h.only_flow();
    assert_eq!(flow.protocol_name(), "47");
    assert_eq!((flow.client.port, flow.server.port), (0, 0));
    assert_side(&flow, (1, 74), (1, 74));
}

fn later_fragments_count_to_their_datagram_flow(ingress: Ingress) {
    for (src, dst) in [("10.0.0.2", "10.0.0.1"), ("2001:db8::2", "2001:db8::1")] {
        let h = Harness::receiving(ingress);
        let first = Frame::udp(src, 4000, dst, 53)
            .fragment(9, 0, true)
            .payload(1000)
            .build();
        let later = Frame::udp(src, 4000, dst, 53)
            .fragment(9, 126, false)
            .payload(500)
            .build();
        h.receive(&first);
        h.receive(&later);
        let flow = h.only_flow();
        assert_eq!((flow.client.port, flow.server.port), (4000, 53));
        assert_side(&flow, (2, (first.len() + later.len()) as u64), (0, 0));
        let counters = h.counters();
        assert_eq!((counters.fragments, counters.fragments_unmatched), (1, 0));

        // A later fragment whose first fragment was never seen: its addresses, ports 0.
        let orphan = Frame::udp(src, 4000, dst, 53)
            .fragment(10, 126, false)
            .payload(64)
            .build();
        h.receive(&orphan);
        let flows = h.flows();
        assert_eq!(flows.len(), 2);
        let orphan_flow = flows.iter().find(|f| f.client.port == 0).unwrap();
        assert_eq!(orphan_flow.client.bytes, orphan.len() as u64);
        assert_eq!(h.counters().fragments_unmatched, 1);
    }
}

/// Frames covering every header the parser reads, each cut at every length short of its
/// headers: the frame passes, the truncation is counted, no flow is made.
#[test]
fn every_truncation_point_passes_and_is_counted() {
    let frames = [
        Frame::tcp("10.0.0.2", 1, "10.0.0.1", 2, SYN)
            .vlan(100)
            .vlan(20)
            .ipv4_options(&[1, 1, 1, 1])
            .tcp_options(12),
        Frame::udp("10.0.0.2", 1, "10.0.0.1", 2),
        Frame::echo_request("10.0.0.2", "10.0.0.1", 1),
        Frame::echo_request("2001:db8::2", "2001:db8::1", 1)
            .ipv6_ext(Ipv6Ext::HopByHop)
            .ipv6_ext(Ipv6Ext::DestinationOptions),
        Frame::udp("2001:db8::2", 1, "2001:db8::1", 2).fragment(3, 0, true),
        Frame::tcp("2001:db8::2", 1, "2001:db8::1", 2, SYN).ipv6_ext(Ipv6Ext::Routing),
    ];
    for frame in frames {
        let h = Harness::new();
        let bytes = frame.build();
        let full = *frame.header_ends().last().unwrap();
        assert_eq!(full, bytes.len(), "{frame:?}");
        // The kernel's skb test run refuses an IP frame without a whole IP header, so TC gets
        // the cuts from there on; XDP gets them all.
        let ip_end = frame.header_ends()[frame.vlans.len() + 1];
        for cut in 14..full {
            h.xdp(&bytes[..cut]);
            if cut >= ip_end {
                h.tc(&bytes[..cut]);
            }
        }
        let counters = h.counters();
        let cuts = ((full - 14) + (full - ip_end)) as u64;
        assert_eq!(counters.truncated, cuts, "{frame:?}");
        assert_eq!(counters.packets, cuts);
        assert_eq!((counters.flows_created, h.flows().len()), (0, 0));
        h.xdp(&bytes);
        assert_eq!(
            h.counters().flows_created,
            1,
            "the whole frame parses: {frame:?}"
        );
    }
}

fn non_ip_and_odd_ip_headers_pass_and_are_counted(ingress: Ingress) {
    let h = Harness::receiving(ingress);
    // ARP: not IP, passed on and counted as such.
    let mut arp = vec![0xff; 6];
    arp.extend(CLIENT_MAC);
    arp.extend([0x08, 0x06]);
    arp.resize(42, 0);
    h.receive(&arp);
    // IPv4 with a header length below 20 bytes, and a version-6 nibble behind ethertype IPv4.
    let mut bad_ihl = Frame::udp("10.0.0.2", 1, "10.0.0.1", 2).build();
    bad_ihl[14] = 0x44;
    h.receive(&bad_ihl);
    let mut bad_version = Frame::udp("10.0.0.2", 1, "10.0.0.1", 2).build();
    bad_version[14] = 0x65;
    h.receive(&bad_version);
    // Three VLAN tags: more than the parser follows.
    let mut three_tags = Frame::udp("10.0.0.2", 1, "10.0.0.1", 2)
        .vlan(1)
        .vlan(2)
        .build();
    three_tags.splice(12..12, [0x81, 0x00, 0x00, 0x03]);
    h.receive(&three_tags);
    let counters = h.counters();
    assert_eq!(counters.non_ip, 1);
    assert_eq!(counters.unsupported, 3);
    assert_eq!(counters.flows_created, 0);
}

#[test]
fn tc_egress_counts_segmentation_offload_as_its_wire_segments() {
    let h = Harness::new();
    // A 3-segment TSO super-packet: 3 frames on the wire, each with its own 66 bytes of
    // Ethernet, IPv4 and TCP (12 bytes of options) headers.
    let frame = Frame::tcp("10.0.0.1", 80, "10.0.0.2", 40000, ACK)
        .tcp_options(12)
        .payload(3 * 1000)
        .build();
    h.tc_gso(&frame, 3, 1000);
    let flow = h.only_flow();
    let headers = 14 + 20 + 32;
    assert_eq!(frame.len(), headers + 3000);
    // Sent from port 80 to an ephemeral port: the server's segments.
    assert_side(&flow, (0, 0), (3, (3 * (headers + 1000)) as u64));
    let counters = h.counters();
    assert_eq!(
        (counters.packets, counters.bytes),
        (3, 3 * (headers + 1000) as u64)
    );
}

#[test]
fn concurrent_updates_of_one_flow_from_two_cpus_lose_nothing() {
    let frame = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK).build();
    let reply = Frame::tcp("10.0.0.1", 80, "10.0.0.2", 40000, ACK).build();
    let h = Harness::new();
    const REPEAT: u32 = 200_000;
    // Both CPUs start at once on a flow that does not exist yet: one creates it, the other
    // finds it on EEXIST; both then count into it.
    h.run_on_cpus_concurrently(&[(0, &frame), (1, &reply)], REPEAT);
    let flow = h.only_flow();
    assert_side(
        &flow,
        (REPEAT as u64, REPEAT as u64 * 54),
        (REPEAT as u64, REPEAT as u64 * 54),
    );
    let counters = h.counters();
    assert_eq!(counters.flows_created, 1);
    assert_eq!(counters.create_failures, 0);
    assert!(h.datapath.create_errors().unwrap().is_empty());
}

#[test]
fn one_side_counted_on_two_cpus_at_once_loses_nothing() {
    // The same direction on two CPUs (two RX queues, or XDP and a second NIC): the adds to one
    // side are atomic.
    let frame = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK).build();
    let h = Harness::new();
    const REPEAT: u32 = 200_000;
    h.run_on_cpus_concurrently(&[(0, &frame), (1, &frame)], REPEAT);
    let flow = h.only_flow();
    assert_side(&flow, (2 * REPEAT as u64, 2 * REPEAT as u64 * 54), (0, 0));
    assert_eq!(h.counters().flows_created, 1);
}

#[test]
fn common_frames_and_the_general_parser_meet_on_one_block() {
    // Plain IPv4 TCP takes the fast path, at XDP and at TC; with IP options, the general
    // parser, at either. All of it must land on the same key, side by side.
    let h = Harness::new();
    let before = monotonic_ns();
    let client = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, SYN)
        .ttl(61)
        .build();
    let server = Frame::tcp("10.0.0.1", 80, "10.0.0.2", 40000, SYN | ACK)
        .ipv4_options(&[1, 1, 1, 1])
        .ttl(64)
        .macs(SERVER_MAC, CLIENT_MAC)
        .build();
    let client_ack = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK)
        .payload(100)
        .build();
    let client_options = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK)
        .ipv4_options(&[1, 1, 1, 1])
        .payload(50)
        .build();
    h.xdp(&client);
    h.xdp(&server);
    h.tc(&client_ack);
    h.xdp(&client_ack);
    h.tc(&client_options);
    let after = monotonic_ns();
    let flow = h.only_flow();
    assert_eq!(flow.client.ip.to_string(), "10.0.0.2");
    assert_side(
        &flow,
        (
            4,
            (client.len() + 2 * client_ack.len() + client_options.len()) as u64,
        ),
        (1, server.len() as u64),
    );
    assert_eq!(
        (flow.client.tcp_flags, flow.server.tcp_flags),
        (SYN | ACK, SYN | ACK)
    );
    assert_eq!((flow.client.ttl, flow.server.ttl), (61, 64));
    assert_eq!((flow.client.mac, flow.server.mac), (CLIENT_MAC, SERVER_MAC));
    assert_eq!(flow.tcp_state(), TcpState::Established);
    // Jiffies, converted: a time is the start of its tick, so within a tick (and the
    // calibration's jitter) of the truth.
    let table = h.datapath.flow_map().unwrap().read_all().unwrap();
    let tick = 2 * table.clock().tick_ns();
    assert!(
        flow.first_seen_ns + tick >= before && flow.last_seen_ns <= after + tick,
        "first {} last {} outside [{before}, {after}]",
        flow.first_seen_ns,
        flow.last_seen_ns
    );
    assert!(flow.first_seen_ns <= flow.last_seen_ns);
}
