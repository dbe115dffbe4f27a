use super::burst::Step;
use super::housekeeping::FLUSH_BATCH;
use super::*;
use crate::checkpoint::MemorySink;
use crate::conn::SlotId;
use crate::frames::{tcp, tcp_flags::*, udp};
use crate::modules::tcp::{self, TcpState};
use crate::modules::{L4Portion, Module};
use crate::parse::proto;
use crate::portion::Portion;
use allocator_api2::alloc::Global;

const C: [u8; 4] = [10, 99, 0, 1];
const S: [u8; 4] = [10, 99, 0, 2];
const HZ: u64 = 1_000_000_000;

fn fw(sink: MemorySink) -> Firewall<MemorySink, Global> {
    let c = ConntrackSection { capacity: 64, ..Default::default() };
    let counters = Arc::new(FwCounters::default());
    Firewall::new(&c, Arc::new(Policy::default()), vec![0, 0], HZ, Global, sink, counters)
}

/// Handshake and some data on one connection; returns the next (client seq, server seq).
fn open(f: &mut Firewall<MemorySink, Global>, sport: u16) -> (u32, u32) {
    let t = 1;
    assert_eq!(f.process(&tcp(C, S, (sport, 80), SYN, (1000, 0), b""), 0, t), Verdict::Forward);
    assert_eq!(
        f.process(&tcp(S, C, (80, sport), SYN | ACK, (5000, 1001), b""), 1, t),
        Verdict::Forward
    );
    assert_eq!(f.process(&tcp(C, S, (sport, 80), ACK, (1001, 5001), b""), 0, t), Verdict::Forward);
    assert_eq!(
        f.process(&tcp(C, S, (sport, 80), ACK | PSH, (1001, 5001), &[7; 100]), 0, t),
        Verdict::Forward
    );
    (1101, 5001)
}

fn restore_all(from: &MemorySink, into: &mut Firewall<MemorySink, Global>) -> usize {
    let ids: std::collections::BTreeSet<u64> = from.store.keys().map(|k| k.0).collect();
    for id in &ids {
        let get = |m: Module| from.store.get(&(*id, m as u8)).map(|(_, b)| b.as_slice());
        let l4 = [Module::Tcp, Module::Udp, Module::Icmp]
            .into_iter()
            .find_map(|m| get(m).map(|b| (m as u8, b)));
        into.restore(*id, get(Module::Ip).unwrap(), l4, get(Module::Ftp), 10).unwrap();
    }
    ids.len()
}

#[test]
fn a_restored_table_carries_established_flows_and_an_empty_one_does_not() {
    let mut a = fw(MemorySink::default());
    let (cs, ss) = open(&mut a, 40000);
    assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
    assert_eq!(a.process(&udp(S, C, 53, 5353, b"r"), 1, 1), Verdict::Forward);
    // What a dead dataplane left in the store, rebuilt in a new one.
    let mut b = fw(MemorySink::default());
    assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 2);
    assert_eq!(b.table().len(), 2);
    let mid = tcp(C, S, (40000, 80), ACK | PSH, (cs, ss), &[8; 100]);
    let reply = tcp(S, C, (80, 40000), ACK, (ss, cs + 100), b"");
    assert_eq!(b.process(&mid, 0, 20), Verdict::Forward);
    assert_eq!(b.process(&reply, 1, 20), Verdict::Forward);
    assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
    // Control: without the restore the strict tracker refuses mid-stream packets.
    let mut empty = fw(MemorySink::default());
    assert_eq!(empty.process(&mid, 0, 20), Verdict::Drop);
    assert_eq!(empty.counters.tcp_invalid[tcp::TcpInvalid::NewNotSyn as usize].get(), 1);
}

#[test]
fn the_ack_of_a_fin_writes_no_delta_unless_close_wait_outlives_fin_wait() {
    let stored_state = |f: &Firewall<MemorySink, Global>| {
        let (_, conn) = f.table().iter().next().unwrap();
        tcp::TcpPortion::decode(&f.checkpoint.sink.store[&(conn.id.0, Module::Tcp as u8)].1)
            .unwrap()
            .state
    };
    let tcp_deltas = |f: &Firewall<MemorySink, Global>| f.counters.ckpt[Module::Tcp as usize].get();
    for close_wait_longer in [false, true] {
        let mut c = ConntrackSection { capacity: 64, ..Default::default() };
        if close_wait_longer {
            c.timeouts.tcp_close_wait = c.timeouts.tcp_fin_wait + 1;
        }
        let mut a = Firewall::new(
            &c,
            Arc::new(Policy::default()),
            vec![0, 0],
            HZ,
            Global,
            MemorySink::default(),
            Arc::new(FwCounters::default()),
        );
        let (cs, ss) = open(&mut a, 40100);
        assert_eq!(
            a.process(&tcp(C, S, (40100, 80), FIN | ACK, (cs, ss), b""), 0, 2),
            Verdict::Forward
        );
        let after_fin = tcp_deltas(&a);
        assert_eq!(
            a.process(&tcp(S, C, (80, 40100), ACK, (ss, cs + 1), b""), 1, 3),
            Verdict::Forward
        );
        if close_wait_longer {
            assert_eq!(tcp_deltas(&a), after_fin + 1);
            assert_eq!(stored_state(&a), tcp::TcpState::CloseWait);
        } else {
            assert_eq!(tcp_deltas(&a), after_fin, "FIN_WAIT -> CLOSE_WAIT is not worth a delta");
            assert_eq!(stored_state(&a), tcp::TcpState::FinWait);
        }
        // Killed here: a restored dataplane carries the rest of the close.
        let mut b = Firewall::new(
            &c,
            Arc::new(Policy::default()),
            vec![0, 0],
            HZ,
            Global,
            MemorySink::default(),
            Arc::new(FwCounters::default()),
        );
        assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 1);
        assert_eq!(
            b.process(&tcp(S, C, (80, 40100), FIN | ACK, (ss, cs + 1), b""), 1, 20),
            Verdict::Forward
        );
        assert_eq!(
            b.process(&tcp(C, S, (40100, 80), ACK, (cs + 1, ss + 1), b""), 0, 20),
            Verdict::Forward
        );
        assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
        let L4Portion::Tcp(t) = b.table().iter().next().unwrap().1.l4 else { panic!() };
        assert_eq!(t.state, tcp::TcpState::TimeWait);
    }
}

#[test]
fn a_full_ring_marks_portions_dirty_and_the_sweep_writes_them_later() {
    let mut a = fw(MemorySink { room: Some(1), ..Default::default() });
    open(&mut a, 40001);
    assert!(a.counters.ckpt_ring_full.get() > 0);
    assert!(!a
        .checkpoint
        .sink
        .store
        .contains_key(&(a.table().iter().next().unwrap().1.id.0, Module::Tcp as u8)));
    a.checkpoint.sink.room = None;
    a.housekeeping(2);
    let conn = *a.table().iter().next().unwrap().1;
    assert_eq!(conn.dirty, 0);
    assert!(a.counters.ckpt_reemitted.get() > 0);
    let (_, tcp_bytes) = &a.checkpoint.sink.store[&(conn.id.0, Module::Tcp as u8)];
    let L4Portion::Tcp(live) = conn.l4 else { panic!() };
    assert_eq!(
        tcp::TcpPortion::decode(tcp_bytes).unwrap().state,
        live.state,
        "the store converged to the live state"
    );
}

#[test]
fn a_resync_writes_every_connection_again() {
    let mut a = fw(MemorySink::default());
    open(&mut a, 40002);
    open(&mut a, 40003);
    a.checkpoint.sink.store.clear();
    a.checkpoint.sink.resync = true;
    a.housekeeping(2);
    assert_eq!(a.checkpoint.sink.store.len(), 4, "ip and tcp of both connections");
    assert_eq!(a.counters.ckpt_resyncs.get(), 1);
}

#[test]
fn a_tcp_connection_is_stored_once_its_syn_is_answered() {
    let syn = tcp(C, S, (40200, 80), SYN, (1000, 0), b"");
    let syn_ack = tcp(S, C, (80, 40200), SYN | ACK, (5000, 1001), b"");
    let mut a = fw(MemorySink::default());
    assert_eq!(a.process(&syn, 0, 1), Verdict::Forward);
    assert!(a.checkpoint.sink.store.is_empty(), "a SYN alone writes nothing");
    // Killed here: the new dataplane drops the server's answer, and the
    // client's retransmitted SYN opens the connection again.
    let mut b = fw(MemorySink::default());
    assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 0);
    assert_eq!(b.process(&syn_ack, 1, 20), Verdict::Drop);
    assert_eq!(b.process(&syn, 0, 21), Verdict::Forward);
    assert_eq!(b.process(&syn_ack, 1, 21), Verdict::Forward);
    assert_eq!(b.process(&tcp(C, S, (40200, 80), ACK, (1001, 5001), b""), 0, 21), Verdict::Forward);
    // Not killed: the answer stores ip and tcp, in the state it made.
    assert_eq!(a.process(&syn_ack, 1, 2), Verdict::Forward);
    let id = a.table().iter().next().unwrap().1.id.0;
    assert_eq!(
        a.checkpoint.sink.store.keys().copied().collect::<Vec<_>>(),
        vec![(id, Module::Ip as u8), (id, Module::Tcp as u8)]
    );
    assert_eq!(
        tcp::TcpPortion::decode(&a.checkpoint.sink.store[&(id, Module::Tcp as u8)].1)
            .unwrap()
            .state,
        tcp::TcpState::SynRecv
    );
}

#[test]
fn a_related_connection_is_stored_at_its_syn() {
    let mut a = fw(MemorySink::default());
    for (p, port) in [
        (tcp(C, S, (40300, 21), SYN, (1000, 0), b""), 0),
        (tcp(S, C, (21, 40300), SYN | ACK, (5000, 1001), b""), 1),
        (tcp(C, S, (40300, 21), ACK, (1001, 5001), b""), 0),
        (tcp(C, S, (40300, 21), ACK | PSH, (1001, 5001), b"PORT 10,99,0,1,156,64\r\n"), 0),
    ] {
        assert_eq!(a.process(&p, port, 1), Verdict::Forward);
    }
    // Active mode: the server opens the data connection to the port the
    // client named, admitted by the expectation that this SYN uses up.
    assert_eq!(a.process(&tcp(S, C, (20, 40000), SYN, (9000, 0), b""), 1, 2), Verdict::Forward);
    assert_eq!(a.counters.related.get(), 1);
    let data = a
        .table()
        .iter()
        .map(|(_, c)| *c)
        .find(|c| c.key.lo_port == 20 || c.key.hi_port == 20)
        .unwrap();
    assert!(
        a.checkpoint.sink.store.contains_key(&(data.id.0, Module::Ip as u8))
            && a.checkpoint.sink.store.contains_key(&(data.id.0, Module::Tcp as u8)),
        "stored before its answer: its expectation is gone"
    );
    let mut b = fw(MemorySink::default());
    assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 2);
}

#[test]
fn a_reopening_syn_is_stored_once_answered() {
    let mut a = fw(MemorySink::default());
    let (cs, ss) = open(&mut a, 40203);
    for (p, port) in [
        (tcp(C, S, (40203, 80), FIN | ACK, (cs, ss), b""), 0),
        (tcp(S, C, (80, 40203), FIN | ACK, (ss, cs + 1), b""), 1),
        (tcp(C, S, (40203, 80), ACK, (cs + 1, ss + 1), b""), 0),
    ] {
        assert_eq!(a.process(&p, port, 2), Verdict::Forward);
    }
    let id = a.table().iter().next().unwrap().1.id.0;
    let stored = |f: &Firewall<MemorySink, Global>| {
        tcp::TcpPortion::decode(&f.checkpoint.sink.store[&(id, Module::Tcp as u8)].1).unwrap().state
    };
    assert_eq!(stored(&a), tcp::TcpState::TimeWait);
    let syn = tcp(C, S, (40203, 80), SYN, (90000, 0), b"");
    let syn_ack = tcp(S, C, (80, 40203), SYN | ACK, (7000, 90001), b"");
    assert_eq!(a.process(&syn, 0, 3), Verdict::Forward);
    assert_eq!(stored(&a), tcp::TcpState::TimeWait, "the reopening SYN alone writes nothing");
    // Killed here: restored in TIME_WAIT, the connection takes the
    // client's retransmitted SYN as it took the first.
    let mut b = fw(MemorySink::default());
    assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 1);
    assert_eq!(b.process(&syn, 0, 20), Verdict::Forward);
    assert_eq!(b.process(&syn_ack, 1, 20), Verdict::Forward);
    assert_eq!(
        b.process(&tcp(C, S, (40203, 80), ACK, (90001, 7001), b""), 0, 20),
        Verdict::Forward
    );
    // Not killed: the answer is written.
    assert_eq!(a.process(&syn_ack, 1, 4), Verdict::Forward);
    assert_eq!(stored(&a), tcp::TcpState::SynRecv);
}

#[test]
fn an_unanswered_syn_is_neither_resynced_nor_deleted() {
    let mut a = fw(MemorySink::default());
    assert_eq!(a.process(&tcp(C, S, (40201, 80), SYN, (1000, 0), b""), 0, 1), Verdict::Forward);
    open(&mut a, 40202);
    a.checkpoint.sink.store.clear();
    a.checkpoint.sink.resync = true;
    a.housekeeping(2);
    assert_eq!(a.checkpoint.sink.store.len(), 2, "ip and tcp of the answered connection only");
    assert_eq!(a.counters.ckpt_reemitted.get(), 2, "and only those counted as re-emitted");
    for _ in 0..64 {
        a.housekeeping(u64::MAX / 2);
    }
    assert_eq!(a.table().len(), 0);
    assert_eq!(a.checkpoint.sink.deletes, 1, "the answered connection's delete only");
}

#[test]
fn expiry_writes_a_delete() {
    let mut a = fw(MemorySink::default());
    open(&mut a, 40004);
    for _ in 0..64 {
        a.housekeeping(u64::MAX / 2);
    }
    assert_eq!(a.table().len(), 0);
    assert_eq!(a.checkpoint.sink.deletes, 1);
    assert!(a.checkpoint.sink.store.is_empty());
}

#[test]
fn gauges_follow_the_table_and_a_flush_deletes_everything() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut a = fw(MemorySink::default());
    open(&mut a, 40006);
    open(&mut a, 40007);
    assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
    a.housekeeping(1);
    let g = &a.counters.gauges;
    assert_eq!((g.tcp.get(), g.udp.get(), g.icmp.get()), (2, 1, 0));
    assert_eq!(g.tcp_states[TcpState::Established as usize].get(), 2);
    assert_eq!(a.checkpoint.sink.store.len(), 6, "ip + l4 of three connections");
    a.counters.requests.flush.store(true, Relaxed);
    // Gauges refresh every 100 ms of TSC (HZ / 10 ticks); the flush refreshes at once.
    a.housekeeping(2);
    assert_eq!(a.table().len(), 0);
    assert!(!a.counters.requests.flush.load(Relaxed), "the flag is cleared when done");
    assert_eq!(a.counters.flushed.get(), 3);
    assert_eq!(a.checkpoint.sink.deletes, 3);
    assert!(a.checkpoint.sink.store.is_empty(), "the store follows the flush");
    let g = &a.counters.gauges;
    assert_eq!(
        (g.tcp.get(), g.udp.get(), g.tcp_states[TcpState::Established as usize].get()),
        (0, 0, 0)
    );
    // Traffic after a flush: an established flow mid-stream is now unknown.
    assert_eq!(a.process(&tcp(C, S, (40006, 80), ACK, (1101, 5001), b""), 0, 3), Verdict::Drop);
}

#[test]
fn a_flush_asked_during_a_walk_gets_a_walk_of_its_own() {
    use std::sync::atomic::Ordering::Relaxed;
    let c = ConntrackSection { capacity: 4 * FLUSH_BATCH as u32, ..Default::default() };
    let mut a = Firewall::new(
        &c,
        Arc::new(Policy::default()),
        vec![0, 0],
        HZ,
        Global,
        MemorySink::default(),
        Arc::new(FwCounters::default()),
    );
    open(&mut a, 40010);
    a.counters.requests.flush.store(true, Relaxed);
    a.housekeeping(1);
    assert!(a.chores.flush_cursor.is_some(), "a table of several batches takes several rounds");
    assert_eq!(a.table().len(), 0);
    // A connection opened behind the walk's cursor, and a second request.
    open(&mut a, 40011);
    a.counters.requests.flush.store(true, Relaxed);
    for t in 2..20 {
        a.housekeeping(t);
    }
    assert_eq!(a.table().len(), 0, "the second request was absorbed by the first walk");
    assert_eq!(a.counters.flushed.get(), 2);
    assert!(!a.counters.requests.flush.load(Relaxed));
}

#[test]
fn a_damaged_record_is_refused() {
    let mut a = fw(MemorySink::default());
    open(&mut a, 40005);
    let (k, (_, ip)) =
        a.checkpoint.sink.store.iter().find(|(k, _)| k.1 == Module::Ip as u8).unwrap();
    let mut b = fw(MemorySink::default());
    assert!(matches!(b.restore(k.0 ^ 1, ip, None, None, 1), Err(RestoreError::IdMismatch { .. })));
    assert!(matches!(b.restore(k.0, &ip[..10], None, None, 1), Err(RestoreError::Portion(_))));
    assert_eq!(b.table().len(), 0);
}

/// Frames of every kind the pipeline tells apart, in an order where later
/// packets depend on connections earlier ones opened.
fn mixed_traffic() -> Vec<(Vec<u8>, usize)> {
    use crate::frames::{eth, icmp, ipv4};
    let mut v = Vec::new();
    for sport in [40000u16, 40001] {
        v.push((tcp(C, S, (sport, 80), SYN, (1000, 0), b""), 0));
        v.push((tcp(S, C, (80, sport), SYN | ACK, (5000, 1001), b""), 1));
        v.push((tcp(C, S, (sport, 80), ACK, (1001, 5001), b""), 0));
        v.push((tcp(C, S, (sport, 80), ACK | PSH, (1001, 5001), &[7; 100]), 0));
        v.push((tcp(C, S, (sport, 80), ACK | PSH, (1101 + 10_000_000, 5001), b"y"), 0));
    }
    v.push((tcp(C, S, (40009, 80), ACK, (77, 88), b""), 0));
    v.push((udp(C, S, 5353, 53, b"query"), 0));
    v.push((udp(S, C, 53, 5353, b"answer"), 1));
    v.push((icmp(C, S, 8, 0, [0, 7, 0, 1], b"ping"), 0));
    v.push((icmp(S, C, 0, 0, [0, 7, 0, 1], b"ping"), 1));
    v.push((icmp(S, C, 0, 0, [0, 8, 0, 1], b"ping"), 1));
    v.push((icmp(S, C, 3, 3, [0; 4], &udp(C, S, 5353, 53, b"query")[14..42]), 1));
    v.push((icmp(S, C, 3, 3, [0; 4], &udp(C, S, 6000, 53, b"query")[14..42]), 1));
    v.push((eth(ipv4(6, C, S, &[0; 8])), 0));
    v.push((eth(ipv4(47, C, S, &[0; 8])), 0));
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.resize(60, 0);
    v.push((arp, 0));
    v.push((tcp(C, S, (40000, 80), FIN | ACK, (1101, 5001), b""), 0));
    v.push((tcp(S, C, (80, 40000), FIN | ACK, (5001, 1102), b""), 1));
    v
}

#[test]
fn staged_bursts_give_the_verdicts_and_counters_of_packet_by_packet() {
    let traffic = mixed_traffic();
    let mut one = fw(MemorySink::default());
    let want: Vec<Verdict> = traffic.iter().map(|(f, port)| one.process(f, *port, 1)).collect();
    assert!(want.contains(&Verdict::Drop) && want.contains(&Verdict::Forward));
    for burst in [1, 2, 3, 7, 16, STAGE_MAX] {
        let mut f = fw(MemorySink::default());
        let mut sb = StagedBurst::new();
        let mut got = Vec::new();
        let mut by_fast_path = 0;
        for chunk in traffic.chunks(burst) {
            for (i, (frame, port)) in chunk.iter().enumerate() {
                f.stage(&mut sb, i, frame, *port);
                by_fast_path += usize::from(sb.staged[i].step == Step::Segment);
            }
            f.lookup_staged(&mut sb, chunk.len());
            for (i, (frame, port)) in chunk.iter().enumerate() {
                got.push(f.process_staged(&mut sb, i, frame, *port, 1));
            }
        }
        // Every TCP frame here has the fast path's shape (no options).
        assert_eq!(by_fast_path, 13, "bursts of {burst}");
        assert_eq!(got, want, "bursts of {burst}");
        assert_eq!(f.table().len(), one.table().len(), "bursts of {burst}");
        assert_eq!(format!("{:?}", f.counters), format!("{:?}", one.counters), "bursts of {burst}");
    }
}

#[test]
fn a_connection_opened_earlier_in_the_burst_is_found() {
    // The whole handshake and data in one burst: the SYN-ACK's lookup ran
    // before the SYN created the connection.
    let mut f = fw(MemorySink::default());
    let mut sb = StagedBurst::new();
    let burst = [
        (tcp(C, S, (40000, 80), SYN, (1000, 0), b""), 0),
        (tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b""), 1),
        (tcp(C, S, (40000, 80), ACK, (1001, 5001), b""), 0),
    ];
    for (i, (frame, port)) in burst.iter().enumerate() {
        f.stage(&mut sb, i, frame, *port);
    }
    f.lookup_staged(&mut sb, burst.len());
    let got: Vec<Verdict> = burst
        .iter()
        .enumerate()
        .map(|(i, (frame, port))| f.process_staged(&mut sb, i, frame, *port, 1))
        .collect();
    assert_eq!(got, [Verdict::Forward; 3]);
    assert_eq!(f.table().len(), 1);
}

#[test]
fn a_candidate_holding_another_key_is_not_tracked() {
    // The index names a candidate by hash bits alone; here each packet's
    // candidate is swapped for another connection's, as a collision of
    // those bits would. Each packet must still reach its own connection:
    // tracked on another's record, A's data would fail B's windows.
    let mut f = fw(MemorySink::default());
    for (sport, isn) in [(40000u16, 1000u32), (40001, 900_000_000)] {
        for (frame, port) in [
            (tcp(C, S, (sport, 80), SYN, (isn, 0), b""), 0),
            (tcp(S, C, (80, sport), SYN | ACK, (isn ^ 0x5555, isn + 1), b""), 1),
            (tcp(C, S, (sport, 80), ACK, (isn + 1, (isn ^ 0x5555) + 1), b""), 0),
        ] {
            assert_eq!(f.process(&frame, port, 1), Verdict::Forward);
        }
    }
    assert_eq!(f.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
    let burst = [
        (tcp(C, S, (40000, 80), ACK | PSH, (1001, 1001 ^ 0x5554), &[1; 10]), 0),
        (tcp(C, S, (40001, 80), ACK | PSH, (900_000_001, 900_000_001 ^ 0x5554), &[2; 20]), 0),
        (udp(C, S, 5353, 53, b"again"), 0),
    ];
    let mut sb = StagedBurst::new();
    for (i, (frame, port)) in burst.iter().enumerate() {
        f.stage(&mut sb, i, frame, *port);
    }
    assert_eq!(
        [sb.staged[0].step, sb.staged[1].step, sb.staged[2].step],
        [Step::Segment, Step::Segment, Step::Keyed]
    );
    f.lookup_staged(&mut sb, burst.len());
    let slots: Vec<SlotId> =
        sb.staged[..3].iter().map(|st| st.slot.expect("every connection exists")).collect();
    for (i, s) in [slots[1], slots[2], slots[0]].into_iter().enumerate() {
        sb.staged[i].slot = Some(s);
    }
    for (i, (frame, port)) in burst.iter().enumerate() {
        assert_eq!(f.process_staged(&mut sb, i, frame, *port, 1), Verdict::Forward, "packet {i}");
    }
    // Each connection counted its own packet, on top of the SYN and ACK
    // of a TCP one, or the first query of the UDP one.
    for s in &slots {
        let conn = f.table().get(*s);
        assert_eq!(
            conn.ip.packets[0],
            if conn.key.proto == proto::TCP { 3 } else { 2 },
            "{:?}",
            conn.key
        );
    }
    assert_eq!(
        f.table().len(),
        3,
        "no connection was created for a packet whose candidate was wrong"
    );
}

#[test]
fn a_packet_not_staged_in_this_burst_is_processed_whole() {
    // Staged in one burst, not in the next: the next must not reuse it.
    let mut f = fw(MemorySink::default());
    let mut sb = StagedBurst::new();
    let syn = tcp(C, S, (40000, 80), SYN, (1000, 0), b"");
    f.stage(&mut sb, 0, &syn, 0);
    f.lookup_staged(&mut sb, 1);
    assert_eq!(f.process_staged(&mut sb, 0, &syn, 0, 1), Verdict::Forward);
    let stray = tcp(C, S, (40001, 80), ACK, (1, 1), b"");
    assert_eq!(
        f.process_staged(&mut sb, 0, &stray, 0, 1),
        Verdict::Drop,
        "tracked as itself, not as the SYN staged before"
    );
}
