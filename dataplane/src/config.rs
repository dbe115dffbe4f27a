//! The dataplane's TOML configuration, and its validation into a plan of who
//! polls what. Every error names the key it is about; docs/CONFIG.md documents
//! every key.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

pub use shm_layout::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(default)]
    pub port: Vec<PortConfig>,
    #[serde(default)]
    pub bridge: Vec<BridgeConfig>,
    #[serde(default)]
    pub worker: Vec<WorkerConfig>,
    #[serde(default)]
    pub conntrack: ConntrackSection,
    #[serde(default)]
    pub zone: Vec<lazarus_core::policy::ZoneConfig>,
    #[serde(default)]
    pub rule: Vec<lazarus_core::policy::RuleConfig>,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    /// Protected services (issue 21): their clients do not notice a crash.
    #[serde(default)]
    pub protected: Vec<ProtectedService>,
}

pub use shm_layout::CheckpointSection;

pub use lazarus_core::config::{ConntrackSection, ProtectedService, Timeouts};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// Packets a worker takes from a queue per poll.
    pub burst: u16,
    /// Mbufs in the packet pool.
    pub mbufs: u32,
    /// Per-lcore mbuf cache.
    pub mbuf_cache: u32,
    /// Bytes of each mbuf's data buffer, headroom (128) included; DPDK's
    /// default by default. Smaller buffers let a pool hold many small frames
    /// (the 1 000 000-flow benchmark replays a pcap held in mbufs).
    pub mbuf_data_room: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Period of the one-line stats log; 0 turns it off.
    pub stats_interval_ms: u64,
    /// When a worker found nothing in `idle_polls` consecutive rounds it sleeps
    /// this long; 0 busy-polls forever (best latency, one whole core).
    pub idle_sleep_us: u64,
    pub idle_polls: u32,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            burst: 32,
            mbufs: 16383,
            mbuf_cache: 256,
            mbuf_data_room: 2176,
            rx_desc: 1024,
            tx_desc: 1024,
            stats_interval_ms: 5000,
            idle_sleep_us: 0,
            idle_polls: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The name the rest of the config uses.
    pub name: String,
    /// The DPDK device name: a vdev (`net_tap0`) or a PCI address (`0000:03:00.0`).
    pub device: String,
    #[serde(default = "one")]
    pub rx_queues: u16,
    #[serde(default = "yes")]
    pub promiscuous: bool,
    /// Policy zone of the port (a `[[zone]]` name); absent: no policy, every
    /// valid connection is accepted.
    pub zone: Option<String>,
}

fn one() -> u16 {
    1
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Two port names; what arrives on one leaves on the other.
    pub ports: Vec<String>,
    /// The conntrack zone of the flows crossing it, kept in their stored
    /// state: renaming it strands them. Absent: its two port names.
    pub name: Option<String>,
}

impl BridgeConfig {
    /// The name its zone id derives from.
    pub fn zone_name(&self) -> String {
        match (&self.name, self.ports.as_slice()) {
            (Some(n), _) => n.clone(),
            (None, [a, b]) => lazarus_core::ports::default_bridge_name(a, b),
            (None, _) => self.ports.join("+"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub lcore: u32,
    /// RX queues this worker polls, as "port:queue".
    pub rx: Vec<String>,
}

/// One RX queue a worker polls and where its packets leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    pub rx_port: usize,
    pub rx_queue: u16,
    pub tx_port: usize,
    pub tx_queue: u16,
}

#[derive(Debug, Clone)]
pub struct WorkerPlan {
    pub lcore: u32,
    pub lanes: Vec<Lane>,
}

/// A validated config: ports by index, and every worker's lanes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: Config,
    /// Each worker owns one TX queue on every port, so TX needs no lock.
    pub tx_queues: u16,
    pub workers: Vec<WorkerPlan>,
    pub policy: lazarus_core::policy::Policy,
    /// The stable ids of the ports and of the bridges (zones) they are in.
    pub ports: lazarus_core::ports::PortMap,
}

impl Plan {
    /// Mbufs the rings, bursts and caches can hold at once: the pool must be larger.
    pub fn mbufs_needed(&self) -> u64 {
        let d = &self.config.dataplane;
        let rx: u64 = self.config.port.iter().map(|p| p.rx_queues as u64 * d.rx_desc as u64).sum();
        let tx = self.config.port.len() as u64 * self.tx_queues as u64 * d.tx_desc as u64;
        let lcores = self.workers.len() as u64 + 1;
        rx + tx + lcores * (d.mbuf_cache as u64 + crate::dpdk::MAX_BURST as u64)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        let (text, p) = shm_layout::read_config(path)?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Plan, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)
    }

    /// `[[protected]]`: each entry names a server, bounds what it may hold,
    /// and needs conntrack (protection follows tracked connections).
    fn check_protected(&self) -> Result<(), ConfigError> {
        let bad = |i: usize, key: &str, reason: String| ConfigError::Invalid {
            path: String::new(),
            key: format!("protected[{i}].{key}"),
            reason,
        };
        if self.protected.len() > lazarus_core::stats::MAX_PROTECTED {
            return Err(bad(
                lazarus_core::stats::MAX_PROTECTED,
                "addr",
                format!("at most {} protected services", lazarus_core::stats::MAX_PROTECTED),
            ));
        }
        for (i, p) in self.protected.iter().enumerate() {
            if !self.conntrack.enabled {
                return Err(bad(i, "addr", "needs conntrack.enabled = true".into()));
            }
            let mapped = |a: &std::net::IpAddr| matches!(a, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            if mapped(&p.addr) || p.probe_addr.as_ref().is_some_and(mapped) {
                let key = if mapped(&p.addr) { "addr" } else { "probe_addr" };
                return Err(bad(i, key, "an IPv4 address mapped into IPv6 (::ffff:a.b.c.d): write the IPv4 address itself".into()));
            }
            if p.addr.is_unspecified() || p.port == 0 {
                return Err(bad(
                    i,
                    if p.port == 0 { "port" } else { "addr" },
                    "the server's address (IPv4 or IPv6) and TCP port are required".into(),
                ));
            }
            if p.log_bound == 0 || p.connections == 0 {
                return Err(bad(
                    i,
                    if p.log_bound == 0 { "log_bound" } else { "connections" },
                    "must be at least 1".into(),
                ));
            }
            if p.log_bound > 1 << 26 || p.connections > 1 << 16 {
                return Err(bad(
                    i,
                    if p.log_bound > 1 << 26 { "log_bound" } else { "connections" },
                    "log_bound is at most 67108864 bytes and connections at most 65536 (per worker)".into(),
                ));
            }
            const DAY_MS: u64 = 86_400_000;
            for (key, v) in [
                ("hold_ms", p.hold_ms),
                ("keepalive_ms", p.keepalive_ms),
                ("down_max_ms", p.down_max_ms),
                ("close_linger_ms", p.close_linger_ms),
            ] {
                if v == 0 || v > DAY_MS {
                    return Err(bad(i, key, format!("{v} is out of range 1..={DAY_MS}")));
                }
            }
            match (p.probe_addr, p.probe_mac) {
                (None, None) => {}
                (Some(a), Some(_)) if a.is_ipv4() != p.addr.is_ipv4() => {
                    return Err(bad(i, "probe_addr", format!("{a} is not of the service's family ({}): probes go from an address in the server's subnet", p.addr)));
                }
                (Some(a), Some(m)) => {
                    let broadcast = matches!(a, std::net::IpAddr::V4(v4) if v4.is_broadcast());
                    if a.is_unspecified()
                        || broadcast
                        || a.is_multicast()
                        || a.is_loopback()
                        || a == p.addr
                    {
                        return Err(bad(i, "probe_addr", format!("{a} cannot be the firewall's own address: take an unused unicast address in the server's subnet")));
                    }
                    if m.0[0] & 1 != 0 || m.0 == [0; 6] {
                        return Err(bad(i, "probe_mac", "must be a unicast MAC, such as a locally administered 02:xx:xx:xx:xx:xx".into()));
                    }
                    if let Some(q) = self.protected[..i]
                        .iter()
                        .find(|q| q.probe_addr == Some(a) && q.probe_mac != Some(m))
                    {
                        return Err(bad(
                            i,
                            "probe_mac",
                            format!(
                                "{a} is given another MAC by the service {}:{}",
                                q.addr, q.port
                            ),
                        ));
                    }
                }
                (Some(_), None) => {
                    return Err(bad(i, "probe_mac", "probe_addr needs probe_mac".into()))
                }
                (None, Some(_)) => {
                    return Err(bad(i, "probe_addr", "probe_mac needs probe_addr".into()))
                }
            }
            for (key, v) in [
                ("probe_timeout_ms", p.probe_timeout_ms),
                ("probe_interval_ms", p.probe_interval_ms),
            ] {
                if v == 0 || v > 60_000 {
                    return Err(bad(i, key, format!("{v} is out of range 1..=60000")));
                }
            }
            // The verdict (two SYNs, perhaps behind another probe's two)
            // comes before the hold runs out.
            let verdict_ms = p.probe_delay_ms.saturating_add(p.probe_timeout_ms.saturating_mul(4));
            if p.probe_addr.is_some() && verdict_ms >= p.hold_ms {
                return Err(bad(i, "probe_delay_ms", format!("probe_delay_ms + 4 × probe_timeout_ms ({verdict_ms}) must be below hold_ms ({}): a held FIN or RST would be released before its probe's verdict", p.hold_ms)));
            }
            if p.output_commit == lazarus_core::config::OutputCommit::Remote
                && (!self.checkpoint.enabled || self.checkpoint.remote.url.is_empty())
            {
                return Err(bad(i, "output_commit", "\"remote\" needs checkpoint.enabled and a remote store ([checkpoint.remote] url)".into()));
            }
            if p.truncate_idle_ms > 60_000 {
                return Err(bad(
                    i,
                    "truncate_idle_ms",
                    format!("{} is out of range 0..=60000", p.truncate_idle_ms),
                ));
            }
            if self.conntrack.ftp && self.conntrack.ftp_ports.contains(&p.port) {
                return Err(bad(
                    i,
                    "port",
                    format!("{} is an FTP port (conntrack.ftp_ports): an FTP session cannot be replayed", p.port),
                ));
            }
            if self.protected[..i].iter().any(|q| (q.addr, q.port) == (p.addr, p.port)) {
                return Err(bad(i, "addr", format!("{}:{} is protected twice", p.addr, p.port)));
            }
        }
        Ok(())
    }

    fn validate(self, path: &str) -> Result<Plan, ConfigError> {
        let bad =
            |key: String, reason: String| ConfigError::Invalid { path: path.into(), key, reason };
        let d = &self.dataplane;
        if d.burst == 0 || d.burst as usize > crate::dpdk::MAX_BURST {
            return Err(bad(
                "dataplane.burst".into(),
                format!("{} is out of range 1..={}", d.burst, crate::dpdk::MAX_BURST),
            ));
        }
        if d.mbuf_cache > 512 {
            return Err(bad(
                "dataplane.mbuf_cache".into(),
                format!("{} is above DPDK's limit of 512", d.mbuf_cache),
            ));
        }
        if d.rx_desc < 32 || d.tx_desc < 32 {
            return Err(bad(
                if d.rx_desc < 32 { "dataplane.rx_desc" } else { "dataplane.tx_desc" }.into(),
                "must be at least 32".into(),
            ));
        }
        if self.port.is_empty() {
            return Err(bad(
                "port".into(),
                "no [[port]] is configured; name at least two ports and bridge them".into(),
            ));
        }
        if self.port.len() > crate::stats::MAX_PORTS {
            return Err(bad(
                "port".into(),
                format!(
                    "{} ports; DPDK here drives at most {}",
                    self.port.len(),
                    crate::stats::MAX_PORTS
                ),
            ));
        }
        if self.worker.len() > crate::shared::MAX_WORKERS {
            return Err(bad(
                "worker".into(),
                format!("{} workers; at most {}", self.worker.len(), crate::shared::MAX_WORKERS),
            ));
        }
        let mut by_name = HashMap::new();
        for (i, p) in self.port.iter().enumerate() {
            if p.name.is_empty() || p.name.contains(':') {
                return Err(bad(
                    format!("port[{i}].name"),
                    format!("{:?} must be non-empty and contain no ':'", p.name),
                ));
            }
            if by_name.insert(p.name.as_str(), i).is_some() {
                return Err(bad(
                    format!("port[{i}].name"),
                    format!("port {:?} is defined twice", p.name),
                ));
            }
            if p.rx_queues == 0 {
                return Err(bad(format!("port[{i}].rx_queues"), "must be at least 1".into()));
            }
            if self.port[..i].iter().any(|q| q.device == p.device) {
                return Err(bad(
                    format!("port[{i}].device"),
                    format!("device {:?} is used by two ports", p.device),
                ));
            }
        }
        let mut peer: Vec<Option<usize>> = vec![None; self.port.len()];
        for (i, b) in self.bridge.iter().enumerate() {
            let key = format!("bridge[{i}].ports");
            if b.ports.len() != 2 {
                return Err(bad(
                    key,
                    format!("a bridge joins exactly two ports, got {}", b.ports.len()),
                ));
            }
            let mut ids = [0; 2];
            for (k, name) in b.ports.iter().enumerate() {
                ids[k] = *by_name
                    .get(name.as_str())
                    .ok_or_else(|| bad(key.clone(), format!("unknown port {name:?}")))?;
                if peer[ids[k]].is_some() {
                    return Err(bad(
                        key.clone(),
                        format!("port {name:?} is already in another bridge"),
                    ));
                }
            }
            if ids[0] == ids[1] {
                return Err(bad(key, "a port cannot be bridged to itself".into()));
            }
            peer[ids[0]] = Some(ids[1]);
            peer[ids[1]] = Some(ids[0]);
        }
        if let Some(i) = peer.iter().position(Option::is_none) {
            return Err(bad(
                "bridge".into(),
                format!("port {:?} is in no bridge; every port needs a peer", self.port[i].name),
            ));
        }
        if self.worker.is_empty() {
            return Err(bad(
                "worker".into(),
                "no [[worker]] is configured; give each RX queue to a worker lcore".into(),
            ));
        }
        let mut owner: HashMap<(usize, u16), usize> = HashMap::new();
        let mut workers = Vec::new();
        let mut lcores = HashMap::new();
        for (w, wc) in self.worker.iter().enumerate() {
            if let Some(other) = lcores.insert(wc.lcore, w) {
                return Err(bad(
                    format!("worker[{w}].lcore"),
                    format!("lcore {} is already used by worker[{other}]", wc.lcore),
                ));
            }
            if wc.rx.is_empty() {
                return Err(bad(
                    format!("worker[{w}].rx"),
                    "a worker must poll at least one RX queue".into(),
                ));
            }
            let mut lanes = Vec::new();
            for (r, spec) in wc.rx.iter().enumerate() {
                let key = format!("worker[{w}].rx[{r}]");
                let (pname, q) = spec
                    .rsplit_once(':')
                    .ok_or_else(|| bad(key.clone(), format!("{spec:?} is not \"port:queue\"")))?;
                let port = *by_name
                    .get(pname)
                    .ok_or_else(|| bad(key.clone(), format!("unknown port {pname:?}")))?;
                let queue: u16 = q
                    .parse()
                    .map_err(|_| bad(key.clone(), format!("queue {q:?} is not a number")))?;
                if queue >= self.port[port].rx_queues {
                    return Err(bad(
                        key,
                        format!(
                            "port {pname:?} has {} RX queue(s); queue {queue} does not exist",
                            self.port[port].rx_queues
                        ),
                    ));
                }
                if let Some(other) = owner.insert((port, queue), w) {
                    return Err(bad(key, format!("{spec} is already polled by worker[{other}]")));
                }
                lanes.push(Lane {
                    rx_port: port,
                    rx_queue: queue,
                    tx_port: peer[port].expect("checked above"),
                    tx_queue: w as u16,
                });
            }
            workers.push(WorkerPlan { lcore: wc.lcore, lanes });
        }
        for (i, p) in self.port.iter().enumerate() {
            for q in 0..p.rx_queues {
                if !owner.contains_key(&(i, q)) {
                    return Err(bad("worker".into(), format!("RX queue {}:{q} is polled by no worker; its packets would never leave the NIC", p.name)));
                }
            }
        }
        let c = &self.conntrack;
        if c.capacity == 0 || c.capacity > 1 << 26 {
            return Err(bad(
                "conntrack.capacity".into(),
                format!("{} is out of range 1..=67108864", c.capacity),
            ));
        }
        if c.sweep_batch == 0 {
            return Err(bad(
                "conntrack.sweep_batch".into(),
                "must be at least 1, or connections never expire".into(),
            ));
        }
        if c.ftp && (c.ftp_sessions == 0 || c.expectations == 0 || c.expectations_per_session == 0)
        {
            return Err(bad(
                "conntrack.ftp_sessions".into(),
                "ftp = true needs ftp_sessions, expectations and expectations_per_session of at least 1"
                    .into(),
            ));
        }
        self.check_protected().map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => bad(key, reason),
            e => e,
        })?;
        let k = &self.checkpoint;
        if !k.ring_slots.is_power_of_two() || k.ring_slots < 64 {
            return Err(bad(
                "checkpoint.ring_slots".into(),
                format!("{} must be a power of two, at least 64", k.ring_slots),
            ));
        }
        let port_zones: Vec<Option<String>> = self.port.iter().map(|p| p.zone.clone()).collect();
        let policy = lazarus_core::policy::Policy::compile(&self.zone, &self.rule, &port_zones)
            .map_err(|(key, reason)| bad(key, reason))?;
        // Stored state names bridges and ports by ids of their names: two
        // names with one id would mix two zones' connections.
        use lazarus_core::ports::stable_id;
        let mut ports = lazarus_core::ports::PortMap {
            zone: vec![0; self.port.len()],
            id: self.port.iter().map(|p| stable_id(&p.name)).collect(),
            bridges_in_order: Vec::new(),
        };
        for (i, p) in self.port.iter().enumerate() {
            if let Some(j) = ports.id[..i].iter().position(|&x| x == ports.id[i]) {
                return Err(bad(
                    format!("port[{i}].name"),
                    format!(
                        "{:?} and {:?} have the same 16-bit id; rename one",
                        p.name, self.port[j].name
                    ),
                ));
            }
        }
        for (b, br) in self.bridge.iter().enumerate() {
            let name = br.zone_name();
            let zone = stable_id(&name);
            if let Some(j) = ports.bridges_in_order.iter().position(|&z| z == zone) {
                return Err(bad(
                    format!("bridge[{b}].name"),
                    format!(
                        "zone {name:?} has the same 16-bit id as bridge[{j}] ({:?}); give one \
                         another name",
                        self.bridge[j].zone_name()
                    ),
                ));
            }
            ports.bridges_in_order.push(zone);
            for p in &br.ports {
                ports.zone[by_name[p.as_str()]] = zone;
            }
        }
        let tx_queues = workers.len() as u16;
        let plan = Plan { config: self, tx_queues, workers, policy, ports };
        if plan.config.dataplane.mbuf_data_room < 256 {
            return Err(bad(
                "dataplane.mbuf_data_room".into(),
                format!(
                    "{} leaves no room for a frame after the 128-byte headroom; at least 256",
                    plan.config.dataplane.mbuf_data_room
                ),
            ));
        }
        let need = plan.mbufs_needed();
        if (plan.config.dataplane.mbufs as u64) < need {
            return Err(bad("dataplane.mbufs".into(), format!("{} is fewer than the {need} the descriptor rings, bursts and caches can hold; raise it or lower rx_desc/tx_desc", plan.config.dataplane.mbufs)));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [dataplane]
        burst = 32
        [[port]]
        name = "client"
        device = "net_tap0"
        [[port]]
        name = "server"
        device = "net_tap1"
        [[bridge]]
        ports = ["client", "server"]
        [[worker]]
        lcore = 1
        rx = ["client:0", "server:0"]
    "#;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    /// Two bridges over four ports, listed in `order`.
    fn two_bridges(order: [&str; 2]) -> String {
        let ports = ["a", "b", "c", "d"]
            .map(|p| format!("[[port]]\nname = \"{p}\"\ndevice = \"net_tap_{p}\"\n"))
            .concat();
        let bridges = order.map(|b| format!("[[bridge]]\nports = {b}\n")).concat();
        format!(
            "{ports}{bridges}[[worker]]\nlcore = 1\nrx = [\"a:0\", \"b:0\", \"c:0\", \"d:0\"]\n"
        )
    }

    #[test]
    fn zones_follow_bridge_names_not_their_order() {
        let (ab, cd) = (r#"["a", "b"]"#, r#"["d", "c"]"#);
        let one = Config::parse(&two_bridges([ab, cd]), "t.toml").unwrap();
        let two = Config::parse(&two_bridges([cd, ab]), "t.toml").unwrap();
        assert_eq!(one.ports.zone, two.ports.zone, "each port keeps its zone");
        assert_eq!(one.ports.id, two.ports.id);
        assert_ne!(one.ports.zone[0], one.ports.zone[2]);
        assert_eq!(one.ports.zone[2], lazarus_core::ports::stable_id("c+d"));
        let named =
            two_bridges([ab, cd]).replacen("[[bridge]]\n", "[[bridge]]\nname = \"edge\"\n", 1);
        let named = Config::parse(&named, "t.toml").unwrap();
        assert_eq!(named.ports.zone[0], lazarus_core::ports::stable_id("edge"));
    }

    #[test]
    fn two_bridge_names_with_one_id_are_refused() {
        use lazarus_core::ports::stable_id;
        let mut seen = HashMap::new();
        let (x, y) = (0..)
            .map(|i| format!("zone{i}"))
            .find_map(|n| seen.insert(stable_id(&n), n.clone()).map(|m| (m, n)))
            .unwrap();
        let text = two_bridges([r#"["a", "b"]"#, r#"["c", "d"]"#])
            .replacen("[[bridge]]\n", &format!("[[bridge]]\nname = \"{x}\"\n"), 1)
            .replacen("ports = [\"c\"", &format!("name = \"{y}\"\nports = [\"c\""), 1);
        let e = err(&text);
        assert!(e.contains("bridge[1].name") && e.contains("another name"), "{e}");
    }

    #[test]
    fn good_config_gives_lanes_to_the_peer_port() {
        let plan = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(plan.workers.len(), 1);
        assert_eq!(
            plan.workers[0].lanes,
            vec![
                Lane { rx_port: 0, rx_queue: 0, tx_port: 1, tx_queue: 0 },
                Lane { rx_port: 1, rx_queue: 0, tx_port: 0, tx_queue: 0 }
            ]
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("burst = 32", "brust = 32"));
        assert!(e.contains("brust"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err(&GOOD.replace("burst = 32", "burst = 0")).contains("dataplane.burst"));
        assert!(err(&GOOD.replace("[\"client\", \"server\"]", "[\"client\", \"nowhere\"]"))
            .contains("bridge[0].ports: unknown port \"nowhere\""));
        assert!(err(&GOOD.replace("\"server:0\"", "\"server:3\"")).contains("worker[0].rx[1]"));
        assert!(err(&GOOD.replace("\"server:0\"", "\"client:0\"")).contains("already polled"));
        assert!(
            err(&GOOD.replace(", \"server:0\"", "")).contains("server:0 is polled by no worker")
        );
        assert!(err(&GOOD.replace("burst = 32", "mbufs = 100")).contains("dataplane.mbufs"));
        assert!(err(&GOOD.replace("net_tap1", "net_tap0")).contains("port[1].device"));
        let p = |body: &str| format!("{GOOD}\n[[protected]]\n{body}\n");
        assert!(err(&p("port = 7")).contains("protected[0].addr"));
        assert!(err(&p("addr = \"10.0.0.1\"")).contains("protected[0].port"));
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 7\nlog_bound = 0"))
            .contains("protected[0].log_bound"));
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 7\nwhat = 1")).contains("what"));
        let twice =
            p("addr = \"10.0.0.1\"\nport = 7\n[[protected]]\naddr = \"10.0.0.1\"\nport = 7");
        assert!(err(&twice).contains("protected[1].addr"));
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 21")).contains("protected[0].port"));
        assert!(
            err(&p("addr = \"10.0.0.1\"\nport = 7\nhold_ms = 0")).contains("protected[0].hold_ms")
        );
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 7\nconnections = 100000"))
            .contains("protected[0].connections"));
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 7\ntruncate_idle_ms = 70000"))
            .contains("protected[0].truncate_idle_ms"));
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 7\nclose_linger_ms = 0"))
            .contains("protected[0].close_linger_ms"));
        let svc = "addr = \"10.0.0.1\"\nport = 7\n";
        assert!(
            err(&p(&format!("{svc}probe_addr = \"10.0.0.9\""))).contains("protected[0].probe_mac")
        );
        assert!(err(&p(&format!("{svc}probe_mac = \"02:00:00:00:00:09\"")))
            .contains("protected[0].probe_addr"));
        assert!(err(&p(&format!(
            "{svc}probe_addr = \"10.0.0.9\"\nprobe_mac = \"01:00:5e:00:00:01\""
        )))
        .contains("protected[0].probe_mac"));
        assert!(err(&p(&format!(
            "{svc}probe_addr = \"10.0.0.1\"\nprobe_mac = \"02:00:00:00:00:09\""
        )))
        .contains("protected[0].probe_addr"));
        assert!(err(&p(&format!(
            "{svc}probe_addr = \"10.0.0.9\"\nprobe_mac = \"02:00:00:00:09\""
        )))
        .contains("MAC address"));
        assert!(err(&p(&format!("{svc}probe_timeout_ms = 0")))
            .contains("protected[0].probe_timeout_ms"));
        // An IPv6 service, probed from an IPv6 address.
        let v6 = "addr = \"fd00::2\"\nport = 7\nprobe_mac = \"02:00:00:00:00:09\"\n";
        assert!(Config::parse(&p(&format!("{v6}probe_addr = \"fd00::9\"")), "t.toml").is_ok());
        assert!(err(&p(&format!("{v6}probe_addr = \"10.0.0.9\"")))
            .contains("not of the service's family"));
        assert!(
            err(&p(&format!("{v6}probe_addr = \"ff02::1\""))).contains("protected[0].probe_addr")
        );
        assert!(err(&p(&format!("{v6}probe_addr = \"::ffff:10.0.0.9\""))).contains("mapped"));
        assert!(err(&p("addr = \"::ffff:10.0.0.1\"\nport = 7")).contains("protected[0].addr"));
        let slow = format!(
            "{svc}probe_addr = \"10.0.0.9\"\nprobe_mac = \"02:00:00:00:00:09\"\nprobe_timeout_ms = 300"
        );
        assert!(err(&p(&slow)).contains("must be below hold_ms"));
        assert!(err(&p(&format!("{svc}output_commit = \"remote\"")))
            .contains("protected[0].output_commit"));
        assert!(err(&p(&format!("{svc}output_commit = \"somewhere\""))).contains("output_commit"));
        assert!(err(&p("addr = \"10.0.0.1\"\nport = 7\ntruncation = \"sometimes\""))
            .contains("truncation"));
        assert!(Config::parse(&p("addr = \"10.0.0.1\"\nport = 7"), "t").is_ok());
    }

    #[test]
    fn policy_errors_name_the_rule() {
        let text = format!("{GOOD}\n[[zone]]\nname = \"out\"\ndefault = \"drop\"\n[[rule]]\nname = \"web\"\nproto = \"tcp\"\ndst = \"10.0.0.300\"\naction = \"accept\"\n");
        let e = err(&text);
        assert!(e.contains("rule[0] (\"web\").dst"), "{e}");
        let e = err(&GOOD
            .replace("device = \"net_tap1\"", "device = \"net_tap1\"\n        zone = \"nowhere\""));
        assert!(e.contains("port[1].zone: unknown zone"), "{e}");
        assert!(err(&format!("{GOOD}\n[conntrack]\ncapacity = 0\n")).contains("conntrack.capacity"));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let plan = Config::parse(include_str!("../../config/lazarus.toml"), "config/lazarus.toml")
            .unwrap();
        assert_eq!(plan.policy.rules.len(), 1);
        assert_eq!(plan.policy.port_zone, vec![Some(1), Some(0)]);
    }

    #[test]
    fn unbridged_port_is_refused() {
        let e = err(&GOOD.replace("[[bridge]]\n        ports = [\"client\", \"server\"]", ""));
        assert!(e.contains("in no bridge"), "{e}");
    }

    #[test]
    fn two_workers_get_their_own_tx_queue() {
        let text = GOOD.replace("rx_queues", "x").replace("device = \"net_tap0\"", "device = \"net_tap0\"\n        rx_queues = 2")
            .replace("rx = [\"client:0\", \"server:0\"]", "rx = [\"client:0\", \"server:0\"]\n        [[worker]]\n        lcore = 2\n        rx = [\"client:1\"]");
        let plan = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(plan.tx_queues, 2);
        assert_eq!(
            plan.workers[1].lanes[0],
            Lane { rx_port: 0, rx_queue: 1, tx_port: 1, tx_queue: 1 }
        );
    }
}
