//! The join of a SNARE session with the kernel's flows, end to end: a client in one namespace
//! makes HTTP requests to a web server behind flowmon's interface (and knocks on a closed
//! port), the requests are posted to flowmon as SNARE events, and the stored session's
//! `network` numbers are exactly what crossed the wire, by each side's own kernel.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use flowmon_tests::{
    agent::Agent,
    netns::VethPair,
    redis_server::RedisServer,
    tcp::{Sent, tcp_sent, wait_until_closed},
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

/// One HTTP exchange on its own connection; returns what (client, server) sent and the client's
/// port.
fn http_get(pair: &VethPair, listener: &TcpListener, path: &str) -> (Sent, Sent, u16) {
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).unwrap();
            assert!(String::from_utf8_lossy(&request).starts_with("GET "));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            wait_until_closed(&stream);
            // The SYN-ACK came from the listener's request socket.
            let mut sent = tcp_sent(&stream);
            sent.segments += 1;
            sent
        });
        let mut stream = pair
            .client
            .run(|| TcpStream::connect((VethPair::SERVER_IP, WEB_PORT)).unwrap());
        let port = stream.local_addr().unwrap().port();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: sensor\r\n\r\n").as_bytes())
            .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        wait_until_closed(&stream);
        (tcp_sent(&stream), server.join().unwrap(), port)
    })
}

/// Posts the SNARE event of a request to flowmon (inside the server's namespace).
fn post_event(pair: &VethPair, path: &str, client_port: u16) {
    let event = json!({
        "method": "GET", "path": path, "uuid": SENSOR, "status": 200,
        "headers": {"Host": "sensor", "User-Agent": "join-test/1.0"},
        "peer": {"ip": VethPair::CLIENT_IP, "port": client_port},
    })
    .to_string();
    let answer = pair.server.run(|| {
        let mut stream = TcpStream::connect("127.0.0.1:8090").unwrap();
        write!(
            stream,
            "POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{event}",
            event.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let finals = agent
            .records()
            .iter()
            .filter(|r| r["client_ip"] == VethPair::CLIENT_IP && r["record_type"] == "final")
            .count();
        if finals == REQUESTS + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{finals} flows ended");
        std::thread::sleep(Duration::from_millis(50));
    }
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
