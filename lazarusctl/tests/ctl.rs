//! The real lazarusctl binary against a real checkpointd (fed deltas encoded
//! by the dataplane's own encoders) and a real dataplane on net_null.
//! The daemons' binaries are the workspace's (`cargo build --release
//! --workspace` first, as scripts/test.sh does).

use lazarus_core::conn::{ConnKey, Endpoint};
use lazarus_core::modules::ip::IpPortion;
use lazarus_core::modules::tcp::{TcpPortion, TcpState};
use lazarus_core::parse::{v4_mapped, Family};
use lazarus_core::portion::Portion;
use serde_json::Value;
use shm_layout::{delta_kind, module, RingsSegment};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CTL: &str = env!("CARGO_BIN_EXE_lazarusctl");

/// A workspace binary next to lazarusctl.
fn sibling(name: &str) -> PathBuf {
    let p = Path::new(CTL).with_file_name(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

fn ctl(args: &[&str]) -> Output {
    Command::new(CTL).args(args).output().expect("run lazarusctl")
}

fn stdout_json(o: &Output) -> Value {
    assert!(o.status.success(), "lazarusctl failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a dataplane's EAL runtime directory when dropped (after the
/// `Daemon` declared after it): EAL leaves it in /var/run/dpdk.
struct RuntimeDir(std::path::PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn status_and_conns_against_a_running_checkpointd() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("seg");
    std::fs::create_dir_all(&seg).unwrap();
    let sock = dir.path().join("run/ckpt.sock");
    let cfg = dir.path().join("lazarus.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[worker]]\nlcore = 1\nrx = [\"a:0\"]\n\n[checkpoint]\ndir = \"{}\"\ncontrol_socket = \"{}\"\nring_slots = 1024\nstore_capacity = 1000\nftp_capacity = 16\nmetrics_listen = \"\"\n",
            seg.display(),
            sock.display()
        ),
    )
    .unwrap();
    // No metrics port: the default 127.0.0.1:9108 may be taken on a shared machine.
    let log_path = dir.path().join("checkpointd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _ckpt = Daemon(
        Command::new(sibling("lazarus-checkpointd"))
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(20);
    while !(sock.exists() && seg.join("rings").exists()) {
        assert!(
            Instant::now() < end,
            "checkpointd did not come up:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // One established TCP connection, as a dataplane worker would checkpoint it.
    let client = Endpoint { addr: v4_mapped([10, 1, 0, 1]), port: 40000 };
    let server = Endpoint { addr: v4_mapped([10, 1, 0, 2]), port: 80 };
    let (key, src_is_lo) = ConnKey::canonical(Family::V4, 6, client, server, 3, 0);
    let mut ip = IpPortion::new(src_is_lo, 0, 1);
    ip.packets = [5, 4];
    ip.bytes = [600, 500];
    let tcp = TcpPortion { state: TcpState::Established, seen_reply: true, ..Default::default() };
    let mut b1 = [0u8; 128];
    let mut b2 = [0u8; 128];
    let n1 = ip.encode(&key, &mut b1).unwrap();
    let n2 = tcp.encode(&mut b2).unwrap();
    let rings = RingsSegment::open_file(&seg.join("rings")).unwrap();
    let mut p = rings.producer(0).unwrap();
    p.try_push(key.id().0, module::IP, delta_kind::PORTION, 7, &b1[..n1]).unwrap();
    p.try_push(key.id().0, module::TCP, delta_kind::PORTION, 8, &b2[..n2]).unwrap();
    p.publish();
    while rings.status(0).lag() != 0 {
        assert!(Instant::now() < end, "checkpointd did not drain");
        std::thread::sleep(Duration::from_millis(5));
    }

    let cfg_s = cfg.to_str().unwrap();
    let nowhere = dir.path().join("no-dataplane.sock");
    let st = stdout_json(&ctl(&[
        "--config",
        cfg_s,
        "--telemetry-socket",
        nowhere.to_str().unwrap(),
        "status",
        "--json",
    ]));
    assert_eq!(st["checkpointd"]["up"], true, "{st}");
    assert_eq!(st["checkpointd"]["status"]["store"]["conns"], 1, "{st}");
    assert_eq!(st["checkpointd"]["status"]["rings"][0]["lag"], 0, "{st}");
    assert_eq!(st["dataplane"]["up"], false, "{st}");
    assert!(st["dataplane"]["error"].as_str().unwrap().contains("not running"), "{st}");

    let out = ctl(&["--config", cfg_s, "conns"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("sport=40000"))
        .unwrap_or_else(|| panic!("connection not listed:\n{text}"));
    for want in [
        "tcp",
        "ESTABLISHED",
        "src=10.1.0.1 dst=10.1.0.2 sport=40000 dport=80 packets=5 bytes=600",
        "src=10.1.0.2 dst=10.1.0.1 sport=80 dport=40000 packets=4 bytes=500",
        "[ASSURED]",
        "zone=3",
        "ip:7",
        "tcp:8",
    ] {
        assert!(line.contains(want), "{want:?} missing in: {line}");
    }
    let j = stdout_json(&ctl(&["--config", cfg_s, "conns", "--json"]));
    assert_eq!(j["conns"][0]["state"], "ESTABLISHED", "{j}");
    assert_eq!(j["conns"][0]["id"], format!("{:016x}", key.id().0), "{j}");
}

#[test]
fn a_daemon_that_is_not_running_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ckpt.sock");
    let tel = dir.path().join("tel.sock");
    let out = ctl(&["--checkpointd-socket", ck.to_str().unwrap(), "conns"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("checkpointd is not running")
            && err.contains(ck.to_str().unwrap())
            && err.contains("lazarus-checkpointd"),
        "{err}"
    );
    for cmd in ["stats", "flush"] {
        let out = ctl(&["--telemetry-socket", tel.to_str().unwrap(), cmd]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("dataplane is not running")
                && err.contains(tel.to_str().unwrap())
                && err.contains("lazarus-dataplane"),
            "{err}"
        );
    }
    // status reports each daemon instead of failing.
    let out = ctl(&[
        "--checkpointd-socket",
        ck.to_str().unwrap(),
        "--telemetry-socket",
        tel.to_str().unwrap(),
        "status",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("checkpointd: down") && text.contains("dataplane: down"), "{text}");
}

#[test]
fn stats_and_flush_against_a_running_dataplane() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dp.toml");
    std::fs::write(
        &cfg,
        "[dataplane]\nstats_interval_ms = 0\nmbufs = 8191\n[[port]]\nname = \"a\"\ndevice = \"net_null0\"\n[[port]]\nname = \"b\"\ndevice = \"net_null1\"\n[[bridge]]\nports = [\"a\", \"b\"]\n[[worker]]\nlcore = 1\nrx = [\"a:0\", \"b:0\"]\n[checkpoint]\nenabled = false\n",
    )
    .unwrap();
    let prefix = format!("lz-ctl-test-{}", std::process::id());
    let _runtime = RuntimeDir(std::path::Path::new("/var/run/dpdk").join(&prefix));
    let mut child = Command::new(sibling("lazarus-dataplane"))
        .args([
            "-l",
            "0,1",
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--file-prefix",
            &prefix,
            "--vdev=net_null0",
            "--vdev=net_null1",
            "--",
            "--config",
        ])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reads stderr only up to "forwarding" and then closes it: the dataplane
    // must keep running with its log pipe gone (it used to abort on the first
    // log line after that).
    let log = BufReader::new(child.stderr.take().unwrap());
    let dp = Daemon(child);
    let mut seen = Vec::new();
    for line in log.lines().map_while(Result::ok) {
        seen.push(line.clone());
        if line.contains("forwarding") {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("forwarding")),
        "dataplane did not start:\n{}",
        seen.join("\n")
    );
    std::thread::sleep(Duration::from_millis(100));
    let j = stdout_json(&ctl(&["--file-prefix", &prefix, "stats", "--json"]));
    assert!(j["stats"]["rx"].as_u64().unwrap() > 0, "{j}");
    assert!(j["workers"]["worker0"]["rx"].as_u64().unwrap() > 0, "{j}");
    let text =
        String::from_utf8_lossy(&ctl(&["--file-prefix", &prefix, "stats"]).stdout).into_owned();
    assert!(text.contains("port a") && text.contains("worker0:"), "{text}");
    let f = stdout_json(&ctl(&["--file-prefix", &prefix, "flush", "--json"]));
    assert_eq!(f["workers_asked"], 1, "{f}");
    let st = stdout_json(&ctl(&[
        "--file-prefix",
        &prefix,
        "--checkpointd-socket",
        "/nonexistent/ckpt.sock",
        "status",
        "--json",
    ]));
    assert_eq!(st["dataplane"]["up"], true, "{st}");
    assert_eq!(st["checkpointd"]["up"], false, "{st}");
    drop(dp);
}
