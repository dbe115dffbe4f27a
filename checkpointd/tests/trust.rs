//! The segment directory, its files and the control socket as a trust
//! boundary: the real binary, started against directories and files another
//! user (or a careless operator) could have prepared. Each refusal must name
//! the path and say how to fix it; nothing outside the directory is ever
//! written.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_world_writable_segment_directory_is_refused() {
    let env = Env::new("world-dir", 1, "");
    std::fs::set_permissions(&env.seg, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&env.seg.display().to_string()), "names the directory: {log}");
    assert!(log.contains("chmod"), "says how to fix it: {log}");
    assert!(!env.seg.join("rings").exists(), "nothing created in it");
}

#[test]
fn a_missing_directory_never_falls_back_elsewhere() {
    let env = Env::without_seg_dir("no-parent", 1, "");
    let absent = env.root.join("absent/seg");
    env.write_config(&absent);
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&absent.display().to_string()), "names the directory: {log}");
    assert!(!log.contains("/dev/shm"), "no fallback directory: {log}");
}

#[test]
fn a_missing_directory_is_created_private() {
    let env = Env::without_seg_dir("created", 1, "");
    let d = env.spawn();
    assert!(env.seg.is_dir(), "{}", d.stderr());
    assert_eq!(mode(&env.seg), 0o700, "{}", d.stderr());
    d.terminate();
}

#[test]
fn segment_files_and_the_lock_are_private() {
    let env = Env::new("private", 1, "");
    let d = env.spawn();
    for f in ["rings", "store", "checkpointd.lock"] {
        let m = mode(&env.seg.join(f));
        assert_eq!(m & 0o077, 0, "{f} is {m:o}: readable or writable by others");
    }
    let m = mode(&env.sock);
    assert_eq!(m & 0o077, 0, "control socket is {m:o}");
    d.terminate();
}

#[test]
fn a_group_writable_segment_file_is_refused() {
    let env = Env::new("group-file", 1, "");
    env.spawn().terminate();
    let rings = env.seg.join("rings");
    std::fs::set_permissions(&rings, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&rings.display().to_string()), "names the file: {log}");
}

#[test]
fn a_symlinked_segment_file_is_refused() {
    let env = Env::new("symlink-file", 1, "");
    env.spawn().terminate();
    let rings = env.seg.join("rings");
    let elsewhere = env.root.join("rings-elsewhere");
    std::fs::rename(&rings, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &rings).unwrap();
    let (code, log) = env.run_to_exit();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&rings.display().to_string()), "names the file: {log}");
}

#[test]
fn a_planted_symlink_never_redirects_a_write() {
    let env = Env::new("planted", 1, "");
    let victim = env.root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for name in ["rings.new", "store.new"] {
        std::os::unix::fs::symlink(&victim, env.seg.join(name)).unwrap();
    }
    let d = env.spawn();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{}", d.stderr());
    d.terminate();
}

#[test]
fn an_overlong_control_request_is_refused_not_buffered() {
    let env = Env::new("long-line", 1, "");
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
    assert!(reply.contains("too long"), "sent {sent} bytes, reply {reply:?}: {}", d.stderr());
    // The daemon still serves the next client.
    let mut s = UnixStream::connect(&env.sock).unwrap();
    s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    assert!(reply.contains("\"store\""), "{reply}");
    d.terminate();
}
