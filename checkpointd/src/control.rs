//! The control socket: one JSON request line, one JSON reply line.
//!
//! Served from its own thread. `status` and `drained` read shared-memory and
//! heap counters through atomics; `conns` needs the store, which only the
//! drain loop touches, so it is forwarded to the drain loop over a channel
//! the loop polls without blocking.

use crate::store::StoreStats;
use serde_json::{json, Value};
use shm_layout::{RingsSegment, SegmentAccess};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A `conns` request for the drain loop.
pub struct ConnsRequest {
    pub limit: usize,
    /// Include each portion's bytes (hex).
    pub payloads: bool,
    pub reply: mpsc::SyncSender<Value>,
}

/// What `status` reports that does not change while running.
pub struct Facts {
    pub dir: PathBuf,
    pub hugetlbfs: bool,
    pub capacity: u32,
    pub ftp_capacity: u32,
    pub segment_bytes: u64,
    pub rings_bytes: u64,
    pub bytes_per_conn: u64,
    pub generation: u64,
}

pub struct Control {
    pub rings: Arc<RingsSegment>,
    pub stats: Arc<StoreStats>,
    pub facts: Facts,
    pub started: Instant,
    pub requests: mpsc::Sender<ConnsRequest>,
}

const DEFAULT_CONNS_LIMIT: usize = 1000;

/// Longest request line served; a longer one is answered with an error and
/// the session closed, so a client cannot make the daemon buffer without end.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Binds `path`: creates its directory, removes a stale socket file, refuses
/// when another process answers on it. The socket gets its mode (0600, or
/// 0660 for `checkpoint.group`) before it appears under its name: it is bound
/// under a temporary name, given the mode, then renamed into place.
pub fn bind(path: &Path, access: SegmentAccess) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("cannot create the control socket directory {}", dir.display())
        })?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{}: another checkpointd answers on this control socket; stop it first or set checkpoint.control_socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let tmp = path.with_extension(format!("bind-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("cannot bind the control socket {}", tmp.display()))?;
    let placed = access
        .apply(&tmp, access.socket_mode())
        .map_err(anyhow::Error::from)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(anyhow::Error::from));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("cannot place the control socket at {}", path.display())));
    }
    Ok(listener)
}

impl Control {
    /// Serves connections one at a time, forever.
    pub fn serve(self, listener: UnixListener) {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if let Err(e) = self.session(s) {
                        tracing::debug!("control session ended: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn session(&self, stream: UnixStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut out = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if buf.last() != Some(&b'\n') && n > MAX_REQUEST_BYTES {
                let reply = json!({"error": format!(
                    "request line too long (over {MAX_REQUEST_BYTES} bytes); send one JSON object a line, e.g. {{\"cmd\":\"status\"}}"
                )});
                out.write_all(format!("{reply}\n").as_bytes())?;
                return Ok(());
            }
            let line = String::from_utf8_lossy(&buf);
            if line.trim().is_empty() {
                continue;
            }
            let reply = self.handle(&line);
            let mut text = reply.to_string();
            text.push('\n');
            out.write_all(text.as_bytes())?;
        }
    }

    pub fn handle(&self, line: &str) -> Value {
        let req: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                return json!({"error": format!("request is not JSON ({e}); send e.g. {{\"cmd\":\"status\"}}")})
            }
        };
        match req.get("cmd").and_then(Value::as_str) {
            Some("status") => self.status(),
            Some("drained") => json!({"drained": self.drained()}),
            Some("conns") => {
                let limit = req
                    .get("limit")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_CONNS_LIMIT, |n| n as usize);
                let payloads = req.get("payloads").and_then(Value::as_bool).unwrap_or(false);
                self.conns(limit, payloads)
            }
            Some(other) => {
                json!({"error": format!("unknown command {other:?}; commands: status, conns, drained")})
            }
            None => json!({"error": "missing \"cmd\"; commands: status, conns, drained"}),
        }
    }

    fn drained(&self) -> bool {
        (0..self.rings.geometry().workers).all(|w| self.rings.status(w).lag() == 0)
    }

    fn status(&self) -> Value {
        let rings: Vec<Value> = (0..self.rings.geometry().workers)
            .map(|w| {
                let s = self.rings.status(w);
                json!({
                    "worker": w,
                    "head": s.head,
                    "tail": s.tail,
                    "lag": s.lag(),
                    "applied": s.applied,
                    "torn": s.torn,
                    "resync_epoch": s.resync_epoch,
                })
            })
            .collect();
        let st = &self.stats;
        let f = &self.facts;
        json!({
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "dir": f.dir.display().to_string(),
            "hugetlbfs": f.hugetlbfs,
            "ring_slots": self.rings.geometry().slots_per_ring,
            "rings_bytes": f.rings_bytes,
            "rings": rings,
            "store": {
                "conns": st.conns.load(Ordering::Relaxed),
                "ftp": st.ftp.load(Ordering::Relaxed),
                "capacity": f.capacity,
                "ftp_capacity": f.ftp_capacity,
                "segment_bytes": f.segment_bytes,
                "bytes_per_conn": f.bytes_per_conn,
                "full_drops": st.full_drops.load(Ordering::Relaxed),
                "ftp_full_drops": st.ftp_full_drops.load(Ordering::Relaxed),
                "stale": st.stale.load(Ordering::Relaxed),
                "rejected": st.rejected.load(Ordering::Relaxed),
                "generation": format!("{:016x}", f.generation),
            },
        })
    }

    fn conns(&self, limit: usize, payloads: bool) -> Value {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.requests.send(ConnsRequest { limit, payloads, reply: tx }).is_err() {
            return json!({"error": "the drain loop is gone (checkpointd is stopping)"});
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(v) => v,
            Err(_) => json!({"error": "the drain loop did not answer within 5 s; retry"}),
        }
    }
}
