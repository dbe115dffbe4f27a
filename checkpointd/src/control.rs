//! The control socket: one JSON request line, one JSON reply line.
//!
//! Served from threads of its own, a few sessions at a time, never by the
//! drain loop: `status` and `drained` read shared-memory and heap counters
//! through atomics, `conns` streams from a read-only mapping of the store.

use crate::conns;
use crate::store::StoreStats;
use serde_json::{json, Value};
use shm_layout::{RingsSegment, SegmentAccess, StoreSegment};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The boot and TSC rate the stored times belong to (this one's, after
    /// the start-up rebase).
    pub origin: shm_layout::SegmentOrigin,
}

pub struct Control {
    pub rings: Arc<RingsSegment>,
    /// checkpointd's own second mapping of the store, read only here.
    pub store: StoreSegment,
    pub stats: Arc<StoreStats>,
    /// Protected connections' snapshots and logs.
    pub protect: crate::protect::Protected,
    pub facts: Facts,
    pub started: Instant,
    /// The remote copy's counters; None when it is off.
    pub remote: Option<Arc<crate::remote::RemoteStats>>,
    /// Where a takeover request goes (the drain loop of a standby).
    pub takeover: std::sync::Mutex<std::sync::mpsc::Sender<crate::remote::TakeoverRequest>>,
}

/// Sessions served at once; one more is told to retry, so a stuck client
/// cannot pile up threads.
const MAX_SESSIONS: usize = 4;

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
    /// Serves each connection on a thread of its own, forever.
    pub fn serve(self, listener: UnixListener) {
        let control = Arc::new(self);
        let live = Arc::new(AtomicUsize::new(0));
        for stream in listener.incoming() {
            match stream {
                Ok(mut s) => {
                    if live.fetch_add(1, Ordering::AcqRel) >= MAX_SESSIONS {
                        live.fetch_sub(1, Ordering::AcqRel);
                        let busy = json!({"error": format!(
                            "{MAX_SESSIONS} control sessions are already open; retry when one ends"
                        )});
                        let _ = s.write_all(format!("{busy}\n").as_bytes());
                        continue;
                    }
                    let (control, live) = (Arc::clone(&control), Arc::clone(&live));
                    let spawned = std::thread::Builder::new().name("control-session".into()).spawn(
                        move || {
                            if let Err(e) = control.session(s) {
                                tracing::debug!("control session ended: {e}");
                            }
                            live.fetch_sub(1, Ordering::AcqRel);
                        },
                    );
                    if let Err(e) = spawned {
                        tracing::warn!("cannot start a control session thread: {e}");
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
            if let Some((limit, payloads)) = conns_request(&line) {
                let total = self.stats.conns.load(Ordering::Relaxed);
                conns::stream(&self.store, limit, payloads, total, &mut BufWriter::new(&mut out))?;
                continue;
            }
            if is_cmd(&line, "protected") {
                self.protect.dump(&mut BufWriter::new(&mut out))?;
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
            Some("takeover") => {
                self.takeover(req.get("force").and_then(Value::as_bool).unwrap_or(false))
            }
            Some(cmd @ ("conns" | "protected")) => {
                json!({"error": format!("{cmd} is answered by the session; send it alone on its line")})
            }
            Some(other) => {
                json!({"error": format!("unknown command {other:?}; commands: status, conns, protected, drained, takeover")})
            }
            None => {
                json!({"error": "missing \"cmd\"; commands: status, conns, protected, drained, takeover"})
            }
        }
    }

    fn drained(&self) -> bool {
        (0..self.rings.geometry().workers).all(|w| self.rings.status(w).lag() == 0)
    }

    /// Asks the drain loop of a standby to take over; waits for its answer.
    fn takeover(&self, force: bool) -> Value {
        if self.remote.is_none() {
            return json!({"error": "no remote store is configured ([checkpoint.remote] url): there is no mirror to take over from"});
        }
        let (reply, answer) = std::sync::mpsc::channel();
        let sent = self
            .takeover
            .lock()
            .map(|tx| tx.send(crate::remote::TakeoverRequest { force, reply }).is_ok())
            .unwrap_or(false);
        if !sent {
            return json!({"error": "this checkpointd is not a standby (checkpoint.remote.role = \"active\"), or it already took over"});
        }
        match answer.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(v)) => json!({"takeover": v}),
            Ok(Err(e)) => json!({"error": e}),
            Err(_) => json!({"error": "checkpointd did not answer the takeover within 30 s"}),
        }
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
                "stale_deletes": st.stale_deletes.load(Ordering::Relaxed),
                "swept": st.swept.load(Ordering::Relaxed),
                "rejected": st.rejected.load(Ordering::Relaxed),
                "generation": format!("{:016x}", f.generation),
                "boot_id": f.origin.boot_id_text(),
                "tsc_hz": f.origin.tsc_hz,
            },
            "remote": self.remote.as_ref().map(|r| r.to_json()),
            "protected": self.protect.to_json(),
        })
    }
}

fn is_cmd(line: &str, cmd: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|req| req.get("cmd").and_then(Value::as_str) == Some(cmd))
}

/// `(limit, payloads)` when the line is a `conns` request. The limit is
/// capped by nothing but the store: a dump streams, so its size costs the
/// client, not checkpointd.
fn conns_request(line: &str) -> Option<(usize, bool)> {
    let req: Value = serde_json::from_str(line).ok()?;
    if req.get("cmd").and_then(Value::as_str) != Some("conns") {
        return None;
    }
    let limit = req
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(conns::DEFAULT_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let payloads = req.get("payloads").and_then(Value::as_bool).unwrap_or(false);
    Some((limit, payloads))
}
