//! Whole reads of the flow map in the real kernel: the snapshot program's copy against batch
//! lookups and the iterator, the halves of the snapshot arrays, and snapshots taken while the
//! LRU evicts flows under them.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use flowmon::datapath::{Datapath, FlowTable, ReadMethod};
use flowmon_common::FlowKey;
use flowmon_tests::{
    frames::{ACK, Frame, SYN},
    kernel::{Harness, pin_to_cpu, run_xdp},
    netns::VethPair,
    process::PinDir,
};

/// `count` flows of every kind the key knows: IPv4 and IPv6, TCP, UDP, ICMP, VLAN-tagged.
fn varied_flows(count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let v4 = Ipv4Addr::from(0x0a00_0000 + i).to_string();
            let v6 = Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128).to_string();
            let port = 1024 + (i % 50_000) as u16;
            match i % 5 {
                0 => Frame::tcp(&v4, port, "192.0.2.1", 80, SYN),
                1 => Frame::udp(&v4, port, "192.0.2.1", 53),
                2 => Frame::tcp(&v6, port, "2001:db8::1", 443, ACK),
                3 => Frame::icmp(&v4, "192.0.2.1", 8, 0, i as u16),
                _ => Frame::udp(&v4, port, "192.0.2.1", 53).vlan(100 + (i % 7) as u16),
            }
            .payload((i % 300) as usize)
            .build()
        })
        .collect()
}

fn rows(table: &FlowTable) -> Vec<(FlowKey, flowmon_common::FlowBlock)> {
    table.iter().map(|(key, block)| (key, *block)).collect()
}

/// Reads `datapath`'s map as the monitor does and checks it against batch lookups and the
/// iterator: the same flows, in the same order as batch lookups; the method used.
fn read_and_check(datapath: &Datapath, expected_flows: usize) -> ReadMethod {
    let map = datapath.flow_map().unwrap();
    let mut table = map.empty_table().unwrap();
    let read = map.read_into(&mut table).unwrap();
    let mut batch = map.empty_table().unwrap();
    assert_eq!(map.read_by_batch(&mut batch).unwrap(), ReadMethod::Batch);
    assert_eq!(table.len(), expected_flows, "flows read by {read:?}");
    assert_eq!(
        rows(&table),
        rows(&batch),
        "{read:?} and batch lookups differ"
    );
    let mut iterated = rows(&map.read_by_iteration().unwrap());
    let mut read_rows = rows(&table);
    iterated.sort_by_key(|(key, _)| *key);
    read_rows.sort_by_key(|(key, _)| *key);
    assert_eq!(read_rows, iterated, "{read:?} and the iterator differ");
    read.method
}

#[test]
fn a_snapshot_holds_exactly_what_batch_lookups_and_the_iterator_read() {
    let h = Harness::with_max_flows(8192);
    let frames = varied_flows(5000);
    for frame in &frames {
        h.xdp(frame);
    }
    // A second packet on every fifth flow: counts that differ between flows.
    for frame in frames.iter().step_by(5) {
        h.xdp(frame);
    }
    assert_eq!(read_and_check(&h.datapath, 5000), ReadMethod::Snapshot);
}

#[test]
fn a_map_that_has_evicted_is_still_read_whole_by_snapshot() {
    // Twice the map's capacity: the LRU evicts, and buckets fill up to full load.
    let h = Harness::with_max_flows(2048);
    for frame in varied_flows(4096) {
        h.xdp(&frame);
    }
    let live = h.datapath.flow_map().unwrap().read_by_iteration().unwrap();
    assert!(
        live.len() <= 2048 && live.len() > 1024,
        "{} live",
        live.len()
    );
    assert_eq!(
        read_and_check(&h.datapath, live.len()),
        ReadMethod::Snapshot
    );
}

#[test]
fn two_tables_hold_the_two_halves_and_a_third_reads_with_batch_lookups() {
    let h = Harness::with_max_flows(1024);
    for frame in varied_flows(300) {
        h.xdp(&frame);
    }
    let map = h.datapath.flow_map().unwrap();
    let (mut first, mut second, mut third) = (
        map.empty_table().unwrap(),
        map.empty_table().unwrap(),
        map.empty_table().unwrap(),
    );
    let method = |table: &mut FlowTable| map.read_into(table).unwrap().method;
    assert_eq!(method(&mut first), ReadMethod::Snapshot);
    assert_eq!(method(&mut second), ReadMethod::Snapshot);
    assert_eq!(method(&mut third), ReadMethod::Batch);
    // Each half holds its own read: a new flow shows in the half read after it only.
    h.xdp(&Frame::udp("10.9.9.9", 9, "192.0.2.1", 9).build());
    assert_eq!(method(&mut second), ReadMethod::Snapshot);
    assert_eq!((first.len(), second.len(), third.len()), (300, 301, 300));
    assert_eq!(rows(&first)[..], rows(&third)[..]);
    drop(first);
    let mut fourth = map.empty_table().unwrap();
    assert_eq!(method(&mut fourth), ReadMethod::Snapshot);
    assert_eq!(rows(&fourth), rows(&second));
}

#[test]
fn a_table_of_another_datapath_is_read_with_batch_lookups() {
    let (ours, theirs) = (Harness::with_max_flows(1024), Harness::with_max_flows(1024));
    for frame in varied_flows(50) {
        ours.xdp(&frame);
    }
    let mut foreign = theirs.datapath.flow_map().unwrap().empty_table().unwrap();
    let map = ours.datapath.flow_map().unwrap();
    let read = map.read_into(&mut foreign).unwrap();
    assert_eq!(read.method, ReadMethod::Batch);
    assert_eq!(read.snapshot_discarded, Some("failed"));
    let mut own = map.empty_table().unwrap();
    assert_eq!(
        map.read_into(&mut own).unwrap().method,
        ReadMethod::Snapshot
    );
    assert_eq!(rows(&foreign), rows(&own));
}

#[test]
fn a_flow_is_held_under_its_key_and_first_sight() {
    let h = Harness::new();
    h.xdp(&Frame::udp("10.1.1.1", 1000, "192.0.2.1", 53).build());
    let map = h.datapath.flow_map().unwrap();
    let (key, block) = rows(&map.read_all().unwrap())[0];
    assert!(map.holds(&key, block.first_seen).unwrap());
    // The same key made anew is another flow; a key never seen is none.
    assert!(!map.holds(&key, block.first_seen + 1).unwrap());
    let other = FlowKey {
        port_lo: key.port_lo.wrapping_add(1),
        ..key
    };
    assert!(!map.holds(&other, block.first_seen).unwrap());
}

#[test]
fn without_snapshots_every_read_is_a_batch_lookup() {
    let datapath = Datapath::load(1024, None).unwrap().without_snapshots();
    for frame in varied_flows(100) {
        run_xdp(&datapath, &frame, None, 1);
    }
    assert_eq!(read_and_check(&datapath, 100), ReadMethod::Batch);
}

#[test]
fn a_pinned_map_taken_over_at_another_size_is_read_whole() {
    let pins = PinDir::new("snapshot-size");
    let first = Datapath::load(4096, Some(pins.path())).unwrap();
    for frame in varied_flows(3000) {
        run_xdp(&first, &frame, None, 1);
    }
    drop(first);
    // The pinned map keeps its 4096 entries; the snapshot arrays must follow it.
    let second = Datapath::load(1024, Some(pins.path())).unwrap();
    assert_eq!(second.flow_map().unwrap().capacity().unwrap(), 4096);
    assert_eq!(read_and_check(&second, 3000), ReadMethod::Snapshot);
    second.unpin_maps();
}

/// The LRU reuses evicted elements at once, in whatever bucket their new flow hashes to; a
/// walk that steps onto one as it moves is torn. Snapshots taken while a thread makes new
/// flows in a full map must each be whole (every flow once) or be discarded for a batch read.
#[test]
fn snapshots_racing_evictions_are_whole_or_discarded() {
    const CAPACITY: u32 = 1024;
    let h = Harness::with_max_flows(CAPACITY);
    for frame in varied_flows(CAPACITY) {
        h.xdp(&frame);
    }
    let fresh: Vec<Vec<u8>> = (0..100_000u32)
        .map(|i| {
            Frame::udp(
                &Ipv4Addr::from(0x0b00_0000 + i).to_string(),
                1,
                "192.0.2.9",
                2,
            )
            .build()
        })
        .collect();
    let stop = AtomicBool::new(false);
    let map = h.datapath.flow_map().unwrap();
    let (made, snapshots, batches) = std::thread::scope(|scope| {
        // On two CPUs, so that the walk and the evictions truly overlap.
        let churn = scope.spawn(|| {
            pin_to_cpu(0);
            let mut made = 0;
            while !stop.load(Ordering::Relaxed) {
                run_xdp(&h.datapath, &fresh[made % fresh.len()], None, 1);
                made += 1;
            }
            made
        });
        pin_to_cpu(1);
        let mut table = map.empty_table().unwrap();
        let (mut snapshots, mut batches) = (0, 0);
        for _ in 0..3000 {
            let read = map.read_into(&mut table).unwrap();
            match read.method {
                ReadMethod::Snapshot => snapshots += 1,
                _ => batches += 1,
            }
            let keys: HashSet<FlowKey> = table.iter().map(|(key, _)| key).collect();
            assert_eq!(keys.len(), table.len(), "a flow read twice by {read:?}");
            assert!(table.len() <= CAPACITY as usize);
        }
        stop.store(true, Ordering::Relaxed);
        (churn.join().unwrap(), snapshots, batches)
    });
    assert!(made > 10_000, "only {made} flows made during the reads");
    assert!(snapshots > 0, "{batches} batch reads, no snapshot");
    let live = map.read_by_iteration().unwrap().len();
    assert_eq!(read_and_check(&h.datapath, live), ReadMethod::Snapshot);
}

/// A snapshot holds its CPU for the whole walk, but not the packets that CPU must process: the
/// program runs with softirqs enabled (an XDP program's test run would hold them back until
/// the walk ends). Datagrams steered to the walking CPU keep arriving during five walks of a
/// large map.
#[test]
fn packets_keep_flowing_on_the_cpu_that_takes_a_snapshot() {
    const FLOWS: u32 = 600_000;
    const WALKER_CPU: usize = 1;
    let datapath = Datapath::load(FLOWS * 2, None).unwrap();
    for i in 0..FLOWS {
        let client = Ipv4Addr::from(0x0a00_0000 + i).to_string();
        run_xdp(
            &datapath,
            &Frame::tcp(&client, 40000, "192.0.2.1", 80, ACK).build(),
            None,
            1,
        );
    }
    let pair = VethPair::new();
    pair.server
        .steer_receive_to(VethPair::SERVER_IF, WALKER_CPU);
    let receiver = pair
        .server
        .run(|| UdpSocket::bind((VethPair::SERVER_IP, 9000)).unwrap());
    receiver
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let sender = pair
        .client
        .run(|| UdpSocket::bind((VethPair::CLIENT_IP, 0)).unwrap());
    let map = datapath.flow_map().unwrap();
    let walking = AtomicBool::new(true);
    let (walks, (received, longest_gap)) = std::thread::scope(|scope| {
        scope.spawn(|| {
            pin_to_cpu(0);
            while walking.load(Ordering::Relaxed) {
                sender.send_to(b"x", (VethPair::SERVER_IP, 9000)).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let receiving = scope.spawn(|| {
            pin_to_cpu(0);
            let (mut received, mut last, mut longest_gap) = (0, Instant::now(), Duration::ZERO);
            while walking.load(Ordering::Relaxed) {
                if receiver.recv(&mut [0u8; 8]).is_ok() {
                    received += 1;
                    longest_gap = longest_gap.max(last.elapsed());
                    last = Instant::now();
                }
            }
            (received, longest_gap)
        });
        pin_to_cpu(WALKER_CPU);
        let mut table = map.empty_table().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let walks: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let read = map.read_into(&mut table).unwrap();
                assert_eq!(read.method, ReadMethod::Snapshot);
                assert_eq!(table.len(), FLOWS as usize);
                started.elapsed()
            })
            .collect();
        walking.store(false, Ordering::Relaxed);
        (walks, receiving.join().unwrap())
    });
    let shortest = *walks.iter().min().unwrap();
    assert!(
        shortest > Duration::from_millis(40),
        "walks too short to tell: {walks:?}"
    );
    assert!(received > 100, "{received} datagrams");
    assert!(
        longest_gap < shortest / 2,
        "datagrams stopped for {longest_gap:?} during walks of {walks:?}"
    );
}
