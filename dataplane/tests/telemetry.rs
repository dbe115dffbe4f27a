//! The /lazarus/ telemetry commands, asked over DPDK's telemetry socket of a
//! running dataplane (net_null ports: counters move on their own), and once
//! through Debian's dpdk-telemetry.py.

mod common;

use common::{bridge_config, eal_no_huge, start};
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

#[test]
fn lazarus_commands_answer_with_live_counters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "");
    let mut eal = eal_no_huge("telemetry");
    let prefix = eal.last().unwrap().clone();
    eal.push("--vdev=net_null0".into());
    eal.push("--vdev=net_null1".into());
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
    let conns = ask(&mut c, "/lazarus/conns");
    assert_eq!(conns["conntrack"], 1);
    assert_eq!(conns["per_worker"], serde_json::json!([0]), "{conns}");
    assert!(conns["tcp_states"]["ESTABLISHED"].is_u64(), "{conns}");
    let ck = ask(&mut c, "/lazarus/checkpoint");
    assert_eq!(ck["enabled"], 0, "checkpoint.enabled = false in this config: {ck}");

    let f = ask(&mut c, "/lazarus/flush");
    assert_eq!(f["workers_asked"], 1, "{f}");
    let end = Instant::now() + Duration::from_secs(10);
    while ask(&mut c, "/lazarus/workers")["worker0"]["flush_pending"] != 0 {
        assert!(Instant::now() < end, "the worker never finished the flush");
        std::thread::sleep(Duration::from_millis(20));
    }
    // DPDK's own commands are still there.
    assert!(ask(&mut c, "/ethdev/stats,0")["ipackets"].as_u64().unwrap() > 0);

    // Debian's client, against the same live process.
    let script = ["/usr/bin/dpdk-telemetry.py", "/usr/local/bin/dpdk-telemetry.py"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match script {
        None => eprintln!(
            "SKIPPED dpdk-telemetry.py part: the script is not installed (apt-get install dpdk)"
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
