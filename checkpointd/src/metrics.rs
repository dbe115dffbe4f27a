//! The Prometheus endpoint (`checkpoint.metrics_listen`).
//!
//! A thread of its own answers `GET /metrics` with the OpenMetrics text
//! format (encoded by the `prometheus-client` crate), built at every scrape
//! from the same atomics the control socket reads: ring control blocks and
//! heartbeat in shared memory, store counters in the heap. It never takes a
//! lock the drain loop holds, so a slow scraper cannot stall the drain.
//!
//! When `checkpoint.dataplane_telemetry` names the dataplane's DPDK telemetry
//! socket, each scrape also asks the dataplane for `/lazarus/workers` and
//! `/lazarus/checkpoint` and exports every number in the replies as
//! `lazarus_dataplane_*` (labelled by worker where the reply is per worker).
//! A dataplane that is down, or a build without those commands, only sets
//! `lazarus_dataplane_up 0`. Every metric is listed in docs/OPERATING.md.

use crate::store::StoreStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::Value;
use shm_layout::RingsSegment;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `Content-Type` of the OpenMetrics text format (Prometheus negotiates it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Commands asked of the dataplane at each scrape, and the metric prefix of
/// each reply's numbers. The first decides `lazarus_dataplane_up`.
const DATAPLANE_COMMANDS: [(&str, &str); 2] =
    [("/lazarus/workers", "dataplane"), ("/lazarus/checkpoint", "dataplane_checkpoint")];

/// How long one telemetry exchange may take before the scrape gives up on
/// the dataplane (its telemetry thread is not on the fast path, but it may
/// be wedged).
const TELEMETRY_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Exporter {
    pub rings: Arc<RingsSegment>,
    pub stats: Arc<StoreStats>,
    pub capacity: u32,
    pub ftp_capacity: u32,
    pub bytes_per_conn: u64,
    pub started: Instant,
    /// The dataplane's telemetry socket; None: checkpointd's metrics only.
    pub telemetry: Option<PathBuf>,
}

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

    /// One scrape: reads every counter now, asks the dataplane if configured.
    pub fn render(&self) -> String {
        let snap = self.snapshot();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snap));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn snapshot(&self) -> Snapshot {
        let workers = self.rings.geometry().workers;
        let rings = (0..workers).map(|w| (w, self.rings.status(w))).collect();
        let hb = self.rings.heartbeat();
        let heartbeat_age = (hb.pid != 0)
            .then(|| shm_layout::monotonic_ns().saturating_sub(hb.monotonic_ns) as f64 / 1e9);
        let st = &self.stats;
        let dataplane = self.telemetry.as_deref().map(scrape_dataplane);
        Snapshot {
            rings,
            heartbeat_age,
            conns: st.conns.load(Ordering::Relaxed),
            ftp: st.ftp.load(Ordering::Relaxed),
            capacity: self.capacity,
            ftp_capacity: self.ftp_capacity,
            bytes_per_conn: self.bytes_per_conn,
            full_drops: st.full_drops.load(Ordering::Relaxed),
            ftp_full_drops: st.ftp_full_drops.load(Ordering::Relaxed),
            stale: st.stale.load(Ordering::Relaxed),
            rejected: st.rejected.load(Ordering::Relaxed),
            uptime: self.started.elapsed().as_secs_f64(),
            dataplane,
        }
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

/// What one scrape read, encoded afterwards.
#[derive(Debug)]
struct Snapshot {
    rings: Vec<(u32, shm_layout::RingStatus)>,
    /// None: the rings were never beaten (cannot happen once running).
    heartbeat_age: Option<f64>,
    conns: u64,
    ftp: u64,
    capacity: u32,
    ftp_capacity: u32,
    bytes_per_conn: u64,
    full_drops: u64,
    ftp_full_drops: u64,
    stale: u64,
    rejected: u64,
    uptime: f64,
    /// None: no telemetry socket configured.
    dataplane: Option<Dataplane>,
}

/// The dataplane's side of a scrape.
#[derive(Debug, Default)]
pub struct Dataplane {
    pub up: bool,
    pub scrape_seconds: f64,
    /// Metric name -> samples (labels, value), every number in the replies.
    pub families: Families,
}

type Labels = Vec<(String, String)>;
/// Metric name -> its samples.
pub type Families = BTreeMap<String, Vec<(Labels, f64)>>;

fn worker_label(w: u32) -> [(&'static str, String); 1] {
    [("worker", w.to_string())]
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type RingField = fn(&shm_layout::RingStatus) -> u64;
        let ring_gauges: [(&str, &str, RingField); 3] = [
            (
                "lazarus_ring_head",
                "Next position the dataplane worker will publish in its delta ring",
                |s| s.head,
            ),
            ("lazarus_ring_tail", "Next position checkpointd will read in the delta ring", |s| {
                s.tail
            }),
            ("lazarus_ring_lag", "Deltas published but not yet drained (head - tail)", |s| s.lag()),
        ];
        for (name, help, f) in ring_gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (w, s) in &self.rings {
                let labels = worker_label(*w);
                ConstGauge::new(f(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        let ring_counters: [(&str, &str, RingField); 3] = [
            (
                "lazarus_ring_applied",
                "Deltas checkpointd drained from the ring and applied to the store",
                |s| s.applied,
            ),
            (
                "lazarus_ring_torn",
                "Ring records skipped because their checksum or sequence did not match",
                |s| s.torn,
            ),
            (
                "lazarus_ring_resync_requests",
                "Full resyncs checkpointd asked this worker for (resync_epoch)",
                |s| s.resync_epoch,
            ),
        ];
        for (name, help, f) in ring_counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (w, s) in &self.rings {
                let labels = worker_label(*w);
                ConstCounter::new(f(s)).encode(m.encode_family(&labels)?)?;
            }
        }

        let gauges: [(&str, &str, u64); 5] = [
            ("lazarus_store_connections", "Connections held in the store", self.conns),
            (
                "lazarus_store_ftp_portions",
                "FTP control-channel portions held in the store",
                self.ftp,
            ),
            ("lazarus_store_capacity", "Connections the store can hold", u64::from(self.capacity)),
            (
                "lazarus_store_ftp_capacity",
                "FTP portions the store can hold",
                u64::from(self.ftp_capacity),
            ),
            (
                "lazarus_store_bytes_per_connection",
                "Store bytes per connection record",
                self.bytes_per_conn,
            ),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(enc.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        let counters: [(&str, &str, u64); 4] = [
            (
                "lazarus_store_full_drops",
                "New connections not stored because the store was full",
                self.full_drops,
            ),
            (
                "lazarus_store_ftp_full_drops",
                "FTP portions not stored because the FTP pool was full",
                self.ftp_full_drops,
            ),
            (
                "lazarus_store_stale",
                "Deltas ignored because the store already held a newer version",
                self.stale,
            ),
            (
                "lazarus_store_rejected",
                "Deltas refused: unknown module or kind, oversized portion",
                self.rejected,
            ),
        ];
        for (name, help, v) in counters {
            ConstCounter::new(v).encode(enc.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        ConstGauge::new(self.uptime).encode(enc.encode_descriptor(
            "lazarus_checkpointd_uptime_seconds",
            "Seconds since checkpointd started",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(age) = self.heartbeat_age {
            ConstGauge::new(age).encode(enc.encode_descriptor(
                "lazarus_checkpointd_heartbeat_age_seconds",
                "Seconds since the drain loop last beat the heartbeat the dataplane checks at start",
                None,
                MetricType::Gauge,
            )?)?;
        }

        let Some(dp) = &self.dataplane else { return Ok(()) };
        ConstGauge::new(i64::from(dp.up)).encode(enc.encode_descriptor(
            "lazarus_dataplane_up",
            "1 when the dataplane answered /lazarus/workers on its telemetry socket at this scrape",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(dp.scrape_seconds).encode(enc.encode_descriptor(
            "lazarus_dataplane_scrape_seconds",
            "Time the telemetry exchange with the dataplane took at this scrape",
            None,
            MetricType::Gauge,
        )?)?;
        for (name, samples) in &dp.families {
            let help = "Dataplane counter from its DPDK telemetry reply (see docs/OPERATING.md)";
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Unknown)?;
            for (labels, v) in samples {
                ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Asks the dataplane for its counters. Any failure (socket absent, refused,
/// timeout, unknown command) yields `up = false` and is logged at debug only:
/// a dataplane that is restarting is normal.
pub fn scrape_dataplane(socket: &Path) -> Dataplane {
    let start = Instant::now();
    let mut dp = Dataplane::default();
    match telemetry_query(socket, &DATAPLANE_COMMANDS.map(|(c, _)| c)) {
        Ok(replies) => {
            for ((cmd, prefix), reply) in DATAPLANE_COMMANDS.iter().zip(&replies) {
                let payload = reply.as_ref().and_then(|r| r.get(*cmd)).filter(|v| !v.is_null());
                match payload {
                    Some(p) => {
                        if *cmd == DATAPLANE_COMMANDS[0].0 {
                            dp.up = true;
                        }
                        flatten(&format!("lazarus_{prefix}"), p, &Vec::new(), &mut dp.families);
                    }
                    None => {
                        tracing::debug!("dataplane telemetry: no data for {cmd} (older dataplane?)")
                    }
                }
            }
        }
        Err(e) => tracing::debug!("dataplane telemetry {}: {e}", socket.display()),
    }
    // Names the reply shares with our own families would make the exposition
    // invalid; they cannot arise with the prefixes above, but be sure.
    dp.families.retain(|name, _| {
        name != "lazarus_dataplane_up" && name != "lazarus_dataplane_scrape_seconds"
    });
    dp.scrape_seconds = start.elapsed().as_secs_f64();
    dp
}

/// The DPDK telemetry v2 protocol (`dpdk_telemetry.v2`): connect a
/// SOCK_SEQPACKET socket, read the JSON greeting (`version`, `pid`,
/// `max_output_len`), then for each command send it as one message and read
/// one JSON reply `{"<command>": <data or null>}`. Returns one entry per
/// command: None when that reply was not JSON.
pub fn telemetry_query(socket: &Path, commands: &[&str]) -> std::io::Result<Vec<Option<Value>>> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    s.set_read_timeout(Some(TELEMETRY_TIMEOUT))?;
    s.set_write_timeout(Some(TELEMETRY_TIMEOUT))?;
    s.connect(&SockAddr::unix(socket)?)?;
    let mut buf = vec![0u8; 16384];
    let n = (&s).read(&mut buf)?;
    let greeting: Value = serde_json::from_slice(&buf[..n]).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("greeting is not JSON: {e}"))
    })?;
    // Replies are at most max_output_len bytes; one more shows truncation.
    let max = greeting
        .get("max_output_len")
        .and_then(Value::as_u64)
        .unwrap_or(16384)
        .clamp(1024, 1 << 20) as usize;
    buf.resize(max + 1, 0);
    let mut replies = Vec::with_capacity(commands.len());
    for cmd in commands {
        (&s).write_all(cmd.as_bytes())?;
        let n = (&s).read(&mut buf)?;
        replies.push(serde_json::from_slice(&buf[..n]).ok());
    }
    Ok(replies)
}

/// Turns every number (and boolean) of a telemetry reply into samples.
/// Object keys extend the name; an array of objects, or an object whose keys
/// are all numbers, is per worker: the element's `worker` field (else its
/// index or key) becomes the `worker` label; other arrays label by `index`.
/// Strings are skipped.
pub fn flatten(name: &str, v: &Value, labels: &Labels, out: &mut Families) {
    match v {
        Value::Number(n) => push_sample(out, name, labels, n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => push_sample(out, name, labels, f64::from(u8::from(*b))),
        Value::Object(map) => {
            // The dataplane keys per-worker dicts "worker0", "worker1", ...
            // (DPDK 22.11 telemetry has no arrays of dicts); plain "0" too.
            let worker_of = |k: &str| k.strip_prefix("worker").unwrap_or(k).parse::<u32>().ok();
            let keyed_by_worker = !map.is_empty()
                && map.keys().all(|k| worker_of(k).is_some())
                && !has_label(labels, "worker");
            for (k, item) in map {
                if keyed_by_worker {
                    let w = worker_of(k).unwrap_or_default().to_string();
                    flatten(name, item, &with_label(labels, "worker", &w), out);
                } else if k == "worker" && has_label(labels, "worker") {
                    // Already a label.
                } else {
                    flatten(&format!("{name}_{}", sanitize(k)), item, labels, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let l = if item.is_object() && !has_label(labels, "worker") {
                    let w = item.get("worker").map_or_else(
                        || i.to_string(),
                        |w| w.to_string().trim_matches('"').to_string(),
                    );
                    with_label(labels, "worker", &w)
                } else {
                    with_label(labels, "index", &i.to_string())
                };
                flatten(name, item, &l, out);
            }
        }
        Value::String(_) | Value::Null => {}
    }
}

fn has_label(labels: &Labels, key: &str) -> bool {
    labels.iter().any(|(k, _)| k == key)
}

fn with_label(labels: &Labels, key: &str, value: &str) -> Labels {
    let mut l = labels.clone();
    l.push((key.to_string(), value.to_string()));
    l
}

fn push_sample(out: &mut Families, name: &str, labels: &Labels, v: f64) {
    let samples = out.entry(name.to_string()).or_default();
    // A duplicate series would make the exposition invalid: keep the first.
    if !samples.iter().any(|(l, _)| l == labels) {
        samples.push((labels.clone(), v));
    }
}

/// A metric name part: `[a-z0-9_]`, anything else becomes `_`.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(v: Value) -> Families {
        let mut out = BTreeMap::new();
        flatten("lazarus_dataplane", &v, &Vec::new(), &mut out);
        out
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn per_worker_arrays_and_maps_become_worker_labels() {
        let out = flat(json!({
            "workers": [{"worker": 0, "lcore": 1, "rx": 10, "name": "w0"}, {"worker": 1, "lcore": 2, "rx": 20}],
            "restore": {"ms": 12.5, "ok": true},
        }));
        assert_eq!(
            out["lazarus_dataplane_workers_rx"],
            vec![(l(&[("worker", "0")]), 10.0), (l(&[("worker", "1")]), 20.0)]
        );
        assert_eq!(out["lazarus_dataplane_workers_lcore"][1], (l(&[("worker", "1")]), 2.0));
        assert!(!out.contains_key("lazarus_dataplane_workers_worker"));
        assert!(!out.contains_key("lazarus_dataplane_workers_name"));
        assert_eq!(out["lazarus_dataplane_restore_ms"], vec![(vec![], 12.5)]);
        assert_eq!(out["lazarus_dataplane_restore_ok"], vec![(vec![], 1.0)]);

        let out = flat(json!({"0": {"drop.table_full": 3}, "1": {"drop.table_full": 4}}));
        assert_eq!(
            out["lazarus_dataplane_drop_table_full"],
            vec![(l(&[("worker", "0")]), 3.0), (l(&[("worker", "1")]), 4.0)]
        );
        let out = flat(json!({"rx": [1, 2]}));
        assert_eq!(out["lazarus_dataplane_rx"][1], (l(&[("index", "1")]), 2.0));
    }

    #[test]
    fn absent_socket_is_down_not_an_error() {
        let dp = scrape_dataplane(Path::new("/nonexistent/dpdk_telemetry.v2"));
        assert!(!dp.up);
        assert!(dp.families.is_empty());
    }

    /// A stand-in for the dataplane's telemetry socket: greets, then answers
    /// each command from `replies` (by command) or with null, as DPDK does
    /// for an unknown command.
    fn fake_telemetry(
        path: &Path,
        replies: Vec<(&'static str, Value)>,
    ) -> std::thread::JoinHandle<Vec<String>> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let _ = std::fs::remove_file(path);
        let l = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        l.bind(&SockAddr::unix(path).unwrap()).unwrap();
        l.listen(1).unwrap();
        std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            (&c).write_all(br#"{"version": "DPDK 22.11.0", "pid": 42, "max_output_len": 16384}"#)
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = (&c).read(&mut buf).unwrap_or(0);
                if n == 0 {
                    return seen;
                }
                let cmd = String::from_utf8_lossy(&buf[..n]).into_owned();
                let data =
                    replies.iter().find(|(k, _)| *k == cmd).map_or(Value::Null, |(_, v)| v.clone());
                (&c).write_all(json!({ cmd.clone(): data }).to_string().as_bytes()).unwrap();
                seen.push(cmd);
            }
        })
    }

    #[test]
    fn telemetry_v2_client_reads_the_dataplane() {
        let path =
            std::env::temp_dir().join(format!("lazarus-fake-telemetry-{}.v2", std::process::id()));
        let server = fake_telemetry(
            &path,
            // The shape the dataplane answers (dataplane/src/telemetry.rs).
            vec![(
                "/lazarus/workers",
                json!({"worker0": {"worker": 0, "lcore": 1, "rx": 7}, "worker1": {"worker": 1, "lcore": 2, "rx": 9}}),
            )],
        );
        let dp = scrape_dataplane(&path);
        assert!(dp.up);
        assert_eq!(
            dp.families["lazarus_dataplane_rx"],
            vec![(l(&[("worker", "0")]), 7.0), (l(&[("worker", "1")]), 9.0)]
        );
        // /lazarus/checkpoint answered null (not in this build): no samples, still up.
        assert!(!dp.families.keys().any(|k| k.starts_with("lazarus_dataplane_checkpoint")));
        assert_eq!(server.join().unwrap(), vec!["/lazarus/workers", "/lazarus/checkpoint"]);
        let server = fake_telemetry(&path, vec![]);
        assert!(!scrape_dataplane(&path).up, "a dataplane without /lazarus/workers is down");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn snapshot_encodes_as_openmetrics() {
        let mut families = BTreeMap::new();
        flatten("lazarus_dataplane", &json!([{"worker": 0, "rx": 5}]), &Vec::new(), &mut families);
        let snap = Snapshot {
            rings: vec![(
                0,
                shm_layout::RingStatus { head: 10, tail: 7, resync_epoch: 1, torn: 0, applied: 7 },
            )],
            heartbeat_age: Some(0.25),
            conns: 3,
            ftp: 1,
            capacity: 100,
            ftp_capacity: 16,
            bytes_per_conn: 192,
            full_drops: 0,
            ftp_full_drops: 0,
            stale: 2,
            rejected: 0,
            uptime: 1.5,
            dataplane: Some(Dataplane { up: true, scrape_seconds: 0.001, families }),
        };
        let mut r = Registry::default();
        r.register_collector(Box::new(snap));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for want in [
            "lazarus_ring_lag{worker=\"0\"} 3\n",
            "lazarus_ring_applied_total{worker=\"0\"} 7\n",
            "lazarus_ring_resync_requests_total{worker=\"0\"} 1\n",
            "lazarus_store_connections 3\n",
            "lazarus_checkpointd_heartbeat_age_seconds 0.25\n",
            "lazarus_dataplane_up 1\n",
            "lazarus_dataplane_rx{worker=\"0\"} 5.0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
