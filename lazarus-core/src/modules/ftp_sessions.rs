//! The firewall's FTP glue: a pool of FTP portions (only control
//! connections have one), the expectations their commands create, and the
//! rule that only a control connection's own peers may be named.

use crate::conn::{ConnKey, Dir};
use crate::modules::ftp::{DataConn, Expectation, Expectations, FtpEvent, FtpPortion};
use crate::modules::{Conn, NO_FTP};
use crate::parse::IpPacket;

pub struct FtpSessions {
    enabled: bool,
    ports: Vec<u16>,
    slots: Box<[FtpPortion]>,
    free: Vec<u32>,
    pub expectations: Expectations,
    /// How long an expectation waits for its data connection, in TSC ticks.
    expectation_ticks: u64,
}

/// How a pool of FTP sessions is sized and when it applies.
#[derive(Debug, Clone)]
pub struct FtpConfig {
    /// The module is on.
    pub enabled: bool,
    /// Server ports whose connections are FTP control connections.
    pub ports: Vec<u16>,
    pub sessions: u32,
    pub expectations: u32,
    /// Live expectations one control connection may hold.
    pub per_session: u32,
    /// How long an expectation waits for its data connection, in TSC ticks.
    pub expectation_ticks: u64,
}

/// What feeding a control connection's segment did, for the caller to count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes were missing before the segment: the line state was reset.
    pub gap: bool,
    pub expectation: Option<Expected>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A data connection is now expected.
    Made,
    /// The command named a host other than the connection's own peers (an
    /// FTP bounce, RFC 2577): refused.
    Refused,
    /// No room for another expectation.
    Full,
}

impl FtpSessions {
    pub fn new(c: &FtpConfig) -> FtpSessions {
        let n = if c.enabled { c.sessions } else { 0 };
        FtpSessions {
            enabled: c.enabled,
            ports: c.ports.clone(),
            slots: vec![FtpPortion::default(); n as usize].into_boxed_slice(),
            free: (0..n).rev().collect(),
            expectations: Expectations::new(c.expectations as usize, c.per_session as usize),
            expectation_ticks: c.expectation_ticks,
        }
    }

    /// Whether a new TCP connection to `dport` is an FTP control connection.
    pub fn wants(&self, dport: u16) -> bool {
        self.enabled && self.ports.contains(&dport)
    }

    /// A fresh portion from the pool for a new control connection, or None
    /// when the pool is empty.
    pub fn open(&mut self) -> Option<u32> {
        self.place(FtpPortion::default())
    }

    /// Places `portion` in the pool (a new or a restored session), or None
    /// when the pool is empty.
    pub fn place(&mut self, portion: FtpPortion) -> Option<u32> {
        let i = self.free.pop()?;
        self.slots[i as usize] = portion;
        Some(i)
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
    pub fn feed(&mut self, conn: &Conn, dir: Dir, seq: u32, payload: &[u8], now: u64) -> Fed {
        let portion = &mut self.slots[conn.ftp as usize];
        let r = portion.feed(dir, seq, payload);
        let mut fed = Fed { gap: r.gap, expectation: None };
        let Some(ev) = r.event else { return fed };
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
                fed.expectation = Some(Expected::Refused);
                return fed;
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
        fed.expectation = Some(if self.expectations.add(e, now) {
            portion.expectations_made += 1;
            Expected::Made
        } else {
            Expected::Full
        });
        fed
    }
}
