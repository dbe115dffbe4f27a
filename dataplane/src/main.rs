//! `lazarus-dataplane [EAL options] -- --config FILE`

use anyhow::{bail, Context, Result};
use clap::Parser;
use dataplane::checkpoint::attach::{self, Attached};
use dataplane::checkpoint::{RingSink, WorkerSink};
use dataplane::config::{Config, Plan};
use dataplane::dpdk::{self, Eal, EalArgs, Mempool, Port, PortSetup};
use dataplane::stats::{PortTotals, WorkerCounters};
use dataplane::telemetry;
use dataplane::worker::WorkerFirewall;
use dataplane::worker::{PortLane, Worker};
use lazarus_core::checkpoint::NoCheckpoint;
use lazarus_core::firewall::Firewall;
use lazarus_core::stats::FwCounters;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options after `--` (EAL options come before it).
#[derive(Debug, Parser)]
#[command(
    name = "lazarus-dataplane",
    version,
    about = "Lazarus dataplane",
    override_usage = "lazarus-dataplane [EAL options] -- --config FILE"
)]
struct AppArgs {
    /// TOML config (ports, bridges, workers); see docs/CONFIG.md.
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // A closed stderr (journald restarted, a pipe whose reader left) must not
        // take the process down: tracing-subscriber would eprintln! the write
        // error, and that panics.
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr is gone.
            let _ = writeln!(std::io::stderr(), "lazarus-dataplane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Splits argv at `--` into EAL's part (with argv[0]) and ours.
fn split_args() -> Result<(EalArgs, AppArgs)> {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv.first().cloned().unwrap_or_else(|| "lazarus-dataplane".into());
    let Some(sep) = argv.iter().position(|a| a == "--") else {
        if argv.iter().skip(1).any(|a| a == "--help" || a == "-h" || a == "--version" || a == "-V")
        {
            AppArgs::parse_from(&argv); // prints and exits
        }
        bail!("usage: lazarus-dataplane [EAL options] -- --config FILE (no `--` found; EAL options go before it, ours after)");
    };
    let app = AppArgs::try_parse_from(
        std::iter::once(prog.clone()).chain(argv[sep + 1..].iter().cloned()),
    )
    .map_err(|e| {
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            e.exit()
        }
        anyhow::anyhow!("{}", e.render().to_string().trim_end())
    })?;
    Ok((EalArgs(argv[..sep].to_vec()), app))
}

fn run() -> Result<()> {
    let (eal_args, app) = split_args()?;
    // Config and hugepages are checked before EAL so that their errors are one
    // clear line, not EAL's log.
    let plan = Config::load(&app.config)?;
    dpdk::check_hugepages(&eal_args.0)?;
    let ct = &plan.config.conntrack;
    let ck = &plan.config.checkpoint;
    // checkpointd first: a dataplane that cannot restore must not take traffic.
    let attached = if ct.enabled && ck.enabled {
        Some(attach::attach(ck, plan.workers.len() as u32)?)
    } else {
        if ct.enabled {
            tracing::warn!("checkpoint.enabled = false: connections will not survive a restart of the dataplane");
        }
        None
    };

    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, quit.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, quit.clone()).context("installing signal handlers")?;
    }

    let eal = Eal::init(&eal_args)?;
    tracing::info!(dpdk = %dpdk::version(), ports = eal.port_count(), tsc_hz = dpdk::tsc_hz(), main_lcore = dpdk::main_lcore(), "EAL up");
    check_lcores(&eal, &plan)?;

    let d = &plan.config.dataplane;
    let pool =
        Mempool::new("lazarus_pkts", d.mbufs, d.mbuf_cache, d.mbuf_data_room, dpdk_socket())?;
    // Tables are rebuilt before any port starts: traffic never meets an empty table.
    let fw_counters: Vec<Arc<FwCounters>> =
        plan.workers.iter().map(|_| Arc::new(FwCounters::default())).collect();
    let (mut firewalls, restore_time) = build_firewalls(&plan, attached.as_ref(), &fw_counters)?;
    let mut ports = Vec::new();
    for (i, pc) in plan.config.port.iter().enumerate() {
        let setup = PortSetup {
            device: pc.device.clone(),
            rx_queues: pc.rx_queues,
            tx_queues: plan.tx_queues,
            rx_desc: d.rx_desc,
            tx_desc: d.tx_desc,
            promiscuous: pc.promiscuous,
        };
        let port = Port::start(&setup, &pool, || eal.port_names())
            .with_context(|| format!("port[{i}] {:?}", pc.name))?;
        tracing::info!(port = %pc.name, device = %pc.device, id = port.id(), rx_queues = pc.rx_queues, tx_queues = plan.tx_queues, rss = port.rss, promiscuous = port.promiscuous, rx_checksum_offload = port.rx_checksum_offload, "port started");
        ports.push(port);
    }

    let workers: Vec<Worker> = plan
        .workers
        .iter()
        .enumerate()
        .map(|(index, w)| {
            let firewall = firewalls[index].take().map(Mutex::new);
            let fw_counters = fw_counters[index].clone();
            Worker {
                index,
                lcore: w.lcore,
                lanes: w
                    .lanes
                    .iter()
                    .map(|&lane| PortLane {
                        lane,
                        rx_port_id: ports[lane.rx_port].id(),
                        tx_port_id: ports[lane.tx_port].id(),
                    })
                    .collect(),
                burst: d.burst as usize,
                idle_sleep: Duration::from_micros(d.idle_sleep_us),
                idle_polls: d.idle_polls,
                counters: Arc::new(WorkerCounters::new(ports.len())),
                quit: quit.clone(),
                firewall,
                fw_counters,
            }
        })
        .collect();
    if ct.enabled {
        let bytes: usize = workers
            .iter()
            .filter_map(|w| w.firewall.as_ref())
            .map(|f| f.lock().map(|f| f.table().bytes_allocated()).unwrap_or(0))
            .sum();
        tracing::info!(
            capacity_per_worker = ct.capacity,
            table_bytes = bytes,
            bytes_per_conn = bytes / (ct.capacity as usize * workers.len()).max(1),
            ftp = ct.ftp,
            zones = plan.policy.zones.len(),
            rules = plan.policy.rules.len(),
            "connection tracking on"
        );
    }

    // Telemetry reads atomics only; its state is complete before any worker runs.
    telemetry::install(telemetry::State {
        started: Instant::now(),
        ports: plan
            .config
            .port
            .iter()
            .zip(&ports)
            .map(|(pc, p)| telemetry::PortView { name: pc.name.clone(), eth_id: p.id() })
            .collect(),
        workers: workers
            .iter()
            .map(|w| telemetry::WorkerView {
                index: w.index,
                lcore: w.lcore,
                counters: w.counters.clone(),
                fw: w.firewall.as_ref().map(|_| w.fw_counters.clone()),
            })
            .collect(),
        rings: attached.as_ref().map(|a| a.rings),
        checkpoint_dir: attached.as_ref().map(|a| a.dir.display().to_string()),
        restore_us: restore_time.as_micros() as u64,
    })
    .context("registering the /lazarus/ telemetry commands")?;

    let started = Instant::now();
    let mut launched = Ok(());
    for w in &workers {
        // SAFETY: `workers` lives, unmoved, until wait_all_lcores below returns.
        #[allow(unsafe_code)]
        if let Err(e) = unsafe { dpdk::launch_on_lcore(w, w.lcore) } {
            launched = Err(e);
            quit.store(true, Ordering::Relaxed);
            break;
        }
    }
    if launched.is_ok() {
        tracing::info!(workers = workers.len(), "forwarding; SIGINT or SIGTERM stops");
        stats_loop(&plan, &ports, &workers, &quit, started);
    }
    dpdk::wait_all_lcores();
    launched?;
    tracing::info!("{}", stats_line("summary", &plan, &ports, &workers, started.elapsed(), None));
    for w in &workers {
        let t = totals(w);
        tracing::info!(
            worker = w.index,
            lcore = w.lcore,
            rx = t.rx,
            tx = t.tx,
            dropped = t.dropped,
            tx_full = t.tx_full,
            idle_polls = w.counters.idle_polls.get(),
            "worker summary"
        );
        if plan.config.conntrack.enabled {
            tracing::info!(
                worker = w.index,
                "conntrack summary {} | {}",
                w.fw_counters.brief(),
                w.fw_counters.detail()
            );
        }
    }
    // Tables live in DPDK's heap: free them before EAL goes.
    drop(workers);
    drop(ports);
    drop(pool);
    drop(eal);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Each worker's tracker, with its sink, rebuilt from checkpointd's store when
/// checkpointing is on.
fn build_firewalls(
    plan: &Plan,
    attached: Option<&Attached>,
    counters: &[Arc<FwCounters>],
) -> Result<(Vec<Option<WorkerFirewall>>, Duration)> {
    let ct = &plan.config.conntrack;
    let policy = Arc::new(plan.policy.clone());
    let mut out = Vec::new();
    let started = Instant::now();
    let mut total = 0;
    for (index, c) in counters.iter().enumerate() {
        if !ct.enabled {
            out.push(None);
            continue;
        }
        let alloc = dpdk::HugepageAlloc { socket: dpdk_socket() };
        let sink = match attached {
            Some(a) => WorkerSink::Ring(RingSink::new(
                a.rings
                    .producer(index as u32)
                    .with_context(|| format!("taking worker {index}'s delta ring"))?,
            )),
            None => WorkerSink::Off(NoCheckpoint),
        };
        out.push(Some(Firewall::new(
            ct,
            policy.clone(),
            plan.ports.clone(),
            dpdk::tsc_hz(),
            alloc,
            sink,
            c.clone(),
        )));
    }
    if let Some(a) = attached {
        // Each worker's share is rebuilt on its own thread: the tables are
        // disjoint and the store is read-only until the ports start, so the
        // outage shrinks with the number of workers.
        let now = dpdk::rdtsc();
        let summaries: Vec<_> = std::thread::scope(|scope| {
            let jobs: Vec<_> = out
                .iter_mut()
                .enumerate()
                .filter_map(|(index, fw)| fw.as_mut().map(|fw| (index, fw)))
                .map(|(index, fw)| {
                    (index, scope.spawn(move || fw.restore_from_store(&a.store, index as u16, now)))
                })
                .collect();
            jobs.into_iter().map(|(index, job)| (index, job.join())).collect()
        });
        for (index, s) in summaries {
            let s =
                s.map_err(|_| anyhow::anyhow!("restoring worker {index}'s connections panicked"))?;
            total += s.restored;
            tracing::info!(
                worker = index,
                restored = s.restored,
                skipped = s.skipped,
                forbidden = s.forbidden,
                "connections restored"
            );
        }
        tracing::info!(
            connections = total,
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "restore done"
        );
    }
    Ok((out, if attached.is_some() { started.elapsed() } else { Duration::ZERO }))
}

fn dpdk_socket() -> i32 {
    dpdk_sys::SOCKET_ID_ANY
}

fn check_lcores(eal: &Eal, plan: &Plan) -> Result<()> {
    let main = dpdk::main_lcore();
    for (i, w) in plan.workers.iter().enumerate() {
        if w.lcore == main {
            bail!("config: worker[{i}].lcore: lcore {} is EAL's main lcore, which runs stats and signals; give EAL a core list with another lcore (e.g. -l 0,1) and use it", w.lcore);
        }
        if !eal.lcore_enabled(w.lcore) {
            bail!("config: worker[{i}].lcore: lcore {} is not in EAL's core list; add it to -l/--lcores", w.lcore);
        }
    }
    Ok(())
}

fn totals(w: &Worker) -> PortTotals {
    let mut t = PortTotals::default();
    for p in w.counters.ports.iter() {
        t += p.snapshot();
    }
    t
}

fn stats_loop(
    plan: &Plan,
    ports: &[Port],
    workers: &[Worker],
    quit: &AtomicBool,
    started: Instant,
) {
    let every = Duration::from_millis(plan.config.dataplane.stats_interval_ms);
    let mut last = (Instant::now(), PortTotals::default());
    let mut next = Instant::now() + every;
    while !quit.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if every.is_zero() || Instant::now() < next {
            continue;
        }
        next += every;
        let now = Instant::now();
        let mut sum = PortTotals::default();
        workers.iter().for_each(|w| sum += totals(w));
        let secs = now.duration_since(last.0).as_secs_f64();
        let rates =
            ((sum.rx - last.1.rx) as f64 / secs / 1e6, (sum.tx - last.1.tx) as f64 / secs / 1e6);
        tracing::info!(
            "{}",
            stats_line("stats", plan, ports, workers, started.elapsed(), Some(rates))
        );
        last = (now, sum);
    }
}

/// The one-line summary: totals, then each port's share.
fn stats_line(
    tag: &str,
    plan: &Plan,
    ports: &[Port],
    workers: &[Worker],
    elapsed: Duration,
    rates: Option<(f64, f64)>,
) -> String {
    use std::fmt::Write;
    let mut all = PortTotals::default();
    workers.iter().for_each(|w| all += totals(w));
    let mut s = format!(
        "{tag} elapsed={:.2}s rx={} tx={} dropped={} tx_full={}",
        elapsed.as_secs_f64(),
        all.rx,
        all.tx,
        all.dropped,
        all.tx_full
    );
    if let Some((rx, tx)) = rates {
        let _ = write!(s, " rx_mpps={rx:.3} tx_mpps={tx:.3}");
    }
    if plan.config.conntrack.enabled {
        for w in workers {
            let _ = write!(s, " | w{} {}", w.index, w.fw_counters.brief());
        }
    }
    for (i, port) in ports.iter().enumerate() {
        let mut t = PortTotals::default();
        workers.iter().for_each(|w| t += w.counters.ports[i].snapshot());
        let e = port.stats();
        let _ = write!(
            s,
            " | {}: rx={} tx={} dropped={} tx_full={} imissed={} rx_nombuf={}",
            plan.config.port[i].name, t.rx, t.tx, t.dropped, t.tx_full, e.imissed, e.rx_nombuf
        );
    }
    s
}
