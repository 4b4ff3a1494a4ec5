//! What each side of a TCP connection sent, by its own kernel's count (TCP_INFO): the ground
//! truth the tests hold flowmon's counts against.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use crate::{netns::VethPair, wait::wait_until};

/// Ethernet, IPv4 and a TCP header with the timestamp option: every segment but the two SYNs
/// (with SACK off, as the tests set it, so that retransmissions carry no SACK blocks).
pub const TCP_FRAME_OVERHEAD: u64 = 14 + 20 + 32;
/// A SYN or SYN-ACK carries 8 more option bytes (MSS, window scale and their padding).
pub const SYN_EXTRA_OPTIONS: u64 = 8;

/// What one side of a TCP connection sent, by its own kernel's count.
pub struct Sent {
    pub segments: u64,
    pub payload: u64,
}

impl Sent {
    /// Frames and frame bytes on the wire: every segment's headers, both SYNs' extra options,
    /// and the payload.
    pub fn frames(&self) -> (u64, u64) {
        (
            self.segments,
            self.segments * TCP_FRAME_OVERHEAD + SYN_EXTRA_OPTIONS + self.payload,
        )
    }
}

/// The kernel's state of a TCP socket, as `ss -i` shows it.
fn tcp_info(stream: &TcpStream) -> libc::tcp_info {
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed tcp_info we own.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO");
        info
    }
}

pub fn tcp_sent(stream: &TcpStream) -> Sent {
    let info = tcp_info(stream);
    Sent {
        segments: info.tcpi_segs_out as u64,
        payload: info.tcpi_bytes_sent,
    }
}

/// Waits until the peer has acknowledged our FIN (the socket reached TCP_CLOSE).
pub fn wait_until_closed(stream: &TcpStream) {
    const TCP_CLOSE: u8 = 7;
    wait_until(Duration::from_secs(5), "the TCP connection closed", || {
        tcp_info(stream).tcpi_state == TCP_CLOSE
    });
}

/// One HTTP exchange on its own connection, from the pair's client to `listener` (bound in
/// the server's namespace): a GET of `path` answered with `hello`. Returns what (client,
/// server) sent, by their own kernels, and the client's port.
pub fn http_get(pair: &VethPair, listener: &TcpListener, path: &str) -> (Sent, Sent, u16) {
    let server_addr = listener.local_addr().unwrap();
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
        let mut stream = pair.client.run(|| TcpStream::connect(server_addr).unwrap());
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
