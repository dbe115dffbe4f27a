//! checkpointd reads the dataplane's TOML file: leniently at the top level
//! (the dataplane's tables are not its business) and strictly inside
//! `[checkpoint]`, its own section.

use serde::Deserialize;
pub use shm_layout::CheckpointSection;
use std::net::SocketAddr;
use std::path::Path;

pub use shm_layout::ConfigError;

/// The parts of the file checkpointd looks at.
#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    checkpoint: CheckpointSection,
    #[serde(default)]
    worker: Vec<toml::Value>,
    #[serde(default)]
    conntrack: Conntrack,
    #[serde(default)]
    protected: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
struct Conntrack {
    #[serde(default = "default_conntrack_capacity")]
    capacity: u64,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack { capacity: default_conntrack_capacity() }
    }
}

fn default_conntrack_capacity() -> u64 {
    shm_layout::DEFAULT_CONNTRACK_CAPACITY.into()
}

/// What checkpointd runs with, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub checkpoint: CheckpointSection,
    /// Number of `[[worker]]` entries: one ring each.
    pub workers: u32,
    /// Connection records in the store.
    pub store_capacity: u32,
    /// Where the Prometheus endpoint listens; None when `metrics_listen = ""`.
    pub metrics: Option<SocketAddr>,
    /// The dataplane protects servers (`[[protected]]`): their logs live in
    /// this process's memory.
    pub protects: bool,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, path) = shm_layout::read_config(path)?;
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.into(),
            key: key.into(),
            reason,
        };
        let c = file.checkpoint;
        if file.worker.is_empty() {
            return Err(invalid(
                "worker",
                "no [[worker]] entries: checkpointd needs one ring per dataplane worker".into(),
            ));
        }
        let workers = u32::try_from(file.worker.len())
            .map_err(|_| invalid("worker", "too many workers".into()))?;
        if !c.ring_slots.is_power_of_two() || !(64..=1 << 24).contains(&c.ring_slots) {
            return Err(invalid(
                "checkpoint.ring_slots",
                format!("{} is not a power of two in 64..=16777216", c.ring_slots),
            ));
        }
        let store_capacity = if c.store_capacity == 0 {
            file.conntrack.capacity.saturating_mul(u64::from(workers))
        } else {
            c.store_capacity
        };
        let store_capacity = u32::try_from(store_capacity)
            .ok()
            .filter(|n| (1..=1 << 28).contains(n))
            .ok_or_else(|| {
                invalid(
                    "checkpoint.store_capacity",
                    format!("{store_capacity} connections: need 1..=268435456 (0 means conntrack.capacity x workers)"),
                )
            })?;
        if c.ftp_capacity > 1 << 24 {
            return Err(invalid(
                "checkpoint.ftp_capacity",
                format!("{} exceeds 16777216", c.ftp_capacity),
            ));
        }
        if c.drain_batch == 0 {
            return Err(invalid("checkpoint.drain_batch", "must be at least 1".into()));
        }
        if c.idle_sleep_us > 1_000_000 {
            return Err(invalid(
                "checkpoint.idle_sleep_us",
                format!("{} exceeds one second", c.idle_sleep_us),
            ));
        }
        if c.dir.as_os_str().is_empty() {
            return Err(invalid("checkpoint.dir", "empty path".into()));
        }
        let metrics = parse_metrics_listen(&c.metrics_listen, c.metrics_allow_remote)
            .map_err(|reason| invalid("checkpoint.metrics_listen", reason))?;
        let protects = !file.protected.is_empty();
        Ok(Config { checkpoint: c, workers, store_capacity, metrics, protects })
    }
}

/// `""` is off; otherwise an `IP:port` (no host names: the address must not
/// depend on a resolver at start), loopback unless remote access is allowed.
fn parse_metrics_listen(text: &str, allow_remote: bool) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP:port (e.g. \"127.0.0.1:9108\" or \"[::1]:9108\"); \"\" turns metrics off"))?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "{addr} is not a loopback address and the metrics endpoint has no authentication; set \
             checkpoint.metrics_allow_remote = true to serve it there anyway (and firewall the port)"
        ));
    }
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let c = Config::parse(include_str!("../../config/lazarus.toml"), "config/lazarus.toml")
            .unwrap();
        assert_eq!(c.workers, 1);
        assert_eq!(c.store_capacity, 65536);
        assert!(c.checkpoint.enabled);
        assert_eq!(c.metrics, Some("127.0.0.1:9108".parse().unwrap()));
    }

    #[test]
    fn metrics_listen_is_loopback_unless_allowed() {
        let parse =
            |extra: &str| Config::parse(&format!("[[worker]]\n[checkpoint]\n{extra}\n"), "t");
        assert_eq!(parse("metrics_listen = \"\"").unwrap().metrics, None);
        assert_eq!(
            parse("metrics_listen = \"[::1]:9\"").unwrap().metrics,
            Some("[::1]:9".parse().unwrap())
        );
        let e = parse("metrics_listen = \"0.0.0.0:9108\"").unwrap_err().to_string();
        assert!(
            e.contains("checkpoint.metrics_listen") && e.contains("metrics_allow_remote"),
            "{e}"
        );
        let ok = parse("metrics_listen = \"0.0.0.0:9108\"\nmetrics_allow_remote = true").unwrap();
        assert_eq!(ok.metrics, Some("0.0.0.0:9108".parse().unwrap()));
        let e = parse("metrics_listen = \"localhost:9108\"").unwrap_err().to_string();
        assert!(e.contains("not an IP:port"), "{e}");
    }

    #[test]
    fn defaults_and_derived_capacity() {
        let c = Config::parse("[[worker]]\nlcore=1\n[[worker]]\nlcore=2\n[conntrack]\ncapacity=1000\nftp=true\n[dataplane]\nburst=8", "t").unwrap();
        assert_eq!((c.workers, c.store_capacity), (2, 2000));
        assert_eq!(c.checkpoint, CheckpointSection::default());
    }

    #[test]
    fn strict_inside_checkpoint() {
        let e = Config::parse("[[worker]]\n[checkpoint]\nring_slot = 64\n", "t").unwrap_err();
        assert!(e.to_string().contains("ring_slot"), "{e}");
        let e = Config::parse("[[worker]]\n[checkpoint]\nring_slots = 100\n", "t").unwrap_err();
        assert!(e.to_string().contains("checkpoint.ring_slots"), "{e}");
        let e = Config::parse("[checkpoint]\n", "t").unwrap_err();
        assert!(e.to_string().contains("[[worker]]"), "{e}");
    }
}
