//! The ring protocol under loom: the real producer and consumer on a small
//! ring in ordinary memory, two loom threads, every interleaving up to
//! LOOM_MAX_PREEMPTIONS. Run by scripts/loom.sh
//! (`RUSTFLAGS="--cfg loom"`); a normal build compiles nothing here.
#![cfg(loom)]

mod common;

use common::Buf;
use loom::sync::Arc;
use loom::thread;
use shm_layout::{delta_kind, module, RingsGeometry, RingsSegment};

/// The smallest ring the geometry allows.
const SLOTS: u32 = 64;

/// A rings segment over ordinary heap memory (the segment before the buffer,
/// so it is dropped first).
struct Ring {
    seg: RingsSegment,
    _buf: Buf,
}

// SAFETY: the buffer is only reached through the segment, which is Send and
// Sync (its handles enforce one producer and one consumer per ring).
unsafe impl Send for Ring {}
// SAFETY: as for Send.
unsafe impl Sync for Ring {}

fn ring() -> Arc<Ring> {
    let geom = RingsGeometry { workers: 1, slots_per_ring: SLOTS };
    let buf = Buf::new(geom.segment_bytes() as usize);
    // SAFETY: buf is page-aligned, zeroed, ours alone, and lives in the same
    // Ring as the segment, dropped after it.
    let seg = unsafe { RingsSegment::format(buf.ptr(), buf.len(), geom) }.unwrap();
    Arc::new(Ring { seg, _buf: buf })
}

/// The payload of record `n` (lengths vary, so partial words are covered).
fn payload(n: u64) -> Vec<u8> {
    (0..(5 + n as usize * 7) % 60)
        .map(|i| (n as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// What the consumer saw: (seq, conn_id, payload) of each applied record.
type Seen = Vec<(u64, u64, Vec<u8>)>;

fn drain(cons: &mut shm_layout::DeltaConsumer<'_>, seen: &mut Seen) -> u32 {
    let r = cons.drain(8, |d| seen.push((d.seq, d.conn_id, d.payload.to_vec())));
    r.torn
}

/// Every applied record is whole and where it was pushed: conn_id `n` at
/// seq `first + n`, its own payload, in order.
fn check_in_order(seen: &[(u64, u64, Vec<u8>)], first: u64) {
    for (i, (seq, conn_id, p)) in seen.iter().enumerate() {
        assert_eq!(*seq, first + i as u64, "records out of order: {seen:?}");
        assert_eq!(*conn_id, i as u64, "record {seq} is not the one pushed there");
        assert_eq!(p, &payload(*conn_id), "record {seq} applied with other bytes");
    }
}

/// The consumer's thread: two drains with a yield after each; what it saw
/// and how many torn.
fn drain_twice(r: Arc<Ring>) -> thread::JoinHandle<(Seen, u32)> {
    thread::spawn(move || {
        let mut cons = r.seg.consumer(0).unwrap();
        let mut seen = Seen::new();
        let mut torn = 0;
        for _ in 0..2 {
            torn += drain(&mut cons, &mut seen);
            thread::yield_now();
        }
        (seen, torn)
    })
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Ordering: the consumer never sees a record before its bytes (P1/C1), and
/// the producer never overwrites a slot the consumer still reads (C2/P2);
/// loom's cell on each slot reports either as a race.
#[test]
fn consumer_sees_only_whole_published_records() {
    model(|| {
        let r = ring();
        let consumer = drain_twice(r.clone());
        let mut p = r.seg.producer(0).unwrap();
        for n in 0..2 {
            p.try_push(n, module::TCP, delta_kind::PORTION, n, &payload(n)).unwrap();
        }
        p.publish();
        let words = [2u64, 0x0102_0304_0506_0708, 3];
        p.try_push_words(2, module::TCP, delta_kind::PORTION, 2, &words, 21).unwrap();
        p.publish();
        drop(p);
        let (mut seen, torn) = consumer.join().unwrap();
        assert_eq!(torn, 0);
        let mut cons = r.seg.consumer(0).unwrap();
        drain(&mut cons, &mut seen);
        assert_eq!(seen.len(), 3);
        check_in_order(&seen[..2], 0);
        let mut w = Vec::new();
        for x in words {
            w.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(seen[2], (2, 2, w[..21].to_vec()));
    });
}

/// A producer killed mid-write (here: it stops after filling half a slot and
/// never publishes) leaves nothing the consumer applies; its successor
/// resumes at the published head and overwrites the slot. A record published
/// torn (checksum over bytes never written) is skipped and counted.
#[test]
fn torn_records_are_skipped_never_applied() {
    model(|| {
        let r = ring();
        let consumer = drain_twice(r.clone());
        {
            // The process that dies: record 0 published, record 1 half
            // written and never published.
            let mut p = r.seg.producer(0).unwrap();
            p.try_push(0, module::TCP, delta_kind::PORTION, 0, &payload(0)).unwrap();
            p.publish();
            let half = payload(1);
            p.try_push_with(1, module::TCP, delta_kind::PORTION, 1, |buf| {
                buf[..half.len() / 2].copy_from_slice(&half[..half.len() / 2]);
                half.len()
            })
            .unwrap();
        }
        // Its successor: a published torn record, then record 1 whole.
        let mut p = r.seg.producer(0).unwrap();
        assert_eq!(p.position(), 1);
        let t = payload(9);
        p.test_push_torn(9, module::TCP, delta_kind::PORTION, 9, &t, t.len() / 2).unwrap();
        p.try_push(1, module::TCP, delta_kind::PORTION, 1, &payload(1)).unwrap();
        p.publish();
        drop(p);
        let (mut seen, mut torn) = consumer.join().unwrap();
        let mut cons = r.seg.consumer(0).unwrap();
        torn += drain(&mut cons, &mut seen);
        assert_eq!(torn, 1, "the torn record is counted once: {seen:?}");
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], (0, 0, payload(0)));
        assert_eq!(seen[1], (2, 1, payload(1)));
    });
}

/// A ring on its second lap: the consumer applies only this lap's records,
/// never one left from the first (seq check), and a head pushed past what
/// was written shows the old lap's slots as torn.
#[test]
fn stale_lap_records_are_never_applied() {
    model(|| {
        let r = ring();
        {
            // Lap 0, outside the threads: conn_ids from 1000.
            let mut p = r.seg.producer(0).unwrap();
            let mut cons = r.seg.consumer(0).unwrap();
            for n in 0..u64::from(SLOTS) {
                p.try_push(1000 + n, module::TCP, delta_kind::PORTION, n, &payload(n)).unwrap();
            }
            p.publish();
            let mut seen = Seen::new();
            while cons.drain(u32::MAX, |d| seen.push((d.seq, d.conn_id, Vec::new()))).applied > 0 {}
            assert_eq!(seen.len(), SLOTS as usize);
        }
        let lap = u64::from(SLOTS);
        let consumer = drain_twice(r.clone());
        let mut p = r.seg.producer(0).unwrap();
        for n in 0..2 {
            p.try_push(n, module::TCP, delta_kind::PORTION, n, &payload(n)).unwrap();
            p.publish();
        }
        drop(p);
        let (mut seen, torn) = consumer.join().unwrap();
        assert_eq!(torn, 0);
        let mut cons = r.seg.consumer(0).unwrap();
        drain(&mut cons, &mut seen);
        assert_eq!(seen.len(), 2);
        check_in_order(&seen, lap);
        // A head two past what was written: slots lap+2, lap+3 hold lap 0.
        r.seg.test_force_head(0, lap + 4);
        let report = cons.drain(8, |d| panic!("stale record applied: {d:?}"));
        assert_eq!((report.applied, report.torn), (0, 2));
    });
}

/// Layout 8: a record spanning several slots, written after a pad because
/// it would have wrapped, is seen whole or not at all, and the producer's
/// writes of every slot it spans happen before the consumer reads them.
#[test]
fn a_padded_multi_slot_record_is_seen_whole() {
    model(|| {
        let r = ring();
        {
            // Outside the threads: both ends four slots before the lap's end.
            let mut p = r.seg.producer(0).unwrap();
            let mut cons = r.seg.consumer(0).unwrap();
            for n in 0..u64::from(SLOTS) - 4 {
                p.try_push(n, module::TCP, delta_kind::PORTION, n, &[]).unwrap();
            }
            p.publish();
            while cons.drain(u32::MAX, |_| {}).applied > 0 {}
        }
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let want = long.clone();
        let consumer = drain_twice(r.clone());
        let mut p = r.seg.producer(0).unwrap();
        p.try_push_record(7, module::PROTECT, delta_kind::LOG, 0, &long).unwrap();
        p.publish();
        p.try_push(8, module::TCP, delta_kind::PORTION, 1, &payload(1)).unwrap();
        p.publish();
        drop(p);
        let (mut seen, torn) = consumer.join().unwrap();
        assert_eq!(torn, 0);
        let mut cons = r.seg.consumer(0).unwrap();
        drain(&mut cons, &mut seen);
        let lap = u64::from(SLOTS);
        assert_eq!(seen, vec![(lap, 7, want), (lap + 5, 8, payload(1))]);
    });
}
