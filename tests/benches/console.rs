//! `cargo xtask bench console`: what the web console costs on a busy sensor. With 1,000,000
//! live flows in the kernel map and the flow monitor polling it every second, (1) how long the
//! flows page takes to answer (the top 100 by bytes that pass a port filter), asked at
//! varying moments of the poll cycle, and (2) how much of a core the console takes while an
//! overview is open (its script's request every 2 s, the sampler, Redis health checks),
//! against the console left alone.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use flowmon::{
    console::{
        About, Console, ConsoleConfig, Sources,
        sources::{LiveFlows, RedisStorage, Storage},
    },
    datapath::Datapath,
    flow::{
        monitor::{FlowMonitor, MonitorConfig},
        query::{self, FlowFilter, FlowOrder, FlowQuery, Known},
        tracker::Timeouts,
    },
    lifecycle::Part,
    metrics::Metrics,
    sinks::{FlowSinks, SinksConfig},
    snare::{HANDOFF_CAPACITY, Service},
    store::{Connection, Patience, RedisTarget},
};
use flowmon_tests::{
    frames::{ACK, Frame},
    kernel::run_xdp,
    process::TempDir,
    redis_server::RedisServer,
    snare_service,
};

const FLOWS: u32 = 1_000_000;
/// One flow in ten is to port 443: the filter keeps 100,000.
const FILTERED_PORT: u16 = 443;
const QUERIES: usize = 25;
/// Apart, so that the questions land at every moment of the one-second poll cycle.
const QUERY_SPACING: Duration = Duration::from_millis(370);
const WINDOW: Duration = Duration::from_secs(30);
const OVERVIEW_POLL: Duration = Duration::from_secs(2);
const OVERVIEW_REQUESTS: usize = 1000;

/// CPU time of this process's threads named `name` (the console's runtime), from the
/// scheduler's nanosecond counts.
fn threads_cpu(name: &str) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        // Threads that end take their CPU time out of /proc: none ends during the bench.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap()
}

/// The frame of flow `i`: from 10.0.0.0 + i, to port 443 one time in ten, else to port 80.
fn frame(i: u32) -> Vec<u8> {
    let client = Ipv4Addr::from(0x0a00_0000 + i).to_string();
    let port = if i.is_multiple_of(10) {
        FILTERED_PORT
    } else {
        80
    };
    Frame::tcp(&client, 40000, "192.0.2.1", port, ACK).build()
}

fn main() {
    eprintln!("filling the flow map with {FLOWS} flows...");
    let datapath = Datapath::load(FLOWS * 2, None).expect("load flowmon (run as root)");
    for i in 0..FLOWS {
        // Some flows with more packets than others, so that ranking has something to rank.
        let packets = if i.is_multiple_of(997) { 1 + i % 13 } else { 1 };
        run_xdp(&datapath, &frame(i), None, packets);
    }

    // The ranking alone: one pass over what a read of the whole map says of every flow, on this
    // thread, as the monitor ranks what it knows of them.
    let scan = {
        let table = datapath.flow_map().unwrap().read_all().unwrap();
        assert_eq!(table.len(), FLOWS as usize, "every flow in the map");
        let known: Vec<Known> = table
            .iter()
            .map(|(key, block)| Known::of_block(key, block, table.clock()))
            .collect();
        let query = FlowQuery {
            filter: FlowFilter {
                port: Some(FILTERED_PORT),
                ..FlowFilter::default()
            },
            order: FlowOrder::Bytes,
            limit: 100,
        };
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let (top, matched) = query::top(known.iter().copied(), &HashMap::new(), &query);
                assert_eq!((top.len(), matched), (100, FLOWS as usize / 10));
                started.elapsed()
            })
            .collect();
        times.sort();
        times[2]
    };
    let state = TempDir::new("bench-console");
    let metrics = Metrics::new();
    let ten_minutes = Duration::from_secs(600);
    let config = MonitorConfig {
        timeouts: Timeouts {
            tcp: ten_minutes,
            tcp_close: ten_minutes,
            udp: ten_minutes,
            icmp: ten_minutes,
            other: ten_minutes,
            interim: ten_minutes,
        },
        sensor_id: "bench".into(),
        state_dir: state.path().to_owned(),
        poll_interval: Duration::from_secs(1),
        keep_attached: true,
        sinks: SinksConfig::default(),
    };
    let sinks = FlowSinks::new(None, None, None, Arc::clone(&metrics));
    let mut monitor =
        FlowMonitor::new(datapath, HashMap::new(), config, sinks, metrics.clone()).unwrap();
    let live_flows = monitor.live_flows().unwrap();

    // The monitor and the SNARE service on a runtime of their own, the console on another
    // whose threads are counted.
    let agent = runtime("agent");
    let (monitor, snare, _ended) = agent.block_on(async {
        let monitor = Part::spawn_blocking("flow monitor", move |token| {
            monitor.run(token).expect("the flow monitor");
        });
        let (ended, ended_rx) = tokio::sync::mpsc::channel(HANDOFF_CAPACITY);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let snare = Service::serve(
            listener,
            &snare_service::config(),
            ended,
            None,
            metrics.snare.clone(),
        )
        .unwrap();
        (monitor, snare, ended_rx)
    });
    let redis = RedisServer::start();
    let console_runtime = runtime("console");
    let console = console_runtime.block_on(async {
        let target = RedisTarget::new(redis.url(), false).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(RedisStorage::new(
            Connection::open(&target, Patience::READ).unwrap(),
        ));
        let sources = Sources {
            metrics: metrics.clone(),
            store: None,
            flows: Some(Arc::new(live_flows) as Arc<dyn LiveFlows>),
            sessions: Arc::new(snare.live_sessions()),
            storage: Some(storage),
            records: None,
        };
        let config = ConsoleConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
            session_timeout: Duration::from_secs(75),
            redis: Some(target),
        };
        Console::start(config, sources, About::default())
            .await
            .unwrap()
    });
    let base = format!("http://{}", console.local_addr());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let get = |path: &str| {
        let started = Instant::now();
        let response = client.get(format!("{base}{path}")).send().unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let body = response.text().unwrap();
        (started.elapsed(), body)
    };

    // The flows page: the first question waits for the first poll; then as an operator asks.
    let flows_page = format!("/flows?port={FILTERED_PORT}&order=bytes&limit=100");
    let (_, body) = get(&flows_page);
    assert!(
        body.contains(&format!("100,000 of {} live flows match", "1,000,000")),
        "the filter keeps a tenth"
    );
    let mut latencies: Vec<Duration> = (0..QUERIES)
        .map(|_| {
            std::thread::sleep(QUERY_SPACING);
            let (took, body) = get(&flows_page);
            assert_eq!(body.matches("<tr>").count(), 101, "a header and 100 flows");
            took
        })
        .collect();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p90, max) = (
        latencies[QUERIES / 2],
        latencies[QUERIES * 9 / 10],
        latencies[QUERIES - 1],
    );
    let poll = metrics.flows.poll_duration_seconds.get();

    // The console alone (its sampler), then with an overview open.
    let alone = {
        let before = threads_cpu("console");
        std::thread::sleep(WINDOW);
        threads_cpu("console") - before
    };
    let open = {
        let before = threads_cpu("console");
        let started = Instant::now();
        let mut made = 0u64;
        while started.elapsed() < WINDOW {
            let (_, body) = get(&format!("/api/overview?since={made}"));
            let update: serde_json::Value = serde_json::from_str(&body).unwrap();
            made = update["made"].as_u64().unwrap();
            std::thread::sleep(OVERVIEW_POLL);
        }
        threads_cpu("console") - before
    };
    let per_request = {
        let before = threads_cpu("console");
        for _ in 0..OVERVIEW_REQUESTS {
            get("/api/overview?since=0");
        }
        (threads_cpu("console") - before) / OVERVIEW_REQUESTS as u32
    };
    let share = |cpu: Duration| cpu.as_secs_f64() / WINDOW.as_secs_f64() * 100.0;

    println!("## console ({FLOWS} live flows, the monitor polling every second)\n");
    println!(
        "| flows page (top 100 by bytes, port filter) | p50 ms | p90 ms | max ms | last poll s | target |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| {QUERIES} requests, {} ms apart | {:.0} | {:.0} | {:.0} | {poll:.2} | within 200 ms |",
        QUERY_SPACING.as_millis(),
        ms(p50),
        ms(p90),
        ms(max)
    );
    println!(
        "\nThe ranking alone (one pass over what is known of every flow, the median of five): \
         {:.0} ms.\n",
        ms(scan)
    );
    println!("| console CPU | % of a core | target |");
    println!("|---|---:|---|");
    println!("| alone (sampler) | {:.3} | |", share(alone));
    println!(
        "| overview open (a request every {} s) | {:.3} | |",
        OVERVIEW_POLL.as_secs(),
        share(open)
    );
    println!(
        "| added by the open overview | {:.3} | under 1 % |",
        share(open.saturating_sub(alone))
    );
    println!(
        "| one overview request | {:.1} us CPU | |",
        per_request.as_secs_f64() * 1e6
    );

    console_runtime.block_on(console.shutdown());
    agent.block_on(async {
        snare.shutdown().await;
        monitor.stop().await;
    });
}
