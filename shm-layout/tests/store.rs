//! The store segment: layout, round trip, checksums.

mod common;

use common::Buf;
use shm_layout::*;

fn store(conns: u32, ftp: u32) -> (Buf, StoreSegment) {
    let geom = StoreGeometry { conn_capacity: conns, ftp_capacity: ftp };
    let buf = Buf::new(geom.segment_bytes() as usize);
    // SAFETY: buf is page-aligned, exclusively ours, and outlives the segment
    // (callers keep the pair together).
    let seg = unsafe { StoreSegment::format(buf.ptr(), buf.len(), geom) }.unwrap();
    (buf, seg)
}

#[test]
fn record_sizes() {
    let conn = std::mem::size_of::<ConnRecord>();
    let ftp = std::mem::size_of::<FtpRecord>();
    println!(
        "ConnRecord = {conn} bytes, FtpRecord = {ftp} bytes, SegmentHeader = {} bytes",
        std::mem::size_of::<SegmentHeader>()
    );
    assert!(conn <= 256);
    assert_eq!(conn, 192);
    assert_eq!(ftp, 256);
    let g = StoreGeometry { conn_capacity: 65536, ftp_capacity: 4096 };
    assert_eq!(g.segment_bytes(), 4096 + 65536 * 192 + 4096 * 256);
}

#[test]
fn store_round_trip() {
    let (_buf, mut st) = store(8, 2);
    st.init_record(0, 0xaaaa, 0);
    st.put_portion(0, module::IP, 1, &[1; IP_PORTION_MAX]).unwrap();
    st.put_portion(0, module::TCP, 2, &[2; 40]).unwrap();
    st.put_ftp(0, 1, 0xaaaa, 3, b"PORT 10,0,0,1,4,1").unwrap();
    st.init_record(5, 0xbbbb, 1);
    st.put_portion(5, module::UDP, 7, &[7; 16]).unwrap();
    st.init_record(3, 0xcccc, 0);
    st.put_portion(3, module::ICMP, 1, &[9; 8]).unwrap();

    let w0: Vec<_> = st.restore_iter(0).collect();
    assert_eq!(w0.len(), 2);
    let a = w0.iter().find(|c| c.conn_id == 0xaaaa).unwrap();
    let (ip, l4) = (a.ip().unwrap(), a.l4().unwrap());
    assert_eq!((ip.module, ip.version, ip.payload()), (module::IP, 1, &[1; IP_PORTION_MAX][..]));
    assert_eq!((l4.module, l4.version, l4.payload()), (module::TCP, 2, &[2; 40][..]));
    assert_eq!(a.ftp().unwrap().payload(), b"PORT 10,0,0,1,4,1");
    let c = w0.iter().find(|c| c.conn_id == 0xcccc).unwrap();
    assert_eq!((c.ip(), c.l4().unwrap().module, c.ftp()), (None, module::ICMP, None));

    let mut it = st.restore_iter(1);
    let b = it.next().unwrap();
    assert_eq!((b.conn_id, b.worker, b.l4().unwrap().version), (0xbbbb, 1, 7));
    assert!(it.next().is_none());
    assert_eq!((it.conns(), it.corrupt_portions()), (1, 0));

    // Overwrite, then clear.
    st.put_portion(5, module::UDP, 8, &[8; 20]).unwrap();
    assert_eq!(st.restore_iter(1).next().unwrap().l4().unwrap().payload(), &[8; 20]);
    st.clear_record(5);
    assert_eq!(st.restore_iter(1).count(), 0);
    assert_eq!(st.record(5), ConnRecord::EMPTY);
}

#[test]
fn oversized_and_unknown_portions_are_refused() {
    let (_buf, mut st) = store(2, 1);
    st.init_record(0, 1, 0);
    assert!(matches!(
        st.put_portion(0, module::TCP, 1, &[0; L4_PORTION_MAX + 1]),
        Err(LayoutError::PortionTooLarge { module: 1, len: 57, max: 56 })
    ));
    assert!(matches!(st.put_portion(0, 9, 1, &[]), Err(LayoutError::UnknownModule(9))));
    assert!(matches!(
        st.put_ftp(0, 0, 1, 1, &[0; FTP_PORTION_MAX + 1]),
        Err(LayoutError::PortionTooLarge { .. })
    ));
}

#[test]
fn corrupt_portion_is_none_and_counted() {
    let (_buf, mut st) = store(4, 1);
    st.init_record(2, 77, 3);
    st.put_portion(2, module::IP, 1, &[5; 30]).unwrap();
    st.put_portion(2, module::TCP, 1, &[6; 30]).unwrap();
    let mut rec = st.record(2);
    rec.l4.payload[3] ^= 0xff; // a torn write
    st.write_record(2, &rec);
    let mut it = st.restore_iter(3);
    let c = it.next().unwrap();
    assert!(c.ip().is_some());
    assert!(c.l4().is_none());
    assert_eq!(it.corrupt_portions(), 1);
}

#[test]
fn file_backed_store_survives_reopen() {
    let dir = common::temp_dir("store");
    let path = dir.join("store");
    let geom = StoreGeometry { conn_capacity: 100, ftp_capacity: 10 };
    let generation;
    {
        let mut st = StoreSegment::create_file(&path, geom).unwrap();
        generation = st.generation();
        st.init_record(99, 1, 0);
        st.put_portion(99, module::IP, 4, b"ip").unwrap();
    }
    let st = StoreSegment::open_file(&path).unwrap();
    assert_eq!((st.geometry(), st.generation()), (geom, generation));
    let c = st.restore_iter(0).next().unwrap();
    assert_eq!(c.ip().unwrap().payload(), b"ip");
    // A rings file is not a store.
    assert!(matches!(RingsSegment::open_file(&path), Err(LayoutError::WrongKind { .. })));
    std::fs::remove_dir_all(dir).unwrap();
}

/// What restore reads is a copy: another process writing the segment (here a
/// second mapping of the same file) after the read cannot change it.
#[test]
fn restored_portions_are_copies_not_views_of_the_segment() {
    let dir = common::temp_dir("store-copy");
    let path = dir.join("store");
    let geom = StoreGeometry { conn_capacity: 4, ftp_capacity: 1 };
    let mut st = StoreSegment::create_file(&path, geom).unwrap();
    st.init_record(1, 7, 0);
    st.put_portion(1, module::IP, 1, b"before").unwrap();
    let reader = StoreSegment::open_file(&path).unwrap();
    let mut it = reader.restore_iter(0);
    let c = it.next().unwrap();
    st.put_portion(1, module::IP, 2, b"AFTER!").unwrap();
    assert_eq!(c.ip().unwrap().payload(), b"before");
    drop(it);
    std::fs::remove_dir_all(dir).unwrap();
}
