//! Runs the real lazarus-dataplane binary for integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lazarus-dataplane");

/// EAL arguments for a small run without hugepages, unique per test so that
/// tests can run in parallel.
pub fn eal_no_huge(prefix: &str) -> Vec<String> {
    ["-l", "0,1", "--no-huge", "-m", "256", "--no-pci", "--file-prefix"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("lz-test-{prefix}-{}", std::process::id())])
        .collect()
}

/// Removes the EAL runtime directory of the `--file-prefix` in `eal`, once
/// its process has exited: EAL leaves it behind, and a test per prefix per run
/// would otherwise pile them up in /var/run/dpdk.
pub fn remove_runtime_dir(eal: &[String]) {
    let Some(prefix) = eal.iter().skip_while(|a| *a != "--file-prefix").nth(1) else { return };
    // EAL picks /var/run/dpdk as root, else $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk;
    // the prefix is this test's own, so trying all three touches nothing else.
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from);
    for base in [Some("/var/run".into()), xdg, Some("/tmp".into())].into_iter().flatten() {
        let _ = std::fs::remove_dir_all(base.join("dpdk").join(prefix));
    }
}

/// A running dataplane whose log lines arrive on a channel.
pub struct Running {
    child: Child,
    eal: Vec<String>,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

pub fn start(eal: &[String], config: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .args(eal)
        .arg("--")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lazarus-dataplane");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Running { child, eal: eal.to_vec(), lines: rx, log: Vec::new() }
}

impl Running {
    /// Waits (up to `limit`) for a log line satisfying `pred`.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// SIGTERM, then wait for the exit and collect the remaining log.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let end = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "dataplane did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push(l);
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_runtime_dir(&self.eal);
    }
}

/// The value of `key=` in a stats line (the first occurrence: the totals).
pub fn field(line: &str, key: &str) -> Option<u64> {
    let pat = format!(" {key}=");
    let at = line.find(&pat)? + pat.len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

pub fn bridge_config(dir: &std::path::Path, a: &str, b: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("dataplane.toml");
    std::fs::write(
        &path,
        format!(
            "[dataplane]\nstats_interval_ms = 100\nmbufs = 8191\n{extra}\n[[port]]\nname = \"a\"\ndevice = \"{a}\"\n[[port]]\nname = \"b\"\ndevice = \"{b}\"\n[[bridge]]\nports = [\"a\", \"b\"]\n[[worker]]\nlcore = 1\nrx = [\"a:0\", \"b:0\"]\n[checkpoint]\nenabled = false\n"
        ),
    )
    .unwrap();
    path
}

/// Stands in for checkpointd's liveness: beats the rings segment at `rings`
/// every 10 ms until dropped. The tests that use it are about the
/// dataplane's start-up checks, which need a live heartbeat and nothing else.
pub struct FakeHeartbeat {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHeartbeat {
    pub fn start(rings: shm_layout::RingsSegment) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                rings.beat(std::process::id(), shm_layout::monotonic_ns());
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        FakeHeartbeat { stop, thread: Some(thread) }
    }
}

impl Drop for FakeHeartbeat {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The rings and store segments of a checkpointd, made directly in `dir`.
pub fn make_segments(dir: &std::path::Path, workers: u32) -> shm_layout::RingsSegment {
    let geom = shm_layout::RingsGeometry { workers, slots_per_ring: 64 };
    let rings = shm_layout::RingsSegment::create_file(&dir.join("rings"), geom).unwrap();
    shm_layout::StoreSegment::create_file(
        &dir.join("store"),
        shm_layout::StoreGeometry { conn_capacity: 64, ftp_capacity: 8 },
    )
    .unwrap();
    rings
}

/// Runs the dataplane under `timeout SECS` (a start-up check that fails to
/// refuse would otherwise forward for ever): (exit code, stderr).
pub fn run_bounded(secs: u32, eal: &[String], config: &std::path::Path) -> (i32, String) {
    let out = Command::new("timeout")
        .args([&secs.to_string(), BIN])
        .args(eal)
        .arg("--")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    remove_runtime_dir(eal);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}
