//! The `[conntrack]` section of the config: table size, timeouts, modules.
//! docs/CONFIG.md documents every key.

use serde::Deserialize;

/// Connection tracking: table size, timeouts, modules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackSection {
    /// Track connections and apply the policy; false makes a stateless bridge.
    pub enabled: bool,
    /// Connections each worker can track; a full table drops new connections.
    pub capacity: u32,
    /// Table slots the expiry sweep looks at per poll round.
    pub sweep_batch: u32,
    /// Follow FTP control channels and admit their data connections as related.
    pub ftp: bool,
    /// TCP ports whose connections are FTP control channels.
    pub ftp_ports: Vec<u16>,
    /// FTP control connections each worker can follow at once.
    pub ftp_sessions: u32,
    /// Pending data-connection expectations per worker.
    pub expectations: u32,
    /// Live expectations one control connection may hold; a further one
    /// replaces its oldest (Linux's `max_expected`, `evict_oldest_expect`).
    pub expectations_per_session: u32,
    /// Seconds an expectation waits for its data connection.
    pub expectation_timeout: u64,
    /// Non-first fragments remembered per worker (first fragments' verdicts).
    pub fragments: u32,
    pub timeouts: Timeouts,
}

impl Default for ConntrackSection {
    fn default() -> Self {
        ConntrackSection {
            enabled: true,
            capacity: shm_layout::DEFAULT_CONNTRACK_CAPACITY,
            sweep_batch: 8,
            ftp: true,
            ftp_ports: vec![21],
            ftp_sessions: 1024,
            expectations: 256,
            expectations_per_session: 2,
            expectation_timeout: 30,
            fragments: 1024,
            timeouts: Timeouts::default(),
        }
    }
}

/// Seconds of silence after which a connection expires (Linux conntrack's defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub tcp_syn_sent: u64,
    pub tcp_syn_recv: u64,
    pub tcp_established: u64,
    pub tcp_fin_wait: u64,
    pub tcp_close_wait: u64,
    pub tcp_last_ack: u64,
    pub tcp_time_wait: u64,
    pub tcp_close: u64,
    /// UDP before the first reply.
    pub udp: u64,
    /// UDP after a reply.
    pub udp_stream: u64,
    pub icmp: u64,
    /// Any other IP protocol.
    pub generic: u64,
    /// Non-first fragments wait this long for their first fragment's verdict.
    pub fragment: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        use crate::modules::tcp::{default_timeout_secs as t, TcpState as S};
        Timeouts {
            tcp_syn_sent: t(S::SynSent),
            tcp_syn_recv: t(S::SynRecv),
            tcp_established: t(S::Established),
            tcp_fin_wait: t(S::FinWait),
            tcp_close_wait: t(S::CloseWait),
            tcp_last_ack: t(S::LastAck),
            tcp_time_wait: t(S::TimeWait),
            tcp_close: t(S::Close),
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
            fragment: 30,
        }
    }
}

/// A protected service (`[[protected]]`, issue 21): a TCP server behind the
/// firewall whose clients do not notice when it crashes and restarts.
/// IPv4 or IPv6; untagged or VLAN-tagged frames.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectedService {
    /// The server's address and port.
    pub addr: std::net::IpAddr,
    pub port: u16,
    /// Client bytes logged per connection; a connection that sends more is
    /// no longer protected (counted).
    pub log_bound: u32,
    /// Protected connections each worker holds at once; more are forwarded
    /// unprotected (counted).
    pub connections: u32,
    /// How long a server FIN or RST waits for word that the service is
    /// down before it is released to the client as a close.
    pub hold_ms: u64,
    /// The keep-alive's interval while the server is down.
    pub keepalive_ms: u64,
    /// How long clients are kept waiting for the server before both sides
    /// are reset.
    pub down_max_ms: u64,
    /// What of the client log can be dropped before the connection ends.
    pub truncation: Truncation,
    /// With truncation: how long the server must have sent nothing before
    /// its answer is taken as complete (0: at once, for a service whose
    /// every answer is one segment).
    pub truncate_idle_ms: u64,
    /// How long a spliced connection closed both ways keeps its entry (its
    /// rewrite) after its last segment: its last ACK and FINs sent again
    /// come within it.
    pub close_linger_ms: u64,
    /// Wire detection: the firewall's own address and MAC on the server's
    /// side, from which it probes the service to tell a crash from a close
    /// without the hook. Both or neither; the address of the service's
    /// family.
    pub probe_addr: Option<std::net::IpAddr>,
    pub probe_mac: Option<Mac>,
    /// How long a probe waits for its answer (it is sent twice).
    pub probe_timeout_ms: u64,
    /// How long after a server FIN or RST the service is probed: a
    /// crashing process may close its connections before its listening
    /// socket.
    pub probe_delay_ms: u64,
    /// While clients wait for the service, how often it is probed.
    pub probe_interval_ms: u64,
    /// Where a client's bytes must be before the server's acknowledgment
    /// of them reaches the client.
    pub output_commit: OutputCommit,
}

/// How durable a client's bytes are before the server's acknowledgment of
/// them is released (`output_commit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputCommit {
    /// In the worker's delta ring (checkpointd's memory): survives the
    /// dataplane's death.
    #[default]
    Local,
    /// In the remote store too (`[checkpoint.remote]`): survives the box's.
    Remote,
}

/// An Ethernet address, written `02:00:00:00:00:fa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let part = parts.next().filter(|p| p.len() == 2);
            *b = part
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{s:?} is not a MAC address like 02:00:00:00:00:fa"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address like 02:00:00:00:00:fa"));
        }
        Ok(Mac(m))
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A protected service's truncation policy (`truncation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// The whole session is kept (up to `log_bound`), so a replay rebuilds
    /// whatever state the server built from it (a redis session whose
    /// server keeps nothing on disk).
    #[default]
    None,
    /// The service answers each request and keeps no per-connection state
    /// between requests (or keeps it where a restart finds it): the log is
    /// dropped wherever every client byte is answered and every answer
    /// acknowledged, and a replay sends only what came after.
    RequestResponse,
}

impl Default for ProtectedService {
    fn default() -> Self {
        ProtectedService {
            addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port: 0,
            log_bound: 1 << 20,
            connections: 1024,
            hold_ms: 1000,
            keepalive_ms: 1000,
            down_max_ms: 60_000,
            truncation: Truncation::None,
            truncate_idle_ms: 10,
            close_linger_ms: 60_000,
            probe_addr: None,
            probe_mac: None,
            probe_timeout_ms: 100,
            probe_delay_ms: 50,
            probe_interval_ms: 50,
            output_commit: OutputCommit::Local,
        }
    }
}
