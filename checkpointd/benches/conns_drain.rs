//! The drain rate while `conns` dumps a large store, against the rate idle:
//! the real checkpointd, a producer thread keeping ring 0 busy, and a client
//! asking for every connection with payloads (what `lazarusctl conns` asks).
//!
//! `cargo bench -p checkpointd --bench conns_drain -- [CONNS]` (default
//! 1 000 000). Prints one line per phase and the ratio; the goal is ≥ 0.5.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use shm_layout::{delta_kind, module};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let conns: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(1_000_000, |a| a.parse().expect("CONNS is a number"));
    let env = Env::new(
        "conns-bench",
        1,
        &format!("store_capacity = {}\nring_slots = 65536\n", conns + 1024),
    );
    let d = env.spawn();
    let rings = env.rings();
    let stop = Arc::new(AtomicBool::new(false));
    let filled = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, filled, seg) = (stop.clone(), filled.clone(), env.seg.clone());
        std::thread::spawn(move || {
            let rings = shm_layout::RingsSegment::open_file(&seg.join("rings")).unwrap();
            let mut p = rings.producer(0).unwrap();
            let ip = [7u8; 40];
            for c in 0..conns {
                push(&mut p, c, module::IP, delta_kind::PORTION, 1, &ip);
            }
            p.publish();
            filled.store(true, Ordering::Release);
            // Then window refreshes of the stored connections, for ever.
            let mut version = 2u64;
            let mut tcp = [0u8; 48];
            while !stop.load(Ordering::Relaxed) {
                for c in 0..conns {
                    tcp[..8].copy_from_slice(&version.to_le_bytes());
                    while p.try_push(c, module::TCP, delta_kind::PORTION, version, &tcp).is_err() {
                        p.publish();
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::hint::spin_loop();
                    }
                    if c % 32 == 31 {
                        p.publish();
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                version += 1;
            }
        })
    };
    while !filled.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = || d.request(json!({"cmd": "status"}));
    while st()["store"]["conns"].as_u64() != Some(conns) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let applied = || rings.status(0).applied;
    let rate = |window: Duration| {
        let (a0, t0) = (applied(), Instant::now());
        std::thread::sleep(window);
        (applied() - a0) as f64 / t0.elapsed().as_secs_f64()
    };
    let idle = rate(Duration::from_secs(2));
    println!("idle: {:.2} M deltas/s drained", idle / 1e6);

    let (a0, t0) = (applied(), Instant::now());
    let mut s = UnixStream::connect(&env.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(
        format!("{}\n", json!({"cmd": "conns", "limit": conns, "payloads": true})).as_bytes(),
    )
    .unwrap();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.last() == Some(&b'\n') {
                    break;
                }
            }
            Err(e) => panic!("conns reply: {e}"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let during = (applied() - a0) as f64 / secs;
    let text = String::from_utf8_lossy(&reply);
    let entries = text.matches("\"conn_id\"").count();
    println!(
        "conns: {entries} connection(s), {} MB in {secs:.2} s; drained meanwhile {:.2} M deltas/s",
        reply.len() >> 20,
        during / 1e6
    );
    if entries == 0 {
        println!("reply: {}", &text[..text.len().min(300)]);
    }
    let after = rate(Duration::from_secs(2));
    println!("after: {:.2} M deltas/s drained", after / 1e6);
    println!("during conns / idle: {:.2} (goal >= 0.5)", during / idle);
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    drop(d);
}
