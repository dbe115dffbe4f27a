//! `lazarus-dataplane [EAL options] -- --config FILE`

use anyhow::{bail, Context, Result};
use clap::Parser;
use dataplane::checkpoint::attach::{self, Attached};
use dataplane::checkpoint::{RingSink, WorkerSink};
use dataplane::config::{Config, Plan};
use dataplane::dpdk::{self, Eal, EalArgs, Mempool, Port, PortSetup};
use dataplane::shared::{self, SharedState};
use dataplane::stats::{PortTotals, WorkerCounters};
use dataplane::supervisor;
use dataplane::telemetry;
use dataplane::worker::WorkerFirewall;
use dataplane::worker::{PortLane, Worker};
use lazarus_core::checkpoint::NoCheckpoint;
use lazarus_core::firewall::Firewall;
use lazarus_core::placement::Placement;
use lazarus_core::stats::{Counter, FwCounters};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a worker writes and others read: its packet counters, its connection
/// counters, its poll rounds.
type WorkerRefs = (&'static WorkerCounters, &'static FwCounters, &'static Counter);

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
    /// Own the ports and run the workers in child processes, one active and
    /// one standing by, so that a worker crash costs milliseconds, not a
    /// full restart (docs/RESTART.md).
    #[arg(long)]
    supervise: bool,
    /// A worker process of `--supervise`, which starts it; not for operators.
    #[arg(long, hide = true)]
    worker: bool,
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
    match (app.supervise, app.worker) {
        (false, false) => {
            dpdk::check_hugepages(&eal_args.0)?;
            run_single(&eal_args, &plan)
        }
        (true, false) => {
            dpdk::check_hugepages(&eal_args.0)?;
            run_port_owner(&eal_args, &app.config, &plan)
        }
        (false, true) => run_worker_process(&eal_args, &plan),
        (true, true) => bail!("--supervise and --worker exclude each other: start `lazarus-dataplane [EAL options] -- --config FILE --supervise`; it starts the worker processes itself"),
    }
}

/// SIGINT and SIGTERM set the returned flag; a second one exits at once.
fn quit_on_signals() -> Result<Arc<AtomicBool>> {
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, quit.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, quit.clone()).context("installing signal handlers")?;
    }
    Ok(quit)
}

/// One process owns the ports and runs the workers: a restart is a full one
/// (EAL, ports, tables), as before supervision existed.
fn run_single(eal_args: &EalArgs, plan: &Plan) -> Result<()> {
    let ct = &plan.config.conntrack;
    let ck = &plan.config.checkpoint;
    let quit = quit_on_signals()?;
    // checkpointd first: a dataplane that cannot restore must not take traffic.
    let attached = if ct.enabled && ck.enabled {
        match attach::attach(ck, plan.workers.len() as u32, &quit) {
            Err(attach::AttachError::Stopped) => {
                tracing::info!("stopped before starting");
                return Ok(());
            }
            r => Some(r?),
        }
    } else {
        if ct.enabled {
            tracing::warn!("checkpoint.enabled = false: connections will not survive a restart of the dataplane");
        }
        None
    };
    let eal = Eal::init(eal_args)?;
    tracing::info!(dpdk = %dpdk::version(), ports = eal.port_count(), tsc_hz = dpdk::tsc_hz(), main_lcore = dpdk::main_lcore(), "EAL up");
    check_lcores(&eal, plan)?;
    let pool = make_pool(plan)?;
    let counters: Vec<WorkerRefs> = plan
        .workers
        .iter()
        .map(|_| (WorkerCounters::leaked(), FwCounters::leaked(), &*Box::leak(Box::default())))
        .collect();
    // Tables are rebuilt before any port starts: traffic never meets an empty table.
    let mut firewalls = new_firewalls(plan, &counters, false);
    place_probes(&mut firewalls, &placement_of(plan, &eal));
    let restore_us: &'static AtomicU64 = Box::leak(Box::default());
    if let Some(a) = &attached {
        let t = restore_firewalls(
            &mut firewalls,
            a,
            &worker_cpus(&eal, plan),
            &placement_of(plan, &eal),
            &ck.control_socket,
        )?;
        restore_us.store(t.as_micros() as u64, Ordering::Relaxed);
    }
    let ports = start_ports(plan, &pool, &eal)?;
    let port_ids: Vec<u16> = ports.iter().map(|p| p.id()).collect();
    let workers = make_workers(plan, &port_ids, firewalls, &counters, &quit);
    log_tables(plan, &workers);
    install_telemetry(
        plan,
        &port_ids,
        &counters,
        attached.as_ref().map(|a| a.rings),
        attached.as_ref().map(|a| a.dir.clone()),
        restore_us,
        None,
    )?;
    let started = Instant::now();
    let launched = launch(&workers, &quit);
    if launched.is_ok() {
        tracing::info!(workers = workers.len(), "forwarding; SIGINT or SIGTERM stops");
        stats_loop(plan, &port_ids, &counters, &quit, started, |_| Ok(()))?;
    }
    dpdk::wait_all_lcores();
    launched?;
    summaries(plan, &port_ids, &counters, started);
    // Tables live in DPDK's heap: free them before EAL goes.
    drop(workers);
    drop(ports);
    drop(pool);
    drop(eal);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The port owner of a supervised dataplane (docs/RESTART.md): EAL's primary,
/// the pool and the ports, telemetry, and no packet code. The workers run in
/// child processes, one active and one standing by.
fn run_port_owner(eal_args: &EalArgs, config: &std::path::Path, plan: &Plan) -> Result<()> {
    if let Some(a) = supervisor::no_shared_state(&eal_args.0) {
        bail!("EAL option {a} leaves no shared state for the worker processes of --supervise: remove it (or run without --supervise)");
    }
    let quit = quit_on_signals()?;
    let eal = Eal::init(eal_args)?;
    tracing::info!(dpdk = %dpdk::version(), ports = eal.port_count(), main_lcore = dpdk::main_lcore(), "EAL up (port owner)");
    check_lcores(&eal, plan)?;
    let shared: &'static SharedState = dpdk::reserve_shared(shared::MEMZONE)?;
    let pool = make_pool(plan)?;
    let ports = start_ports(plan, &pool, &eal)?;
    let port_ids: Vec<u16> = ports.iter().map(|p| p.id()).collect();
    let counters = shared_refs(shared, plan);
    // Telemetry reads the rings the workers write: mapped for reading only,
    // never as their producer.
    let ck = &plan.config.checkpoint;
    let rings = (plan.config.conntrack.enabled && ck.enabled)
        .then(|| shm_layout::RingsSegment::open_file(&ck.dir.join(shm_layout::RINGS_FILE)).ok())
        .flatten()
        .map(|r| &*Box::leak(Box::new(r)));
    install_telemetry(
        plan,
        &port_ids,
        &counters,
        rings,
        rings.map(|_| ck.dir.clone()),
        &shared.restore_us,
        Some(shared),
    )?;
    // Every worker process runs the config the ports were set up with, even
    // after the file is edited: a change needs a restart of the port owner.
    let runtime = dpdk::runtime_dir();
    let own_config = runtime.join("lazarus-dataplane.toml");
    std::fs::copy(config, &own_config)
        .with_context(|| format!("copying {} to {}", config.display(), own_config.display()))?;
    let arg0 = std::env::args_os().next().unwrap_or_else(|| "lazarus-dataplane".into());
    let mut children =
        supervisor::Children::new(arg0, &eal_args.0, &own_config, runtime, plan.workers.len());
    children.fill(shared, &quit)?;
    tracing::info!(
        processes = supervisor::WORKER_PROCESSES,
        "port owner up; worker processes starting"
    );
    let started = Instant::now();
    let run = stats_loop(plan, &port_ids, &counters, &quit, started, |_| {
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        children.reap(shared)?;
        children.watchdog(shared, plan.workers.len())?;
        children.fill(shared, &quit)?;
        Ok(())
    });
    children.stop(Duration::from_secs(5));
    run?;
    summaries(plan, &port_ids, &counters, started);
    drop(ports);
    drop(pool);
    drop(eal);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A worker process of a supervised dataplane: EAL's secondary. It builds its
/// tables at once, then stands by until it holds the active lock (the active
/// worker process has ended), then restores, and polls.
fn run_worker_process(eal_args: &EalArgs, plan: &Plan) -> Result<()> {
    // The port owner's death ends this process at any step: a new port
    // owner starts from nothing, and the full restart path restores.
    let owner: u32 = std::env::var(supervisor::OWNER_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .context("a worker process is started by `lazarus-dataplane --supervise`, not by hand")?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("asking to die with the port owner")?;
    if std::os::unix::process::parent_id() != owner {
        bail!("the port owner (pid {owner}) is gone");
    }
    let quit = quit_on_signals()?;
    let eal = Eal::init(eal_args)?;
    let shared: &'static SharedState = dpdk::lookup_shared(shared::MEMZONE)?;
    if shared.build != shared::BUILD {
        bail!("the port owner runs another build of lazarus-dataplane: worker processes must come from the same binary; restart the port owner (systemctl restart lazarus-dataplane)");
    }
    check_lcores(&eal, plan)?;
    let port_ids = plan
        .config
        .port
        .iter()
        .map(|pc| dpdk::port_id(&pc.device, || eal.port_names()))
        .collect::<Result<Vec<_>, _>>()?;
    let counters = shared_refs(shared, plan);
    let mut firewalls = new_firewalls(plan, &counters, true);
    place_probes(&mut firewalls, &placement_of(plan, &eal));
    let lock_path = dpdk::runtime_dir().join("lazarus-active.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // Stand by: the lock is free once every thread of the active process is gone.
    shared.ready_pid.store(std::process::id(), Ordering::Release);
    tracing::info!(pid = std::process::id(), "worker process standing by");
    let active = loop {
        if quit.load(Ordering::Relaxed) {
            break false;
        }
        match lock.try_lock() {
            // A stop that came while the lock was taken wins.
            Ok(()) => break !quit.load(Ordering::Relaxed),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path.display()));
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    if !active {
        tracing::info!("standby stopped before taking over");
        return Ok(());
    }
    let took = Instant::now();
    tracing::info!(pid = std::process::id(), "worker process taking over");
    let ct = &plan.config.conntrack;
    let ck = &plan.config.checkpoint;
    let attached = if ct.enabled && ck.enabled {
        let a = match attach::attach(ck, plan.workers.len() as u32, &quit) {
            Err(attach::AttachError::Stopped) => {
                tracing::info!("stopped while taking over");
                return Ok(());
            }
            r => r?,
        };
        let t = restore_firewalls(
            &mut firewalls,
            &a,
            &worker_cpus(&eal, plan),
            &placement_of(plan, &eal),
            &ck.control_socket,
        )?;
        shared.restore_us.store(t.as_micros() as u64, Ordering::Relaxed);
        Some(a)
    } else {
        None
    };
    let workers = make_workers(plan, &port_ids, firewalls, &counters, &quit);
    let launched = launch(&workers, &quit);
    if launched.is_ok() {
        let us = took.elapsed().as_micros() as u64;
        shared.activation_us.store(us, Ordering::Relaxed);
        // Counted before the pid is published: whoever sees this process
        // active (and may kill it at once) sees its activation counted.
        let n = shared.activations.fetch_add(1, Ordering::Relaxed) + 1;
        let before = shared.active_pid.swap(std::process::id(), Ordering::Release);
        shared.replaced_pid.store(before, Ordering::Relaxed);
        tracing::info!(
            pid = std::process::id(),
            activation = n,
            ms = format_args!("{:.1}", us as f64 / 1e3),
            "forwarding; worker process active"
        );
        while !quit.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    dpdk::wait_all_lcores();
    launched?;
    drop(workers);
    drop(attached);
    // EAL's cleanup before the lock: the standby must not start while this
    // process still runs any DPDK code.
    drop(eal);
    drop(lock);
    tracing::info!("worker process stopped cleanly");
    Ok(())
}

/// Each worker's counters in the memory the port owner and its worker
/// processes share.
fn shared_refs(shared: &'static SharedState, plan: &Plan) -> Vec<WorkerRefs> {
    shared.workers[..plan.workers.len()].iter().map(|w| (&w.counters, &w.fw, &*w.rounds)).collect()
}

fn make_pool(plan: &Plan) -> Result<Mempool> {
    let d = &plan.config.dataplane;
    Ok(Mempool::new(dpdk::POOL_NAME, d.mbufs, d.mbuf_cache, d.mbuf_data_room, dpdk_socket())?)
}

fn start_ports(plan: &Plan, pool: &Mempool, eal: &Eal) -> Result<Vec<Port>> {
    let d = &plan.config.dataplane;
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
        let port = Port::start(&setup, pool, || eal.port_names())
            .with_context(|| format!("port[{i}] {:?}", pc.name))?;
        tracing::info!(port = %pc.name, device = %pc.device, id = port.id(), rx_queues = pc.rx_queues, tx_queues = plan.tx_queues, rss = port.rss, promiscuous = port.promiscuous, rx_checksum_offload = port.rx_checksum_offload, "port started");
        ports.push(port);
    }
    Ok(ports)
}

fn make_workers(
    plan: &Plan,
    port_ids: &[u16],
    mut firewalls: Vec<Option<WorkerFirewall>>,
    counters: &[WorkerRefs],
    quit: &Arc<AtomicBool>,
) -> Vec<Worker> {
    let d = &plan.config.dataplane;
    plan.workers
        .iter()
        .enumerate()
        .map(|(index, w)| Worker {
            index,
            lcore: w.lcore,
            lanes: w
                .lanes
                .iter()
                .map(|&lane| PortLane {
                    lane,
                    rx_port_id: port_ids[lane.rx_port],
                    tx_port_id: port_ids[lane.tx_port],
                })
                .collect(),
            burst: d.burst as usize,
            idle_sleep: Duration::from_micros(d.idle_sleep_us),
            idle_polls: d.idle_polls,
            counters: counters[index].0,
            quit: quit.clone(),
            firewall: firewalls[index].take().map(Mutex::new),
            fw_counters: counters[index].1,
            rounds: counters[index].2,
        })
        .collect()
}

fn log_tables(plan: &Plan, workers: &[Worker]) {
    let ct = &plan.config.conntrack;
    if !ct.enabled {
        return;
    }
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

/// Telemetry reads atomics only; its state is complete before any worker runs.
fn install_telemetry(
    plan: &Plan,
    port_ids: &[u16],
    counters: &[WorkerRefs],
    rings: Option<&'static shm_layout::RingsSegment>,
    dir: Option<PathBuf>,
    restore_us: &'static AtomicU64,
    shared: Option<&'static SharedState>,
) -> Result<()> {
    telemetry::install(telemetry::State {
        shared,
        protected: plan.config.protected.iter().map(|p| (p.addr, p.port)).collect(),
        started: Instant::now(),
        ports: plan
            .config
            .port
            .iter()
            .zip(port_ids)
            .map(|(pc, &id)| telemetry::PortView { name: pc.name.clone(), eth_id: id })
            .collect(),
        workers: plan
            .workers
            .iter()
            .enumerate()
            .map(|(index, w)| telemetry::WorkerView {
                index,
                lcore: w.lcore,
                counters: counters[index].0,
                fw: plan.config.conntrack.enabled.then_some(counters[index].1),
            })
            .collect(),
        rings,
        checkpoint_dir: dir.map(|d| d.display().to_string()),
        restore_us,
    })
    .context("registering the /lazarus/ telemetry commands")
}

fn launch(workers: &[Worker], quit: &AtomicBool) -> Result<()> {
    for w in workers {
        // SAFETY: `workers` lives, unmoved, until wait_all_lcores, which every
        // caller runs before dropping it.
        #[allow(unsafe_code)]
        if let Err(e) = unsafe { dpdk::launch_on_lcore(w, w.lcore) } {
            quit.store(true, Ordering::Relaxed);
            return Err(e.into());
        }
    }
    Ok(())
}

fn summaries(plan: &Plan, port_ids: &[u16], counters: &[WorkerRefs], started: Instant) {
    tracing::info!("{}", stats_line("summary", plan, port_ids, counters, started.elapsed(), None));
    for (index, (w, fw, _)) in counters.iter().enumerate() {
        let t = totals(w);
        tracing::info!(
            worker = index,
            lcore = plan.workers[index].lcore,
            rx = t.rx,
            tx = t.tx,
            dropped = t.dropped,
            tx_full = t.tx_full,
            idle_polls = w.idle_polls.get(),
            "worker summary"
        );
        if plan.config.conntrack.enabled {
            tracing::info!(worker = index, "conntrack summary {} | {}", fw.brief(), fw.detail());
        }
    }
}

/// Each worker's tracker, with empty tables and no sink yet. `private`: the
/// tables in this process's own hugepages (a worker process), not DPDK's heap.
fn new_firewalls(
    plan: &Plan,
    counters: &[WorkerRefs],
    private: bool,
) -> Vec<Option<WorkerFirewall>> {
    let ct = &plan.config.conntrack;
    let policy = Arc::new(plan.policy.clone());
    // Where a frame received on each port leaves: its bridge peer.
    let mut peer: Vec<usize> = (0..plan.config.port.len()).collect();
    for lane in plan.workers.iter().flat_map(|w| &w.lanes) {
        peer[lane.rx_port] = lane.tx_port;
    }
    // One for the process: ARP reaches one worker, whichever saw the VLAN.
    let seen_vlans = std::sync::Arc::new(lazarus_core::firewall::SeenVlans::default());
    counters
        .iter()
        .map(|&(_, c, _)| {
            ct.enabled.then(|| {
                let mut fw = Firewall::new(
                    ct,
                    policy.clone(),
                    plan.ports.clone(),
                    dpdk::tsc_hz(),
                    dpdk::HugepageAlloc { socket: dpdk_socket(), private },
                    WorkerSink::Off(NoCheckpoint),
                    c,
                );
                if !plan.config.protected.is_empty() {
                    fw.protect(&plan.config.protected, peer.clone(), dpdk::tsc_hz());
                    fw.share_seen_vlans(seen_vlans.clone());
                    dataplane::worker::reserve_log_memory(&mut fw, &plan.config.protected);
                }
                fw
            })
        })
        .collect()
}

/// The CPU of each worker's lcore, where its share of a restore runs.
fn worker_cpus(eal: &Eal, plan: &Plan) -> Vec<Option<u32>> {
    plan.workers.iter().map(|w| eal.lcore_cpu(w.lcore)).collect()
}

/// How the ports' RSS spreads connections over the workers, which a restore
/// follows for connections stored for no worker of this dataplane.
fn placement_of(plan: &Plan, eal: &Eal) -> Placement {
    let workers = plan.workers.len() as u16;
    let first = plan.config.port.first().map(|pc| dpdk::port_id(&pc.device, || eal.port_names()));
    match first {
        Some(Ok(id)) => dpdk::placement(id, workers),
        _ => Placement::spread(workers),
    }
}

/// Gives each worker's probes of protected services source ports whose
/// answers the ports' RSS brings back to it.
fn place_probes(firewalls: &mut [Option<WorkerFirewall>], placement: &Placement) {
    for (index, fw) in firewalls.iter_mut().enumerate() {
        if let Some(fw) = fw {
            for (addr, port) in fw.place_probes(index as u16, placement) {
                tracing::warn!(worker = index, service = %format!("{addr}:{port}"), "no probe source port's answers reach this worker (the ports' RSS does not hash TCP ports): its connections to the service are judged by the hook alone");
            }
        }
    }
}

/// Plugs each worker's ring into its tracker and rebuilds its connections
/// from checkpointd's store; returns how long the rebuild took.
fn restore_firewalls(
    out: &mut [Option<WorkerFirewall>],
    a: &Attached,
    cpus: &[Option<u32>],
    placement: &Placement,
    control: &std::path::Path,
) -> Result<Duration> {
    let started = Instant::now();
    for (index, fw) in out.iter_mut().enumerate() {
        if let Some(fw) = fw {
            *fw.sink_mut() = WorkerSink::Ring(RingSink::new(
                a.rings
                    .producer(index as u32)
                    .with_context(|| format!("taking worker {index}'s delta ring"))?,
                a.rings,
            ));
        }
    }
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
                let cpu = cpus.get(index).copied().flatten();
                let job = move || {
                    // On the worker's own core, idle until it polls: a thread
                    // spawned here inherits the main lcore's affinity, the
                    // core the port owner, checkpointd and the kernel's
                    // teardown of a killed worker process share.
                    if let Some(cpu) = cpu {
                        let mut set = nix::sched::CpuSet::new();
                        if set.set(cpu as usize).is_ok() {
                            let _ =
                                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                        }
                    }
                    fw.restore_from_store(&a.store, index as u16, placement, now)
                };
                (index, scope.spawn(job))
            })
            .collect();
        jobs.into_iter().map(|(index, job)| (index, job.join())).collect()
    });
    let mut total = 0;
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
    restore_protected(out, control, now);
    tracing::info!(
        connections = total,
        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "restore done"
    );
    Ok(started.elapsed())
}

/// Rebuilds the protected connections checkpointd holds, each on the worker
/// that wrote it. One that cannot be rebuilt goes on unprotected, counted
/// and logged: never a reason not to start.
fn restore_protected(out: &mut [Option<WorkerFirewall>], control: &std::path::Path, now: u64) {
    if !out.iter().flatten().any(|fw| fw.protects()) {
        return;
    }
    let mut held = match dataplane::checkpoint::protected::fetch(control) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("protected connections not restored, they go on unprotected: {e:#}");
            return;
        }
    };
    // Oldest first: of two records of one client port (the old connection's
    // end not yet written when the dataplane died), the live one wins.
    held.sort_by_key(|h| h.version);
    let (mut restored, mut refused) = (0u64, 0u64);
    for h in held {
        let fw = out.get_mut(usize::from(h.worker)).and_then(Option::as_mut);
        let r = match fw {
            Some(fw) => fw
                .restore_protected(h.id, &h.record, h.log, h.base, h.broken, now)
                .map_err(|e| e.to_string()),
            None => Err(format!("worker {} is not one of this config's", h.worker)),
        };
        match r {
            Ok(()) => restored += 1,
            Err(e) => {
                if refused < 8 {
                    tracing::warn!(
                        worker = h.worker,
                        "a protected connection goes on unprotected: {e}"
                    );
                }
                refused += 1;
                // Ended in checkpointd, so it is not offered again.
                let owner = usize::from(h.worker).min(out.len().saturating_sub(1));
                if let Some(fw) = out.get_mut(owner).and_then(Option::as_mut) {
                    fw.forget_protected(h.id);
                }
            }
        }
    }
    tracing::info!(restored, refused, "protected connections restored");
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

fn totals(w: &WorkerCounters) -> PortTotals {
    let mut t = PortTotals::default();
    for p in w.ports.iter() {
        t += p.snapshot();
    }
    t
}

/// Logs the stats line every `stats_interval_ms` until `quit`; `tick` runs
/// about every 20 ms (the port owner reaps and restarts worker processes there).
fn stats_loop(
    plan: &Plan,
    port_ids: &[u16],
    counters: &[WorkerRefs],
    quit: &AtomicBool,
    started: Instant,
    mut tick: impl FnMut(Instant) -> Result<()>,
) -> Result<()> {
    let every = Duration::from_millis(plan.config.dataplane.stats_interval_ms);
    let mut last = (Instant::now(), PortTotals::default());
    let mut next = Instant::now() + every;
    while !quit.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        tick(Instant::now())?;
        if every.is_zero() || Instant::now() < next {
            continue;
        }
        next += every;
        let now = Instant::now();
        let mut sum = PortTotals::default();
        counters.iter().for_each(|(w, _, _)| sum += totals(w));
        let secs = now.duration_since(last.0).as_secs_f64();
        let rates =
            ((sum.rx - last.1.rx) as f64 / secs / 1e6, (sum.tx - last.1.tx) as f64 / secs / 1e6);
        tracing::info!(
            "{}",
            stats_line("stats", plan, port_ids, counters, started.elapsed(), Some(rates))
        );
        last = (now, sum);
    }
    Ok(())
}

/// The one-line summary: totals, then each port's share.
fn stats_line(
    tag: &str,
    plan: &Plan,
    port_ids: &[u16],
    counters: &[WorkerRefs],
    elapsed: Duration,
    rates: Option<(f64, f64)>,
) -> String {
    use std::fmt::Write;
    let mut all = PortTotals::default();
    counters.iter().for_each(|(w, _, _)| all += totals(w));
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
        for (index, (_, fw, _)) in counters.iter().enumerate() {
            let _ = write!(s, " | w{index} {}", fw.brief());
        }
    }
    for (i, &id) in port_ids.iter().enumerate() {
        let mut t = PortTotals::default();
        counters.iter().for_each(|(w, _, _)| t += w.ports[i].snapshot());
        let e = dpdk::port_stats(id);
        let _ = write!(
            s,
            " | {}: rx={} tx={} dropped={} tx_full={} imissed={} rx_nombuf={}",
            plan.config.port[i].name, t.rx, t.tx, t.dropped, t.tx_full, e.imissed, e.rx_nombuf
        );
    }
    s
}
