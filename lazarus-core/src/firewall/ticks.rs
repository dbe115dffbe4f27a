//! Timeouts, converted to TSC ticks once when a firewall is built.

use crate::config::ConntrackSection;
use crate::modules::tcp::TcpState;
use crate::modules::L4Portion;

#[derive(Debug, Clone)]
pub(crate) struct Ticks {
    pub tcp: [u64; TcpState::COUNT],
    pub udp: u64,
    pub udp_stream: u64,
    pub icmp: u64,
    pub generic: u64,
    pub fragment: u64,
    pub expectation: u64,
}

impl Ticks {
    pub fn new(c: &ConntrackSection, hz: u64) -> Ticks {
        let t = &c.timeouts;
        let s = |secs: u64| secs.saturating_mul(hz);
        let mut tcp = [0; TcpState::COUNT];
        for (i, v) in [
            t.tcp_close,
            t.tcp_syn_sent,
            t.tcp_syn_recv,
            t.tcp_established,
            t.tcp_fin_wait,
            t.tcp_close_wait,
            t.tcp_last_ack,
            t.tcp_time_wait,
            t.tcp_close,
            t.tcp_syn_sent,
        ]
        .iter()
        .enumerate()
        {
            tcp[i] = s(*v);
        }
        Ticks {
            tcp,
            udp: s(t.udp),
            udp_stream: s(t.udp_stream),
            icmp: s(t.icmp),
            generic: s(t.generic),
            fragment: s(t.fragment),
            expectation: s(c.expectation_timeout),
        }
    }

    /// The timeout of a connection whose layer-4 portion is `l4`.
    #[inline(always)]
    pub fn of(&self, l4: &L4Portion) -> u64 {
        match l4 {
            L4Portion::Tcp(t) => self.tcp[t.state as usize],
            L4Portion::Udp(u) => {
                if u.replied {
                    self.udp_stream
                } else {
                    self.udp
                }
            }
            L4Portion::Icmp(_) => self.icmp,
            L4Portion::Other => self.generic,
        }
    }
}
