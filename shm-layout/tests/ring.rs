//! Functional tests of the delta ring and the segment header.

mod common;

use common::Buf;
use proptest::prelude::*;
use shm_layout::*;
use std::collections::VecDeque;

fn rings(workers: u32, slots: u32) -> (Buf, RingsSegment) {
    let geom = RingsGeometry { workers, slots_per_ring: slots };
    let buf = Buf::new(geom.segment_bytes() as usize);
    // SAFETY: buf is page-aligned, zeroed, exclusively ours, and outlives the
    // segment (callers keep the pair together and drop the segment first).
    let seg = unsafe { RingsSegment::format(buf.ptr(), buf.len(), geom) }.unwrap();
    (buf, seg)
}

fn payload_for(seq: u64) -> Vec<u8> {
    let len = (seq % (DELTA_PAYLOAD_MAX as u64 + 1)) as usize;
    (0..len).map(|i| (seq as u8).wrapping_add(i as u8).wrapping_mul(31)).collect()
}

#[test]
fn push_publish_drain_round_trip() {
    let (_buf, seg) = rings(2, 64);
    let mut p = seg.producer(1).unwrap();
    let mut c = seg.consumer(1).unwrap();
    p.try_push(7, module::TCP, delta_kind::PORTION, 3, b"hello").unwrap();
    p.try_push(7, 0, delta_kind::DELETE, 4, &[]).unwrap();
    // Not published yet: the consumer sees nothing.
    assert_eq!(c.lag(), 0);
    assert_eq!(c.drain(100, |_| panic!("unpublished record applied")), DrainReport::default());
    p.publish();
    assert_eq!(c.lag(), 2);
    let mut got = Vec::new();
    let r = c.drain(100, |d| {
        got.push((d.seq, d.conn_id, d.module, d.kind, d.version, d.payload.to_vec()))
    });
    assert_eq!(r, DrainReport { applied: 2, torn: 0, resynced: false });
    assert_eq!(
        got,
        vec![
            (0, 7, module::TCP, delta_kind::PORTION, 3, b"hello".to_vec()),
            (1, 7, 0, delta_kind::DELETE, 4, vec![]),
        ]
    );
    let st = seg.status(1);
    assert_eq!((st.head, st.tail, st.torn, st.applied), (2, 2, 0, 2));
    assert_eq!(seg.status(0).head, 0);
}

#[test]
fn records_pushed_as_words_verify_between_and_around_others() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    let words = [0x0807_0605_0403_0201u64, 0x100f_0e0d_0c0b_0a09, 0x1817_1615_1413_1211];
    let bytes: Vec<u8> = (1..=24).collect();
    // Alone, after a record `publish` has yet to seal, and before one.
    p.try_push_words(1, module::TCP, delta_kind::PORTION, 1, &words, 19).unwrap();
    p.try_push(2, module::IP, delta_kind::PORTION, 2, b"ip").unwrap();
    p.try_push_words(3, module::TCP, delta_kind::PORTION, 3, &words, 24).unwrap();
    p.try_push(4, module::IP, delta_kind::PORTION, 4, b"after").unwrap();
    p.try_push_words(5, module::TCP, delta_kind::PORTION, 5, &words, 0).unwrap();
    assert_eq!(
        p.try_push_words(6, module::TCP, delta_kind::PORTION, 6, &words, 25),
        Err(PushError::TooLarge { len: 25 })
    );
    p.publish();
    let mut got = Vec::new();
    let r = c.drain(100, |d| got.push((d.conn_id, d.payload.to_vec())));
    assert_eq!(r, DrainReport { applied: 5, torn: 0, resynced: false });
    assert_eq!(
        got,
        vec![
            (1, bytes[..19].to_vec()),
            (2, b"ip".to_vec()),
            (3, bytes.clone()),
            (4, b"after".to_vec()),
            (5, vec![])
        ]
    );
}

#[test]
fn full_ring_is_detected_and_space_returns() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    for i in 0..64 {
        p.try_push(i, 1, delta_kind::PORTION, i, &[1; 48]).unwrap();
    }
    assert_eq!(p.try_push(99, 1, delta_kind::PORTION, 0, &[1; 48]), Err(PushError::Full));
    assert_eq!(p.free_slots(), 0);
    p.publish();
    assert_eq!(c.drain(10, |_| {}).applied, 10);
    assert_eq!(p.free_slots(), 10);
    for i in 0..10 {
        p.try_push(100 + i, 1, delta_kind::PORTION, 0, &[2; 48]).unwrap();
    }
    assert_eq!(p.try_push(99, 1, delta_kind::PORTION, 0, &[]), Err(PushError::Full));
}

#[test]
fn oversized_payload_is_a_typed_error() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    p.try_push(1, 4, delta_kind::PORTION, 1, &[0; DELTA_PAYLOAD_MAX]).unwrap();
    assert_eq!(
        p.try_push(1, 4, delta_kind::PORTION, 1, &[0; DELTA_PAYLOAD_MAX + 1]),
        Err(PushError::TooLarge { len: DELTA_PAYLOAD_MAX + 1 })
    );
    assert_eq!(p.position(), 1, "a refused record takes no slot");
}

#[test]
fn in_place_push_reads_back_like_a_copied_one() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    for seq in [5u64, 40, DELTA_PAYLOAD_MAX as u64] {
        let want = payload_for(seq);
        p.try_push_with(seq, module::TCP, delta_kind::PORTION, seq, |buf| {
            assert_eq!(buf.len(), DELTA_PAYLOAD_MAX, "the whole payload area is lent");
            buf[..want.len()].copy_from_slice(&want);
            want.len()
        })
        .unwrap();
    }
    // A length past the slot is refused and takes no slot.
    assert!(matches!(
        p.try_push_with(9, module::TCP, delta_kind::PORTION, 9, |_| DELTA_PAYLOAD_MAX + 1),
        Err(PushError::TooLarge { .. })
    ));
    p.publish();
    let mut got = Vec::new();
    let r = c.drain(100, |d| got.push((d.conn_id, d.payload.to_vec())));
    assert_eq!(r, DrainReport { applied: 3, torn: 0, resynced: false }, "every checksum verifies");
    assert_eq!(got, [5u64, 40, DELTA_PAYLOAD_MAX as u64].map(|s| (s, payload_for(s))));
}

#[test]
fn torn_record_is_skipped_and_the_next_applied() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    // Leave stale bytes in the slot the torn record will use (next lap).
    for i in 0..64 {
        p.try_push(i, 1, delta_kind::PORTION, 1, &[0xee; 64]).unwrap();
    }
    p.publish();
    assert_eq!(c.drain(64, |_| {}).applied, 64);
    // A producer killed halfway through a 64-byte payload ...
    p.test_push_torn(42, 1, delta_kind::PORTION, 9, &[0x11; 64], 32).unwrap();
    // ... and, after it, a complete record.
    p.try_push(43, 1, delta_kind::PORTION, 10, &[0x22; 64]).unwrap();
    // Advance head past both by hand (a real producer would never publish the
    // torn one: head is stored only by publish).
    p.publish();
    let mut applied = Vec::new();
    let r = c.drain(16, |d| applied.push((d.conn_id, d.version, d.payload.to_vec())));
    assert_eq!(r, DrainReport { applied: 1, torn: 1, resynced: false });
    assert_eq!(applied, vec![(43, 10, vec![0x22; 64])]);
    assert_eq!(seg.status(0).torn, 1);
    assert_eq!(c.lag(), 0);
}

#[test]
fn a_changed_header_field_or_payload_byte_fails_the_checksum() {
    // The checksum hashes only the payload and takes the header fields in its
    // seed: a flip in any of them (and in any payload byte) must still show.
    // Slot layout: seq 0..8, conn_id 8..16, version 16..24, module 24,
    // kind 25, len 26..28, checksum 28..32, payload from 32.
    let payload: Vec<u8> = (0..48u8).collect();
    let offsets: Vec<usize> = [8, 13, 16, 23, 24, 25, 26]
        .into_iter()
        .chain((32..32 + payload.len()).step_by(5))
        .collect();
    for at in offsets {
        let (buf, seg) = rings(1, 64);
        let mut p = seg.producer(0).unwrap();
        let mut c = seg.consumer(0).unwrap();
        p.try_push(0x1234_5678_9abc, module::TCP, delta_kind::PORTION, 77, &payload).unwrap();
        p.publish();
        let slot0 = HEADER_BYTES + RING_CTRL_BYTES;
        // SAFETY: the record is published and not drained; nobody else touches
        // the buffer; the offset is inside slot 0 of the only ring.
        unsafe { *buf.ptr().add(slot0 + at) ^= 0x04 };
        let r = c.drain(1, |d| panic!("record with byte {at} flipped applied: {d:?}"));
        assert_eq!(r, DrainReport { applied: 0, torn: 1, resynced: false }, "byte {at}");
    }
}

#[test]
fn stale_slot_from_previous_lap_is_skipped() {
    let (_buf, seg) = rings(1, 64);
    let mut c = seg.consumer(0).unwrap();
    {
        let mut p = seg.producer(0).unwrap();
        p.try_push(1, 1, delta_kind::PORTION, 1, b"lap0").unwrap();
        p.publish();
    }
    assert_eq!(c.drain(1, |_| {}).applied, 1);
    // A head one lap ahead: slot 1..64 are never-written (seq 0, checksum 0)
    // and slot 0 holds seq 0, not 64.
    seg.test_force_head(0, 65);
    let r = c.drain(1000, |_| panic!("stale record applied"));
    assert_eq!(r.torn, 64);
}

/// A head behind the tail (or more than a ring ahead) cannot come from a
/// correct producer: the consumer resynchronises at the head once, asks the
/// producer to re-send every connection, and drains normally from then on,
/// instead of counting a ring of torn records every pass.
#[test]
fn a_corrupt_control_block_is_resynchronised_once() {
    let (_buf, seg) = rings(1, 64);
    let mut c = seg.consumer(0).unwrap();
    {
        let mut p = seg.producer(0).unwrap();
        for i in 0..10 {
            p.try_push(i, 1, delta_kind::PORTION, i, b"x").unwrap();
        }
        p.publish();
    }
    assert_eq!(c.drain(100, |_| {}).applied, 10);
    let epoch = seg.status(0).resync_epoch;
    seg.test_force_head(0, 3);
    let first = c.drain(1000, |d| panic!("record applied from a corrupt ring: {d:?}"));
    assert_eq!((first.applied, first.torn, first.resynced), (0, 0, true));
    assert_eq!(seg.status(0).resync_epoch, epoch + 1, "the producer is asked to re-send");
    assert_eq!((seg.status(0).tail, c.position()), (3, 3));
    let again = c.drain(1000, |_| {});
    assert_eq!(again, DrainReport::default(), "reported once, not every pass");
    let mut p = seg.producer(0).unwrap();
    p.try_push(42, 1, delta_kind::PORTION, 1, b"after").unwrap();
    p.publish();
    let mut ids = Vec::new();
    assert_eq!(c.drain(100, |d| ids.push(d.conn_id)).applied, 1);
    assert_eq!(ids, [42]);
    // More than a ring ahead is as impossible.
    seg.test_force_head(0, 4 + 64 + 1);
    assert!(c.drain(1000, |_| panic!("applied")).resynced);
}

#[test]
fn producer_and_consumer_resume_where_published() {
    let (_buf, seg) = rings(1, 64);
    {
        let mut p = seg.producer(0).unwrap();
        for i in 0..5 {
            p.try_push(i, 1, delta_kind::PORTION, i, &[i as u8]).unwrap();
        }
        p.publish();
        // Pushed but never published: lost with the producer, as designed.
        p.try_push(99, 1, delta_kind::PORTION, 99, &[99]).unwrap();
    }
    {
        let mut c = seg.consumer(0).unwrap();
        assert_eq!(c.drain(2, |_| {}).applied, 2);
    }
    let mut p = seg.producer(0).unwrap();
    assert_eq!(p.position(), 5);
    p.try_push(5, 1, delta_kind::PORTION, 5, &[5]).unwrap();
    p.publish();
    let mut c = seg.consumer(0).unwrap();
    assert_eq!(c.position(), 2);
    let mut ids = Vec::new();
    c.drain(100, |d| ids.push(d.conn_id));
    assert_eq!(ids, vec![2, 3, 4, 5]);
}

#[test]
fn one_producer_and_one_consumer_per_ring() {
    let (_buf, seg) = rings(2, 64);
    let p = seg.producer(0).unwrap();
    assert!(matches!(seg.producer(0), Err(LayoutError::RingInUse { worker: 0, role: "producer" })));
    assert!(seg.producer(1).is_ok());
    drop(p);
    assert!(seg.producer(0).is_ok());
    let _c = seg.consumer(0).unwrap();
    assert!(matches!(seg.consumer(0), Err(LayoutError::RingInUse { .. })));
    assert!(matches!(seg.producer(2), Err(LayoutError::NoSuchRing { worker: 2, workers: 2 })));
}

#[test]
fn heartbeat_and_resync() {
    let (_buf, seg) = rings(2, 64);
    assert_eq!(seg.heartbeat(), Heartbeat::default());
    let now = monotonic_ns();
    seg.beat(1234, now);
    assert_eq!(seg.heartbeat(), Heartbeat { pid: 1234, monotonic_ns: now, incarnation: 0 });
    seg.set_incarnation(77);
    assert_eq!(seg.heartbeat().incarnation, 77);
    let p = seg.producer(1).unwrap();
    assert_eq!(p.resync_epoch(), 0);
    seg.request_resync(1);
    assert_eq!(p.resync_epoch(), 1);
    assert_eq!(seg.status(1).resync_epoch, 1);
    assert_eq!(seg.status(0).resync_epoch, 0);
}

#[test]
fn geometry_is_checked() {
    for (w, s) in [(0, 64), (1, 32), (1, 100), (2000, 64)] {
        let geom = RingsGeometry { workers: w, slots_per_ring: s };
        assert!(matches!(geom.validate(), Err(LayoutError::BadGeometry(_))), "{geom:?}");
    }
    let g = RingsGeometry { workers: 2, slots_per_ring: 64 };
    assert_eq!(g.segment_bytes(), 4096 + 2 * (512 + 64 * 256));
}

#[test]
fn version_mismatch_is_refused_with_advice() {
    let (buf, seg) = rings(1, 64);
    drop(seg);
    // SAFETY: byte 8..12 is the layout version; the buffer is ours.
    unsafe { buf.ptr().add(8).cast::<u32>().write(LAYOUT_VERSION + 1) };
    // SAFETY: as in rings().
    let err = unsafe { RingsSegment::attach(buf.ptr(), buf.len()) }.unwrap_err();
    assert!(
        matches!(err, LayoutError::VersionMismatch { found, expected } if found == LAYOUT_VERSION + 1 && expected == LAYOUT_VERSION)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("another Lazarus build") && msg.contains("remove the segment files"),
        "{msg}"
    );
}

#[test]
fn truncated_segment_is_refused() {
    let (buf, seg) = rings(2, 64);
    drop(seg);
    let short = buf.len() - 256;
    // SAFETY: a prefix of our buffer.
    let err = unsafe { RingsSegment::attach(buf.ptr(), short) }.unwrap_err();
    assert!(
        matches!(err, LayoutError::Truncated { len, needed } if len == short as u64 && needed == buf.len() as u64),
        "{err}"
    );
    // SAFETY: as above.
    let err = unsafe { RingsSegment::attach(buf.ptr(), 100) }.unwrap_err();
    assert!(matches!(err, LayoutError::Truncated { .. }));
}

#[test]
fn bad_magic_wrong_kind_and_scribbled_header() {
    let buf = Buf::new(8192);
    // SAFETY: zeroed buffer of ours.
    let err = unsafe { RingsSegment::attach(buf.ptr(), buf.len()) }.unwrap_err();
    assert!(matches!(err, LayoutError::BadMagic { .. }), "{err}");

    let geom = StoreGeometry { conn_capacity: 4, ftp_capacity: 1 };
    let sbuf = Buf::new(geom.segment_bytes() as usize);
    // SAFETY: ours, aligned, big enough.
    drop(unsafe { StoreSegment::format(sbuf.ptr(), sbuf.len(), geom) }.unwrap());
    // SAFETY: as above.
    let err = unsafe { RingsSegment::attach(sbuf.ptr(), sbuf.len()) }.unwrap_err();
    assert!(matches!(err, LayoutError::WrongKind { found: 2, expected: 1 }), "{err}");

    // SAFETY: byte 32 is geom_a (conn capacity); the buffer is ours.
    unsafe { sbuf.ptr().add(32).write(9) };
    // SAFETY: as above.
    let err = unsafe { StoreSegment::attach(sbuf.ptr(), sbuf.len()) }.unwrap_err();
    assert!(matches!(err, LayoutError::BadGeometry(ref m) if m.contains("checksum")), "{err}");
}

#[test]
fn file_backed_segment_survives_reopen() {
    let dir = common::temp_dir("rings");
    let path = dir.join("rings");
    let geom = RingsGeometry { workers: 2, slots_per_ring: 128 };
    {
        let seg = RingsSegment::create_file(&path, geom).unwrap();
        let mut p = seg.producer(1).unwrap();
        p.try_push(5, 0, delta_kind::PORTION, 1, b"kept").unwrap();
        p.publish();
    }
    let seg = RingsSegment::open_file(&path).unwrap();
    assert_eq!(seg.geometry(), geom);
    let mut c = seg.consumer(1).unwrap();
    let mut got = Vec::new();
    c.drain(10, |d| got.push(d.payload.to_vec()));
    assert_eq!(got, vec![b"kept".to_vec()]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    Publish,
    Drain(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Push),
        2 => Just(Op::Publish),
        2 => (0u32..80).prop_map(Op::Drain),
    ]
}

proptest! {
    /// The ring against a VecDeque: nothing lost, order kept, full detected
    /// exactly when 64 records are pushed and not yet drained.
    #[test]
    fn ring_matches_a_queue(ops in proptest::collection::vec(op(), 1..600)) {
        let (_buf, seg) = rings(1, 64);
        let mut p = seg.producer(0).unwrap();
        let mut c = seg.consumer(0).unwrap();
        let mut published: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Op::Push(len) => {
                    let len = len as usize % (DELTA_PAYLOAD_MAX + 1);
                    let payload: Vec<u8> = (0..len).map(|i| (next_id as u8) ^ (i as u8)).collect();
                    let in_ring = published.len() + pending.len();
                    match p.try_push(next_id, (next_id % 5) as u8, delta_kind::PORTION, next_id, &payload) {
                        Ok(()) => {
                            prop_assert!(in_ring < 64);
                            pending.push((next_id, payload));
                            next_id += 1;
                        }
                        Err(PushError::Full) => prop_assert_eq!(in_ring, 64),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Publish => {
                    p.publish();
                    published.extend(pending.drain(..));
                }
                Op::Drain(max) => {
                    let mut got = Vec::new();
                    let r = c.drain(max, |d| got.push((d.conn_id, d.payload.to_vec())));
                    prop_assert_eq!(r.torn, 0);
                    let want: Vec<_> = published.drain(..(max as usize).min(published.len())).collect();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(c.lag(), published.len() as u64);
        }
    }
}

#[test]
fn two_thread_stress() {
    const N: u64 = if cfg!(debug_assertions) { 300_000 } else { 2_000_000 };
    let (_buf, seg) = rings(1, 1024);
    // Set when the consumer stops, also by a failed assertion: the producer
    // then gives up instead of waiting for room forever (the scope would
    // hang rather than report the failure).
    let consumer_gone = std::sync::atomic::AtomicBool::new(false);
    struct Gone<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let seg = &seg;
        let consumer_gone = &consumer_gone;
        s.spawn(move || {
            let mut p = seg.producer(0).unwrap();
            let mut seq = 0;
            while seq < N {
                let payload = payload_for(seq);
                match p.try_push(seq, (seq % 5) as u8, delta_kind::PORTION, seq * 3, &payload) {
                    Ok(()) => {
                        seq += 1;
                        if seq % 32 == 0 {
                            p.publish();
                        }
                    }
                    Err(PushError::Full) => {
                        p.publish();
                        if consumer_gone.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            p.publish();
        });
        let _gone = Gone(consumer_gone);
        let mut c = seg.consumer(0).unwrap();
        let mut expect = 0u64;
        while expect < N {
            let r = c.drain(256, |d| {
                assert_eq!(d.seq, expect);
                assert_eq!(d.conn_id, expect);
                assert_eq!(d.version, expect * 3);
                assert_eq!(d.module, (expect % 5) as u8);
                assert_eq!(d.payload, &payload_for(expect)[..]);
                expect += 1;
            });
            assert_eq!(r.torn, 0);
            if r.applied == 0 {
                std::thread::yield_now();
            }
        }
    });
    assert_eq!(seg.status(0).applied, N);
}

/// What the model of a ring holds per record: its first slot, the slots it
/// spans, and what `apply` must see (None for a pad).
type Modelled = (u64, u64, Option<(u64, Vec<u8>)>);

proptest! {
    /// Records of every length up to `RECORD_PAYLOAD_MAX` against a model
    /// of the slots they take: each spans `record_slots` slots, one that
    /// would wrap is padded to the ring's end, nothing is lost or torn, and
    /// the ring is full exactly when the slots say so.
    #[test]
    fn multi_slot_records_match_a_model(ops in proptest::collection::vec(
        prop_oneof![
            6 => (0usize..=RECORD_PAYLOAD_MAX).prop_map(Some),
            2 => Just(None),
            2 => (0u32..80).prop_map(|m| Some(usize::MAX - m as usize)),
        ], 1..400))
    {
        let (_buf, seg) = rings(1, 64);
        let mut p = seg.producer(0).unwrap();
        let mut c = seg.consumer(0).unwrap();
        let (mut head, mut published_head, mut tail) = (0u64, 0u64, 0u64);
        let mut pending: Vec<Modelled> = Vec::new();
        let mut published: VecDeque<Modelled> = VecDeque::new();
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Some(len) if len <= RECORD_PAYLOAD_MAX => {
                    let payload: Vec<u8> = (0..len).map(|i| (next_id as u8) ^ (i as u8)).collect();
                    let span = record_slots(len);
                    let to_end = 64 - head % 64;
                    let pad = if span > to_end { to_end } else { 0 };
                    let fits = head + pad + span - tail <= 64;
                    match p.try_push_record(next_id, 5, delta_kind::LOG, next_id, &payload) {
                        Ok(()) => {
                            prop_assert!(fits);
                            if pad > 0 {
                                pending.push((head, pad, None));
                                head += pad;
                            }
                            pending.push((head, span, Some((next_id, payload))));
                            head += span;
                            next_id += 1;
                        }
                        Err(PushError::Full) => prop_assert!(!fits),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                    prop_assert_eq!(p.position(), head);
                }
                Some(m) => {
                    let max = (usize::MAX - m) as u64;
                    let mut got = Vec::new();
                    let r = c.drain(max as u32, |d| got.push((d.conn_id, d.payload.to_vec())));
                    prop_assert_eq!(r.torn, 0);
                    let mut want = Vec::new();
                    let start = tail;
                    while tail - start < max {
                        let Some((at, span, rec)) = published.pop_front() else { break };
                        prop_assert_eq!(at, tail);
                        tail = at + span;
                        want.extend(rec);
                    }
                    prop_assert_eq!(got, want);
                }
                None => {
                    p.publish();
                    published.extend(pending.drain(..));
                    published_head = head;
                }
            }
            prop_assert_eq!(c.lag(), published_head - tail);
        }
    }
}

#[test]
fn a_record_that_would_wrap_is_padded_to_the_ring_end() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    for i in 0..60 {
        p.try_push(i, 1, delta_kind::PORTION, 1, &[1; 8]).unwrap();
    }
    p.publish();
    assert_eq!(c.drain(64, |_| {}).applied, 60);
    // Six slots: four are left before the end, so it goes at the next lap.
    let bytes: Vec<u8> = (0..1448u32).map(|i| (i * 7) as u8).collect();
    p.try_push_record(99, module::PROTECT, delta_kind::LOG, 5, &bytes).unwrap();
    assert_eq!(p.position(), 64 + 6);
    p.publish();
    let mut got = Vec::new();
    let r = c.drain(64, |d| got.push((d.seq, d.conn_id, d.version, d.payload.to_vec())));
    assert_eq!(r, DrainReport { applied: 1, torn: 0, resynced: false });
    assert_eq!(got, vec![(64, 99, 5, bytes)]);
    assert_eq!(c.lag(), 0);
    // Too long for one record: a typed error, nothing written.
    let long = vec![0; RECORD_PAYLOAD_MAX + 1];
    assert_eq!(
        p.try_push_record(1, module::PROTECT, delta_kind::LOG, 0, &long),
        Err(PushError::TooLarge { len: RECORD_PAYLOAD_MAX + 1 })
    );
    assert_eq!(p.position(), 70);
}

#[test]
fn a_multi_slot_record_with_a_changed_byte_is_skipped_whole() {
    let (buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    // Its payload looks like a record header with the right position at the
    // start of its second slot: skipped with the record, never read as one.
    let mut bytes = vec![0u8; 1000];
    bytes[224..232].copy_from_slice(&1u64.to_le_bytes());
    p.try_push_record(7, module::PROTECT, delta_kind::LOG, 0, &bytes).unwrap();
    p.try_push(8, 1, delta_kind::PORTION, 2, b"after").unwrap();
    p.publish();
    // A byte of its last slot changed after it was sealed.
    let slot3 = HEADER_BYTES + RING_CTRL_BYTES + 3 * DELTA_SLOT_BYTES;
    // SAFETY: the record is published and not drained; nobody else touches
    // the buffer; the offset is inside slot 3 of the only ring.
    unsafe { *buf.ptr().add(slot3 + 100) ^= 0x04 };
    let mut got = Vec::new();
    let r = c.drain(64, |d| got.push((d.conn_id, d.payload.to_vec())));
    assert_eq!(r, DrainReport { applied: 1, torn: 1, resynced: false });
    assert_eq!(got, vec![(8, b"after".to_vec())]);
}

#[test]
fn log_slots_is_what_a_log_takes_wherever_it_falls() {
    for len in [0, 1, 192, 193, 224, 1448, RECORD_PAYLOAD_MAX, RECORD_PAYLOAD_MAX + 1, 9000] {
        for start in 0..64u64 {
            let (_buf, seg) = rings(1, 64);
            let mut p = seg.producer(0).unwrap();
            let mut c = seg.consumer(0).unwrap();
            for _ in 0..start {
                p.try_push(0, 1, delta_kind::PORTION, 1, &[]).unwrap();
            }
            p.publish();
            c.drain(64, |_| {});
            let before = p.position();
            for chunk in vec![0u8; len].chunks(RECORD_PAYLOAD_MAX) {
                p.try_push_record(1, module::PROTECT, delta_kind::LOG, 0, chunk).unwrap();
            }
            assert!(p.position() - before <= u64::from(log_slots(len)), "{len} bytes at {start}");
            assert!(log_bytes_within(log_slots(len)) >= len, "{len}");
        }
    }
}

fn slot_off(i: usize) -> usize {
    HEADER_BYTES + RING_CTRL_BYTES + i * DELTA_SLOT_BYTES
}

/// A sealed one-slot DELETE of `conn_id` as it would sit at ring position
/// `pos`: what a client can compute offline (CRC-32C is public) and send as
/// its bytes.
fn forged_slot(pos: u64, conn_id: u64) -> Vec<u8> {
    let (buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    for _ in 0..pos {
        p.try_push(0, module::TCP, delta_kind::PORTION, 0, &[]).unwrap();
    }
    p.try_push(conn_id, module::TCP, delta_kind::DELETE, u64::MAX, &[]).unwrap();
    p.publish();
    // SAFETY: slot `pos` of the only ring, inside the buffer, written above.
    unsafe { std::slice::from_raw_parts(buf.ptr().add(slot_off(pos as usize)), 32) }.to_vec()
}

/// Client bytes with a forged header for the slot after its first at
/// every 8-byte offset: wherever slots fall, one would sit at a slot's
/// start if the payload ran on through them unmarked.
fn log_with_forged_headers() -> Vec<u8> {
    let mut bytes = vec![b'A'; 1100];
    for at in (0..bytes.len() - 32).step_by(8) {
        let k = 1 + (at + 32) / DELTA_SLOT_BYTES;
        bytes[at..at + 32].copy_from_slice(&forged_slot(k as u64, 666));
    }
    bytes
}

/// A LOG record carrying forged headers, then a good record, with the LOG
/// record's own header damaged by `damage`.
fn forged_then_damaged(damage: impl FnOnce(*mut u8)) -> (DrainReport, Vec<(u64, u8)>) {
    let (buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    p.try_push_record(7, module::PROTECT, delta_kind::LOG, 0, &log_with_forged_headers()).unwrap();
    p.try_push(8, module::TCP, delta_kind::PORTION, 1, b"after").unwrap();
    p.publish();
    // SAFETY: slot 0 is published and not drained; nobody else touches it.
    damage(unsafe { buf.ptr().add(slot_off(0)) });
    let mut got = Vec::new();
    let r = c.drain(64, |d| got.push((d.conn_id, d.kind)));
    (r, got)
}

#[test]
fn client_bytes_are_never_read_as_a_header_after_a_damaged_one() {
    let seq = forged_then_damaged(|h| {
        // SAFETY: the header's first byte, in the slot handed over.
        unsafe { *h ^= 0x01 }
    });
    let len = forged_then_damaged(|h| {
        // SAFETY: the header's len bytes, in the slot handed over.
        unsafe {
            *h.add(26) = 16;
            *h.add(27) = 0;
        }
    });
    let undamaged = forged_then_damaged(|_| {});
    for (r, got) in [seq, len] {
        assert_eq!(got, vec![(8, delta_kind::PORTION)], "{r:?}");
        assert_eq!((r.applied, r.torn), (1, 1), "the record counted once");
    }
    assert_eq!(undamaged.1, vec![(7, delta_kind::LOG), (8, delta_kind::PORTION)]);
}

#[test]
fn a_damaged_len_does_not_swallow_the_records_after_it() {
    let (buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    for i in 0..9u64 {
        p.try_push(i, module::TCP, delta_kind::PORTION, 1, b"abcde").unwrap();
    }
    p.publish();
    // len 5 -> 1797, within RECORD_PAYLOAD_MAX: it would span 8 slots.
    // SAFETY: slot 0's len byte, published and not drained.
    unsafe { *buf.ptr().add(slot_off(0) + 27) = 0x07 };
    let r = c.drain(64, |_| {});
    assert_eq!(r, DrainReport { applied: 8, torn: 1, resynced: false });
}

#[test]
fn the_pad_kind_is_the_rings_own() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    assert_eq!(p.try_push(1, 0, delta_kind::PAD, 0, &[]), Err(PushError::ReservedKind));
    assert_eq!(
        p.try_push_words(1, 0, delta_kind::PAD, 0, &[0u64; 1], 0),
        Err(PushError::ReservedKind)
    );
    assert_eq!(p.try_push_record(1, 0, delta_kind::PAD, 0, &[]), Err(PushError::ReservedKind));
    assert_eq!(p.position(), 0);
    p.publish();
}

#[test]
fn a_tail_ahead_of_the_head_is_no_room() {
    let (_buf, seg) = rings(1, 64);
    {
        let mut p = seg.producer(0).unwrap();
        let mut c = seg.consumer(0).unwrap();
        for _ in 0..10 {
            p.try_push(0, module::TCP, delta_kind::PORTION, 0, &[]).unwrap();
        }
        p.publish();
        c.drain(64, |_| {});
    }
    seg.test_force_head(0, 2);
    let mut p = seg.producer(0).unwrap();
    assert_eq!(
        p.try_push_record(1, module::PROTECT, delta_kind::LOG, 0, &[0; 1800]),
        Err(PushError::Full)
    );
}

/// A header damaged into a continuation marker (bit 63 of its seq) loses
/// its record, counted: not passed over silently.
#[test]
fn a_header_damaged_into_a_continuation_marker_is_counted() {
    let (buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    p.try_push(1, module::TCP, delta_kind::PORTION, 1, b"one").unwrap();
    p.try_push_record(2, module::PROTECT, delta_kind::LOG, 0, &[7u8; 1000]).unwrap();
    p.try_push(3, module::TCP, delta_kind::PORTION, 1, b"three").unwrap();
    p.publish();
    // SAFETY: the top byte of slots 0 and 1's seq, published and not drained.
    unsafe {
        *buf.ptr().add(slot_off(0) + 7) ^= 0x80;
        *buf.ptr().add(slot_off(1) + 7) ^= 0x80;
    }
    let mut got = Vec::new();
    let r = c.drain(64, |d| got.push(d.conn_id));
    assert_eq!(got, vec![3]);
    // Slot 1 follows a torn slot, so it passes for the rest of that record:
    // the loss is counted, if not record by record.
    assert_eq!(r.torn, 1, "the loss counted");
}

/// A pad under a head that does not reach its end (a damaged control
/// block) is torn: the tail never passes the head.
#[test]
fn a_pad_past_the_head_is_torn_and_the_tail_stays_behind_it() {
    let (_buf, seg) = rings(1, 64);
    let mut p = seg.producer(0).unwrap();
    let mut c = seg.consumer(0).unwrap();
    for n in 0..60 {
        p.try_push(n, module::TCP, delta_kind::PORTION, 1, b"x").unwrap();
    }
    p.publish();
    c.drain(u32::MAX, |_| {});
    p.try_push_record(9, module::PROTECT, delta_kind::LOG, 0, &[1u8; 1000]).unwrap();
    p.publish();
    drop(p);
    seg.test_force_head(0, 61);
    let r = c.drain(u32::MAX, |_| panic!("nothing to apply"));
    assert_eq!(r.torn, 1);
    assert_eq!(c.position(), 61);
}

/// Random one-slot, word and multi-slot pushes, publishes and drains of
/// every size over many laps: every record arrives whole, none torn.
#[test]
fn mixed_pushes_arrive_whole_over_many_laps() {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }
    for seed in 1..40u64 {
        let (_buf, seg) = rings(1, 64);
        let (mut p, mut c) = (seg.producer(0).unwrap(), seg.consumer(0).unwrap());
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (mut want, mut got, mut torn) = (Vec::new(), Vec::new(), 0);
        for n in 0..3000u64 {
            let pushed = match r.next() % 4 {
                0 => {
                    let len = (r.next() % 225) as usize;
                    let pl: Vec<u8> = (0..len).map(|i| (n as u8) ^ (i as u8)).collect();
                    p.try_push(n, module::TCP, delta_kind::PORTION, n, &pl).map(|_| pl)
                }
                1 => {
                    let words = [n, n.rotate_left(7), !n];
                    let len = (r.next() % 25) as usize;
                    let b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    p.try_push_words(n, module::TCP, delta_kind::PORTION, n, &words, len)
                        .map(|_| b[..len].to_vec())
                }
                _ => {
                    let len = (r.next() % (RECORD_PAYLOAD_MAX as u64 + 1)) as usize;
                    let pl: Vec<u8> =
                        (0..len).map(|i| (n as u8).wrapping_mul(7) ^ (i as u8)).collect();
                    p.try_push_record(n, module::PROTECT, delta_kind::LOG, n, &pl).map(|_| pl)
                }
            };
            if let Ok(pl) = pushed {
                want.push((n, pl));
            }
            if r.next().is_multiple_of(3) {
                p.publish();
            }
            if r.next().is_multiple_of(4) {
                let max = (r.next() % 20) as u32;
                let rep = c.drain(max, |d| got.push((d.conn_id, d.payload.to_vec())));
                torn += rep.torn;
                assert!(!rep.resynced);
            }
        }
        p.publish();
        while c.lag() > 0 {
            torn += c.drain(u32::MAX, |d| got.push((d.conn_id, d.payload.to_vec()))).torn;
        }
        assert_eq!(torn, 0, "seed {seed}");
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(c.position(), p.position());
    }
}
