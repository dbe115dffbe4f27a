//! Bad input at start-up gives one clear error and a non-zero exit.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn run(eal: &[String], config: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN).args(eal).arg("--").arg("--config").arg(config).output().unwrap();
    remove_runtime_dir(eal);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn null_eal(prefix: &str) -> Vec<String> {
    let mut e = eal_no_huge(prefix);
    e.extend(["--vdev=net_null0".to_string(), "--vdev=net_null1".to_string()]);
    e
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "burst = 500");
    let (code, err) = run(&null_eal("badcfg"), &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("dataplane.burst") && err.contains("out of range"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(&cfg, "[dataplane\nburst = 1").unwrap();
    let (code, err) = run(&null_eal("badcfg"), &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("TOML parse error") || err.contains("line 1"), "{err}");

    let (code, err) = run(&null_eal("badcfg"), &dir.path().join("missing.toml"));
    assert_ne!(code, 0);
    assert!(err.contains("cannot read config"), "{err}");
}

#[test]
fn missing_hugepages_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "");
    let eal: Vec<String> =
        ["-l", "0,1", "--no-pci", "--vdev=net_null0", "--vdev=net_null1", "--huge-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([dir.path().display().to_string()])
            .collect();
    let (code, err) = run(&eal, &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("is not a hugetlbfs mount") && err.contains("scripts/setup.sh"), "{err}");
}

#[test]
fn too_little_hugepage_memory_is_a_clear_error() {
    // Past the hugepage pre-check: EAL itself fails to get 64 GiB of hugepages.
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "");
    let eal: Vec<String> = [
        "-l",
        "0,1",
        "--no-pci",
        "-m",
        "65536",
        "--vdev=net_null0",
        "--vdev=net_null1",
        "--file-prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("lz-test-mem-{}", std::process::id())])
    .collect();
    let (code, err) = run(&eal, &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("EAL initialisation failed") && err.contains("hugepage"), "{err}");
}

#[test]
fn unknown_vdev_driver_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_bogus0", "");
    let mut eal = eal_no_huge("bogus");
    eal.extend(["--vdev=net_null0".to_string(), "--vdev=net_bogus0".to_string()]);
    let (code, err) = run(&eal, &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("EAL initialisation failed") && err.contains("--vdev"), "{err}");
}

#[test]
fn config_device_that_was_not_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_tap7", "");
    let (code, err) = run(&null_eal("nodev"), &cfg);
    assert_ne!(code, 0);
    assert!(
        err.contains("no DPDK device named \"net_tap7\"") && err.contains("net_null1"),
        "{err}"
    );
}

#[test]
fn worker_on_a_disabled_lcore_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "");
    let mut eal = null_eal("lcore");
    eal[1] = "0".into(); // -l 0: no lcore 1
    let (code, err) = run(&eal, &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("worker[0].lcore") && err.contains("not in EAL's core list"), "{err}");
}

#[test]
fn missing_separator_prints_usage() {
    let out = Command::new(BIN).arg("--config").arg("x.toml").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("usage: lazarus-dataplane [EAL options] -- --config FILE"));
}

/// A config with checkpointing on, segments in `seg_dir`, a short attach timeout.
fn checkpoint_config(dir: &std::path::Path, seg_dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = bridge_config(dir, "net_null0", "net_null1", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[checkpoint]\nenabled = false\n",
        &format!("[checkpoint]\nenabled = true\ndir = \"{}\"\nattach_timeout_ms = 300\nring_slots = 64\n", seg_dir.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn checkpointd_not_running_is_a_clear_error_not_an_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let seg = tempfile::tempdir().unwrap();
    let cfg = checkpoint_config(dir.path(), seg.path());
    // No segments at all: checkpointd never ran.
    let (code, err) = run(&null_eal("ckpt-none"), &cfg);
    assert_ne!(code, 0);
    assert!(
        err.contains("checkpointd is not running") && err.contains("checkpoint.enabled = false"),
        "{err}"
    );
    assert!(!err.contains("forwarding"), "{err}");

    // Segments left by a checkpointd that died: no fresh heartbeat.
    let rings = make_segments(seg.path(), 1);
    let (code, err) = run(&null_eal("ckpt-stale"), &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("last heartbeat") && err.contains("start lazarus-checkpointd"), "{err}");

    // Alive but behind: a published delta it never drains.
    let mut p = rings.producer(0).unwrap();
    p.try_push(1, 0, shm_layout::delta_kind::PORTION, 1, b"x").unwrap();
    p.publish();
    drop(p);
    let beating = FakeHeartbeat::start(rings);
    let (code, err) = run(&null_eal("ckpt-lag"), &cfg);
    drop(beating);
    assert_ne!(code, 0);
    assert!(err.contains("has not drained ring 0") && err.contains("1 deltas behind"), "{err}");
}

/// Segments someone else could have written (a directory writable by all,
/// with a heartbeat kept fresh) are refused before anything is restored,
/// naming the directory and the fix.
#[test]
fn segments_in_a_directory_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let seg = tempfile::tempdir().unwrap();
    let cfg = checkpoint_config(dir.path(), seg.path());
    let rings = make_segments(seg.path(), 1);
    std::fs::set_permissions(seg.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let _beating = FakeHeartbeat::start(rings);
    // Without the check the dataplane would attach and forward for ever.
    let (code, err) = run_bounded(20, &null_eal("ckpt-untrusted"), &cfg);
    assert_ne!(code, 0);
    assert!(err.contains(&seg.path().display().to_string()) && err.contains("chmod go-w"), "{err}");
    assert!(!err.contains("forwarding"), "{err}");
}

/// Two dataplanes (two EAL prefixes) on the same checkpoint directory would
/// both write every ring: the second is refused while the first lives, and
/// the kernel frees the rings when the first dies, so a restart is never
/// blocked by a dead holder.
#[test]
fn a_second_dataplane_on_the_same_rings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seg = tempfile::tempdir().unwrap();
    let cfg = checkpoint_config(dir.path(), seg.path());
    let _beating = FakeHeartbeat::start(make_segments(seg.path(), 1));
    let mut first = start(&null_eal("ckpt-first"), &cfg);
    let up = first.wait_for(Duration::from_secs(20), |l| l.contains("forwarding"));
    assert!(up.is_some(), "the first dataplane did not start:\n{}", first.log.join("\n"));

    let (code, err) = run_bounded(20, &null_eal("ckpt-second"), &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("ring 0") && err.contains("already has a producer"), "{err}");
    assert!(!err.contains("forwarding"), "{err}");

    drop(first); // SIGKILL: nothing released the lock but the kernel
    let mut third = start(&null_eal("ckpt-third"), &cfg);
    let up = third.wait_for(Duration::from_secs(20), |l| l.contains("forwarding"));
    assert!(up.is_some(), "a dead holder blocked the restart:\n{}", third.log.join("\n"));
}

fn run_with(eal: &[String], config: &std::path::Path, app: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(eal)
        .arg("--")
        .arg("--config")
        .arg(config)
        .args(app)
        .env_remove("LAZARUS_PORT_OWNER_PID")
        .output()
        .unwrap();
    remove_runtime_dir(eal);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The supervised dataplane's misuses (docs/RESTART.md): each a clear error
/// before EAL touches anything.
#[test]
fn supervised_misuse_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "");
    let (code, err) = run_with(&null_eal("sup-both"), &cfg, &["--supervise", "--worker"]);
    assert_ne!(code, 0);
    assert!(err.contains("exclude each other"), "{err}");
    // A worker process started by hand, not by a port owner.
    let (code, err) = run_with(&null_eal("sup-hand"), &cfg, &["--worker"]);
    assert_ne!(code, 0);
    assert!(err.contains("not by hand"), "{err}");
    // EAL options that leave no shared state for the worker processes
    // (these tests run without hugepages: --no-huge is one of them).
    let (code, err) = run_with(&null_eal("sup-nohuge"), &cfg, &["--supervise"]);
    assert_ne!(code, 0);
    assert!(err.contains("--no-huge") && err.contains("without --supervise"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
