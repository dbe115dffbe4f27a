//! The port owner's side of a supervised dataplane (docs/RESTART.md): it keeps
//! two worker processes, one active and one standing by, starts a new one
//! whenever one ends, and removes what a killed one leaves in EAL's runtime
//! directory.

use crate::dpdk::heap::{self, HeapElement};
use crate::shared::SharedState;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Worker processes kept: the active one and a standby already through EAL's
/// start, so a takeover pays neither EAL nor the table allocation.
pub const WORKER_PROCESSES: usize = 2;

/// Worker processes in a row that exit with an error before this stops the
/// port owner: a config or checkpoint problem that a restart cannot fix.
const FAILURES_IN_ROW: u32 = 5;

/// How long a new worker process may take to stand by (EAL's start, the
/// tables) before the port owner goes on without waiting for it.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(
        "cannot start worker process {exe}: {source}; check that the binary is still installed"
    )]
    Spawn { exe: String, source: std::io::Error },
    #[error("{0} worker processes in a row exited with an error before taking traffic; their errors are above (fix the cause, then restart lazarus-dataplane)")]
    FailingWorkers(u32),
}

/// EAL's arguments for a worker process, from the port owner's: a secondary of
/// the same `--file-prefix`. What only a primary may say is dropped: the
/// devices it created (a secondary learns them from the primary), its memory
/// size and mode.
pub fn worker_eal_args(primary: &[String]) -> Vec<String> {
    const WITH_VALUE: [&str; 4] = ["--vdev", "-m", "--socket-mem", "--proc-type"];
    const ALONE: [&str; 3] = ["--huge-unlink", "--in-memory", "--no-shconf"];
    let mut out = Vec::new();
    let mut it = primary.iter().skip(1);
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
            continue;
        }
        let dropped = WITH_VALUE.iter().any(|o| {
            a.starts_with(&format!("{o}=")) || (*o == "-m" && a.len() > 2 && a.starts_with("-m"))
        }) || ALONE.iter().any(|o| a == o || a.starts_with(&format!("{o}=")));
        if !dropped {
            out.push(a.clone());
        }
    }
    out.push("--proc-type=secondary".into());
    out
}

/// Whether `file`, in EAL's runtime directory, belongs to process `pid` alone
/// (EAL names a secondary's memory maps `…_<pid>` and its IPC socket
/// `mp_socket_<pid>_…`; a killed process never removes them).
pub fn owned_by(file: &str, pid: u32) -> bool {
    let p = pid.to_string();
    file.strip_prefix("mp_socket_")
        .and_then(|r| r.strip_prefix(p.as_str()))
        .is_some_and(|r| r.starts_with('_'))
        || file.rsplit_once('_').is_some_and(|(head, tail)| tail == p && !head.is_empty())
}

struct Running {
    child: Child,
    started: Instant,
    /// What it allocated in DPDK's heap while starting (`dpdk::heap`).
    heap: Vec<HeapElement>,
}

pub struct Children {
    exe: PathBuf,
    args: Vec<OsString>,
    runtime_dir: PathBuf,
    running: Vec<Running>,
    failures_in_row: u32,
    /// DPDK's heap element header, for freeing what killed processes left;
    /// None: not measurable, nothing is freed (and the leak is logged).
    heap_header: Option<usize>,
}

impl Children {
    /// `config` is the port owner's own copy, so that every worker runs the
    /// config the ports were set up with, whatever happens to the file later.
    pub fn new(exe: PathBuf, primary_eal: &[String], config: &Path, runtime_dir: PathBuf) -> Self {
        let mut args: Vec<OsString> =
            worker_eal_args(primary_eal).into_iter().map(OsString::from).collect();
        args.extend([
            "--".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--worker".into(),
        ]);
        let heap_header = heap::header_len();
        if heap_header.is_none() {
            tracing::warn!("cannot read DPDK's heap: what a killed worker process allocated there stays allocated");
        }
        Children { exe, args, runtime_dir, running: Vec::new(), failures_in_row: 0, heap_header }
    }

    /// Starts worker processes until [`WORKER_PROCESSES`] run, one at a time:
    /// each start's heap allocations are told apart by the heap before and
    /// once it stands by.
    pub fn fill(&mut self, shared: &SharedState) -> Result<(), SuperviseError> {
        while self.running.len() < WORKER_PROCESSES {
            let before = heap::busy_elements();
            let mut child = Command::new(&self.exe).args(&self.args).spawn().map_err(|source| {
                SuperviseError::Spawn { exe: self.exe.display().to_string(), source }
            })?;
            let pid = child.id();
            tracing::info!(pid, "worker process started");
            let started = Instant::now();
            while shared.ready_pid.load(Ordering::Acquire) != pid
                && matches!(child.try_wait(), Ok(None))
                && started.elapsed() < READY_TIMEOUT
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut allocated: Vec<HeapElement> =
                heap::busy_elements().difference(&before).copied().collect();
            if shared.ready_pid.load(Ordering::Acquire) != pid {
                // Ended or slow: what changed is not known to be its alone.
                allocated.clear();
            }
            self.running.push(Running { child, started, heap: allocated });
        }
        Ok(())
    }

    /// Reaps the worker processes that ended; returns how many.
    pub fn reap(&mut self, shared: &SharedState) -> Result<usize, SuperviseError> {
        let mut ended = 0;
        let mut i = 0;
        while i < self.running.len() {
            let status = self.running[i].child.try_wait();
            let Ok(Some(status)) = status else {
                i += 1;
                continue;
            };
            let Running { child, started, heap: allocated } = self.running.swap_remove(i);
            let pid = child.id();
            if status.code().is_none() {
                self.reclaim_heap(pid, &allocated);
            }
            ended += 1;
            shared.worker_exits.fetch_add(1, Ordering::Relaxed);
            let was_active = shared.active_pid.load(Ordering::Relaxed) == pid
                || shared.replaced_pid.load(Ordering::Relaxed) == pid;
            self.clean_runtime_dir(pid);
            if failed(&status) {
                self.failures_in_row += 1;
                tracing::error!(pid, %status, was_active, lived_ms = started.elapsed().as_millis() as u64, "worker process failed");
                if self.failures_in_row >= FAILURES_IN_ROW {
                    return Err(SuperviseError::FailingWorkers(self.failures_in_row));
                }
            } else {
                self.failures_in_row = 0;
                let lived_ms = started.elapsed().as_millis() as u64;
                if was_active {
                    tracing::warn!(pid, %status, lived_ms, "active worker process ended; the standby takes over");
                } else {
                    tracing::warn!(pid, %status, lived_ms, "standby worker process ended");
                }
            }
        }
        Ok(ended)
    }

    /// SIGTERM to every worker process, then SIGKILL to any still there after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for r in &self.running {
            let _ = kill(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        for Running { child: c, .. } in &mut self.running {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(c.try_wait(), Ok(None)) {
                tracing::warn!(pid = c.id(), "worker process ignored SIGTERM; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let pids: Vec<u32> = self.running.drain(..).map(|r| r.child.id()).collect();
        for pid in pids {
            self.clean_runtime_dir(pid);
        }
    }

    /// Frees what the killed process `pid` allocated in DPDK's heap at its
    /// start and still held: only elements busy now, and claimed by no live
    /// worker process (one that reused a freed address).
    fn reclaim_heap(&self, pid: u32, allocated: &[HeapElement]) {
        let Some(header) = self.heap_header else { return };
        let now = heap::busy_elements();
        let live: HashSet<HeapElement> =
            self.running.iter().flat_map(|r| r.heap.iter().copied()).collect();
        let dead: Vec<HeapElement> =
            allocated.iter().filter(|e| now.contains(e) && !live.contains(e)).copied().collect();
        if dead.is_empty() {
            return;
        }
        // SAFETY: `pid` was reaped (killed), so it frees nothing any more;
        // each element is busy now, was allocated by it between its start
        // and its standing by, and no live worker process claims it.
        #[allow(unsafe_code)]
        unsafe {
            heap::free_elements(&dead, header)
        };
        let bytes: usize = dead.iter().map(|e| e.len).sum();
        tracing::info!(
            pid,
            allocations = dead.len(),
            bytes,
            "freed what the killed worker process left in DPDK's heap"
        );
    }

    fn clean_runtime_dir(&self, pid: u32) {
        let Ok(dir) = std::fs::read_dir(&self.runtime_dir) else { return };
        for e in dir.flatten() {
            if e.file_name().to_str().is_some_and(|n| owned_by(n, pid)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An exit with an error code; a death by signal (a SIGKILL, a crash) is what
/// the standby is for, and not counted against the workers.
fn failed(status: &ExitStatus) -> bool {
    status.code().is_some_and(|c| c != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_worker_is_a_secondary_without_the_primarys_devices_or_memory() {
        let primary = s(&[
            "lazarus-dataplane",
            "-l",
            "0,1",
            "-m",
            "256",
            "--file-prefix",
            "lz1",
            "--no-pci",
            "--vdev",
            "net_tap0,iface=a",
            "--vdev=net_tap1,iface=b",
            "--socket-mem=512",
            "-m512",
            "--proc-type",
            "primary",
            "--huge-unlink",
            "-a",
            "0000:01:00.0",
        ]);
        assert_eq!(
            worker_eal_args(&primary),
            s(&[
                "-l",
                "0,1",
                "--file-prefix",
                "lz1",
                "--no-pci",
                "-a",
                "0000:01:00.0",
                "--proc-type=secondary"
            ])
        );
    }

    #[test]
    fn only_a_dead_process_own_runtime_files_are_removed() {
        assert!(owned_by("fbarray_memseg-2048k-0-0_4010", 4010));
        assert!(owned_by("mp_socket_4010_3539c8cb50d9", 4010));
        assert!(!owned_by("fbarray_memseg-2048k-0-0_40100", 4010));
        assert!(!owned_by("fbarray_memseg-2048k-0-0", 4010));
        assert!(!owned_by("mp_socket", 4010));
        assert!(!owned_by("mp_socket_40100_ab", 4010));
        assert!(!owned_by("config", 4010));
        assert!(!owned_by("fbarray_memzone", 4010));
    }
}
