//! Bad input at start-up gives one clear error and a non-zero exit.

mod common;
use common::*;
use std::process::Command;

fn run(eal: &[String], config: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN).args(eal).arg("--").arg("--config").arg(config).output().unwrap();
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
    let eal: Vec<String> = ["-l", "0,1", "--no-pci", "--vdev=net_null0", "--vdev=net_null1", "--huge-dir"].iter().map(|s| s.to_string()).chain([dir.path().display().to_string()]).collect();
    let (code, err) = run(&eal, &cfg);
    assert_ne!(code, 0);
    assert!(err.contains("is not a hugetlbfs mount") && err.contains("scripts/setup.sh"), "{err}");
}

#[test]
fn too_little_hugepage_memory_is_a_clear_error() {
    // Past the hugepage pre-check: EAL itself fails to get 64 GiB of hugepages.
    let dir = tempfile::tempdir().unwrap();
    let cfg = bridge_config(dir.path(), "net_null0", "net_null1", "");
    let eal: Vec<String> = ["-l", "0,1", "--no-pci", "-m", "65536", "--vdev=net_null0", "--vdev=net_null1", "--file-prefix"].iter().map(|s| s.to_string()).chain([format!("lz-test-mem-{}", std::process::id())]).collect();
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
    assert!(err.contains("no DPDK device named \"net_tap7\"") && err.contains("net_null1"), "{err}");
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: lazarus-dataplane [EAL options] -- --config FILE"));
}
