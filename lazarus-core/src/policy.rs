//! Policy: zones per port, and rules deciding whether a *new* connection may
//! start. Established and related traffic never reaches the policy.

use crate::parse::{Addr, IpPacket, L4};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    /// What happens to a new connection entering from this zone that no rule matched.
    pub default: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Zone the connection's first packet enters from; absent: any.
    pub from: Option<String>,
    /// tcp, udp, icmp (ICMP and ICMPv6), or a protocol number; absent: any.
    pub proto: Option<String>,
    /// CIDR, e.g. "10.0.0.0/8" or "fd00::/64"; absent: any.
    pub src: Option<String>,
    pub dst: Option<String>,
    /// "80" or "1024-65535"; only for tcp/udp rules.
    pub src_ports: Option<String>,
    pub dst_ports: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: Addr,
    /// Prefix length over the 128-bit (v4-mapped) address.
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => {
                (a, Some(l.parse::<u8>().map_err(|_| format!("bad prefix length in {s:?}"))?))
            }
            None => (s, None),
        };
        let ip: std::net::IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IP address"))?;
        let (addr, bits) = match ip {
            std::net::IpAddr::V4(v4) => {
                let l = len.unwrap_or(32);
                if l > 32 {
                    return Err(format!("prefix /{l} is longer than 32 in {s:?}"));
                }
                (crate::parse::v4_mapped(v4.octets()), 96 + l)
            }
            std::net::IpAddr::V6(v6) => {
                let l = len.unwrap_or(128);
                if l > 128 {
                    return Err(format!("prefix /{l} is longer than 128 in {s:?}"));
                }
                (v6.octets(), l)
            }
        };
        let c = Cidr { addr, bits };
        if !c.contains(&addr) || c.masked(&addr) != addr {
            return Err(format!("{s:?} has host bits set past the prefix"));
        }
        Ok(c)
    }

    fn masked(&self, a: &Addr) -> Addr {
        let mut m = *a;
        for (i, b) in m.iter_mut().enumerate() {
            let keep = (self.bits as i32 - 8 * i as i32).clamp(0, 8);
            *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        m
    }

    #[inline]
    pub fn contains(&self, a: &Addr) -> bool {
        self.masked(a) == self.addr
    }
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| format!("{s:?} is not a port or port range"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("{s:?} is not a port or port range"))?;
    if a > b {
        return Err(format!("{s:?}: range is empty"));
    }
    Ok((a, b))
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    from: Option<usize>,
    proto: Option<u8>,
    src: Option<Cidr>,
    dst: Option<Cidr>,
    src_ports: Option<(u16, u16)>,
    dst_ports: Option<(u16, u16)>,
    pub action: Action,
}

/// The compiled policy, shared read-only by every worker.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub zones: Vec<ZoneConfig>,
    pub rules: Vec<Rule>,
    /// Zone index of each port (by config order); None: no zone, everything accepted.
    pub port_zone: Vec<Option<usize>>,
}

impl Policy {
    /// Compiles the policy; errors are (key, reason).
    pub fn compile(
        zones: &[ZoneConfig],
        rules: &[RuleConfig],
        port_zones: &[Option<String>],
    ) -> Result<Policy, (String, String)> {
        let zone_idx = |name: &str, key: String| {
            zones.iter().position(|z| z.name == name).ok_or((key, format!("unknown zone {name:?}")))
        };
        for (i, z) in zones.iter().enumerate() {
            if zones[..i].iter().any(|o| o.name == z.name) {
                return Err((
                    format!("zone[{i}].name"),
                    format!("zone {:?} is defined twice", z.name),
                ));
            }
        }
        let port_zone = port_zones
            .iter()
            .enumerate()
            .map(|(i, z)| z.as_deref().map(|z| zone_idx(z, format!("port[{i}].zone"))).transpose())
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let key = |k: &str| format!("rule[{i}] ({:?}).{k}", r.name);
            let proto = match r.proto.as_deref() {
                None | Some("any") => None,
                Some("tcp") => Some(6),
                Some("udp") => Some(17),
                Some("icmp") => Some(1),
                Some(n) => Some(n.parse::<u8>().map_err(|_| {
                    (key("proto"), format!("{n:?} is not tcp, udp, icmp, any or a protocol number"))
                })?),
            };
            let ports =
                |v: &Option<String>, k: &str| -> Result<Option<(u16, u16)>, (String, String)> {
                    match v {
                        None => Ok(None),
                        Some(s) => {
                            if !matches!(proto, Some(6) | Some(17)) {
                                return Err((
                                    key(k),
                                    "port ranges need proto = \"tcp\" or \"udp\"".into(),
                                ));
                            }
                            port_range(s).map(Some).map_err(|e| (key(k), e))
                        }
                    }
                };
            out.push(Rule {
                name: r.name.clone(),
                from: r.from.as_deref().map(|z| zone_idx(z, key("from"))).transpose()?,
                proto,
                src: r.src.as_deref().map(Cidr::parse).transpose().map_err(|e| (key("src"), e))?,
                dst: r.dst.as_deref().map(Cidr::parse).transpose().map_err(|e| (key("dst"), e))?,
                src_ports: ports(&r.src_ports, "src_ports")?,
                dst_ports: ports(&r.dst_ports, "dst_ports")?,
                action: r.action,
            });
        }
        Ok(Policy { zones: zones.to_vec(), rules: out, port_zone })
    }

    /// The verdict on a new connection whose first packet entered on `port`;
    /// the second value is the matching rule's index (None: zone default).
    #[inline]
    pub fn decide(&self, port: usize, p: &IpPacket) -> (Action, Option<usize>) {
        let Some(zone) = self.port_zone.get(port).copied().flatten() else {
            return (Action::Accept, None);
        };
        let (sport, dport) = match p.l4 {
            L4::Tcp(h) => (Some(h.sport), Some(h.dport)),
            L4::Udp { sport, dport } => (Some(sport), Some(dport)),
            _ => (None, None),
        };
        let in_range = |r: Option<(u16, u16)>, v: Option<u16>| {
            r.is_none_or(|(a, b)| v.is_some_and(|v| a <= v && v <= b))
        };
        for (i, r) in self.rules.iter().enumerate() {
            let proto_ok = match r.proto {
                None => true,
                Some(1) => p.proto == 1 || p.proto == 58,
                Some(x) => p.proto == x,
            };
            if r.from.is_none_or(|z| z == zone)
                && proto_ok
                && r.src.is_none_or(|c| c.contains(&p.src))
                && r.dst.is_none_or(|c| c.contains(&p.dst))
                && in_range(r.src_ports, sport)
                && in_range(r.dst_ports, dport)
            {
                return (r.action, Some(i));
            }
        }
        (self.zones[zone].default, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{v4_mapped, TcpHdr};

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.99.0.0/16").unwrap();
        assert!(c.contains(&v4_mapped([10, 99, 3, 4])));
        assert!(!c.contains(&v4_mapped([10, 98, 3, 4])));
        assert!(Cidr::parse("10.99.0.1/16").is_err());
        assert!(Cidr::parse("10.99.0.0/33").is_err());
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(&"fd12::1".parse::<std::net::Ipv6Addr>().unwrap().octets()));
        assert!(!v6.contains(&v4_mapped([10, 0, 0, 1])));
    }

    #[test]
    fn first_match_then_zone_default() {
        let zones = vec![
            ZoneConfig { name: "in".into(), default: Action::Accept },
            ZoneConfig { name: "out".into(), default: Action::Drop },
        ];
        let rules = vec![RuleConfig {
            name: "web".into(),
            from: Some("out".into()),
            proto: Some("tcp".into()),
            src: None,
            dst: Some("10.99.0.2".into()),
            src_ports: None,
            dst_ports: Some("80".into()),
            action: Action::Accept,
        }];
        let p = Policy::compile(&zones, &rules, &[Some("in".into()), Some("out".into())]).unwrap();
        let mut pkt = IpPacket {
            proto: 6,
            src: v4_mapped([1, 2, 3, 4]),
            dst: v4_mapped([10, 99, 0, 2]),
            l4: L4::Tcp(TcpHdr { dport: 80, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(p.decide(1, &pkt), (Action::Accept, Some(0)));
        pkt.l4 = L4::Tcp(TcpHdr { dport: 22, ..Default::default() });
        assert_eq!(p.decide(1, &pkt), (Action::Drop, None));
        assert_eq!(p.decide(0, &pkt), (Action::Accept, None));
    }

    #[test]
    fn bad_rules_are_named() {
        let zones = vec![ZoneConfig { name: "in".into(), default: Action::Accept }];
        let mut r = RuleConfig {
            name: "x".into(),
            from: Some("nowhere".into()),
            proto: None,
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            action: Action::Drop,
        };
        assert_eq!(
            Policy::compile(&zones, &[r.clone()], &[]).unwrap_err().0,
            "rule[0] (\"x\").from"
        );
        r.from = None;
        r.dst_ports = Some("80".into());
        assert!(Policy::compile(&zones, &[r.clone()], &[]).unwrap_err().1.contains("need proto"));
        r.proto = Some("tcp".into());
        r.dst_ports = Some("90-80".into());
        assert_eq!(Policy::compile(&zones, &[r], &[]).unwrap_err().0, "rule[0] (\"x\").dst_ports");
    }
}
