//! The real `lazarus-checkpointd` binary in a private temporary directory,
//! for the integration tests and the benches.
#![allow(dead_code)]

use serde_json::{json, Value};
use shm_layout::{PushError, RingsSegment, StoreSegment};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lazarus-checkpointd");

pub struct Env {
    pub root: PathBuf,
    pub seg: PathBuf,
    pub sock: PathBuf,
    pub config: PathBuf,
    workers: usize,
    extra: String,
}

impl Env {
    /// A root (0755) holding a private segment directory (0700) and a config
    /// for `workers` workers, with `extra` lines in `[checkpoint]`.
    pub fn new(tag: &str, workers: usize, extra: &str) -> Env {
        let env = Env::without_seg_dir(tag, workers, extra);
        std::fs::create_dir(&env.seg).unwrap();
        std::fs::set_permissions(&env.seg, std::fs::Permissions::from_mode(0o700)).unwrap();
        env
    }

    /// As [`Env::new`], but the segment directory is left for checkpointd.
    pub fn without_seg_dir(tag: &str, workers: usize, extra: &str) -> Env {
        let root = std::env::temp_dir().join(format!("ckptd-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = Env {
            seg: root.join("seg"),
            sock: root.join("run/ckpt.sock"),
            config: root.join("lazarus.toml"),
            root,
            workers,
            extra: extra.to_string(),
        };
        env.write_config(&env.seg);
        env
    }

    /// Rewrites the config with `seg` as checkpoint.dir.
    pub fn write_config(&self, seg: &Path) {
        let mut text = String::from("[dataplane]\nburst = 32\n\n");
        for w in 0..self.workers {
            text += &format!("[[worker]]\nlcore = {}\nrx = [\"a:{w}\"]\n\n", w + 1);
        }
        // Tests run in parallel: no metrics endpoint unless the test asks
        // for one (on a port of its own).
        let metrics =
            if self.extra.contains("metrics_listen") { "" } else { "metrics_listen = \"\"\n" };
        let mut ck = format!(
            "[checkpoint]\n{metrics}dir = \"{}\"\ncontrol_socket = \"{}\"\n{}\n",
            seg.display(),
            self.sock.display(),
            self.extra
        );
        for (key, default) in
            [("ring_slots", "1024"), ("store_capacity", "5000"), ("ftp_capacity", "16")]
        {
            if !self.extra.contains(key) {
                ck += &format!("{key} = {default}\n");
            }
        }
        std::fs::write(&self.config, text + &ck).unwrap();
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    /// Starts the daemon and waits until it answers on its control socket.
    pub fn spawn(&self) -> Daemon {
        let log = self.root.join(format!(
            "log-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let child = self.command().stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        let d = Daemon { child, log, sock: self.sock.clone() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if d.try_request(&json!({"cmd": "status"})).is_some() {
                return d;
            }
            assert!(Instant::now() < deadline, "checkpointd did not come up: {}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the binary expecting it to exit by itself (a refusal, a
    /// disabled config): its exit code and log. One that is still running
    /// after 10 s is killed and reported as code -1, so a missing check
    /// fails the test rather than hanging it.
    pub fn run_to_exit(&self) -> (i32, String) {
        let mut child = self.command().stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
            log
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, reader.join().unwrap())
    }

    pub fn rings(&self) -> RingsSegment {
        RingsSegment::open_file(&self.seg.join("rings")).unwrap()
    }

    pub fn store(&self) -> StoreSegment {
        StoreSegment::open_file(&self.seg.join("store")).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub struct Daemon {
    child: Child,
    log: PathBuf,
    sock: PathBuf,
}

impl Daemon {
    pub fn try_request(&self, req: &Value) -> Option<Value> {
        let mut s = UnixStream::connect(&self.sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(format!("{req}\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }

    pub fn request(&self, req: Value) -> Value {
        self.try_request(&req).unwrap_or_else(|| panic!("no reply to {req}: {}", self.stderr()))
    }

    pub fn wait_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.request(json!({"cmd": "drained"}))["drained"] != json!(true) {
            assert!(Instant::now() < deadline, "rings never drained");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait, return (exit code, stderr).
    pub fn terminate(mut self) -> (i32, String) {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), self.stderr())
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes one delta, publishing and waiting while the ring is full.
pub fn push(
    p: &mut shm_layout::DeltaProducer<'_>,
    conn: u64,
    m: u8,
    kind: u8,
    version: u64,
    payload: &[u8],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match p.try_push(conn, m, kind, version, payload) {
            Ok(()) => return,
            Err(PushError::Full) => {
                p.publish();
                assert!(Instant::now() < deadline, "ring stayed full");
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
