//! Rebuilding connections from checkpointd's store before any port starts:
//! each module decodes its own portion, and a record that does not hold
//! together is refused and counted, never applied.

use crate::conn::ConnId;
use crate::modules::ftp::FtpRecord;
use crate::modules::icmp::IcmpPortion;
use crate::modules::ip::IpRecord;
use crate::modules::tcp::TcpPortion;
use crate::modules::udp::UdpPortion;
use crate::modules::{Conn, L4Portion, Module, NO_FTP};
use crate::parse::{IpPacket, TcpHdr, L4};
use crate::policy::{Action, Policy};
use crate::portion::{Portion, PortionError};
use crate::ports::PortMap;
use shm_layout::StoredConn;

/// One stored connection's portions, as checkpointd's store holds them.
#[derive(Debug, Clone, Copy)]
pub struct StoredPortions<'a> {
    pub id: u64,
    pub ip: Option<&'a [u8]>,
    /// (module, bytes) of the tcp, udp or icmp portion.
    pub l4: Option<(u8, &'a [u8])>,
    pub ftp: Option<&'a [u8]>,
    /// The FTP portion was rebased from another boot (version 0): the
    /// deadlines inside are another clock's.
    pub ftp_rebased: bool,
}

/// Why a stored connection could not be rebuilt (it is skipped and counted).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Portion(#[from] PortionError),
    #[error(
        "stored id {stored:016x} is not the id of the key it carries ({computed}): the record is damaged"
    )]
    IdMismatch { stored: u64, computed: ConnId },
    #[error("a stored layer-4 portion of module {0} is not one this build knows")]
    UnknownModule(u8),
    #[error(
        "the connection table is full (conntrack.capacity): raise it to restore every stored connection"
    )]
    TableFull,
    #[error(
        "protocol {proto} needs {wanted} portion but the store holds {found}: the record is partial or damaged, so the connection is not restored (its endpoints must reconnect)"
    )]
    L4Mismatch { proto: u8, wanted: &'static str, found: &'static str },
    #[error(
        "it crossed bridge {bridge} (a position in an older build's config) which the config no longer has: it is not restored"
    )]
    BridgeGone { bridge: u16 },
    #[error(
        "it entered a port (zone {zone:#06x}, port {ingress:#06x}) the config no longer has: a bridge or port was renamed or removed, so it is not restored"
    )]
    PortGone { zone: u16, ingress: u16 },
    #[error("the policy now refuses it ({by}): it is not restored")]
    Forbidden { by: String },
}

/// What a worker's restore did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreSummary {
    pub restored: u64,
    pub skipped: u64,
    /// Not restored because today's policy refuses them.
    pub forbidden: u64,
}

/// A connection decoded from its portions; its FTP record (if any) is
/// apart, for the firewall to place in its pool.
#[derive(Clone, Copy)]
pub struct Rebuilt {
    pub conn: Conn,
    pub ftp: Option<FtpRecord>,
    /// The id the store holds it under, when translating an older format
    /// gave it another: those records must go, and it must be stored anew.
    pub stored_as: Option<u64>,
}

/// Decodes one stored connection. The id must be the id of the key the ip
/// portion carries; `timeout` gives the fresh timeout of its state (the old
/// process's last-seen time is not checkpointed: it changes per packet).
pub fn rebuild(
    s: &StoredPortions<'_>,
    now: u64,
    ports: &PortMap,
    timeout: impl FnOnce(&L4Portion) -> u64,
) -> Result<Rebuilt, RestoreError> {
    let ip = s.ip.ok_or(RestoreError::Portion(PortionError::Truncated { module: "ip", len: 0 }))?;
    let IpRecord { mut key, ip, format } = IpRecord::decode(ip)?;
    let stored = key.id();
    if stored.0 != s.id {
        return Err(RestoreError::IdMismatch { stored: s.id, computed: stored });
    }
    if format < 2 {
        // Format 1 named the bridge by its position in the config.
        let bridge = key.zone;
        key.zone = *ports
            .bridges_in_order
            .get(usize::from(bridge))
            .ok_or(RestoreError::BridgeGone { bridge })?;
    }
    let computed = key.id();
    let stored_as = (computed != stored).then_some(stored.0);
    let wanted = l4_module_of(key.proto, key.family);
    let found = s.l4.map(|(m, _)| m);
    if found != wanted.map(|m| m as u8) {
        return Err(RestoreError::L4Mismatch {
            proto: key.proto,
            wanted: wanted.map_or("no layer-4", Module::name),
            found: match found.map(Module::from_id) {
                None => "none",
                Some(Some(m)) => m.name(),
                Some(None) => "unknown",
            },
        });
    }
    let l4 = match s.l4 {
        None => L4Portion::Other,
        Some((m, b)) => match Module::from_id(m) {
            Some(Module::Tcp) => L4Portion::Tcp(TcpPortion::decode(b)?),
            Some(Module::Udp) => L4Portion::Udp(UdpPortion::decode(b)?),
            Some(Module::Icmp) => L4Portion::Icmp(IcmpPortion::decode(b)?),
            _ => return Err(RestoreError::UnknownModule(m)),
        },
    };
    let deadline = now + timeout(&l4);
    let conn = Conn { key, id: computed, deadline, ip, l4, ftp: NO_FTP, dirty: 0, stored: true };
    let ftp = match s.ftp {
        Some(b) => {
            let mut r = FtpRecord::decode(b)?;
            for e in &mut r.expectations[..r.count] {
                e.master = computed;
                // A data connection crosses its control connection's bridge
                // and VLANs.
                e.zone = key.zone;
                e.vlan = key.vlan;
            }
            Some(r)
        }
        None => None,
    };
    Ok(Rebuilt { conn, ftp, stored_as })
}

/// The port the connection's first packet was sent to.
pub fn server_port(conn: &Conn) -> u16 {
    if conn.ip.orig_src_is_lo {
        conn.key.hi_port
    } else {
        conn.key.lo_port
    }
}

/// Whether today's config would have let `conn` in: it must still cross a
/// configured port, and, unless an expectation admitted it, the policy of
/// the port it entered must accept its first packet. A connection whose
/// ingress was not recorded passes if either port of its bridge accepts it.
pub fn admitted(conn: &Conn, policy: &Policy, ports: &PortMap) -> Result<(), RestoreError> {
    let k = &conn.key;
    let mut entries = ports.entries(k.zone, conn.ip.ingress).peekable();
    if entries.peek().is_none() {
        return Err(RestoreError::PortGone { zone: k.zone, ingress: conn.ip.ingress });
    }
    if conn.ip.related {
        return Ok(());
    }
    let ((src, sport), (dst, dport)) = if conn.ip.orig_src_is_lo {
        ((k.lo_addr, k.lo_port), (k.hi_addr, k.hi_port))
    } else {
        ((k.hi_addr, k.hi_port), (k.lo_addr, k.lo_port))
    };
    let l4 = match conn.l4 {
        L4Portion::Tcp(_) => L4::Tcp(TcpHdr { sport, dport, ..Default::default() }),
        L4Portion::Udp(_) => L4::Udp { sport, dport },
        _ => L4::Other,
    };
    let first = IpPacket { vlan: k.vlan, proto: k.proto, src, dst, l4, ..Default::default() };
    let mut refused = None;
    for p in entries {
        match policy.decide(p, &first) {
            (Action::Accept, _) => return Ok(()),
            (Action::Drop, rule) => refused = Some((p, rule)),
        }
    }
    let by = match refused {
        Some((_, Some(r))) => format!("rule {:?}", policy.rules[r].name),
        Some((p, None)) => {
            let zone = policy.port_zone.get(p).copied().flatten();
            format!("zone {:?}'s default", zone.map_or("", |z| policy.zones[z].name.as_str()))
        }
        None => "no port".into(),
    };
    Err(RestoreError::Forbidden { by })
}

/// The layer-4 module a connection of `proto` carries (none for protocols
/// tracked by addresses alone), as the firewall creates it.
fn l4_module_of(proto: u8, family: u8) -> Option<Module> {
    use crate::parse::proto as p;
    match (proto, family) {
        (p::TCP, _) => Some(Module::Tcp),
        (p::UDP, _) => Some(Module::Udp),
        (p::ICMP, 4) | (p::ICMPV6, 6) => Some(Module::Icmp),
        _ => None,
    }
}

/// The portions of a connection copied out of the store.
pub fn portions_of(c: &StoredConn) -> StoredPortions<'_> {
    StoredPortions {
        id: c.conn_id,
        ip: c.ip().map(|p| p.payload()),
        l4: c.l4().map(|p| (p.module, p.payload())),
        ftp: c.ftp().map(|p| p.payload()),
        ftp_rebased: c.ftp().is_some_and(|p| p.version == 0),
    }
}
