//! The HTTP side: a listener on `checkpoint.metrics_listen`, one request at
//! a time, `GET /metrics` answered with the exporter's rendering.

use super::Exporter;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// `Content-Type` of the OpenMetrics text format (Prometheus negotiates it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the endpoint (at start, so a taken port is a start-up error).
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on checkpoint.metrics_listen = \"{addr}\" (port taken? set another, or \"\" to turn metrics off)")
    })
}

impl Exporter {
    /// Serves scrapes one at a time, forever. Each connection has a 5 s
    /// budget, so a stuck client delays the next scrape at most that long.
    pub fn serve(self, listener: TcpListener) {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if let Err(e) = self.session(s) {
                        tracing::debug!("metrics request failed: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn session(&self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let head = read_request_head(&mut stream)?;
        let line = head.lines().next().unwrap_or("");
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let get = matches!(method, "GET" | "HEAD");
        let (status, ctype, body) = match (get, path) {
            (true, "/metrics") => ("200 OK", CONTENT_TYPE, self.render()),
            (true, "/") => (
                "200 OK",
                "text/plain; charset=utf-8",
                "lazarus-checkpointd: metrics at /metrics\n".to_string(),
            ),
            (true, _) => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found; try /metrics\n".to_string(),
            ),
            _ => (
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "only GET and HEAD\n".to_string(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        if method != "HEAD" {
            stream.write_all(body.as_bytes())?;
        }
        stream.flush()
    }
}

/// Reads up to the blank line that ends an HTTP request head (8 KiB at most).
fn read_request_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head over 8 KiB",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
