//! Restore under today's config: policy, bridge names, format-1 stores.

use crate::checkpoint::restore::RestoreError;
use crate::checkpoint::MemorySink;
use crate::firewall::testing::*;
use crate::firewall::*;
use crate::frames::{tcp, tcp_flags::*};
use crate::modules::Module;
use crate::policy::{Action, RuleConfig, ZoneConfig};
use crate::ports::{stable_id, PortMap};
use allocator_api2::alloc::Global;

fn with(policy: Policy, ports: PortMap, ftp: bool) -> Firewall<MemorySink, Global> {
    let c = ConntrackSection { capacity: 64, ftp, ..Default::default() };
    let counters = FwCounters::leaked();
    Firewall::new(&c, Arc::new(policy), ports, HZ, Global, MemorySink::default(), counters)
}

/// Port 0 in zone "out" (drop by default), port 1 in zone "in"; with
/// `web`, a rule lets port 80 in from "out".
fn policy(web: bool) -> Policy {
    let zones = [
        ZoneConfig { name: "out".into(), default: Action::Drop },
        ZoneConfig { name: "in".into(), default: Action::Accept },
    ];
    let rules: Vec<RuleConfig> = web
        .then(|| RuleConfig {
            name: "web".into(),
            from: Some("out".into()),
            proto: Some("tcp".into()),
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: Some("80".into()),
            action: Action::Accept,
        })
        .into_iter()
        .collect();
    Policy::compile(&zones, &rules, &[Some("out".into()), Some("in".into())]).unwrap()
}

fn restore_every(from: &MemorySink, into: &mut Firewall<MemorySink, Global>) -> Vec<String> {
    let ids: std::collections::BTreeSet<u64> = from.store.keys().map(|k| k.0).collect();
    let mut refused = Vec::new();
    for id in ids {
        let get = |m: Module| from.store.get(&(id, m as u8)).map(|(_, b)| b.as_slice());
        let l4 = get(Module::Tcp).map(|b| (Module::Tcp as u8, b));
        if let Err(e) = into.restore(id, get(Module::Ip).unwrap(), l4, get(Module::Ftp), 10) {
            refused.push(e.to_string());
        }
    }
    refused
}

#[test]
fn a_restore_refuses_what_todays_policy_forbids() {
    let mut a = with(policy(true), vec![0, 0].into(), false);
    open(&mut a, 41000);
    // Restored under the same policy: kept.
    let mut same = with(policy(true), vec![0, 0].into(), false);
    assert!(restore_every(&a.checkpoint.sink, &mut same).is_empty());
    assert_eq!(same.table().len(), 1);
    // The rule that let it in is gone: not restored, counted, and the
    // refusal names the zone default that refuses it.
    let mut now = with(policy(false), vec![0, 0].into(), false);
    let refused = restore_every(&a.checkpoint.sink, &mut now);
    assert_eq!(now.table().len(), 0);
    assert_eq!(now.counters.restore_forbidden.get(), 1);
    assert_eq!(now.counters.restore_skipped.get(), 0);
    assert!(refused[0].contains("zone \"out\"'s default"), "{refused:?}");
    let mid = tcp(C, S, (41000, 80), ACK, (1101, 5001), b"");
    assert_eq!(now.process(&mid, 0, 20), Verdict::Drop);
}

#[test]
fn a_connection_that_entered_the_accepting_side_is_kept() {
    // Opened from port 1 ("in", accept by default): the policy on port 0
    // would refuse the same packet, but it did not enter there.
    let mut a = with(policy(false), vec![0, 0].into(), false);
    for (p, port) in [
        (tcp(S, C, (41001, 80), SYN, (1000, 0), b""), 1),
        (tcp(C, S, (80, 41001), SYN | ACK, (5000, 1001), b""), 0),
    ] {
        assert_eq!(a.process(&p, port, 1), Verdict::Forward);
    }
    let mut b = with(policy(false), vec![0, 0].into(), false);
    assert!(restore_every(&a.checkpoint.sink, &mut b).is_empty());
    assert_eq!(b.table().len(), 1);
}

/// Bridges "x" (ports 0, 1) and "y" (ports 2, 3), then the same bridges
/// listed the other way round.
fn named(reordered: bool) -> PortMap {
    let (x, y) = (stable_id("x"), stable_id("y"));
    let ids = ["a", "b", "c", "d"].map(stable_id);
    if reordered {
        PortMap {
            zone: vec![y, y, x, x],
            id: vec![ids[2], ids[3], ids[0], ids[1]],
            bridges_in_order: vec![y, x],
        }
    } else {
        PortMap { zone: vec![x, x, y, y], id: ids.to_vec(), bridges_in_order: vec![x, y] }
    }
}

#[test]
fn reordering_bridges_strands_no_connection() {
    let mut a = with(Policy::default(), named(false), false);
    for (p, port) in [
        (tcp(C, S, (41002, 80), SYN, (1000, 0), b""), 2),
        (tcp(S, C, (80, 41002), SYN | ACK, (5000, 1001), b""), 3),
    ] {
        assert_eq!(a.process(&p, port, 1), Verdict::Forward);
    }
    let mut b = with(Policy::default(), named(true), false);
    assert!(restore_every(&a.checkpoint.sink, &mut b).is_empty());
    // Bridge "y" is now ports 0 and 1: its established flow carries on.
    let ack = tcp(C, S, (41002, 80), ACK, (1001, 5001), b"");
    assert_eq!(b.process(&ack, 0, 20), Verdict::Forward);
    assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
    // A bridge that is gone takes its connections with it, counted.
    let mut gone = with(Policy::default(), PortMap::from(vec![stable_id("x"); 2]), false);
    let refused = restore_every(&a.checkpoint.sink, &mut gone);
    assert!(refused[0].contains("no longer has"), "{refused:?}");
    assert_eq!(gone.counters.restore_skipped.get(), 1);
}

/// Rewrites a stored connection as format 1 wrote it: every portion's
/// format byte 1, the ip portion without its format-2 fields, its zone
/// the bridge's position; stored under the id of that key.
fn as_format_1(from: &MemorySink, bridge_index: u16) -> MemorySink {
    use crate::modules::ip::IpRecord;
    use crate::portion::Portion;
    let mut out = MemorySink::default();
    let id = from.store.keys().next().unwrap().0;
    let ip = &from.store[&(id, Module::Ip as u8)].1;
    let mut key = IpRecord::decode(ip).unwrap().key;
    key.zone = bridge_index;
    let old_id = key.id().0;
    for ((_, m), (v, bytes)) in from.store.iter().filter(|(k, _)| k.0 == id) {
        let mut b = bytes.clone();
        b[0] = 1;
        if *m == Module::Ip as u8 {
            b.truncate(b.len() - 3);
            b[39..41].copy_from_slice(&bridge_index.to_le_bytes());
        }
        out.store.insert((old_id, *m), (*v, b));
    }
    out
}

#[test]
fn a_format_1_store_is_translated_and_stored_again_under_the_new_id() {
    let mut a = with(Policy::default(), named(false), false);
    for (p, port) in [
        (tcp(C, S, (41003, 80), SYN, (1000, 0), b""), 2),
        (tcp(S, C, (80, 41003), SYN | ACK, (5000, 1001), b""), 3),
    ] {
        assert_eq!(a.process(&p, port, 1), Verdict::Forward);
    }
    let new_id = a.checkpoint.sink.store.keys().next().unwrap().0;
    let old = as_format_1(&a.checkpoint.sink, 1);
    let old_id = old.store.keys().next().unwrap().0;
    assert_ne!(old_id, new_id);
    let mut b = with(Policy::default(), named(false), false);
    assert!(restore_every(&old, &mut b).is_empty());
    // b's store is what it restored from.
    b.checkpoint.sink.store = old.store.clone();
    let ack = tcp(C, S, (41003, 80), ACK, (1001, 5001), b"");
    assert_eq!(b.process(&ack, 2, 20), Verdict::Forward);
    assert_eq!(b.table().iter().next().unwrap().1.id.0, new_id);
    // Its first delta wrote it whole under its new id; the next round
    // deletes the old.
    b.housekeeping(21);
    let s = &b.checkpoint.sink;
    assert!(s.store.contains_key(&(new_id, Module::Ip as u8)));
    assert!(s.store.contains_key(&(new_id, Module::Tcp as u8)));
    assert!(!s.store.keys().any(|k| k.0 == old_id), "the old records are deleted");
    // A format-1 zone past the config's bridges is refused, not guessed.
    let mut c = with(Policy::default(), named(false), false);
    let refused = restore_every(&as_format_1(&a.checkpoint.sink, 5), &mut c);
    assert!(matches!(refused.len(), 1) && refused[0].contains("bridge 5"), "{refused:?}");
}

#[test]
fn expectations_are_not_restored_when_ftp_is_off() {
    let mut a = with(Policy::default(), vec![0, 0].into(), true);
    for (p, port) in [
        (tcp(C, S, (40310, 21), SYN, (1000, 0), b""), 0),
        (tcp(S, C, (21, 40310), SYN | ACK, (5000, 1001), b""), 1),
        (tcp(C, S, (40310, 21), ACK, (1001, 5001), b""), 0),
        (tcp(C, S, (40310, 21), ACK | PSH, (1001, 5001), b"PORT 10,99,0,1,156,64\r\n"), 0),
    ] {
        assert_eq!(a.process(&p, port, 1), Verdict::Forward);
    }
    let data_syn = tcp(S, C, (20, 40000), SYN, (9000, 0), b"");
    for ftp in [true, false] {
        let mut b = with(Policy::default(), vec![0, 0].into(), ftp);
        assert!(restore_every(&a.checkpoint.sink, &mut b).is_empty());
        b.process(&data_syn, 1, 11);
        assert_eq!(
            (b.counters.related.get(), b.counters.restore_forbidden_expectations.get()),
            (u64::from(ftp), u64::from(!ftp)),
            "ftp: {ftp}"
        );
    }
}

#[test]
fn a_refusal_is_an_error_the_caller_sees() {
    let mut a = with(policy(true), vec![0, 0].into(), false);
    open(&mut a, 41004);
    let mut b = with(policy(false), vec![0, 0].into(), false);
    let s = &a.checkpoint.sink;
    let id = s.store.keys().next().unwrap().0;
    let ip = &s.store[&(id, Module::Ip as u8)].1;
    let l4 = Some((Module::Tcp as u8, s.store[&(id, Module::Tcp as u8)].1.as_slice()));
    assert!(matches!(b.restore(id, ip, l4, None, 10), Err(RestoreError::Forbidden { .. })));
}
