//! The firewall's FTP glue: a pool of FTP portions (only control
//! connections have one), the expectations their commands create, and the
//! rule that only a control connection's own peers may be named.

use crate::config::ConntrackSection;
use crate::conn::{ConnKey, Dir};
use crate::modules::ftp::{DataConn, Expectation, Expectations, FtpEvent, FtpPortion};
use crate::modules::{Conn, NO_FTP};
use crate::parse::IpPacket;
use crate::stats::FwCounters;

pub struct FtpSessions {
    enabled: bool,
    ports: Vec<u16>,
    slots: Box<[FtpPortion]>,
    free: Vec<u32>,
    pub expectations: Expectations,
    /// How long an expectation waits for its data connection, in TSC ticks.
    expectation_ticks: u64,
}

impl FtpSessions {
    pub fn new(c: &ConntrackSection, expectation_ticks: u64) -> FtpSessions {
        let n = if c.ftp { c.ftp_sessions } else { 0 };
        FtpSessions {
            enabled: c.ftp,
            ports: c.ftp_ports.clone(),
            slots: vec![FtpPortion::default(); n as usize].into_boxed_slice(),
            free: (0..n).rev().collect(),
            expectations: Expectations::new(c.expectations as usize),
            expectation_ticks,
        }
    }

    /// Whether a new TCP connection to `dport` is an FTP control connection.
    pub fn wants(&self, dport: u16) -> bool {
        self.enabled && self.ports.contains(&dport)
    }

    /// A fresh portion from the pool for a new control connection, or None
    /// (counted) when the pool is empty.
    pub fn open(&mut self, counters: &FwCounters) -> Option<u32> {
        self.place(FtpPortion::default(), counters)
    }

    /// Places `portion` in the pool (a new or a restored session).
    pub fn place(&mut self, portion: FtpPortion, counters: &FwCounters) -> Option<u32> {
        let i = self.free.pop();
        match i {
            Some(i) => self.slots[i as usize] = portion,
            None => counters.ftp_no_session.add(1),
        }
        i
    }

    /// Gives the portion of a connection that ends back to the pool.
    pub fn release(&mut self, ftp: u32) {
        if ftp != NO_FTP {
            self.free.push(ftp);
        }
    }

    pub fn portion(&self, ftp: u32) -> &FtpPortion {
        &self.slots[ftp as usize]
    }

    /// Sessions in use.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether new connection `p` (key `key`, to `dport`) is a data
    /// connection a control connection announced; the expectation is taken,
    /// so it admits one connection.
    pub fn take_expected(&mut self, key: &ConnKey, p: &IpPacket, dport: u16, now: u64) -> bool {
        let c = DataConn {
            family: p.family,
            zone: key.zone,
            vlan: key.vlan,
            src: &p.src,
            dst: &p.dst,
            dport,
        };
        self.expectations.take(&c, now).is_some()
    }

    /// Feeds a segment of control connection `conn` to its portion; a
    /// PORT/PASV/EPRT/EPSV it completes becomes an expectation.
    pub fn feed(
        &mut self,
        conn: &Conn,
        dir: Dir,
        seq: u32,
        payload: &[u8],
        counters: &FwCounters,
        now: u64,
    ) {
        let portion = &mut self.slots[conn.ftp as usize];
        let r = portion.feed(dir, seq, payload);
        if r.gap {
            counters.ftp_gaps.add(1);
        }
        let Some(ev) = r.event else { return };
        // The two ends of the control connection, as the client and server.
        let (client, server) = if conn.ip.orig_src_is_lo {
            (conn.key.lo_addr, conn.key.hi_addr)
        } else {
            (conn.key.hi_addr, conn.key.lo_addr)
        };
        // Only the control connection's own peers may be named: anything else
        // is an FTP bounce (RFC 2577) and creates no expectation.
        let (src, dst, port) = match ev {
            FtpEvent::Active { addr, port } if addr == client => (server, client, port),
            FtpEvent::Passive { addr, port } if addr == server => (client, server, port),
            FtpEvent::ExtendedPassive { port } => (client, server, port),
            _ => {
                counters.ftp_refused.add(1);
                return;
            }
        };
        let e = Expectation {
            family: conn.key.family,
            zone: conn.key.zone,
            vlan: conn.key.vlan,
            src,
            dst,
            dport: port,
            master: conn.id,
            deadline: now + self.expectation_ticks,
            live: true,
        };
        if self.expectations.add(e, now) {
            counters.ftp_expectations.add(1);
            portion.expectations_made += 1;
        } else {
            counters.expectations_full.add(1);
        }
    }
}
