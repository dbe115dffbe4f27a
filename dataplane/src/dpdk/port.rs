use super::{strerror, DpdkError, Mempool};
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

/// Symmetric RSS key: with 0x6d5a repeated, the Toeplitz hash of (a, b) equals
/// that of (b, a), so both directions of a flow land on the same queue/worker.
const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

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
