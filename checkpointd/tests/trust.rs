//! The segment directory, its files and the control socket as a trust
//! boundary: the real binary, started against directories and files another
//! user (or a careless operator) could have prepared. Each refusal must name
//! the path and say how to fix it; nothing outside the directory is ever
//! written.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Env {
    root: PathBuf,
    seg: PathBuf,
    sock: PathBuf,
    config: PathBuf,
}

impl Env {
    /// A private root holding `seg` (created unless `create_seg` is false).
    fn new(tag: &str, create_seg: bool) -> Env {
        let root = std::env::temp_dir().join(format!("ckptd-trust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let seg = root.join("seg");
        if create_seg {
            std::fs::create_dir(&seg).unwrap();
            std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let sock = root.join("run/ckpt.sock");
        let config = root.join("lazarus.toml");
        let env = Env { root, seg, sock, config };
        env.write_config(&env.seg.clone());
        env
    }

    fn write_config(&self, seg: &Path) {
        let text = format!(
            "[dataplane]\nburst = 32\n\n[[worker]]\nlcore = 1\nrx = [\"a:0\"]\n\n\
             [checkpoint]\nmetrics_listen = \"\"\ndir = \"{}\"\ncontrol_socket = \"{}\"\n\
             ring_slots = 1024\nstore_capacity = 5000\nftp_capacity = 16\n",
            seg.display(),
            self.sock.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lazarus-checkpointd"));
        c.arg("--config").arg(&self.config).stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    /// Runs the binary expecting it to refuse to start: its exit code and
    /// log. A daemon that comes up instead is killed after 10 s and reported
    /// as code -1 (so a missing check fails the test rather than hanging it).
    fn refused(&self) -> (i32, String) {
        let mut child = self.command().stderr(Stdio::piped()).spawn().unwrap();
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
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (code, log)
    }

    /// Starts the daemon and waits for its control socket.
    fn spawn(&self) -> Daemon {
        let log = self.root.join("log");
        let child = self.command().stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        let d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.sock).is_err() {
            assert!(Instant::now() < deadline, "checkpointd did not come up: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_world_writable_segment_directory_is_refused() {
    let env = Env::new("world-dir", true);
    std::fs::set_permissions(&env.seg, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, log) = env.refused();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&env.seg.display().to_string()), "names the directory: {log}");
    assert!(log.contains("chmod"), "says how to fix it: {log}");
    assert!(!env.seg.join("rings").exists(), "nothing created in it");
}

#[test]
fn a_missing_directory_never_falls_back_elsewhere() {
    let env = Env::new("no-parent", false);
    let absent = env.root.join("absent/seg");
    env.write_config(&absent);
    let (code, log) = env.refused();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&absent.display().to_string()), "names the directory: {log}");
    assert!(!log.contains("/dev/shm"), "no fallback directory: {log}");
}

#[test]
fn a_missing_directory_is_created_private() {
    let env = Env::new("created", false);
    let d = env.spawn();
    assert!(env.seg.is_dir(), "{}", d.log());
    assert_eq!(mode(&env.seg), 0o700, "{}", d.log());
    d.stop();
}

#[test]
fn segment_files_and_the_lock_are_private() {
    let env = Env::new("private", true);
    let d = env.spawn();
    for f in ["rings", "store", "checkpointd.lock"] {
        let m = mode(&env.seg.join(f));
        assert_eq!(m & 0o077, 0, "{f} is {m:o}: readable or writable by others");
    }
    let m = mode(&env.sock);
    assert_eq!(m & 0o077, 0, "control socket is {m:o}");
    d.stop();
}

#[test]
fn a_group_writable_segment_file_is_refused() {
    let env = Env::new("group-file", true);
    env.spawn().stop();
    let rings = env.seg.join("rings");
    std::fs::set_permissions(&rings, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (code, log) = env.refused();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&rings.display().to_string()), "names the file: {log}");
}

#[test]
fn a_symlinked_segment_file_is_refused() {
    let env = Env::new("symlink-file", true);
    env.spawn().stop();
    let rings = env.seg.join("rings");
    let elsewhere = env.root.join("rings-elsewhere");
    std::fs::rename(&rings, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &rings).unwrap();
    let (code, log) = env.refused();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&rings.display().to_string()), "names the file: {log}");
}

#[test]
fn a_planted_symlink_never_redirects_a_write() {
    let env = Env::new("planted", true);
    let victim = env.root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for name in ["rings.new", "store.new"] {
        std::os::unix::fs::symlink(&victim, env.seg.join(name)).unwrap();
    }
    let d = env.spawn();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{}", d.log());
    d.stop();
}

#[test]
fn an_overlong_control_request_is_refused_not_buffered() {
    let env = Env::new("long-line", true);
    let d = env.spawn();
    let mut s = UnixStream::connect(&env.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 8 MiB with no newline: a reader without a limit buffers all of it
    // and never answers.
    let junk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..8 {
        match s.write_all(&junk) {
            Ok(()) => sent += junk.len(),
            Err(_) => break,
        }
    }
    let _ = s.write_all(b"\n");
    let mut reply = String::new();
    let _ = BufReader::new(&s).read_line(&mut reply);
    assert!(reply.contains("too long"), "sent {sent} bytes, reply {reply:?}: {}", d.log());
    // The daemon still serves the next client.
    let mut s = UnixStream::connect(&env.sock).unwrap();
    s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    assert!(reply.contains("\"store\""), "{reply}");
    d.stop();
}
