//! What both processes share of the config file: its errors, how it is
//! read, and the `[checkpoint]` section.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A config file that cannot be used; every message names the file, and the
/// key when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {key}: {reason}")]
    Invalid { path: String, key: String, reason: String },
}

/// The file's text and the path as errors name it.
pub fn read_config(path: &Path) -> Result<(String, String), ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: p.clone(), source })?;
    Ok((text, p))
}

/// `[conntrack] capacity` when the file does not set it: connections per
/// worker (checkpointd sizes its store from it).
pub const DEFAULT_CONNTRACK_CAPACITY: u32 = 65536;

/// `[checkpoint]` of the config file both processes read; every key is
/// documented in docs/CONFIG.md. Here so that the dataplane and checkpointd
/// parse one definition.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// false: the dataplane runs without checkpointd; a restart forgets every connection.
    pub enabled: bool,
    /// Directory of the segments (`rings`, `store`).
    pub dir: PathBuf,
    /// Delta ring slots per worker, a power of two >= 64.
    pub ring_slots: u32,
    /// Connections in the store; 0 = conntrack.capacity x workers.
    pub store_capacity: u64,
    /// FTP portions in the store.
    pub ftp_capacity: u32,
    /// checkpointd's control socket.
    pub control_socket: PathBuf,
    /// Deltas checkpointd drains from one ring per pass.
    pub drain_batch: u32,
    /// How long a starting dataplane waits for checkpointd to be up and drained.
    pub attach_timeout_ms: u64,
    /// checkpointd sleeps this long when every ring was empty (0: busy-poll).
    pub idle_sleep_us: u64,
    /// checkpointd's Prometheus endpoint, `IP:port` ("" turns it off). Only a
    /// loopback address unless `metrics_allow_remote`.
    pub metrics_listen: String,
    /// Allow `metrics_listen` on a non-loopback address (the endpoint has no
    /// authentication: firewall it).
    pub metrics_allow_remote: bool,
    /// A group that may read the segments and use the control socket
    /// (`lazarusctl` without root); "" lets only the daemons' user in.
    pub group: String,
    /// The dataplane's DPDK telemetry socket, scraped on every metrics scrape
    /// for the dataplane's counters ("" turns it off).
    pub dataplane_telemetry: PathBuf,
    /// The copy in a remote store, `[checkpoint.remote]`.
    pub remote: RemoteSection,
}

/// `[checkpoint.remote]`: checkpointd's copy of every connection in Redis,
/// for a reboot or another appliance (docs/CHECKPOINT.md#remote).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteSection {
    /// `redis://host:port` (or `rediss://` for TLS); "" keeps state on this
    /// host only. Never a password in it: see `password_file`.
    pub url: String,
    /// The Redis ACL user ("" is Redis's `default` user).
    pub user: String,
    /// A file holding the user's password (one line); "" sends none.
    pub password_file: PathBuf,
    /// `rediss://` only: the PEM certificate(s) of the authority that signed
    /// Redis's certificate; "" trusts the system's authorities.
    pub tls_ca_file: PathBuf,
    /// `rediss://` only: this appliance's PEM certificate and private key,
    /// for a Redis that asks clients for one (its default,
    /// `tls-auth-clients yes`); both or neither.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// A file of at least 32 random bytes: the HMAC key every portion is
    /// sealed under. Every appliance of a pair needs the same file.
    pub hmac_key_file: PathBuf,
    /// The name this appliance pair's keys live under (`lazarus:{<namespace>:<bucket>}`).
    pub namespace: String,
    /// How long a refresh of a connection already sent waits before it is
    /// sent: later changes in that time travel with it. New connections,
    /// FTP portions and ends go at once.
    pub flush_interval_ms: u64,
    /// Connect and reply timeout.
    pub timeout_ms: u64,
    /// Connections a pipelined write carries at most.
    pub batch: u32,
    /// When the local store is new (the box rebooted): how long the start
    /// waits to restore from the remote store before it goes on without.
    pub restore_timeout_ms: u64,
    /// "active" writes the remote copy; "standby" follows it into the local
    /// store (a hot mirror) until `lazarusctl takeover`.
    pub role: String,
    /// This appliance's name in the remote store (who owns an epoch); ""
    /// is the host name. Every appliance of a pair needs its own.
    pub appliance: String,
    /// A standby refuses to take over when its mirror has not been seen
    /// caught up with the remote store within this many milliseconds.
    pub takeover_max_lag_ms: u64,
}

impl Default for RemoteSection {
    fn default() -> Self {
        RemoteSection {
            url: String::new(),
            user: String::new(),
            password_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            hmac_key_file: PathBuf::new(),
            namespace: "lazarus".into(),
            flush_interval_ms: 2,
            timeout_ms: 1000,
            batch: 512,
            restore_timeout_ms: 10_000,
            role: "active".into(),
            appliance: String::new(),
            takeover_max_lag_ms: 500,
        }
    }
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            enabled: true,
            dir: PathBuf::from("/dev/hugepages/lazarus"),
            ring_slots: 65536,
            store_capacity: 0,
            ftp_capacity: 4096,
            control_socket: PathBuf::from("/run/lazarus/checkpointd.sock"),
            drain_batch: 1024,
            attach_timeout_ms: 5000,
            idle_sleep_us: 50,
            metrics_listen: "127.0.0.1:9108".into(),
            metrics_allow_remote: false,
            group: String::new(),
            dataplane_telemetry: PathBuf::new(),
            remote: RemoteSection::default(),
        }
    }
}
