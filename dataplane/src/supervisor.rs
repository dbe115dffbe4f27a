//! The port owner's side of a supervised dataplane (docs/RESTART.md): it keeps
//! two worker processes, one active and one standing by, starts a new one
//! whenever one ends, and removes what a killed one leaves in EAL's runtime
//! directory.

use crate::dpdk::heap::{self, HeapElement};
use crate::shared::SharedState;
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
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
    #[error("{0} worker processes in a row failed to start and none forwards; their errors are above (fix the cause, then restart lazarus-dataplane)")]
    FailingWorkers(u32),
    #[error("the worker process that took over stopped polling too: the state the processes share (the mbuf pool) is stuck, likely left half-changed by a killed process; exiting so that the unit restarts whole")]
    Wedged,
}

/// EAL options that leave no shared state for secondaries to attach to:
/// refused with `--supervise` ([`no_shared_state`]).
pub const NO_SHARED_STATE: [&str; 4] = ["--in-memory", "--no-shconf", "--huge-unlink", "--no-huge"];

fn is_option(arg: &str, option: &str) -> bool {
    arg == option || arg.strip_prefix(option).is_some_and(|r| r.starts_with('='))
}

/// The first of the port owner's EAL arguments that is one of
/// [`NO_SHARED_STATE`].
pub fn no_shared_state(primary: &[String]) -> Option<&String> {
    primary.iter().find(|a| NO_SHARED_STATE.iter().any(|o| is_option(a, o)))
}

/// EAL's arguments for a worker process, from the port owner's: a secondary of
/// the same `--file-prefix`. What only a primary may say is dropped: the
/// devices it created (a secondary learns them from the primary), its memory
/// size and mode.
pub fn worker_eal_args(primary: &[String]) -> Vec<String> {
    const WITH_VALUE: [&str; 4] = ["--vdev", "-m", "--socket-mem", "--proc-type"];
    let mut out = Vec::new();
    let mut it = primary.iter().skip(1);
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
            continue;
        }
        let dropped = WITH_VALUE.iter().any(|o| {
            a.starts_with(&format!("{o}=")) || (*o == "-m" && a.len() > 2 && a.starts_with("-m"))
        }) || NO_SHARED_STATE.iter().any(|o| is_option(a, o));
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
    /// It stood by once (it reported ready).
    ready: bool,
    /// What it allocated in DPDK's heap while starting (`dpdk::heap`);
    /// empty when that could not be told apart.
    heap: Vec<HeapElement>,
}

impl Running {
    /// Killed and not gone yet. Only a process replaced as the active one
    /// (`replaced`), or one that never stood by, is looked at: the others
    /// are known alive, and reading /proc for them every tick would be for
    /// nothing.
    fn on_its_way_out(&self, replaced: u32) -> bool {
        (!self.ready || self.child.id() == replaced) && dying(self.child.id())
    }
}

/// The watchdog's view of the active worker process.
struct Watch {
    activations: u64,
    rounds: Vec<u64>,
    moved: Instant,
    /// Kills in a row that did not bring polling back.
    kills_in_row: u32,
}

pub struct Children {
    args: Vec<OsString>,
    arg0: OsString,
    runtime_dir: PathBuf,
    running: Vec<Running>,
    /// Worker processes in a row that failed to start (ended before they
    /// stood by, or exited with an error).
    failures_in_row: u32,
    /// No new worker process before this (backoff after failures).
    next_start: Instant,
    /// DPDK's heap element header, for freeing what killed processes left;
    /// None: not measurable, nothing is freed (and the leak is logged).
    heap_header: Option<usize>,
    watch: Watch,
}

/// How long every worker may go without a poll round before the watchdog
/// kills the active worker process.
const WATCHDOG: Duration = Duration::from_secs(1);

impl Children {
    /// `config` is the port owner's own copy, so that every worker runs the
    /// config the ports were set up with, whatever happens to the file later.
    pub fn new(
        arg0: OsString,
        primary_eal: &[String],
        config: &Path,
        runtime_dir: PathBuf,
        workers: usize,
    ) -> Self {
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
        Children {
            args,
            arg0,
            runtime_dir,
            running: Vec::new(),
            failures_in_row: 0,
            next_start: Instant::now(),
            heap_header,
            watch: Watch {
                activations: 0,
                rounds: vec![0; workers],
                moved: Instant::now(),
                kills_in_row: 0,
            },
        }
    }

    /// Starts worker processes until [`WORKER_PROCESSES`] run, one at a time
    /// and only while every running one has stood by: each start's heap
    /// allocations are then told apart by the heap before and after it.
    pub fn fill(&mut self, shared: &SharedState, quit: &AtomicBool) -> Result<(), SuperviseError> {
        // A killed process the kernel is still tearing down (on a loaded
        // host this can take tens of seconds) runs no code of its own any
        // more: its replacement need not wait for it.
        let replaced = shared.replaced_pid.load(Ordering::Relaxed);
        while self.running.iter().filter(|r| !r.on_its_way_out(replaced)).count() < WORKER_PROCESSES
            && self.running.iter().all(|r| r.ready || r.on_its_way_out(replaced))
            && Instant::now() >= self.next_start
            && !quit.load(Ordering::Relaxed)
        {
            let before = heap::busy_elements();
            // /proc/self/exe: this very build, even after a package upgrade
            // replaced the file (a worker must match its port owner).
            let mut child = Command::new("/proc/self/exe")
                .arg0(&self.arg0)
                .args(&self.args)
                .env(OWNER_ENV, std::process::id().to_string())
                .spawn()
                .map_err(|source| SuperviseError::Spawn { exe: "/proc/self/exe".into(), source })?;
            let pid = child.id();
            tracing::info!(pid, "worker process started");
            let started = Instant::now();
            let mut ended = None;
            while shared.ready_pid.load(Ordering::Acquire) != pid
                && started.elapsed() < READY_TIMEOUT
                && !quit.load(Ordering::Relaxed)
            {
                if let Ok(Some(st)) = child.try_wait() {
                    ended = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let ready = shared.ready_pid.load(Ordering::Acquire) == pid;
            let changed: Vec<HeapElement> =
                heap::busy_elements().difference(&before).copied().collect();
            match (ready, ended) {
                (true, _) => {
                    self.failures_in_row = 0;
                    self.running.push(Running { child, started, ready, heap: changed });
                }
                (false, Some(st)) => {
                    // Dead before it stood by: what changed is what it left.
                    if st.code().is_none() {
                        self.reclaim_heap(pid, &changed);
                    }
                    self.running.push(Running { child, started, ready, heap: Vec::new() });
                }
                // Slow (or stopping): its allocations cannot be told apart.
                (false, None) => {
                    self.running.push(Running { child, started, ready, heap: Vec::new() })
                }
            }
        }
        Ok(())
    }

    /// Reaps the worker processes that ended, marks the slow ones that stood
    /// by since, counts the standbys; returns how many ended.
    pub fn reap(&mut self, shared: &SharedState) -> Result<usize, SuperviseError> {
        let ready_pid = shared.ready_pid.load(Ordering::Acquire);
        for r in &mut self.running {
            if !r.ready && r.child.id() == ready_pid {
                r.ready = true;
                self.failures_in_row = 0;
            }
        }
        let mut ended = 0;
        let mut i = 0;
        while i < self.running.len() {
            let status = self.running[i].child.try_wait();
            let Ok(Some(status)) = status else {
                i += 1;
                continue;
            };
            let Running { child, started, ready, heap: allocated } = self.running.swap_remove(i);
            let pid = child.id();
            ended += 1;
            shared.worker_exits.fetch_add(1, Ordering::Relaxed);
            let was_active = shared.active_pid.load(Ordering::Relaxed) == pid
                || shared.replaced_pid.load(Ordering::Relaxed) == pid;
            if status.code().is_none() {
                self.reclaim_heap(pid, &allocated);
            }
            self.clean_runtime_dir(pid);
            let lived_ms = started.elapsed().as_millis() as u64;
            if failed(&status) || !ready {
                self.failures_in_row += 1;
                let backoff = Duration::from_millis(100 << self.failures_in_row.min(6))
                    .min(Duration::from_secs(5));
                self.next_start = Instant::now() + backoff;
                tracing::error!(pid, %status, was_active, lived_ms, failures_in_row = self.failures_in_row, backoff_ms = backoff.as_millis() as u64, "worker process failed");
                if self.failures_in_row >= FAILURES_IN_ROW && !self.forwarding(shared) {
                    return Err(SuperviseError::FailingWorkers(self.failures_in_row));
                }
            } else if was_active {
                tracing::warn!(pid, %status, lived_ms, "active worker process ended; the standby takes over");
            } else {
                tracing::warn!(pid, %status, lived_ms, "standby worker process ended");
            }
        }
        let active = shared.active_pid.load(Ordering::Relaxed);
        let replaced = shared.replaced_pid.load(Ordering::Relaxed);
        let standbys = self
            .running
            .iter()
            .filter(|r| r.ready && r.child.id() != active && !r.on_its_way_out(replaced))
            .count();
        shared.standbys.store(standbys as u32, Ordering::Relaxed);
        Ok(ended)
    }

    /// Whether a worker process of ours is the active one.
    fn forwarding(&self, shared: &SharedState) -> bool {
        let active = shared.active_pid.load(Ordering::Relaxed);
        active != 0 && self.running.iter().any(|r| r.child.id() == active)
    }

    /// Kills the active worker process when its workers stopped polling for
    /// [`WATCHDOG`]: a worker stuck for good (a pool ring that a process
    /// killed in the middle of an operation left half-moved spins every
    /// later user). When the next active one is stuck too, the shared state
    /// itself is: an error, so that the unit restarts whole.
    pub fn watchdog(&mut self, shared: &SharedState, workers: usize) -> Result<(), SuperviseError> {
        let w = &mut self.watch;
        let activations = shared.activations.load(Ordering::Relaxed);
        let rounds: Vec<u64> = shared.workers[..workers].iter().map(|x| x.rounds.get()).collect();
        let now = Instant::now();
        if activations != w.activations {
            // A new active process: give it a full period.
            w.activations = activations;
            w.rounds = rounds;
            w.moved = now;
            return Ok(());
        }
        if rounds.iter().zip(&w.rounds).all(|(a, b)| a != b) {
            w.rounds = rounds;
            w.moved = now;
            w.kills_in_row = 0;
            return Ok(());
        }
        let active = shared.active_pid.load(Ordering::Relaxed);
        if active == 0 || now.duration_since(w.moved) < WATCHDOG {
            return Ok(());
        }
        // Only a worker that did not move since the last look keeps the clock.
        if !self.running.iter().any(|r| r.child.id() == active) {
            return Ok(());
        }
        w.kills_in_row += 1;
        shared.watchdog_kills.fetch_add(1, Ordering::Relaxed);
        tracing::error!(pid = active, stalled_ms = now.duration_since(w.moved).as_millis() as u64, "a worker of the active worker process stopped polling; killing it so the standby takes over");
        if w.kills_in_row > 1 {
            return Err(SuperviseError::Wedged);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(active as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        w.moved = now;
        Ok(())
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
        if allocated.is_empty() {
            return;
        }
        let now = heap::busy_elements();
        let live: HashSet<HeapElement> = self
            .running
            .iter()
            .filter(|r| r.child.id() != pid)
            .flat_map(|r| r.heap.iter().copied())
            .collect();
        let dead: Vec<HeapElement> =
            allocated.iter().filter(|e| now.contains(e) && !live.contains(e)).copied().collect();
        if dead.is_empty() {
            return;
        }
        // SAFETY: `pid` was killed, so it frees nothing any more; each
        // element is busy now, was allocated while it started (when no other
        // process was starting, and the running ones do not allocate there),
        // and no live worker process claims it.
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

/// Whether process `pid` is on its way out: exiting in the kernel
/// (`PF_EXITING` in its flags), or with a SIGKILL pending that it has not
/// acted on yet (asleep in the kernel). False when it cannot be read.
fn dying(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let exiting = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
        // After the command name (which may hold spaces and parentheses):
        // state, ppid, pgrp, session, tty, tpgid, flags.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(6)?.parse::<u64>().ok()
    });
    if exiting.is_some_and(|flags| flags & PF_EXITING != 0) {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status.lines().any(|l| {
        let pending = l.strip_prefix("SigPnd:").or_else(|| l.strip_prefix("ShdPnd:"));
        pending
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

/// The environment variable that tells a worker process its port owner's pid.
pub const OWNER_ENV: &str = "LAZARUS_PORT_OWNER_PID";

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

    /// A child killed and not reaped yet is dying; a live one is not.
    #[test]
    fn a_killed_child_is_dying_until_reaped() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(!dying(c.id()));
        c.kill().unwrap();
        let t = Instant::now();
        while !dying(c.id()) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(dying(c.id()), "a SIGKILLed child, a zombie until reaped");
        c.wait().unwrap();
        assert!(!dying(c.id()), "gone");
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
