//! The join of a SNARE session with the kernel's flows, end to end: a client in one namespace
//! makes HTTP requests to a web server behind flowmon's interface (and knocks on a closed
//! port), the requests are posted to flowmon as SNARE events, and the stored session's
//! `network` numbers are exactly what crossed the wire, by each side's own kernel.

use std::{
    net::{TcpListener, TcpStream},
    time::Duration,
};

use flowmon_tests::wait::wait_until;
use flowmon_tests::{
    agent::{Agent, post_snare_event},
    netns::VethPair,
    redis_server::RedisServer,
    tcp::http_get,
};
use serde_json::{Value, json};

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";
const WEB_PORT: u16 = 8080;
const CLOSED_PORT: u16 = 9;
const REQUESTS: usize = 3;
/// The refused connection: a SYN with MSS, timestamp and window-scale options out, a bare
/// RST-ACK back.
const SYN_FRAME: u64 = 14 + 20 + 40;
const RST_FRAME: u64 = 14 + 20 + 20;

/// Posts the SNARE event of a request to flowmon (inside the server's namespace).
fn post_event(pair: &VethPair, path: &str, client_port: u16) {
    let event = json!({
        "method": "GET", "path": path, "uuid": SENSOR, "status": 200,
        "headers": {"Host": "sensor", "User-Agent": "join-test/1.0"},
        "peer": {"ip": VethPair::CLIENT_IP, "port": client_port},
    });
    post_snare_event(&pair.server, &event);
}

#[test]
fn a_session_carries_the_exact_numbers_of_its_peers_flows() {
    let pair = VethPair::new();
    pair.disable_tcp_sack();
    let redis = RedisServer::start_in(&pair.server);
    let mut agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &[
            "--redis-url",
            &redis.url(),
            "--poll-interval",
            "0.1",
            "--tcp-close-timeout",
            "0.2",
        ],
    );
    let listener = pair
        .server
        .run(|| TcpListener::bind((VethPair::SERVER_IP, WEB_PORT)).unwrap());
    let (mut from_peer, mut to_peer) = ((0, 0), (0, 0));
    for i in 0..REQUESTS {
        let path = format!("/page{i}.html");
        let (client, server, port) = http_get(&pair, &listener, &path);
        post_event(&pair, &path, port);
        let (client, server) = (client.frames(), server.frames());
        from_peer = (from_peer.0 + client.0, from_peer.1 + client.1);
        to_peer = (to_peer.0 + server.0, to_peer.1 + server.1);
        if i == 0 {
            // A knock on a closed port: refused at once, a handshake never completed.
            let refused = pair
                .client
                .run(|| TcpStream::connect((VethPair::SERVER_IP, CLOSED_PORT)));
            assert!(refused.is_err());
            from_peer = (from_peer.0 + 1, from_peer.1 + SYN_FRAME);
            to_peer = (to_peer.0 + 1, to_peer.1 + RST_FRAME);
        }
    }

    // Once every flow of the peer has its final record, stopping flowmon ends the session,
    // which is analysed and stored on the way out.
    wait_until(
        Duration::from_secs(15),
        "every flow of the peer ended",
        || {
            agent
                .records()
                .iter()
                .filter(|r| r["client_ip"] == VethPair::CLIENT_IP && r["record_type"] == "final")
                .count()
                == REQUESTS + 1
        },
    );
    agent.stop();
    let members = redis.cli(&["ZRANGE", SENSOR, "0", "-1"]);
    let [stored] = &members
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .collect::<Vec<_>>()[..]
    else {
        panic!("one session stored: {members}");
    };

    assert_eq!(stored["peer_ip"], VethPair::CLIENT_IP);
    assert_eq!(stored["accepted_paths"], REQUESTS as u64);
    let network = &stored["network"];
    assert_eq!(network["source"], "local", "{network}");
    assert_eq!(network["flows"], REQUESTS as u64 + 1, "{network}");
    assert_eq!(
        (
            network["packets_from_peer"].as_u64().unwrap(),
            network["bytes_from_peer"].as_u64().unwrap()
        ),
        from_peer,
        "{network}"
    );
    assert_eq!(
        (
            network["packets_to_peer"].as_u64().unwrap(),
            network["bytes_to_peer"].as_u64().unwrap()
        ),
        to_peer,
        "{network}"
    );
    assert_eq!(network["server_ports"], json!([CLOSED_PORT, WEB_PORT]));
    assert_eq!(network["server_port_count"], 2);
    assert_eq!(network["half_open"], 1);
    assert_eq!(
        network["community_ids"].as_array().unwrap().len(),
        REQUESTS + 1
    );
    assert_eq!(network["first_ttl"], 64);
}
