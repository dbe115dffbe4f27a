//! What protecting a service costs the worker (issue 21's figures): a bulk
//! transfer through the pipeline (`process_burst`, housekeeping after each
//! burst, deltas into a real ring that a thread drains as checkpointd
//! does), once through a firewall with the server as a `[[protected]]`
//! service and once through one without, in alternating rounds of the
//! same frames, so a burst of load from other tenants hits both sides.
//!
//!     cargo build --release -p dataplane --example protect_paired
//!     target/release/examples/protect_paired [ROUNDS] [FLOWS] [STEPS]
//!
//! Each step, every flow's client sends a full-sized segment (1448 bytes)
//! in a burst of the flows' segments, and its server acknowledges it in a
//! burst of ACKs. `WORKLOAD=rr`: request/response instead, a service with
//! `truncation = "request-response"`: each step every client sends a
//! 64-byte request, its server answers 64 bytes, and the client
//! acknowledges the answer (three bursts), so every exchange is truncated. The protected side logs every client byte into the ring
//! (output commit at the local level) before the segment is forwarded.
//! Figures: TSC ticks per packet of each side (medians), the ratio
//! unprotected/protected per round (its median: the throughput of the
//! protected side relative to the other), and the time added per client
//! segment (median of (protected - unprotected) / client segments): the
//! latency logging and output commit add to a segment on a busy-polling
//! core. Log bound exceeded must stay 0.

#[path = "../benches/common/mod.rs"]
mod common;

use dataplane::checkpoint::{RingSink, WorkerSink};
use dataplane::dpdk::{KernelHugepageAlloc, ReservedLogs};
use lazarus_core::config::{ConntrackSection, ProtectedService, Truncation};
use lazarus_core::firewall::{Firewall, FrameBurst, StagedBurst};
use lazarus_core::frames::tcp;
use lazarus_core::stats::FwCounters;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Fw = Firewall<WorkerSink, KernelHugepageAlloc>;

const MSS: usize = 1448;
/// Flows a run may have (one burst).
const FLOWS_MAX: usize = 32;
/// What `LOG_MEMORY=warm` touches of each log's slot beforehand: more than
/// a log grows to in the default run.
const WARM_BYTES: usize = 16 << 20;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads a counter; it touches no memory.
    unsafe { std::arch::x86_64::_rdtsc() }
}

fn rr() -> bool {
    std::env::var("WORKLOAD").is_ok_and(|w| w == "rr")
}

/// `WORKLOAD=download`: the server sends the full-sized segments, the client
/// acknowledges them; nothing to log, the digest follows every byte.
fn download() -> bool {
    std::env::var("WORKLOAD").is_ok_and(|w| w == "download")
}

fn firewall(rings: &'static shm_layout::RingsSegment, worker: u32, protect: bool) -> Fw {
    let ct = ConntrackSection { capacity: 4096, ..Default::default() };
    let hz = shm_layout::tsc_hz();
    // SINK=off: no checkpointing on either side (what the ring writes cost).
    let sink = if std::env::var("SINK").is_ok_and(|v| v == "off") {
        WorkerSink::Off(lazarus_core::checkpoint::NoCheckpoint)
    } else {
        WorkerSink::Ring(RingSink::new(rings.producer(worker).unwrap(), rings))
    };
    let mut fw = Firewall::new(
        &ct,
        Arc::new(Default::default()),
        vec![0, 0],
        hz,
        KernelHugepageAlloc,
        sink,
        FwCounters::leaked(),
    );
    if protect {
        let svc = ProtectedService {
            addr: common::SERVER.into(),
            port: 80,
            log_bound: 1 << 30,
            connections: 4096,
            truncation: if rr() { Truncation::RequestResponse } else { Truncation::None },
            // Its exchanges follow each other with no pause: each answer is
            // one segment.
            truncate_idle_ms: 0,
            ..Default::default()
        };
        fw.protect(std::slice::from_ref(&svc), vec![1, 0], hz);
        // LOG_MEMORY=heap: the logs on the heap, as before they had their
        // own; LOG_MEMORY=warm: their slots touched first, as connections
        // before them would have left them (a firewall that has run a
        // while); else fresh, every logged byte on a page the kernel must
        // first clear.
        let memory = std::env::var("LOG_MEMORY").unwrap_or_default();
        if memory != "heap" {
            let logs = ReservedLogs::reserve(svc.log_bound as usize, svc.connections as usize)
                .expect("reserving the logs' address space");
            if memory == "warm" {
                let warm: Vec<_> = (0..FLOWS_MAX)
                    .map(|_| allocator_api2::vec![in logs; 1u8; WARM_BYTES])
                    .collect();
                drop(warm);
            }
            fw.set_log_memory(0, lazarus_core::protect::LogMemory(logs));
        }
    }
    fw
}

/// Runs `frames` as one burst from config port `port`; returns how many
/// were forwarded as they were.
fn burst(fw: &mut Fw, staged: &mut StagedBurst, frames: &[&[u8]], port: usize) -> usize {
    let mut b = FrameBurst::new(frames);
    let now = rdtsc();
    fw.process_burst(staged, &mut b, port, now);
    fw.outbox().drain(|_, _| {});
    fw.housekeeping(now);
    b.forwarded
}

/// Bursts of one pass: (port, frames), client segments then their ACKs.
type Pass = Vec<(usize, Vec<Vec<u8>>)>;

fn passes(flows: u32, steps: u32, count: u32) -> Vec<Pass> {
    let (size, answer) = if rr() {
        (64, 64)
    } else if download() {
        (0, MSS)
    } else {
        (MSS, 0)
    };
    let request = vec![b'x'; size];
    let response = vec![b'y'; answer];
    let (cs, ss) = (1000u32, 5000u32);
    let burst = |f: &dyn Fn(([u8; 4], u16)) -> Vec<u8>| -> Vec<Vec<u8>> {
        (0..flows).map(|i| f(common::client(i))).collect()
    };
    (0..count)
        .map(|p| {
            let mut pass = Vec::new();
            for s in 0..steps {
                let n = p * steps + s;
                let at = cs + 1 + n * size as u32;
                let sa = ss + 1 + n * answer as u32;
                let (next, snext) = (at + size as u32, sa + answer as u32);
                let srv = common::SERVER;
                if size > 0 {
                    pass.push((
                        0,
                        burst(&|(c, o)| tcp(c, srv, (o, 80), ACK | PSH, (at, sa), &request)),
                    ));
                }
                pass.push((
                    1,
                    burst(&|(c, o)| tcp(srv, c, (80, o), ACK | PSH, (sa, next), &response)),
                ));
                if answer > 0 {
                    pass.push((0, burst(&|(c, o)| tcp(c, srv, (o, 80), ACK, (next, snext), &[]))));
                }
            }
            pass
        })
        .collect()
}

fn open(fw: &mut Fw, staged: &mut StagedBurst, flows: u32) {
    let (cs, ss) = (1000u32, 5000u32);
    for i in 0..flows {
        let (c, p) = common::client(i);
        let syn = tcp(c, common::SERVER, (p, 80), 0x02, (cs, 0), &[]);
        let syn_ack = tcp(common::SERVER, c, (80, p), 0x12, (ss, cs + 1), &[]);
        let ack = tcp(c, common::SERVER, (p, 80), ACK, (cs + 1, ss + 1), &[]);
        assert_eq!(burst(fw, staged, &[&syn], 0), 1);
        assert_eq!(burst(fw, staged, &[&syn_ack], 1), 1);
        assert_eq!(burst(fw, staged, &[&ack], 0), 1);
    }
}

/// One pass; its TSC ticks. Every frame must be forwarded as it is.
fn run(fw: &mut Fw, staged: &mut StagedBurst, pass: &Pass) -> u64 {
    let t = rdtsc();
    let mut fwd = 0;
    let mut n = 0;
    let mut refs: [&[u8]; 32] = [&[]; 32];
    for (port, frames) in pass {
        for (r, f) in refs.iter_mut().zip(frames) {
            *r = f;
        }
        fwd += burst(fw, staged, &refs[..frames.len()], *port);
        n += frames.len();
    }
    let ticks = rdtsc() - t;
    assert_eq!(fwd, n, "a frame of the bulk transfer was not forwarded");
    ticks
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |d: u32| {
        args.next()
            .map_or(d, |a| a.parse().expect("usage: protect_paired [ROUNDS] [FLOWS] [STEPS]"))
    };
    let (rounds, flows, steps) = (arg(21), arg(16), arg(64));
    assert!(flows as usize <= FLOWS_MAX, "FLOWS: at most 32, a burst");
    let rings = common::scratch_rings_for(2, 1 << 16);
    let stop = Arc::new(AtomicBool::new(false));
    let drainers: Vec<_> =
        (0..2).map(|w| common::spawn_drainer_of(rings, w, stop.clone(), 50)).collect();
    let mut staged = StagedBurst::new();
    let mut off = firewall(rings, 0, false);
    let mut on = firewall(rings, 1, true);
    open(&mut off, &mut staged, flows);
    open(&mut on, &mut staged, flows);
    let all = passes(flows, steps, rounds + 1);
    // Warm-up: pages, caches, branch predictors.
    run(&mut off, &mut staged, &all[0]);
    run(&mut on, &mut staged, &all[0]);
    let packets = all[0].iter().map(|(_, f)| f.len()).sum::<usize>() as f64;
    let segments = (flows * steps) as f64;
    let hz = shm_layout::tsc_hz() as f64;
    let (mut offs, mut ons, mut ratios, mut added) = (vec![], vec![], vec![], vec![]);
    // PERF_CTL: a `perf record -D -1 --control fifo:PATH` profiles the rounds
    // alone, not the frames built before them.
    let perf = |cmd: &str| {
        if let Ok(path) = std::env::var("PERF_CTL") {
            std::fs::write(path, cmd).expect("PERF_CTL: perf's control fifo");
        }
    };
    perf("enable\n");
    for (r, pass) in all[1..].iter().enumerate() {
        let (a, b) = if r % 2 == 0 {
            let a = run(&mut off, &mut staged, pass);
            (a, run(&mut on, &mut staged, pass))
        } else {
            let b = run(&mut on, &mut staged, pass);
            (run(&mut off, &mut staged, pass), b)
        };
        offs.push(a as f64 / packets);
        ons.push(b as f64 / packets);
        ratios.push(a as f64 / b as f64);
        added.push((b as f64 - a as f64) / segments / hz * 1e9);
    }
    perf("disable\n");
    stop.store(true, Ordering::Relaxed);
    for d in drainers {
        d.join().unwrap();
    }
    let p = &on.counters.protect;
    assert_eq!(p.log_bound.get(), 0, "the log bound was exceeded");
    println!(
        "{flows} flows, {steps} steps a pass ({packets} packets, {segments} client segments with data: {}), {rounds} rounds; TSC {:.2} GHz",
        if rr() {
            "64-byte requests, 64-byte answers, ACKs"
        } else if download() {
            "the server's, 1448 bytes each, and the client's ACKs"
        } else {
            "1448 bytes each, and their ACKs"
        },
        hz / 1e9
    );
    println!(
        "protected side: {} connections, log bound exceeded {}, ring full drops {}, log gaps {}, truncated {}, log memory {} bytes",
        p.connections.get(),
        p.log_bound.get(),
        p.log_ring_full.get(),
        p.log_gap.get(),
        p.truncated.get(),
        p.log_memory.get()
    );
    let (q1, q3) = (rounds as usize / 4, rounds as usize * 3 / 4);
    let m = median(&mut ratios);
    println!(
        "ticks/packet: unprotected {:.0}, protected {:.0} (medians); unprotected/protected median {m:.3} (quartiles {:.3}..{:.3})",
        median(&mut offs),
        median(&mut ons),
        ratios[q1],
        ratios[q3]
    );
    let a = median(&mut added);
    println!(
        "added per client segment: median {a:.0} ns (quartiles {:.0}..{:.0})",
        added[q1], added[q3]
    );
}
