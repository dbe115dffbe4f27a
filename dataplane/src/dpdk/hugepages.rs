//! A check before EAL starts, so that "no hugepages" is one clear sentence
//! instead of a page of EAL log lines.

use super::DpdkError;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageStatus {
    pub mounts: Vec<String>,
    pub free_pages: u64,
}

/// Reads the hugetlbfs mounts and the free hugepages of every size.
pub fn hugepage_status() -> HugepageStatus {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "hugetlbfs").then(|| dir.to_string())
        })
        .collect();
    let mut free_pages = 0;
    if let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in dir.flatten() {
            let f = e.path().join("free_hugepages");
            free_pages += std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    HugepageStatus { mounts, free_pages }
}

/// Fails with what to do when EAL, given `eal_args`, would find no usable hugepages.
pub fn check_hugepages(eal_args: &[String]) -> Result<HugepageStatus, DpdkError> {
    let status = hugepage_status();
    if eal_args.iter().any(|a| a == "--no-huge") {
        return Ok(status);
    }
    let huge_dir = eal_args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--huge-dir=")
            .map(str::to_string)
            .or_else(|| (a == "--huge-dir").then(|| eal_args.get(i + 1).cloned()).flatten())
    });
    let fix = "run `sudo scripts/setup.sh` (reserves and mounts hugepages), or pass `--no-huge -m 512` to EAL for a small test run";
    if let Some(dir) = huge_dir {
        let canon =
            Path::new(&dir).canonicalize().map(|p| p.display().to_string()).unwrap_or(dir.clone());
        if !status.mounts.iter().any(|m| *m == canon || *m == dir) {
            return Err(DpdkError::Hugepages(format!(
                "--huge-dir {dir} is not a hugetlbfs mount (hugetlbfs mounts: {}); {fix}",
                if status.mounts.is_empty() { "none".into() } else { status.mounts.join(", ") }
            )));
        }
    } else if status.mounts.is_empty() {
        return Err(DpdkError::Hugepages(format!("no hugetlbfs is mounted; {fix}")));
    }
    if status.free_pages == 0 {
        return Err(DpdkError::Hugepages(format!(
            "no free hugepages (all reserved pages are in use or none are reserved); {fix}"
        )));
    }
    Ok(status)
}
