//! The /lazarus/ telemetry commands, asked over DPDK's telemetry socket of a
//! running dataplane (port a replays an ARP frame forever: counters move on
//! their own; port b replays a few TCP handshakes once, so that the table a
//! flush empties has connections in it), and once through Debian's
//! dpdk-telemetry.py. Not net_null for port a: it hands out recycled mbufs
//! as they are, so stale copies of the handshakes' SYNs would reopen the
//! flushed connections.

mod common;

use common::{bridge_config, eal_no_huge, start};
use lazarus_core::frames::tcp;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use serde_json::Value;
use std::time::{Duration, Instant};
use telemetry_client::{socket_path, TelemetryClient};

fn ask(c: &mut TelemetryClient, cmd: &str) -> Value {
    c.query(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn connect(prefix: &str) -> TelemetryClient {
    let path = socket_path(prefix);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match TelemetryClient::connect(&path) {
            Ok(c) => return c,
            Err(e) if Instant::now() > end => panic!("telemetry socket {}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Connections the handshakes pcap opens.
const HANDSHAKES: u16 = 5;

/// Writes the two pcaps: `arp` (one ARP request: passes, opens nothing)
/// and `hs` (HANDSHAKES TCP three-way handshakes; no zones: all accepted).
fn write_pcaps(arp: &std::path::Path, hs: &std::path::Path) {
    let (c, s) = ([10, 99, 0, 1], [10, 99, 0, 2]);
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[10, 99, 0, 1, 0, 0, 0, 0, 0, 0, 10, 99, 0, 2]);
    f.resize(60, 0);
    let mut w = PcapWriter::new(std::fs::File::create(arp).unwrap()).unwrap();
    w.write_packet(&PcapPacket::new(Duration::ZERO, f.len() as u32, &f)).unwrap();
    let mut w = PcapWriter::new(std::fs::File::create(hs).unwrap()).unwrap();
    for i in 0..HANDSHAKES {
        let p = 40000 + i;
        for f in [
            tcp(c, s, (p, 80), 0x02, (1000, 0), b""),
            tcp(s, c, (80, p), 0x12, (5000, 1001), b""),
            tcp(c, s, (p, 80), 0x10, (1001, 5001), b""),
        ] {
            w.write_packet(&PcapPacket::new(Duration::ZERO, f.len() as u32, &f)).unwrap();
        }
    }
}

/// `/lazarus/conns` once `done` holds of it; fails after 10 s.
fn wait_conns(c: &mut TelemetryClient, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let v = ask(c, "/lazarus/conns");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < end, "/lazarus/conns never got there: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lazarus_commands_answer_with_live_counters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_pcap0", "net_pcap1", "");
    let (arp, hs) = (dir.path().join("arp.pcap"), dir.path().join("handshakes.pcap"));
    write_pcaps(&arp, &hs);
    let mut eal = eal_no_huge("telemetry");
    let prefix = eal.last().unwrap().clone();
    eal.push(format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", arp.display()));
    eal.push(format!("--vdev=net_pcap1,rx_pcap={}", hs.display()));
    let mut dp = start(&eal, &cfg);
    assert!(
        dp.wait_for(Duration::from_secs(60), |l| l.contains("forwarding")).is_some(),
        "dataplane did not start:\n{}",
        dp.log.join("\n")
    );

    let mut c = connect(&prefix);
    assert!(c.greeting().version.contains("DPDK 22.11"), "greeting: {:?}", c.greeting());
    let s1 = ask(&mut c, "/lazarus/stats");
    std::thread::sleep(Duration::from_millis(200));
    let s2 = ask(&mut c, "/lazarus/stats");
    let rx = |v: &Value| v["rx"].as_u64().unwrap();
    assert!(rx(&s2) > rx(&s1), "rx moves: {s1} then {s2}");
    assert_eq!(s2["ports"], serde_json::json!(["a", "b"]));
    assert!(s2["port/a"]["rx"].as_u64().unwrap() > 0, "{s2}");
    assert!(s2["port/b"]["tx"].as_u64().is_some(), "{s2}");

    let w = ask(&mut c, "/lazarus/workers");
    assert_eq!(w["worker0"]["lcore"], 1, "{w}");
    assert!(w["worker0"]["rx"].as_u64().unwrap() > 0, "{w}");
    for k in [
        "conns",
        "new",
        "closed",
        "expired",
        "invalid",
        "ring_full",
        "ckpt_portions",
        "restored",
        "tcp",
        "udp",
    ] {
        assert!(w["worker0"][k].is_u64(), "{k} missing in {w}");
    }
    // The handshakes' connections, established (the gauges refresh on the
    // worker's housekeeping rounds: wait for them).
    let want = u64::from(HANDSHAKES);
    let conns = wait_conns(&mut c, |v| v["tcp_states"]["ESTABLISHED"] == want);
    assert_eq!(conns["conntrack"], 1);
    assert_eq!(conns["per_worker"], serde_json::json!([want]), "{conns}");
    let ck = ask(&mut c, "/lazarus/checkpoint");
    assert_eq!(ck["enabled"], 0, "checkpoint.enabled = false in this config: {ck}");

    let f = ask(&mut c, "/lazarus/flush");
    assert_eq!(f["workers_asked"], 1, "{f}");
    let end = Instant::now() + Duration::from_secs(10);
    while ask(&mut c, "/lazarus/workers")["worker0"]["flush_pending"] != 0 {
        assert!(Instant::now() < end, "the worker never finished the flush");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The flush emptied the table (the count is live; the per-protocol and
    // per-state gauges follow when the walk is done).
    wait_conns(&mut c, |v| {
        v["conns"] == 0
            && v["per_worker"] == serde_json::json!([0])
            && v["tcp"] == 0
            && v["tcp_states"]["ESTABLISHED"] == 0
    });
    // DPDK's own commands are still there.
    assert!(ask(&mut c, "/ethdev/stats,0")["ipackets"].as_u64().unwrap() > 0);

    // Debian's client, against the same live process.
    let script = ["/usr/bin/dpdk-telemetry.py", "/usr/local/bin/dpdk-telemetry.py"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match script {
        None => panic!(
            "dpdk-telemetry.py is not installed: apt-get install dpdk (scripts/setup.sh installs it)"
        ),
        Some(script) => {
            let before = rx(&ask(&mut c, "/lazarus/stats"));
            let out = std::process::Command::new(script)
                .args(["-f", &prefix])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut ch| {
                    use std::io::Write;
                    ch.stdin.take().unwrap().write_all(b"/lazarus/stats\n")?;
                    ch.wait_with_output()
                })
                .expect("run dpdk-telemetry.py");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.contains("/lazarus/stats"))
                .unwrap_or_else(|| panic!("dpdk-telemetry.py printed no reply: {text}"));
            let v: Value =
                serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(
                rx(&v["/lazarus/stats"]) > before,
                "dpdk-telemetry.py sees the live value: {line} (before: {before})"
            );
        }
    }
    let (status, log) = dp.stop();
    assert!(status.success(), "{}", log.join("\n"));
}
