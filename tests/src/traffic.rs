//! Real traffic between the two hosts of a [`VethPair`], of sizes the tests know: a TCP
//! connection, UDP datagrams.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use crate::{
    netns::VethPair,
    tcp::{Sent, tcp_sent, wait_until_closed},
};

/// One TCP connection: the client sends `upload` bytes, the server `download` bytes, then
/// both close in order. Returns what each side sent, read once the connection is closed.
pub fn tcp_exchange(pair: &VethPair, port: u16, upload: usize, download: usize) -> (Sent, Sent) {
    let listener = pair
        .server
        .run(|| TcpListener::bind((VethPair::SERVER_IP, port)).expect("listen"));
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&vec![7u8; download]).unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).unwrap();
            assert_eq!(received.len(), upload);
            stream.shutdown(Shutdown::Write).unwrap();
            wait_until_closed(&stream);
            // The listener's request socket sent the SYN-ACK: the accepted socket's count
            // starts after it.
            let mut sent = tcp_sent(&stream);
            sent.segments += 1;
            sent
        });
        let addr: SocketAddr = format!("{}:{port}", VethPair::SERVER_IP).parse().unwrap();
        let mut stream = pair
            .client
            .run(|| TcpStream::connect(addr).expect("connect"));
        let writer = stream.try_clone().unwrap();
        let upload_thread = scope.spawn(move || {
            let mut writer = writer;
            writer.write_all(&vec![9u8; upload]).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        upload_thread.join().unwrap();
        assert_eq!(received.len(), download);
        wait_until_closed(&stream);
        let client = tcp_sent(&stream);
        (client, server.join().unwrap())
    })
}

/// A UDP socket on the client's `client_port` and one on the server at `server`, each giving
/// up a read after 5 s.
pub fn udp_sockets(
    pair: &VethPair,
    client_port: u16,
    server: (&str, u16),
) -> (UdpSocket, UdpSocket) {
    let client = pair
        .client
        .run(|| UdpSocket::bind((VethPair::CLIENT_IP, client_port)).unwrap());
    let server = pair.server.run(|| UdpSocket::bind(server).unwrap());
    for socket in [&client, &server] {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    (client, server)
}

/// A datagram of `size` bytes from `client` to `server`, answered with twice its size, or as
/// much as fits one frame (1,472 bytes).
pub fn udp_round_trip(client: &UdpSocket, server: &UdpSocket, size: usize) {
    let mut buf = [0u8; 2048];
    client
        .send_to(&vec![1u8; size], server.local_addr().unwrap())
        .unwrap();
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(n, size);
    let answer = (2 * size).min(1472);
    server.send_to(&vec![2u8; answer], from).unwrap();
    assert_eq!(client.recv(&mut buf).unwrap(), answer);
}
