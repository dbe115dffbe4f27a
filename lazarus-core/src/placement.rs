//! Which worker owns a connection: the queue the ports' RSS sends its
//! packets to. A restore needs it for connections whose stored worker says
//! nothing here (copied from an appliance with another worker count, or
//! stored by this one when it ran more workers), so that each lands on the
//! worker its next packet reaches.

use crate::conn::ConnKey;
use crate::modules::ip::IpRecord;
use crate::parse::Family;
use crate::portion::Portion;

/// The RSS key every port is given: with 0x6d5a repeated, the Toeplitz
/// hash of (a, b) equals that of (b, a), so both directions of a flow reach
/// the same queue, and a connection's canonical key hashes as its packets.
pub const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// The Toeplitz hash of `input` under `key` (Microsoft's RSS definition,
/// the one NICs and DPDK's `rte_softrss` compute): for each set bit of the
/// input, the 32 key bits starting at that bit are XORed in. The key must
/// be at least four bytes longer than the input.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    debug_assert!(key.len() >= input.len() + 4);
    let mut hash = 0u32;
    // The 64 key bits from the current input byte's first bit on.
    let mut window = u64::from_be_bytes(key[..8].try_into().expect("8 key bytes"));
    for (i, &byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= (window >> (32 - bit)) as u32;
            }
        }
        window = window << 8 | u64::from(key.get(i + 8).copied().unwrap_or(0));
    }
    hash
}

/// What the ports hash, and how hashes map to workers: the redirection
/// table's entry `i` holds worker `i % workers` (the dataplane programs it
/// so), and a hash picks entry `hash % reta_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub workers: u16,
    pub reta_size: u16,
    /// The key's length the ports use (40 on most NICs, 52 on some).
    pub key_len: u8,
    /// Which flow types the ports hash by their ports too (else by their
    /// addresses only).
    pub l4: L4Hashed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L4Hashed {
    pub v4_tcp: bool,
    pub v4_udp: bool,
    pub v6_tcp: bool,
    pub v6_udp: bool,
}

impl Placement {
    /// One worker: every connection is its.
    pub fn single() -> Self {
        Placement { workers: 1, reta_size: 1, key_len: 40, l4: L4Hashed::default() }
    }

    /// `workers` workers behind a table of as many entries, hashing
    /// addresses only: what a restore assumes when no port says otherwise.
    pub fn spread(workers: u16) -> Self {
        Placement { workers: workers.max(1), reta_size: workers.max(1), ..Placement::single() }
    }

    /// The worker whose queue the packets of `key` reach.
    pub fn worker_of(&self, key: &ConnKey) -> u16 {
        if self.workers <= 1 {
            return 0;
        }
        let v4 = key.family == Family::V4 as u8;
        let l4 = match (v4, key.proto) {
            (true, 6) => self.l4.v4_tcp,
            (true, 17) => self.l4.v4_udp,
            (false, 6) => self.l4.v6_tcp,
            (false, 17) => self.l4.v6_udp,
            _ => false,
        };
        let mut input = [0u8; 36];
        let addr = if v4 { 4 } else { 16 };
        let mut n = 0;
        for a in [&key.lo_addr, &key.hi_addr] {
            input[n..n + addr].copy_from_slice(&a[16 - addr..]);
            n += addr;
        }
        if l4 {
            input[n..n + 2].copy_from_slice(&key.lo_port.to_be_bytes());
            input[n + 2..n + 4].copy_from_slice(&key.hi_port.to_be_bytes());
            n += 4;
        }
        let key_len = usize::from(self.key_len).clamp(n + 4, SYMMETRIC_RSS_KEY.len());
        let hash = toeplitz(&SYMMETRIC_RSS_KEY[..key_len], &input[..n]);
        let entry = hash % u32::from(self.reta_size.max(1));
        (entry % u32::from(self.workers)) as u16
    }

    /// The worker of a stored connection, from its ip portion; None when
    /// the portion does not decode (the restore reports it wherever it goes).
    pub fn worker_of_stored(&self, ip_portion: Option<&[u8]>) -> Option<u16> {
        if self.workers <= 1 {
            return Some(0);
        }
        let rec = IpRecord::decode(ip_portion?).ok()?;
        Some(self.worker_of(&rec.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Endpoint;

    /// Microsoft's RSS verification key and its published IPv4 results
    /// ("Verifying the RSS Hash Calculation"): source, destination, the
    /// hash of the addresses, the hash with the TCP ports.
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];
    /// Source, its port, destination, its port, hash of the addresses,
    /// hash with the ports.
    type Vector = ([u8; 4], u16, [u8; 4], u16, u32, u32);
    const MS_V4: [Vector; 5] = [
        ([66, 9, 149, 187], 2794, [161, 142, 100, 80], 1766, 0x323e_8fc2, 0x51cc_c178),
        ([199, 92, 111, 2], 14230, [65, 69, 140, 83], 4739, 0xd718_262a, 0xc626_b0ea),
        ([24, 19, 198, 95], 12898, [12, 22, 207, 184], 38024, 0xd2d0_a5de, 0x5c2b_394a),
        ([38, 27, 205, 30], 48228, [209, 142, 163, 6], 2217, 0x8298_9176, 0xafc7_327f),
        ([153, 39, 163, 191], 44251, [202, 188, 127, 2], 1303, 0x5d18_09c5, 0x10e8_28a2),
    ];

    #[test]
    fn toeplitz_gives_microsofts_published_hashes() {
        for (src, sport, dst, dport, ip_only, with_tcp) in MS_V4 {
            let mut input = [0u8; 12];
            input[..4].copy_from_slice(&src);
            input[4..8].copy_from_slice(&dst);
            assert_eq!(toeplitz(&MS_KEY, &input[..8]), ip_only, "{src:?} -> {dst:?}");
            input[8..10].copy_from_slice(&sport.to_be_bytes());
            input[10..].copy_from_slice(&dport.to_be_bytes());
            assert_eq!(toeplitz(&MS_KEY, &input), with_tcp, "{src:?}:{sport} -> {dst:?}:{dport}");
        }
    }

    fn v4(a: [u8; 4], port: u16) -> Endpoint {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&a);
        Endpoint { addr, port }
    }

    fn rss(workers: u16) -> Placement {
        let l4 = L4Hashed { v4_tcp: true, v4_udp: true, v6_tcp: true, v6_udp: true };
        Placement { workers, reta_size: 128, key_len: 40, l4 }
    }

    #[test]
    fn a_connection_is_placed_by_the_hash_of_one_of_its_directions() {
        let p = rss(4);
        let mut seen = [0u32; 4];
        for (src, sport, dst, dport, _, _) in MS_V4 {
            let (key, _) = ConnKey::canonical(Family::V4, 6, v4(src, sport), v4(dst, dport), 0, 0);
            let mut input = [0u8; 12];
            input[..4].copy_from_slice(&src);
            input[4..8].copy_from_slice(&dst);
            input[8..10].copy_from_slice(&sport.to_be_bytes());
            input[10..].copy_from_slice(&dport.to_be_bytes());
            let forward = toeplitz(&SYMMETRIC_RSS_KEY[..40], &input);
            let mut reply = [0u8; 12];
            reply[..4].copy_from_slice(&dst);
            reply[4..8].copy_from_slice(&src);
            reply[8..10].copy_from_slice(&dport.to_be_bytes());
            reply[10..].copy_from_slice(&sport.to_be_bytes());
            assert_eq!(forward, toeplitz(&SYMMETRIC_RSS_KEY[..40], &reply), "symmetric key");
            let w = p.worker_of(&key);
            assert_eq!(u32::from(w), forward % 128 % 4);
            seen[usize::from(w)] += 1;
        }
        assert!(seen.iter().filter(|&&n| n > 0).count() > 1, "spread: {seen:?}");
    }

    #[test]
    fn one_worker_takes_everything_without_decoding() {
        assert_eq!(Placement::single().worker_of_stored(None), Some(0));
        assert_eq!(rss(2).worker_of_stored(None), None);
        assert_eq!(rss(2).worker_of_stored(Some(&[0xff])), None);
    }
}
