use super::{strerror, DpdkError, Mempool};
use lazarus_core::placement::{L4Hashed, Placement, SYMMETRIC_RSS_KEY};
use std::ffi::{CStr, CString};

/// How one ethernet port is configured.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub device: String,
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
}

/// A started ethernet port. Dropping it stops and closes the device, which also
/// flushes PMDs that buffer (net_pcap writes its file on close).
pub struct Port {
    id: u16,
    name: String,
    /// Whether the PMD spreads RX over queues by RSS.
    pub rss: bool,
    /// Whether promiscuous mode is on (asked for and granted).
    pub promiscuous: bool,
    /// Whether the NIC checks RX checksums (else the firewall does).
    pub rx_checksum_offload: bool,
}

/// Counters the PMD keeps for a port (rte_eth_stats).
#[derive(Debug, Default, Clone, Copy)]
pub struct EthStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

pub(crate) fn port_name(id: u16) -> String {
    let mut buf = [0 as std::ffi::c_char; 64];
    // SAFETY: buf has room for RTE_ETH_NAME_MAX_LEN (64) bytes including NUL.
    let rc = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{id}");
    }
    // SAFETY: on success DPDK wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// The id of the device named `device` (as given to --vdev or -a), started or
/// not; a secondary process finds the primary's ports this way.
pub fn port_id(device: &str, available: impl FnOnce() -> Vec<String>) -> Result<u16, DpdkError> {
    let cname = CString::new(device)
        .map_err(|_| DpdkError::NoSuchDevice { name: device.into(), available: String::new() })?;
    let mut id = 0u16;
    // SAFETY: cname is a valid C string, id a valid out-pointer.
    if unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) } != 0 {
        let list = available();
        return Err(DpdkError::NoSuchDevice {
            name: device.into(),
            available: if list.is_empty() { "none".into() } else { list.join(", ") },
        });
    }
    Ok(id)
}

/// How port `id`'s RSS spreads connections over `workers` queues, as
/// [`Port::start`] configured it (any process may ask).
pub fn placement(id: u16, workers: u16) -> Placement {
    if workers <= 1 {
        return Placement::single();
    }
    let mut info = dpdk_sys::rte_eth_dev_info::default();
    // SAFETY: info is a valid out-pointer; an invalid id fails cleanly.
    if unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) } != 0 {
        return Placement { workers, reta_size: workers, key_len: 40, l4: L4Hashed::default() };
    }
    // SAFETY: pure functions of their arguments.
    let hf = unsafe { dpdk_sys::lz_rss_hf_ip_tcp_udp() } & info.flow_type_rss_offloads;
    // SAFETY: as above.
    let l4 = unsafe { dpdk_sys::lz_rss_l4_hashed(hf) };
    Placement {
        workers,
        reta_size: if info.reta_size == 0 { workers } else { info.reta_size },
        key_len: if info.hash_key_size == 0 { 40 } else { info.hash_key_size.min(52) },
        l4: L4Hashed {
            v4_tcp: l4 & 1 != 0,
            v4_udp: l4 & 2 != 0,
            v6_tcp: l4 & 4 != 0,
            v6_udp: l4 & 8 != 0,
        },
    }
}

/// What the PMD counts for port `id` (zeros when it cannot say).
pub fn port_stats(id: u16) -> EthStats {
    let mut s = dpdk_sys::rte_eth_stats::default();
    // SAFETY: any port id may be asked about once EAL is up; s is a valid out-pointer.
    if unsafe { dpdk_sys::rte_eth_stats_get(id, &mut s) } != 0 {
        return EthStats::default();
    }
    EthStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

impl Port {
    /// Finds `setup.device`, configures its queues (RSS with a symmetric key when
    /// more than one RX queue), starts it and sets promiscuous mode.
    pub fn start(
        setup: &PortSetup,
        pool: &Mempool,
        available: impl FnOnce() -> Vec<String>,
    ) -> Result<Port, DpdkError> {
        let id = port_id(&setup.device, available)?;
        let name = setup.device.clone();
        let fail = |what: &'static str, code: i32| DpdkError::Port {
            port: id,
            name: name.clone(),
            what,
            code,
            reason: strerror(code),
        };

        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a valid out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_info_get", rc));
        }
        if setup.rx_queues > info.max_rx_queues {
            return Err(DpdkError::PortLimit {
                port: id,
                name,
                what: "RX queues",
                asked: setup.rx_queues.into(),
                max: info.max_rx_queues.into(),
            });
        }
        if setup.tx_queues > info.max_tx_queues {
            return Err(DpdkError::PortLimit {
                port: id,
                name,
                what: "TX queues",
                asked: setup.tx_queues.into(),
                max: info.max_tx_queues.into(),
            });
        }

        let mut key = SYMMETRIC_RSS_KEY;
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let rss = setup.rx_queues > 1;
        if rss {
            // SAFETY: a pure function returning a constant.
            let hf = unsafe { dpdk_sys::lz_rss_hf_ip_tcp_udp() } & info.flow_type_rss_offloads;
            if hf == 0 {
                return Err(DpdkError::NoRss { port: id, name, queues: setup.rx_queues });
            }
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len =
                if info.hash_key_size == 0 { 40 } else { info.hash_key_size.min(52) };
            conf.rx_adv_conf.rss_conf.rss_hf = hf;
        }
        // The NIC checks the checksums where it can (the firewall drops what
        // fails); elsewhere the firewall checks them itself.
        // SAFETY: a pure function returning a constant.
        conf.rxmode.offloads = unsafe { dpdk_sys::lz_rx_offload_cksum() } & info.rx_offload_capa;
        let rx_checksum_offload = conf.rxmode.offloads != 0;
        // SAFETY: id is valid; conf (and the key it points to) lives across the call.
        let rc =
            unsafe { dpdk_sys::rte_eth_dev_configure(id, setup.rx_queues, setup.tx_queues, &conf) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_configure", rc));
        }
        let (mut nrx, mut ntx) = (setup.rx_desc, setup.tx_desc);
        // SAFETY: id is configured; the out-pointers are valid.
        let rc = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: id is valid.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { dpdk_sys::SOCKET_ID_ANY } else { socket };
        for q in 0..setup.rx_queues {
            // SAFETY: port configured with rx_queues queues; pool outlives the port
            // (Port is dropped before its Mempool); NULL rxconf = PMD defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    nrx,
                    socket as u32,
                    std::ptr::null(),
                    pool.raw(),
                )
            };
            if rc != 0 {
                return Err(fail("rte_eth_rx_queue_setup", rc));
            }
        }
        for q in 0..setup.tx_queues {
            // SAFETY: as above, NULL txconf = PMD defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, ntx, socket as u32, std::ptr::null())
            };
            if rc != 0 {
                return Err(fail("rte_eth_tx_queue_setup", rc));
            }
        }
        // SAFETY: all queues are set up.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_start", rc));
        }
        if rss && info.reta_size > 0 {
            // Entry i to queue i % queues, what [`placement`] assumes: a
            // restore then puts a connection on the worker its packets reach.
            // SAFETY: the port is started with rx_queues queues.
            let rc = unsafe { dpdk_sys::lz_rss_reta_spread(id, info.reta_size, setup.rx_queues) };
            if rc != 0 {
                tracing::warn!(port = %name, reta_size = info.reta_size, "the RSS redirection table could not be set ({}): connections restored from another worker count may land on a worker their packets do not reach", strerror(rc.abs()));
            }
        }
        let mut port = Port { id, name, rss, promiscuous: false, rx_checksum_offload };
        if setup.promiscuous {
            // SAFETY: the port is started.
            let rc = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
            port.promiscuous = rc == 0;
            if rc != 0 {
                tracing::warn!(port = id, device = %port.name, "promiscuous mode not available ({}); frames for other MACs may not arrive", strerror(rc));
            }
        }
        Ok(port)
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> EthStats {
        port_stats(self.id)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: no lcore polls the port any more (workers are joined before
        // ports are dropped); stop then close is DPDK's documented order.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id);
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use lazarus_core::placement::{toeplitz, SYMMETRIC_RSS_KEY};

    /// DPDK's own software Toeplitz, over the words a NIC hashes.
    fn softrss(words: &[u32]) -> u32 {
        let mut w = words.to_vec();
        // SAFETY: w holds `len` words; the key is 52 bytes, more than the
        // input's length plus four for every tuple here.
        unsafe {
            dpdk_sys::lz_rte_softrss(w.as_mut_ptr(), w.len() as u32, SYMMETRIC_RSS_KEY.as_ptr())
        }
    }

    fn bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn our_toeplitz_is_dpdks_and_symmetric_under_our_key() {
        let mut x = 0x9e37_79b9_u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..2000 {
            let (s6, d6): (Vec<u32>, Vec<u32>) =
                ((0..4).map(|_| next()).collect(), (0..4).map(|_| next()).collect());
            let (sp, dp) = (next() as u16, next() as u16);
            for (src, dst) in [(&s6[..1], &d6[..1]), (&s6[..], &d6[..])] {
                for ports in [false, true] {
                    let mut fwd: Vec<u32> = src.iter().chain(dst).copied().collect();
                    let mut rev: Vec<u32> = dst.iter().chain(src).copied().collect();
                    if ports {
                        fwd.push(u32::from(sp) << 16 | u32::from(dp));
                        rev.push(u32::from(dp) << 16 | u32::from(sp));
                    }
                    let ours = toeplitz(&SYMMETRIC_RSS_KEY, &bytes(&fwd));
                    assert_eq!(ours, softrss(&fwd), "{fwd:x?}");
                    assert_eq!(ours, toeplitz(&SYMMETRIC_RSS_KEY, &bytes(&rev)), "{fwd:x?}");
                }
            }
        }
    }
}
