//! The real `lazarus-checkpointd` binary against a producer in the test
//! process: no DPDK needed. Segments live in a temporary directory that is
//! not on hugetlbfs (checkpointd uses an existing directory as is, with a
//! warning).

mod common;

use common::*;
use serde_json::json;
use shm_layout::{delta_kind, module, RingsGeometry, LAYOUT_VERSION};
use std::io::Write;
use std::time::Duration;

fn tcp_payload(conn: u64, version: u64) -> Vec<u8> {
    let mut v = conn.to_le_bytes().to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.resize(48, (conn ^ version) as u8);
    v
}

#[test]
fn portions_and_deletes_reach_the_store() {
    let env = Env::new("roundtrip", 2, "");
    let d = env.spawn();
    assert!(d.stderr().contains("not on hugetlbfs"), "{}", d.stderr());
    let rings = env.rings();
    assert_eq!(rings.geometry(), RingsGeometry { workers: 2, slots_per_ring: 1024 });
    let mut p0 = rings.producer(0).unwrap();
    let mut p1 = rings.producer(1).unwrap();
    for c in 0..100u64 {
        let p = if c % 2 == 0 { &mut p0 } else { &mut p1 };
        push(p, c, module::IP, delta_kind::PORTION, 1, &[c as u8; 40]);
        push(p, c, module::TCP, delta_kind::PORTION, 1, &tcp_payload(c, 1));
        push(p, c, module::TCP, delta_kind::PORTION, 2, &tcp_payload(c, 2));
    }
    push(&mut p0, 4, module::FTP, delta_kind::PORTION, 1, b"227 Entering Passive Mode");
    for c in 90..100u64 {
        let p = if c % 2 == 0 { &mut p0 } else { &mut p1 };
        push(p, c, 0, delta_kind::DELETE, 3, &[]);
    }
    p0.publish();
    p1.publish();
    d.wait_drained();

    let st = d.request(json!({"cmd": "status"}));
    assert_eq!(st["store"]["conns"], 90, "{st}");
    assert_eq!(st["store"]["ftp"], 1);
    assert_eq!(st["store"]["capacity"], 5000);
    assert_eq!(st["store"]["bytes_per_conn"], 192);
    assert_eq!(st["hugetlbfs"], false);
    assert_eq!(st["rings"][0]["lag"], 0);
    assert_eq!(st["rings"][0]["applied"], 50 * 3 + 1 + 5);
    assert_eq!(st["rings"][1]["torn"], 0);
    assert_eq!(st["pid"], d.pid());

    let conns = d.request(json!({"cmd": "conns", "limit": 5}));
    assert_eq!((conns["total"].as_u64(), conns["conns"].as_array().unwrap().len()), (Some(90), 5));
    let all = d.request(json!({"cmd": "conns", "limit": 1000}));
    let c4 = all["conns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conn_id"] == "0000000000000004")
        .unwrap();
    assert_eq!(c4["worker"], 0);
    assert_eq!(
        c4["modules"],
        json!([{"module": "ip", "version": 1, "len": 40}, {"module": "tcp", "version": 2, "len": 48},
               {"module": "ftp", "version": 1, "len": 25}])
    );
    assert!(d.request(json!({"cmd": "nope"}))["error"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
    assert!(d.request(json!({"bad": 1}))["error"].is_string());

    let store = env.store();
    for w in 0..2u16 {
        let mut n = 0;
        let mut it = store.restore_iter(w);
        for c in it.by_ref() {
            assert_eq!(c.conn_id % 2, u64::from(w));
            assert!(c.conn_id < 90);
            assert_eq!(c.ip().unwrap().payload(), &[c.conn_id as u8; 40]);
            let l4 = c.l4().unwrap();
            assert_eq!(
                (l4.module, l4.version, l4.payload()),
                (module::TCP, 2, &tcp_payload(c.conn_id, 2)[..])
            );
            assert_eq!(c.ftp().is_some(), c.conn_id == 4);
            n += 1;
        }
        assert_eq!((n, it.corrupt_portions()), (45, 0));
    }
    // The heartbeat is fresh and names the daemon.
    let hb = rings.heartbeat();
    assert_eq!(hb.pid, d.pid());
    assert!(shm_layout::monotonic_ns() - hb.monotonic_ns < 2_000_000_000);

    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("exiting on signal") && log.contains("segments kept"), "{log}");
    assert!(env.seg.join("rings").exists() && env.seg.join("store").exists());
}

#[test]
fn sigkill_mid_stream_loses_nothing_published() {
    const CONNS: u64 = 3000;
    const ROUNDS: u64 = 4;
    let env = Env::new("kill9", 1, "drain_batch = 64");
    let mut d = Some(env.spawn());
    let rings = env.rings();
    let mut p = rings.producer(0).unwrap();
    let mut kills = 0;
    for round in 1..=ROUNDS {
        for c in 0..CONNS {
            // Restart checkpointd once the ring is full, or 800 deltas later.
            if d.is_none() && (p.free_slots() == 0 || c == CONNS / 2 + 800) {
                d = Some(env.spawn());
            }
            push(&mut p, c, module::TCP, delta_kind::PORTION, round, &tcp_payload(c, round));
            if c % 32 == 31 {
                p.publish();
            }
            // Kill checkpointd twice in the middle of the stream.
            if c == CONNS / 2 && round <= 2 {
                p.publish();
                let lag = rings.status(0).lag();
                d.take().unwrap().kill9();
                eprintln!("killed checkpointd with {lag} published delta(s) not yet drained");
                kills += 1;
            }
        }
        p.publish();
    }
    // Deletes for a tenth, after a last kill right before them.
    d.take().unwrap().kill9();
    let d = env.spawn();
    for c in (0..CONNS).step_by(10) {
        push(&mut p, c, 0, delta_kind::DELETE, ROUNDS + 1, &[]);
    }
    p.publish();
    d.wait_drained();
    assert_eq!(kills, 2);
    let st = d.request(json!({"cmd": "status"}));
    assert_eq!(st["rings"][0]["torn"], 0, "{st}");
    assert_eq!(st["store"]["conns"], CONNS - CONNS / 10, "{st}");
    let store = env.store();
    let mut seen = 0;
    for c in store.restore_iter(0) {
        assert_ne!(c.conn_id % 10, 0, "deleted conn {} still stored", c.conn_id);
        let l4 = c.l4().unwrap();
        assert_eq!((l4.version, l4.payload()), (ROUNDS, &tcp_payload(c.conn_id, ROUNDS)[..]));
        seen += 1;
    }
    assert_eq!(seen, CONNS - CONNS / 10);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn version_mismatched_segment_is_a_clear_error() {
    let env = Env::new("version", 1, "");
    {
        let d = env.spawn();
        assert_eq!(d.terminate().0, 0);
    }
    // Bump the layout version in the rings file's header (bytes 8..12).
    let path = env.seg.join("rings");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_ne_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("another Lazarus build") && log.contains("remove the segment files"),
        "{log}"
    );
}

#[test]
fn geometry_change_is_a_clear_error() {
    let env = Env::new("geometry", 1, "");
    assert_eq!(env.spawn().terminate().0, 0);
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("ring_slots = 1024", "ring_slots = 2048");
    std::fs::write(&env.config, text).unwrap();
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("ring(s) of 1024 slots") && log.contains("stop the dataplane"), "{log}");
}

/// Fewer workers with the store of more: the removed workers' connections
/// are kept for the dataplane to place by its RSS, and said so.
#[test]
fn stored_connections_of_removed_workers_are_kept_for_placement() {
    let env = Env::new("fewer-workers", 2, "");
    {
        let d = env.spawn();
        let rings = env.rings();
        let mut p = rings.producer(1).unwrap();
        push(&mut p, 7, module::UDP, delta_kind::PORTION, 1, b"udp");
        p.publish();
        d.wait_drained();
        assert_eq!(d.terminate().0, 0);
    }
    let text = std::fs::read_to_string(&env.config).unwrap();
    let one = text.replacen("[[worker]]\nlcore = 2\nrx = [\"a:1\"]\n\n", "", 1);
    assert_ne!(one, text);
    std::fs::write(&env.config, one).unwrap();
    std::fs::remove_file(env.seg.join("rings")).unwrap();
    let d = env.spawn();
    assert!(d.stderr().contains("1 connection(s) stored for no worker of the 1"), "{}", d.stderr());
    let st = d.request(json!({"cmd": "status"}));
    assert_eq!(st["store"]["conns"], 1, "{st}");
    let store = env.store();
    let c = store.restore_iter_placed(0, 1).next().expect("offered to worker 0");
    assert_eq!((c.conn_id, c.worker), (7, 1));
    assert_eq!(d.terminate().0, 0);
}

#[test]
fn lost_store_triggers_a_resync() {
    let env = Env::new("resync", 2, "");
    {
        let d = env.spawn();
        let rings = env.rings();
        let mut p = rings.producer(1).unwrap();
        push(&mut p, 7, module::UDP, delta_kind::PORTION, 1, b"udp");
        p.publish();
        d.wait_drained();
        assert_eq!(d.terminate().0, 0);
    }
    std::fs::remove_file(env.seg.join("store")).unwrap();
    let d = env.spawn();
    assert!(d.stderr().contains("full resync"), "{}", d.stderr());
    let st = d.request(json!({"cmd": "status"}));
    assert_eq!(st["rings"][0]["resync_epoch"], 1, "{st}");
    assert_eq!(st["rings"][1]["resync_epoch"], 1, "{st}");
    assert_eq!(st["store"]["conns"], 0);
    let rings = env.rings();
    assert_eq!(rings.producer(1).unwrap().resync_epoch(), 1);
    // A restart with both files present does not ask again.
    assert_eq!(d.terminate().0, 0);
    let d = env.spawn();
    assert_eq!(d.request(json!({"cmd": "status"}))["rings"][0]["resync_epoch"], 1);
}

#[test]
fn disabled_exits_with_code_2() {
    let env = Env::new("disabled", 1, "enabled = false");
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("checkpoint.enabled = false"), "{log}");
}

#[test]
fn second_instance_is_refused() {
    let env = Env::new("twice", 1, "");
    let _d = env.spawn();
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("another checkpointd"), "{log}");
}

/// A free loopback port: bind port 0, note the port, close. A race with
/// another process taking it in between is possible but rare.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain TCP; returns (status line, headers, body).
fn http_get(port: u16, path: &str) -> (String, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("no end of HTTP head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Checks the Prometheus/OpenMetrics text exposition line by line: comments
/// are `# HELP|TYPE|UNIT name ...` or `# EOF` (last); every other line is
/// `name{label="value",...} value` with a valid name and a float value.
/// Returns the samples as (name{labels}, value).
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    fn valid_name(n: &str) -> bool {
        let mut c = n.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.split(' ');
            assert!(
                matches!(w.next(), Some("HELP" | "TYPE" | "UNIT")),
                "bad comment line {line:?}"
            );
            assert!(w.next().is_some_and(valid_name), "bad name in {line:?}");
            continue;
        }
        let (series, value) =
            line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for pair in labels.split(',') {
                    let (k, val) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                    assert!(valid_name(k), "bad label name in {line:?}");
                    assert!(
                        val.len() >= 2 && val.starts_with('"') && val.ends_with('"'),
                        "bad label value in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        samples.push((series.to_string(), v));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no sample {series} in {samples:?}"))
        .1
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let port = free_port();
    let telemetry =
        std::env::temp_dir().join(format!("ckptd-it-no-dataplane-{}.sock", std::process::id()));
    let env = Env::new(
        "metrics",
        2,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\ndataplane_telemetry = \"{}\"",
            telemetry.display()
        ),
    );
    let d = env.spawn();
    assert!(
        d.stderr().contains(&format!("metrics on http://127.0.0.1:{port}/metrics")),
        "{}",
        d.stderr()
    );
    let rings = env.rings();
    let mut p1 = rings.producer(1).unwrap();
    for c in 0..10u64 {
        push(&mut p1, c, module::TCP, delta_kind::PORTION, 1, &tcp_payload(c, 1));
    }
    p1.publish();
    d.wait_drained();

    let (status, headers, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(headers.contains("Content-Type: application/openmetrics-text"), "{headers}");
    let first = parse_exposition(&body);
    assert_eq!(sample(&first, "lazarus_ring_applied_total{worker=\"1\"}"), 10.0, "{body}");
    assert_eq!(sample(&first, "lazarus_ring_applied_total{worker=\"0\"}"), 0.0);
    assert_eq!(sample(&first, "lazarus_ring_lag{worker=\"1\"}"), 0.0);
    assert_eq!(sample(&first, "lazarus_store_connections"), 10.0);
    assert_eq!(sample(&first, "lazarus_store_capacity"), 5000.0);
    assert_eq!(sample(&first, "lazarus_store_bytes_per_connection"), 192.0);
    assert!(sample(&first, "lazarus_checkpointd_heartbeat_age_seconds") < 2.0);
    // No dataplane behind the configured socket: down, not an error.
    assert_eq!(sample(&first, "lazarus_dataplane_up"), 0.0);

    for c in 10..25u64 {
        push(&mut p1, c, module::UDP, delta_kind::PORTION, 1, b"udp");
    }
    p1.publish();
    d.wait_drained();
    let (_, _, body) = http_get(port, "/metrics");
    let second = parse_exposition(&body);
    assert_eq!(sample(&second, "lazarus_ring_applied_total{worker=\"1\"}"), 25.0, "{body}");
    assert_eq!(sample(&second, "lazarus_store_connections"), 25.0);
    assert!(
        sample(&second, "lazarus_checkpointd_uptime_seconds")
            >= sample(&first, "lazarus_checkpointd_uptime_seconds")
    );
    assert_eq!(http_get(port, "/nope").0, "HTTP/1.1 404 Not Found");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn metrics_on_a_remote_address_needs_the_allow_key() {
    let env = Env::new("metrics-remote", 1, "metrics_listen = \"0.0.0.0:9108\"");
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("checkpoint.metrics_listen")
            && log.contains("not a loopback address")
            && log.contains("metrics_allow_remote = true"),
        "{log}"
    );
}

/// A `conns` client that stops reading (a stuck `lazarusctl`, a pager left
/// open) holds only its own session: draining and other sessions go on.
#[test]
fn a_stalled_conns_client_stalls_neither_draining_nor_status() {
    let env = Env::new("stalled-conns", 1, "");
    let d = env.spawn();
    let rings = env.rings();
    let mut p = rings.producer(0).unwrap();
    for c in 0..4000u64 {
        push(&mut p, c, module::IP, delta_kind::PORTION, 1, &[c as u8; 80]);
        push(&mut p, c, module::TCP, delta_kind::PORTION, 1, &tcp_payload(c, 1));
    }
    p.publish();
    d.wait_drained();
    // Megabytes of reply, far more than the socket buffers: never read.
    let mut stalled = std::os::unix::net::UnixStream::connect(&env.sock).unwrap();
    stalled.write_all(b"{\"cmd\":\"conns\",\"limit\":100000,\"payloads\":true}\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for c in 0..4000u64 {
        push(&mut p, c, module::TCP, delta_kind::PORTION, 2, &tcp_payload(c, 2));
    }
    p.publish();
    let t0 = std::time::Instant::now();
    d.wait_drained();
    let st = d.request(json!({"cmd": "status"}));
    assert!(t0.elapsed() < Duration::from_secs(3), "draining waited on the stalled client");
    assert_eq!(st["rings"][0]["applied"], 12000, "{st}");
    drop(stalled);
    assert_eq!(d.terminate().0, 0);
}

/// A store left by another boot (a directory on a disk, a copied segment):
/// its versions are TSC readings of that boot, far above what this boot's
/// dataplane writes. checkpointd rebases it at start, so new deltas land
/// instead of being ignored as stale for hours.
#[test]
fn a_store_from_another_boot_is_rebased_so_new_deltas_land() {
    let env = Env::new("foreign-boot", 1, "");
    let path = env.seg.join("store");
    {
        let geom = shm_layout::StoreGeometry { conn_capacity: 5000, ftp_capacity: 16 };
        let mut st = shm_layout::StoreSegment::create_file(&path, geom).unwrap();
        st.init_record(0, 1, 0);
        st.put_portion(0, module::IP, 9_000_000_000, b"ip").unwrap();
        st.put_portion(0, module::TCP, 9_000_000_000, b"old").unwrap();
    }
    // Another boot's origin, written where the layout keeps it.
    let here = shm_layout::SegmentOrigin::this_host().unwrap();
    let mut boot = here.boot_id;
    boot[0] ^= 0x5a;
    let foreign = shm_layout::SegmentOrigin::new(boot, here.tsc_hz);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = shm_layout::ORIGIN_OFFSET;
    bytes[at..at + 16].copy_from_slice(&foreign.boot_id);
    bytes[at + 16..at + 24].copy_from_slice(&foreign.tsc_hz.to_ne_bytes());
    bytes[at + 24..at + 32].copy_from_slice(&foreign.checksum.to_ne_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(!env.store().origin().same_clock_as(&here));

    let d = env.spawn();
    assert!(d.stderr().contains("rebased 2 portion(s)"), "{}", d.stderr());
    let rings = env.rings();
    let mut p = rings.producer(0).unwrap();
    push(&mut p, 1, module::TCP, delta_kind::PORTION, 5, b"new");
    p.publish();
    d.wait_drained();
    let st = d.request(json!({"cmd": "status"}));
    assert_eq!(st["store"]["stale"], 0, "{st}");
    let store = env.store();
    assert!(store.origin().same_clock_as(&here));
    let c = store.restore_iter(0).next().unwrap();
    assert_eq!((c.l4().unwrap().version, c.l4().unwrap().payload()), (5, &b"new"[..]));
    assert_eq!(c.ip().unwrap().version, 0);
    assert_eq!(d.terminate().0, 0);
}
