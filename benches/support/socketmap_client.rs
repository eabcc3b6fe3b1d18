//! The socketmap client of the benches that talk to `mtasts serve` (benches/socketmap,
//! benches/scale_cold): netstring requests as Postfix sends them, one outstanding at a time.
//! Included by `#[path]`, so each bench uses what it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Child;
use std::time::Duration;

/// The netstring of the request `postfix <name>`.
pub fn request(name: &str) -> Vec<u8> {
    let payload = format!("postfix {name}");
    format!("{}:{payload},", payload.len()).into_bytes()
}

/// The port of a server that prints `... listening on HOST:PORT` as its first stdout line.
pub fn read_listening_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("bad line {line:?}"))
}

/// A client connection with one request outstanding at most.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to 127.0.0.1:`port`; a read waits at most `timeout`.
    pub fn connect(port: u16, timeout: Duration) -> Self {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        Self { stream, buf: vec![0u8; 4096] }
    }

    /// Asks `postfix <name>` and reads the whole reply netstring.
    pub fn lookup(&mut self, name: &str) -> Vec<u8> {
        self.roundtrip_any(&request(name))
    }

    /// Sends a request and reads a whole reply netstring of unknown length.
    pub fn roundtrip_any(&mut self, req: &[u8]) -> Vec<u8> {
        self.stream.write_all(req).expect("write");
        let mut got = Vec::new();
        loop {
            let n = self.stream.read(&mut self.buf).expect("read");
            assert!(n > 0, "the server closed the connection");
            got.extend_from_slice(&self.buf[..n]);
            if let Some(colon) = got.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&got[..colon]).expect("digits").parse().expect("len");
                if got.len() >= colon + len + 2 {
                    return got;
                }
            }
        }
    }

    pub fn send(&mut self, req: &[u8]) {
        self.stream.write_all(req).expect("write");
    }

    /// Reads exactly one reply of `want.len()` bytes and checks it.
    pub fn receive(&mut self, want: &[u8]) {
        let mut have = 0;
        while have < want.len() {
            let n = self.stream.read(&mut self.buf[have..want.len()]).expect("read");
            assert!(n > 0, "the server closed the connection");
            have += n;
        }
        assert!(
            self.buf[..want.len()] == *want,
            "wrong reply {:?}",
            String::from_utf8_lossy(&self.buf[..have])
        );
    }
}
