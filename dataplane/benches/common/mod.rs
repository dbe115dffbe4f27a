#![allow(dead_code)] // each bench uses part of it
//! Established-flow fixtures shared by the criterion benches and the
//! callgrind harness (`examples/profile_pipeline.rs`).

use dataplane::config::ConntrackSection;
use dataplane::dpdk::KernelHugepageAlloc;
use lazarus_core::checkpoint::{CheckpointSink, NoCheckpoint};
use lazarus_core::firewall::{Firewall, Verdict};
use lazarus_core::portion::Portion;
use lazarus_core::stats::FwCounters;
use std::sync::Arc;

pub type Fw = Firewall<NoCheckpoint, KernelHugepageAlloc>;

/// A firewall of `capacity` connections on kernel hugepages, writing to
/// `sink`, with the default policy and timeouts.
pub fn firewall<S: CheckpointSink>(sink: S, capacity: u32) -> Firewall<S, KernelHugepageAlloc> {
    let ct = ConntrackSection { capacity, ..Default::default() };
    Firewall::new(
        &ct,
        Arc::new(Default::default()),
        vec![0, 0],
        2_450_000_000,
        KernelHugepageAlloc,
        sink,
        FwCounters::leaked(),
    )
}

/// A 60-byte (64 with FCS) Ethernet/IPv4/TCP frame with no payload.
pub fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    flags: u8,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    lazarus_core::frames::tcp(src, dst, ports, flags, (seq, ack), &[])
}

pub const SERVER: [u8; 4] = [10, 99, 0, 2];

pub fn client(i: u32) -> ([u8; 4], u16) {
    let a = (i / 50_000).to_be_bytes();
    ([10, 100 + a[2], a[3], 1 + (i % 250) as u8], 1024 + (i % 50_000) as u16)
}

/// A firewall holding `n` established flows, and a shuffled list of frames
/// (one per flow, alternating directions) of established traffic.
pub fn established(n: u32) -> (Fw, Vec<Vec<u8>>) {
    let mut fw = firewall(NoCheckpoint, n + n / 8 + 1024);
    let mut frames = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (c, p) = client(i);
        let (cs, ss) = (1000u32, 5000u32);
        assert_eq!(fw.process(&tcp_frame(c, SERVER, (p, 80), 0x02, cs, 0), 0, 1), Verdict::Forward);
        assert_eq!(
            fw.process(&tcp_frame(SERVER, c, (80, p), 0x12, ss, cs + 1), 1, 1),
            Verdict::Forward
        );
        assert_eq!(
            fw.process(&tcp_frame(c, SERVER, (p, 80), 0x10, cs + 1, ss + 1), 0, 1),
            Verdict::Forward
        );
        frames.push(if i % 2 == 0 {
            tcp_frame(c, SERVER, (p, 80), 0x10, cs + 1, ss + 1)
        } else {
            tcp_frame(SERVER, c, (80, p), 0x10, ss + 1, cs + 1)
        });
    }
    // Visit flows in a random order, as traffic would: no cache-friendly stride.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..frames.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        frames.swap(i, (x % (i as u64 + 1)) as usize);
    }
    (fw, frames)
}

/// A checkpointd store segment (on hugetlbfs if it can be, else the temp
/// dir; already unlinked) holding `n` established TCP connections of worker
/// 0, as checkpointd would have them.
pub fn store_of(n: u32) -> shm_layout::StoreSegment {
    store_for(n, 1)
}

/// As [`store_of`], the connections dealt round-robin to `workers` workers.
pub fn store_for(n: u32, workers: u16) -> shm_layout::StoreSegment {
    use lazarus_core::conn::{ConnKey, Endpoint};
    use lazarus_core::modules::ip::IpPortion;
    use lazarus_core::modules::tcp::{self, TcpPortion};
    use lazarus_core::modules::Module;
    use lazarus_core::parse::{v4_mapped, Family, TcpHdr, TcpOpts};
    use shm_layout::{StoreGeometry, StoreSegment};
    // On hugetlbfs when the machine has it (and the hugepages), as
    // checkpointd keeps it; else in the temp dir.
    let name = format!("lazarus-bench-store-{}", std::process::id());
    let geom = StoreGeometry { conn_capacity: n, ftp_capacity: 16 };
    let (mut store, path) = [std::path::PathBuf::from("/dev/hugepages"), std::env::temp_dir()]
        .into_iter()
        .map(|d| d.join(&name))
        .find_map(|p| match StoreSegment::create_file(&p, geom) {
            Ok(s) => Some((s, p)),
            Err(_) => {
                let _ = std::fs::remove_file(&p);
                None
            }
        })
        .expect("cannot create a bench store in /dev/hugepages or the temp dir");
    let _ = std::fs::remove_file(&path);
    // One established TCP portion (the same for every flow) and each flow's ip portion.
    let h = |flags, seq, ack| TcpHdr {
        sport: 1,
        dport: 80,
        seq,
        ack,
        flags,
        window: 64000,
        opts: TcpOpts::default(),
    };
    let mut t: TcpPortion = tcp::new_conn(&h(0x02, 1000, 0), 0).unwrap();
    tcp::track(&mut t, lazarus_core::conn::Dir::Reply, &h(0x12, 5000, 1001), 0).unwrap();
    tcp::track(&mut t, lazarus_core::conn::Dir::Original, &h(0x10, 1001, 5001), 0).unwrap();
    let mut tb = [0u8; TcpPortion::MAX_LEN];
    let tn = t.encode(&mut tb).unwrap();
    let mut ib = [0u8; shm_layout::IP_PORTION_MAX];
    for i in 0..n {
        let (ca, cp) = client(i);
        let (key, lo) = ConnKey::canonical(
            Family::V4,
            6,
            Endpoint { addr: v4_mapped(ca), port: cp },
            Endpoint { addr: v4_mapped(SERVER), port: 80 },
            0,
            0,
        );
        let n = IpPortion::new(lo, 0, 1).encode(&key, &mut ib).unwrap();
        let id = key.id().0;
        store.init_record(i, id, (i % workers as u32) as u16);
        store.put_portion(i, Module::Ip as u8, 1, &ib[..n]).unwrap();
        store.put_portion(i, Module::Tcp as u8, 1, &tb[..tn]).unwrap();
    }
    store
}

pub const FLOWS: u32 = 10_000;
/// Packets of established traffic in each connection's life.
pub const DATA: u32 = 40;

/// Every flow's life, interleaved step by step across flows so that many are
/// open at once: SYN, SYN-ACK, ACK, DATA packets both ways, FIN, ACK, FIN,
/// ACK. Replayed again, each SYN reopens its flow from TIME_WAIT.
pub fn churn_frames() -> Vec<Vec<u8>> {
    churn_frames_with(DATA)
}

/// As `churn_frames`, with `data` packets of established traffic per life.
pub fn churn_frames_with(data: u32) -> Vec<Vec<u8>> {
    let mut lives: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in 0..FLOWS {
        let (c, p) = client(i);
        let (cs, ss) = (1000u32, 5000u32);
        let mut l = vec![
            tcp_frame(c, SERVER, (p, 80), 0x02, cs, 0),
            tcp_frame(SERVER, c, (80, p), 0x12, ss, cs + 1),
            tcp_frame(c, SERVER, (p, 80), 0x10, cs + 1, ss + 1),
        ];
        for k in 0..data {
            l.push(if k % 2 == 0 {
                tcp_frame(c, SERVER, (p, 80), 0x10, cs + 1, ss + 1)
            } else {
                tcp_frame(SERVER, c, (80, p), 0x10, ss + 1, cs + 1)
            });
        }
        l.push(tcp_frame(c, SERVER, (p, 80), 0x11, cs + 1, ss + 1));
        l.push(tcp_frame(SERVER, c, (80, p), 0x10, ss + 1, cs + 2));
        l.push(tcp_frame(SERVER, c, (80, p), 0x11, ss + 1, cs + 2));
        l.push(tcp_frame(c, SERVER, (p, 80), 0x10, cs + 2, ss + 2));
        lives.push(l);
    }
    let steps = lives[0].len();
    (0..steps).flat_map(|s| lives.iter().map(move |l| l[s].clone())).collect()
}

/// A one-ring segment of `slots` slots in a file that is unlinked at once
/// (the mapping lives for the process), as a worker's ring to checkpointd.
/// On hugetlbfs when the machine has it, else /dev/shm, as checkpointd puts
/// it; the temp dir last. Not the temp dir first: on a disk filesystem the
/// kernel writes the ring's dirty pages back and write-protects them, and
/// the producer's next store to each takes a fault; the overhead figure
/// measured that, not the ring.
pub fn scratch_rings(slots: u32) -> &'static shm_layout::RingsSegment {
    scratch_rings_for(1, slots)
}

/// As [`scratch_rings`], with a ring for each of `workers` workers.
pub fn scratch_rings_for(workers: u32, slots: u32) -> &'static shm_layout::RingsSegment {
    use shm_layout::{RingsGeometry, RingsSegment};
    let name = format!("lazarus-bench-rings-{}", std::process::id());
    let geom = RingsGeometry { workers, slots_per_ring: slots };
    let (rings, path) = [
        std::path::PathBuf::from("/dev/hugepages"),
        std::path::PathBuf::from("/dev/shm"),
        std::env::temp_dir(),
    ]
    .into_iter()
    .map(|d| d.join(&name))
    .find_map(|p| RingsSegment::create_file(&p, geom).ok().map(|r| (r, p)))
    .expect("a rings segment in /dev/hugepages, /dev/shm or the temp dir");
    let _ = std::fs::remove_file(&path);
    eprintln!(
        "ring segment in {}",
        path.parent().map_or_else(String::new, |d| d.display().to_string())
    );
    Box::leak(Box::new(rings))
}

/// Deltas a firewall handed its sink: portions of every module and deletes.
pub fn deltas_written(c: &FwCounters) -> u64 {
    c.ckpt.iter().map(|m| m.get()).sum::<u64>() + c.ckpt_deletes.get()
}

/// A thread that drains worker 0's ring as checkpointd does: while there is
/// something to drain, and sleeping `idle_sleep_us` (0: spinning) when it is
/// empty. Returns the deltas drained when `stop` is set.
pub fn spawn_drainer(
    rings: &'static shm_layout::RingsSegment,
    stop: Arc<std::sync::atomic::AtomicBool>,
    idle_sleep_us: u64,
) -> std::thread::JoinHandle<u64> {
    spawn_drainer_of(rings, 0, stop, idle_sleep_us)
}

/// As [`spawn_drainer`], of worker `worker`'s ring.
pub fn spawn_drainer_of(
    rings: &'static shm_layout::RingsSegment,
    worker: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
    idle_sleep_us: u64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut cons = rings.consumer(worker).unwrap();
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let r = cons.drain(1024, |d| {
                std::hint::black_box(d.payload);
            });
            n += r.applied as u64;
            if r.applied == 0 {
                if idle_sleep_us == 0 {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(idle_sleep_us));
                }
            }
        }
        n
    })
}

/// One burst as the worker runs it: every packet staged (parsed, keyed),
/// their connections looked up, then each tracked. Returns the packets forwarded.
#[inline(always)]
pub fn staged_burst<S: lazarus_core::checkpoint::CheckpointSink>(
    fw: &mut Firewall<S, KernelHugepageAlloc>,
    burst: &[&[u8]],
    port: usize,
    now: u64,
) -> usize {
    STAGED.with_borrow_mut(|sb| {
        for (i, f) in burst.iter().enumerate() {
            fw.stage(sb, i, f, lazarus_core::parse::checksum::RxChecksums::UNKNOWN, port);
        }
        fw.lookup_staged(sb, burst.len());
        let mut fwd = 0;
        for (i, f) in burst.iter().enumerate() {
            fwd += (fw.process_staged(sb, i, f, port, now) == Verdict::Forward) as usize;
        }
        fwd
    })
}

thread_local! {
    /// The benches' one staged burst, as a worker has one.
    static STAGED: std::cell::RefCell<lazarus_core::firewall::StagedBurst> = std::cell::RefCell::new(lazarus_core::firewall::StagedBurst::new());
}

/// The same burst with each packet through `Firewall::process` alone, the
/// path the worker ran before bursts were staged. Returns the packets
/// forwarded.
#[inline(always)]
pub fn per_packet_burst<'f, S: lazarus_core::checkpoint::CheckpointSink>(
    fw: &mut Firewall<S, KernelHugepageAlloc>,
    burst: impl IntoIterator<Item = &'f [u8]>,
    port: usize,
    now: u64,
) -> usize {
    burst.into_iter().map(|f| (fw.process(f, port, now) == Verdict::Forward) as usize).sum()
}

/// `MODE=per-packet` in the environment: `run_bursts` sends each frame
/// through `Firewall::process` alone instead of staging the burst, to
/// compare the two in one build.
pub fn per_packet() -> bool {
    static PER_PACKET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PER_PACKET.get_or_init(|| std::env::var("MODE").is_ok_and(|m| m == "per-packet"))
}

/// One pass over `frames` in bursts of 32 as a worker runs them: stage and
/// process (see `per_packet`), publish, housekeeping once per burst. Returns
/// the frames forwarded.
pub fn run_bursts<S: lazarus_core::checkpoint::CheckpointSink>(
    fw: &mut Firewall<S, KernelHugepageAlloc>,
    frames: &[Vec<u8>],
    now: &mut u64,
) -> usize {
    let mut fwd = 0;
    for burst in frames.chunks(32) {
        *now += 1000;
        if per_packet() {
            fwd += per_packet_burst(fw, burst.iter().map(Vec::as_slice), 0, *now);
        } else {
            let mut refs: [&[u8]; 32] = [&[]; 32];
            for (r, f) in refs.iter_mut().zip(burst) {
                *r = f;
            }
            fwd += staged_burst(fw, &refs[..burst.len()], 0, *now);
        }
        fw.sink_mut().publish();
        fw.housekeeping(*now);
    }
    fwd
}
