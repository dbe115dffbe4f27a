//! A client of DPDK's telemetry v2 socket (`dpdk_telemetry.v2`), the one
//! lazarusctl, checkpointd's scrape and the dataplane's tests share.
//!
//! The protocol (DPDK's `lib/telemetry/telemetry.c`, "v2"): a SOCK_SEQPACKET
//! socket at `<runtime dir>/<file-prefix>/dpdk_telemetry.v2`. On connect the
//! process sends one JSON greeting, `{"version": "DPDK 22.11.x", "pid": N,
//! "max_output_len": 16384}`. Then each command (`/ethdev/stats,0`: the name,
//! a comma, the parameters) is one message and gets one message back,
//! `{"<name>": <data>}`, with `null` for an unknown command or bad
//! parameters. A reply is at most `max_output_len` bytes.

#![forbid(unsafe_code)]

mod error;

pub use error::Error;

use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name in the process's runtime directory.
pub const SOCKET_NAME: &str = "dpdk_telemetry.v2";

/// DPDK reads a command into a buffer of this size, NUL included.
const MAX_COMMAND_LEN: usize = 1023;

/// The reply limit when the greeting names none (DPDK's `MAX_OUTPUT_LEN`).
const DEFAULT_MAX_OUTPUT_LEN: usize = 16384;

/// Where EAL puts the socket of the process started with `--file-prefix prefix`.
pub fn socket_path(prefix: &str) -> PathBuf {
    runtime_dir().join(prefix).join(SOCKET_NAME)
}

/// EAL's `eal_get_runtime_dir`: /var/run/dpdk for root, else
/// $XDG_RUNTIME_DIR/dpdk, else /tmp/dpdk.
fn runtime_dir() -> PathBuf {
    // /proc/self is owned by the process's uid; without /proc, assume root.
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(true);
    if root {
        return PathBuf::from("/var/run/dpdk");
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
        .join("dpdk")
}

/// What the process says when a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// e.g. "DPDK 22.11.4"; empty if the greeting had none.
    pub version: String,
    pub pid: Option<u32>,
    /// The longest reply the process sends, in bytes.
    pub max_output_len: usize,
}

/// One connection to a telemetry socket; commands are asked one at a time.
#[derive(Debug)]
pub struct TelemetryClient {
    sock: Socket,
    path: PathBuf,
    timeout: Duration,
    greeting: Greeting,
    /// Receive buffer, one byte over the limit so a longer reply shows.
    buf: Vec<u8>,
}

impl TelemetryClient {
    /// How long a reply may take unless told otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Connects and reads the greeting, waiting at most
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT) for each message.
    pub fn connect(path: &Path) -> Result<Self, Error> {
        Self::connect_timeout(path, Self::DEFAULT_TIMEOUT)
    }

    /// Connects and reads the greeting, waiting at most `timeout` for any
    /// one message (the greeting, then each reply).
    pub fn connect_timeout(path: &Path, timeout: Duration) -> Result<Self, Error> {
        let io_err = |during: &str, source| Error::Io {
            path: path.to_path_buf(),
            during: during.to_string(),
            source,
        };
        let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None)
            .map_err(|e| io_err("creating a SOCK_SEQPACKET socket", e))?;
        sock.set_read_timeout(Some(timeout)).map_err(|e| io_err("setting a timeout", e))?;
        sock.set_write_timeout(Some(timeout)).map_err(|e| io_err("setting a timeout", e))?;
        let addr = SockAddr::unix(path).map_err(|e| io_err("naming the socket", e))?;
        sock.connect(&addr).map_err(|e| {
            let path = path.to_path_buf();
            match e.kind() {
                io::ErrorKind::NotFound => Error::NoSocket { path },
                io::ErrorKind::ConnectionRefused => Error::Refused { path },
                io::ErrorKind::PermissionDenied => Error::Permission { path },
                _ => Error::Io { path, during: "connecting".into(), source: e },
            }
        })?;
        let mut c = TelemetryClient {
            sock,
            path: path.to_path_buf(),
            timeout,
            greeting: Greeting {
                version: String::new(),
                pid: None,
                max_output_len: DEFAULT_MAX_OUTPUT_LEN,
            },
            buf: vec![0; DEFAULT_MAX_OUTPUT_LEN + 1],
        };
        let n = c.recv("its greeting")?;
        let text = String::from_utf8_lossy(&c.buf[..n]).into_owned();
        let g: Value = serde_json::from_str(&text).map_err(|source| Error::BadGreeting {
            path: c.path.clone(),
            text,
            source,
        })?;
        // Clamped so a silly greeting can neither refuse real replies nor make us allocate GiBs.
        let max =
            g.get("max_output_len").and_then(Value::as_u64).map_or(DEFAULT_MAX_OUTPUT_LEN, |m| {
                usize::try_from(m).unwrap_or(usize::MAX).clamp(1024, 1 << 20)
            });
        c.greeting = Greeting {
            version: g.get("version").and_then(Value::as_str).unwrap_or_default().to_string(),
            pid: g.get("pid").and_then(Value::as_u64).and_then(|p| u32::try_from(p).ok()),
            max_output_len: max,
        };
        c.buf.resize(max + 1, 0);
        Ok(c)
    }

    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks `cmd` (e.g. "/lazarus/stats" or "/ethdev/stats,0") and returns
    /// the data of the reply `{"<name>": data}`; a `null` is [`Error::NoData`].
    pub fn query(&mut self, cmd: &str) -> Result<Value, Error> {
        let text = self.query_text(cmd)?;
        let mut reply: Value = serde_json::from_str(&text).map_err(|source| Error::NotJson {
            cmd: cmd.to_string(),
            text: text.clone(),
            source,
        })?;
        // DPDK keys the reply by the name alone, without the parameters.
        let key = cmd.split(',').next().unwrap_or(cmd);
        match reply.get_mut(key).map(Value::take) {
            None => Err(Error::Unexpected { cmd: cmd.to_string(), key: key.to_string(), text }),
            Some(Value::Null) => Err(Error::NoData { cmd: cmd.to_string() }),
            Some(data) => Ok(data),
        }
    }

    /// Asks `cmd` and returns the reply as it came.
    pub fn query_text(&mut self, cmd: &str) -> Result<String, Error> {
        let bad = |reason| Err(Error::BadCommand { cmd: cmd.to_string(), reason });
        if cmd.is_empty() {
            // DPDK takes an empty message for the client hanging up.
            return bad("it is empty (try `/` for the list of commands)");
        }
        if cmd.len() > MAX_COMMAND_LEN {
            return bad("it is longer than the 1023 bytes DPDK reads of a command");
        }
        let sending = format!("sending {cmd}");
        match self.sock.send(cmd.as_bytes()) {
            Ok(n) if n == cmd.len() => {}
            Ok(_) => return Err(self.io_error(&sending, io::ErrorKind::WriteZero.into())),
            Err(e) => return Err(self.io_error(&sending, e)),
        }
        let n = self.recv(&format!("the reply to {cmd}"))?;
        if n > self.greeting.max_output_len {
            return Err(Error::TooLarge {
                path: self.path.clone(),
                cmd: cmd.to_string(),
                limit: self.greeting.max_output_len,
            });
        }
        Ok(String::from_utf8_lossy(&self.buf[..n]).into_owned())
    }

    /// Reads one message into `buf`; a message longer than `buf` is cut
    /// (SOCK_SEQPACKET drops the rest), which the caller sees as `buf.len()`.
    fn recv(&mut self, during: &str) -> Result<usize, Error> {
        match (&self.sock).read(&mut self.buf) {
            Ok(0) => Err(Error::Closed { path: self.path.clone(), during: during.to_string() }),
            Ok(n) => Ok(n),
            Err(e) => Err(self.io_error(during, e)),
        }
    }

    fn io_error(&self, during: &str, e: io::Error) -> Error {
        let path = self.path.clone();
        let during = during.to_string();
        match e.kind() {
            // SO_RCVTIMEO expiring reads as EAGAIN.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                Error::Timeout { path, during, timeout: self.timeout }
            }
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                Error::Closed { path, during }
            }
            _ => Error::Io { path, during, source: e },
        }
    }
}
