//! Layouts 4 and 3 (v0.1.0, no origin) brought forward to this layout, and a store
//! from another boot rebased: nothing stored is lost or changed but what the
//! translation and the rebase must change.

mod common;

use proptest::prelude::*;
use shm_layout::*;

/// (conn_id, worker, version, ip bytes, tcp bytes)
type Stored = (u64, u16, u64, Vec<u8>, Vec<u8>);

fn stored(path: &std::path::Path, conns: &[Stored]) {
    let geom = StoreGeometry { conn_capacity: conns.len() as u32 + 1, ftp_capacity: 1 };
    let mut st = StoreSegment::create_file(path, geom).unwrap();
    for (i, (id, worker, version, ip, l4)) in conns.iter().enumerate() {
        st.init_record(i as u32, *id, *worker);
        st.put_portion(i as u32, module::IP, *version, ip).unwrap();
        st.put_portion(i as u32, module::TCP, version + 1, l4).unwrap();
    }
    if let Some((id, _, version, _, _)) = conns.first() {
        st.put_ftp(0, 0, *id, version + 2, b"PORT 10,0,0,1,4,1").unwrap();
    }
}

fn records(st: &StoreSegment) -> Vec<ConnRecord> {
    (0..st.geometry().conn_capacity).map(|i| st.record(i)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Every field of every record reads the same after the translation.
    #[test]
    fn a_previous_layout_store_translates_field_for_field(
        conns in prop::collection::vec(
            (any::<u64>(), 0u16..4, 1u64..u64::MAX / 4,
             prop::collection::vec(any::<u8>(), 0..=IP_PORTION_MAX),
             prop::collection::vec(any::<u8>(), 0..=L4_PORTION_MAX)),
            1..8),
        from in 3u32..LAYOUT_VERSION,
    ) {
        let dir = common::temp_dir("translate");
        let path = dir.join("store");
        stored(&path, &conns);
        let before = records(&StoreSegment::open_file(&path).unwrap());
        let ftp_before = StoreSegment::open_file(&path).unwrap().ftp_record(0);
        test_downgrade_to(&path, from).unwrap();
        let refused = StoreSegment::open_file(&path).err();
        let refused_old = matches!(refused, Some(LayoutError::VersionMismatch { found, expected: LAYOUT_VERSION }) if found == from);
        prop_assert!(refused_old, "{:?}", refused);
        let translated = from_previous(&path).unwrap();
        prop_assert!(matches!(translated, Translated::From { from: f, .. } if f == from), "{:?}", translated);
        prop_assert_eq!(from_previous(&path).unwrap(), Translated::Current);
        let st = StoreSegment::open_file(&path).unwrap();
        prop_assert_eq!(records(&st), before);
        prop_assert_eq!(st.ftp_record(0), ftp_before);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Layouts older than the previous one are refused with what to do.
#[test]
fn an_older_layout_is_refused_not_translated() {
    let dir = common::temp_dir("translate-old");
    let path = dir.join("rings");
    let geom = RingsGeometry { workers: 1, slots_per_ring: 64 };
    drop(RingsSegment::create_file(&path, geom).unwrap());
    test_downgrade_to(&path, 3).unwrap();
    // Layout 2: patch the version the downgrade wrote.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_ne_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = from_previous(&path).unwrap_err();
    assert!(matches!(e, LayoutError::VersionMismatch { found: 2, .. }), "{e}");
    assert!(e.to_string().contains("remove the segment files"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A store whose origin is another boot: after the rebase every intact
/// portion has version 0 (older than anything the dataplane writes now),
/// the same bytes, a valid checksum, and this host as its origin.
#[test]
fn a_store_from_another_boot_is_rebased_to_version_zero() {
    let dir = common::temp_dir("rebase");
    let path = dir.join("store");
    stored(
        &path,
        &[(7, 0, 5_000_000, b"ip".to_vec(), b"tcp".to_vec()), (9, 1, 6, vec![], vec![1])],
    );
    test_downgrade_to(&path, 3).unwrap();
    from_previous(&path).unwrap();
    let mut st = StoreSegment::open_file(&path).unwrap();
    let here = SegmentOrigin::this_host().unwrap();
    // /tmp may be tmpfs (origin vouched for) or a disk (unknown); force a
    // foreign one either way.
    let mut other = here.boot_id;
    other[15] ^= 0xff;
    let foreign = SegmentOrigin::new(other, here.tsc_hz);
    assert!(!foreign.same_clock_as(&here));
    let mut torn = st.record(1);
    torn.l4.payload[0] ^= 1;
    st.write_record(1, &torn);
    let n = st.rebase(&here);
    assert_eq!(n, 4, "ip+tcp of conn 7, ip of conn 9, the ftp portion; not the torn one");
    assert!(st.origin().same_clock_as(&here));
    let c = st.restore_iter(0).next().unwrap();
    let (ip, l4, ftp) = (c.ip().unwrap(), c.l4().unwrap(), c.ftp().unwrap());
    assert_eq!((ip.version, l4.version, ftp.version), (0, 0, 0));
    assert_eq!((ip.payload(), l4.payload()), (&b"ip"[..], &b"tcp"[..]));
    let mut it = st.restore_iter(1);
    let c9 = it.next().unwrap();
    assert_eq!((c9.ip().unwrap().version, c9.l4().is_none(), it.corrupt_portions()), (0, true, 1));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A ring written by layout 8 (continuation slots of bare client bytes) is
/// not read: its unread records are dropped and the producer asked for
/// everything again. One written by 7 (one-slot records only) keeps them.
#[test]
fn unread_layout_8_records_are_dropped_and_a_resync_asked() {
    let dir = common::temp_dir("translate-8");
    let path = dir.join("rings");
    let geom = RingsGeometry { workers: 2, slots_per_ring: 64 };
    for (from, kept) in [(8u32, false), (7, true)] {
        {
            let seg = RingsSegment::create_file(&path, geom).unwrap();
            for w in 0..2 {
                let mut p = seg.producer(w).unwrap();
                let mut c = seg.consumer(w).unwrap();
                p.try_push(1, module::TCP, delta_kind::PORTION, 1, b"read").unwrap();
                p.publish();
                assert_eq!(c.drain(64, |_| {}).applied, 1);
                p.try_push(2, module::TCP, delta_kind::PORTION, 2, b"unread").unwrap();
                p.publish();
            }
        }
        test_downgrade_to(&path, from).unwrap();
        assert!(
            matches!(from_previous(&path).unwrap(), Translated::From { from: f, .. } if f == from)
        );
        let seg = RingsSegment::open_file(&path).unwrap();
        for w in 0..2 {
            let st = seg.status(w);
            assert_eq!(
                (st.head, st.lag(), st.resync_epoch),
                (2, u64::from(kept), u64::from(!kept)),
                "from {from}, ring {w}"
            );
            let mut got = Vec::new();
            seg.consumer(w).unwrap().drain(64, |d| got.push(d.payload.to_vec()));
            assert_eq!(got.is_empty(), !kept, "from {from}");
        }
        drop(seg);
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}
