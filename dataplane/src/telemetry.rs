//! The dataplane's telemetry commands (`/lazarus/...`), answered on DPDK's
//! telemetry thread from counters and gauges the workers publish as atomics:
//! a handler never touches a worker's table.
//!
//! | command | reply |
//! |---|---|
//! | `/lazarus/stats` | totals and per-port rx, tx, dropped, tx_full |
//! | `/lazarus/workers` | `worker<N>`: one dict per worker: packets, connection counters, gauges, checkpoint deltas |
//! | `/lazarus/conns` | connections by worker, module and TCP state |
//! | `/lazarus/checkpoint` | rings (head, tail, lag per worker), restore figures |
//! | `/lazarus/flush` | asks every worker to empty its table; replies with how many were asked |
//! | `/lazarus/protect` | `down ADDR:PORT` or `up ADDR:PORT`: the hook's word that a protected service went down or came back; every worker acts on it |
//! | `/lazarus/handoff` | supervised: ends the active worker process, so the standby restores every connection from checkpointd's store and forwards (a takeover of a standby appliance) |
//!
//! The FFI side (registration, writing `rte_tel_data`) is in `dpdk::telemetry`.

use crate::dpdk::telemetry::{self as tel, TelValue};
use crate::stats::{PortTotals, WorkerCounters};
use lazarus_core::modules::tcp::TcpState;
use lazarus_core::stats::{FwCounters, FwDrop};
use shm_layout::RingsSegment;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

/// A port as telemetry names it.
pub struct PortView {
    pub name: String,
    pub eth_id: u16,
}

/// What telemetry may read of one worker.
pub struct WorkerView {
    pub index: usize,
    pub lcore: u32,
    pub counters: &'static WorkerCounters,
    /// None when connection tracking is off.
    pub fw: Option<&'static FwCounters>,
}

/// Everything the handlers read; set once by main before the workers start.
pub struct State {
    pub started: Instant,
    pub ports: Vec<PortView>,
    pub workers: Vec<WorkerView>,
    /// The rings segment when checkpointing is on (mapped for the process's life).
    pub rings: Option<&'static RingsSegment>,
    pub checkpoint_dir: Option<String>,
    /// How long rebuilding the tables from the store took at start.
    pub restore_us: &'static AtomicU64,
    /// A supervised dataplane's shared state (the port owner serves telemetry).
    pub shared: Option<&'static crate::shared::SharedState>,
    /// The `[[protected]]` services, in config order.
    pub protected: Vec<(std::net::IpAddr, u16)>,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Every command, its help text and handler.
pub const COMMANDS: [(&str, &str, tel::TelHandler); 7] = [
    ("/lazarus/stats", "Lazarus totals and per-port rx, tx, dropped, tx_full. No parameters", stats),
    ("/lazarus/workers", "Lazarus per-worker counters, connection gauges and checkpoint deltas. No parameters", workers),
    ("/lazarus/conns", "Lazarus connections by worker, module and TCP state. No parameters", conns),
    ("/lazarus/checkpoint", "Lazarus checkpoint rings (head, tail, lag per worker) and restore figures. No parameters", checkpoint),
    ("/lazarus/protect", "Lazarus: the hook's word that a protected service went down or came back. Parameters: down|up ADDR:PORT", protect),
    ("/lazarus/flush", "Lazarus: empty every worker's connection table (checkpointd's store follows). No parameters", flush),
    ("/lazarus/handoff", "Lazarus (supervised): the standby worker process takes over, restoring every connection from checkpointd's store. No parameters", handoff),
];

/// Keeps `state` for the handlers and registers the commands. Call once,
/// after EAL is up and before the workers start.
pub fn install(state: State) -> anyhow::Result<()> {
    if STATE.set(state).is_err() {
        anyhow::bail!("telemetry state installed twice");
    }
    for (cmd, help, handler) in COMMANDS {
        tel::register(cmd, help, handler)?;
    }
    Ok(())
}

fn state() -> Option<&'static State> {
    STATE.get()
}

fn u(v: u64) -> TelValue {
    TelValue::U64(v)
}

fn sum(c: &[lazarus_core::stats::Counter]) -> u64 {
    c.iter().map(|c| c.get()).sum()
}

fn port_totals(s: &State, port: usize) -> PortTotals {
    let mut t = PortTotals::default();
    for w in &s.workers {
        if let Some(p) = w.counters.ports.get(port) {
            t += p.snapshot();
        }
    }
    t
}

fn not_ready() -> TelValue {
    TelValue::dict([("error", TelValue::Str("the dataplane is starting".into()))])
}

/// `/lazarus/stats`.
pub fn stats(_: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let mut all = PortTotals::default();
    let per_port: Vec<PortTotals> = (0..s.ports.len()).map(|i| port_totals(s, i)).collect();
    per_port.iter().for_each(|t| all += *t);
    let conns: u64 = s.workers.iter().filter_map(|w| w.fw.as_ref()).map(|f| f.live.get()).sum();
    let mut d = vec![
        ("uptime_ms".to_string(), u(s.started.elapsed().as_millis() as u64)),
        ("rx".into(), u(all.rx)),
        ("tx".into(), u(all.tx)),
        ("dropped".into(), u(all.dropped)),
        ("tx_full".into(), u(all.tx_full)),
        ("workers".into(), u(s.workers.len() as u64)),
        ("conns".into(), u(conns)),
        ("ports".into(), TelValue::Strs(s.ports.iter().map(|p| p.name.clone()).collect())),
    ];
    if let Some((available, in_use)) = crate::dpdk::pool_counts(crate::dpdk::POOL_NAME) {
        d.push(("mbufs_available".into(), u(available as u64)));
        d.push(("mbufs_in_use".into(), u(in_use as u64)));
    }
    if let Some(sh) = s.shared {
        let r = Ordering::Relaxed;
        d.push((
            "worker_processes".into(),
            TelValue::dict([
                ("active_pid", u(sh.active_pid.load(Ordering::Acquire) as u64)),
                ("standing_by", u(sh.standbys.load(r) as u64)),
                ("activations", u(sh.activations.load(r))),
                ("exits", u(sh.worker_exits.load(r))),
                ("last_activation_us", u(sh.activation_us.load(r))),
                ("watchdog_kills", u(sh.watchdog_kills.load(r))),
            ]),
        ));
    }
    for (p, t) in s.ports.iter().zip(per_port) {
        d.push((
            format!("port/{}", p.name),
            TelValue::dict([
                ("eth_port", u(p.eth_id as u64)),
                ("rx", u(t.rx)),
                ("tx", u(t.tx)),
                ("dropped", u(t.dropped)),
                ("tx_full", u(t.tx_full)),
            ]),
        ));
    }
    TelValue::Dict(d)
}

/// The connection gauges of one worker, by module.
fn gauges(f: &FwCounters) -> Vec<(String, TelValue)> {
    let g = &f.gauges;
    [
        ("conns", f.live.get()),
        ("tcp", g.tcp.get()),
        ("udp", g.udp.get()),
        ("icmp", g.icmp.get()),
        ("other", g.other.get()),
        ("ftp", g.ftp.get()),
        ("expectations", g.expectations.get()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), u(v)))
    .collect()
}

/// `/lazarus/workers`.
pub fn workers(_: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let mut out = Vec::new();
    for w in &s.workers {
        let mut t = PortTotals::default();
        w.counters.ports.iter().for_each(|p| t += p.snapshot());
        let mut d: Vec<(String, TelValue)> = vec![
            ("worker".into(), u(w.index as u64)),
            ("lcore".into(), u(w.lcore as u64)),
            ("rx".into(), u(t.rx)),
            ("tx".into(), u(t.tx)),
            ("dropped".into(), u(t.dropped)),
            ("tx_full".into(), u(t.tx_full)),
            ("idle_polls".into(), u(w.counters.idle_polls.get())),
        ];
        if let Some(f) = &w.fw {
            d.extend(gauges(f));
            for (k, v) in [
                ("new", sum(&f.new)),
                ("closed", sum(&f.closed)),
                ("expired", sum(&f.expired)),
                ("invalid", f.invalid_total()),
                ("policy_drop", f.fw_drop[FwDrop::Policy as usize].get()),
                ("table_full", f.fw_drop[FwDrop::TableFull as usize].get()),
                ("early_drop", f.early_drop.get()),
                ("related", f.related.get()),
                ("ckpt_portions", sum(&f.ckpt)),
                ("ckpt_deletes", f.ckpt_deletes.get()),
                ("ring_full", f.ckpt_ring_full.get()),
                ("ckpt_reemitted", f.ckpt_reemitted.get()),
                ("ckpt_deletes_lost", f.ckpt_deletes_lost.get()),
                ("ckpt_resyncs", f.ckpt_resyncs.get()),
                ("ckpt_sweeps", f.ckpt_sweeps.get()),
                ("restored", f.restored.get()),
                ("restore_skipped", f.restore_skipped.get()),
                ("restore_forbidden", f.restore_forbidden.get()),
                ("restore_stale_expectations", f.restore_stale_expectations.get()),
                ("flushed", f.flushed.get()),
                ("flush_pending", f.requests.flush.load(Ordering::Relaxed) as u64),
            ] {
                d.push((k.into(), u(v)));
            }
            for (k, v) in f.protect.named() {
                d.push((format!("protect_{k}"), u(v)));
            }
        }
        out.push((format!("worker{}", w.index), TelValue::Dict(d)));
    }
    TelValue::Dict(out)
}

/// `/lazarus/conns`.
pub fn conns(_: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let fws: Vec<&FwCounters> = s.workers.iter().filter_map(|w| w.fw).collect();
    let total = |pick: fn(&FwCounters) -> u64| fws.iter().map(|f| pick(f)).sum::<u64>();
    let mut d: Vec<(String, TelValue)> = vec![
        ("conntrack".into(), u(!fws.is_empty() as u64)),
        ("conns".into(), u(total(|f| f.live.get()))),
        ("tcp".into(), u(total(|f| f.gauges.tcp.get()))),
        ("udp".into(), u(total(|f| f.gauges.udp.get()))),
        ("icmp".into(), u(total(|f| f.gauges.icmp.get()))),
        ("other".into(), u(total(|f| f.gauges.other.get()))),
        ("ftp".into(), u(total(|f| f.gauges.ftp.get()))),
        ("expectations".into(), u(total(|f| f.gauges.expectations.get()))),
        ("per_worker".into(), TelValue::U64s(fws.iter().map(|f| f.live.get()).collect())),
    ];
    let states: Vec<(String, TelValue)> = (1..TcpState::COUNT)
        .map(|i| {
            let st = tcp_state(i);
            (st.name().to_string(), u(fws.iter().map(|f| f.gauges.tcp_states[i].get()).sum()))
        })
        .collect();
    d.push(("tcp_states".into(), TelValue::Dict(states)));
    for (w, f) in s.workers.iter().filter_map(|w| w.fw.map(|f| (w.index, f))) {
        d.push((format!("worker{w}"), TelValue::Dict(gauges(f))));
    }
    TelValue::Dict(d)
}

fn tcp_state(i: usize) -> TcpState {
    TcpState::ALL.get(i).copied().unwrap_or_default()
}

/// `/lazarus/checkpoint`.
pub fn checkpoint(_: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let fws: Vec<&FwCounters> = s.workers.iter().filter_map(|w| w.fw).collect();
    let col =
        |pick: &dyn Fn(&FwCounters) -> u64| TelValue::U64s(fws.iter().map(|f| pick(f)).collect());
    let mut d: Vec<(String, TelValue)> = vec![
        ("enabled".into(), u(s.rings.is_some() as u64)),
        ("restored".into(), u(fws.iter().map(|f| f.restored.get()).sum())),
        ("restore_skipped".into(), u(fws.iter().map(|f| f.restore_skipped.get()).sum())),
        ("restore_forbidden".into(), u(fws.iter().map(|f| f.restore_forbidden.get()).sum())),
        ("restore_ms".into(), u(s.restore_us.load(Ordering::Relaxed) / 1000)),
        ("restore_us".into(), u(s.restore_us.load(Ordering::Relaxed))),
    ];
    if let Some(dir) = &s.checkpoint_dir {
        d.push(("dir".into(), TelValue::Str(dir.clone())));
    }
    if let Some(rings) = s.rings {
        let hb = rings.heartbeat();
        d.push(("checkpointd_pid".into(), u(hb.pid as u64)));
        d.push((
            "heartbeat_age_ms".into(),
            u(shm_layout::monotonic_ns().saturating_sub(hb.monotonic_ns) / 1_000_000),
        ));
        let st: Vec<_> = (0..s.workers.len() as u32).map(|w| rings.status(w)).collect();
        d.push(("head".into(), TelValue::U64s(st.iter().map(|x| x.head).collect())));
        d.push(("tail".into(), TelValue::U64s(st.iter().map(|x| x.tail).collect())));
        d.push(("lag".into(), TelValue::U64s(st.iter().map(|x| x.lag()).collect())));
        d.push(("applied".into(), TelValue::U64s(st.iter().map(|x| x.applied).collect())));
        d.push(("torn".into(), TelValue::U64s(st.iter().map(|x| x.torn).collect())));
        d.push(("ring_slots".into(), u(rings.geometry().slots_per_ring as u64)));
    }
    d.push(("deltas".into(), col(&|f| sum(&f.ckpt) + f.ckpt_deletes.get())));
    d.push(("ring_full".into(), col(&|f| f.ckpt_ring_full.get())));
    d.push(("reemitted".into(), col(&|f| f.ckpt_reemitted.get())));
    d.push(("deletes_lost".into(), col(&|f| f.ckpt_deletes_lost.get())));
    d.push(("resyncs".into(), col(&|f| f.ckpt_resyncs.get())));
    d.push(("sweeps".into(), col(&|f| f.ckpt_sweeps.get())));
    TelValue::Dict(d)
}

/// `/lazarus/flush`: sets each worker's flush flag; the worker empties its
/// table in housekeeping and clears the flag.
/// Kills the active worker process: the standby takes the active lock,
/// restores from the store (which a standby appliance's checkpointd has
/// filled from the remote copy) and forwards. SIGKILL, not a request the
/// worker might be too wedged to read: the takeover path every restart test
/// already exercises.
pub fn handoff(_: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let Some(sh) = s.shared else {
        return TelValue::dict([(
            "error",
            TelValue::Str("handoff needs the supervised dataplane (--supervise): there is no standby worker process".into()),
        )]);
    };
    let pid = sh.active_pid.load(Ordering::Relaxed);
    let activations = sh.activations.load(Ordering::Relaxed);
    if pid == 0 {
        return TelValue::dict([(
            "error",
            TelValue::Str("no worker process is active yet".into()),
        )]);
    }
    let target = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(e) = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL) {
        return TelValue::dict([(
            "error",
            TelValue::Str(format!("cannot end worker process {pid}: {e}")),
        )]);
    }
    tracing::info!(
        pid,
        "handoff: ended the active worker process; the standby takes over from the store"
    );
    TelValue::dict([("ended_pid", u(u64::from(pid))), ("activations_before", u(activations))])
}

pub fn flush(_: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let mut asked = 0u64;
    let mut conns = 0u64;
    for f in s.workers.iter().filter_map(|w| w.fw) {
        conns += f.live.get();
        // Relaxed: the flag carries no data (the worker reads only its own table).
        f.requests.flush.store(true, Ordering::Relaxed);
        asked += 1;
    }
    TelValue::dict([("workers_asked", u(asked)), ("conns_before", u(conns))])
}

/// `down ADDR:PORT` or `up ADDR:PORT`: counted into every worker's request
/// counters for that service, which each worker compares with what it saw.
pub fn protect(params: &str) -> TelValue {
    let Some(s) = state() else { return not_ready() };
    let err = |e: String| TelValue::dict([("error", TelValue::Str(e))]);
    let mut words = params.split([' ', ',']).filter(|w| !w.is_empty());
    let (Some(word), Some(target), None) = (words.next(), words.next(), words.next()) else {
        return err(format!("expected \"down ADDR:PORT\" or \"up ADDR:PORT\", got {params:?}"));
    };
    let Ok(target) = target.parse::<std::net::SocketAddr>() else {
        return err(format!(
            "{target:?} is not an ADDR:PORT (an IPv6 address in brackets: [fd00::2]:7000)"
        ));
    };
    let Some(i) = s.protected.iter().position(|&(a, p)| (a, p) == (target.ip(), target.port()))
    else {
        return err(format!("{target} is not a [[protected]] service of this dataplane"));
    };
    let up = match word {
        "down" => 0,
        "up" => 1,
        _ => return err(format!("{word:?}: say down or up")),
    };
    let mut told = 0u64;
    for f in s.workers.iter().filter_map(|w| w.fw) {
        // One more word, and which it was: the worker sees the last one
        // and how many came since it looked.
        let _ = f.requests.protect_word[i].fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some((((v >> 1) + 1) << 1) | up)
        });
        told += 1;
    }
    TelValue::dict([
        ("service", TelValue::Str(target.to_string())),
        ("word", TelValue::Str(word.to_string())),
        ("workers_told", u(told)),
    ])
}
