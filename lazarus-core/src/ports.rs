//! The names state is kept under. A connection's zone is the id of the bridge
//! it crosses and its ingress the id of the port its first packet entered,
//! both derived from names in the config rather than positions, so that
//! reordering bridges or ports strands no stored connection.

/// The ingress of a connection stored before ingress ports were recorded.
pub const UNKNOWN_PORT: u16 = u16::MAX;

/// The stable id of a bridge or port name: never [`UNKNOWN_PORT`]. Two names
/// may share one; the config refuses that and asks for a rename.
pub fn stable_id(name: &str) -> u16 {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(UNKNOWN_PORT)) as u16
}

/// The name a bridge goes by when the config gives it none: its two ports,
/// in name order, so that swapping them or moving the bridge changes nothing.
pub fn default_bridge_name(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{x}+{y}")
}

/// What the firewall knows of each config port, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMap {
    /// The zone (bridge id) of each port.
    pub zone: Vec<u16>,
    /// The stable id of each port.
    pub id: Vec<u16>,
    /// Bridge ids in config order: portions of format 1 named a bridge by its
    /// position, and are translated by assuming the config kept its order.
    pub bridges_in_order: Vec<u16>,
}

impl PortMap {
    /// The ports that could have let in a connection of `zone` that entered
    /// at `ingress` ([`UNKNOWN_PORT`]: either port of the bridge).
    pub fn entries(&self, zone: u16, ingress: u16) -> impl Iterator<Item = usize> + '_ {
        (0..self.zone.len()).filter(move |&p| {
            self.zone[p] == zone && (ingress == UNKNOWN_PORT || self.id[p] == ingress)
        })
    }

    /// The stable id of port `port`.
    #[inline]
    pub fn id_of(&self, port: usize) -> u16 {
        self.id.get(port).copied().unwrap_or(UNKNOWN_PORT)
    }
}

/// Ports numbered by position, each in the zone given: for tests and
/// benchmarks that name no ports.
impl From<Vec<u16>> for PortMap {
    fn from(zone: Vec<u16>) -> PortMap {
        let mut bridges_in_order: Vec<u16> = Vec::new();
        for z in &zone {
            if !bridges_in_order.contains(z) {
                bridges_in_order.push(*z);
            }
        }
        PortMap { id: (0..zone.len() as u16).collect(), zone, bridges_in_order }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_names_not_positions() {
        assert_eq!(stable_id("edge"), stable_id("edge"));
        assert_ne!(stable_id("edge"), stable_id("core"));
        assert_eq!(
            default_bridge_name("outside", "inside"),
            default_bridge_name("inside", "outside")
        );
        let m =
            PortMap { zone: vec![7, 7, 9, 9], id: vec![1, 2, 3, 4], bridges_in_order: vec![7, 9] };
        assert_eq!(m.entries(9, UNKNOWN_PORT).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(m.entries(9, 4).collect::<Vec<_>>(), vec![3]);
        assert_eq!(m.entries(7, 4).count(), 0);
    }
}
