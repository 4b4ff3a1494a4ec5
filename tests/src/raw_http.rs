//! HTTP/1.1 over a raw connection, for what a client library hides: several requests on one
//! connection, bodies sent slowly or not at all, and the exact answer.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// An answer as it came over the connection.
#[derive(Debug)]
pub struct Answer {
    /// e.g. `HTTP/1.1 404 Not Found`.
    pub status_line: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.status_line))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Writes a request with `body` (and its Content-Length) on `stream`.
pub fn send(stream: &mut TcpStream, method: &str, path: &str, body: &[u8]) {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: flowmon\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(body))
    .expect("send a request");
}

/// Reads one answer (with a Content-Length, or none when the server closes after it) from
/// `stream`, within 10 s.
pub fn receive(stream: &mut TcpStream) -> Answer {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        read_more(stream, &mut received);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    let mut body = received[head_end + 4..].to_vec();
    while body.len() < length {
        read_more(stream, &mut body);
    }
    Answer {
        status_line,
        headers,
        body,
    }
}

fn read_more(stream: &mut TcpStream, into: &mut Vec<u8>) {
    let mut buffer = [0; 4096];
    match stream.read(&mut buffer) {
        Ok(0) => panic!(
            "the connection closed after {:?}",
            String::from_utf8_lossy(into)
        ),
        Ok(n) => into.extend_from_slice(&buffer[..n]),
        Err(err) => panic!(
            "no answer ({err}) after {:?}",
            String::from_utf8_lossy(into)
        ),
    }
}

/// Whether the server closed `stream` (end of file or reset) within `timeout`, reading and
/// dropping whatever else it sends.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) => {
                return !matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}
