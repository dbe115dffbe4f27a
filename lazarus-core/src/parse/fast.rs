//! The packet path's shortcut for the frame it sees most: an untagged IPv4
//! TCP segment, not fragmented, no IP options, and either no TCP options or
//! only the timestamp Linux puts on every segment of an established flow.
//!
//! It reads the few fields the connection key and the TCP tracker need
//! straight from fixed offsets, instead of describing the frame in a general
//! `IpPacket` (~100 bytes written per packet, enums matched again by every
//! layer after it). Anything it does not recognise whole is left to the
//! general parser, which is the reference: whenever this returns a segment,
//! `parse` gives the same addresses, header and payload (held by a proptest
//! in tests/parse_props.rs).

use super::{proto, TcpHdr, TcpOpts};

/// An IPv4/TCP segment as the fast path reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V4TcpSegment {
    /// The addresses as big-endian integers (10.0.0.1 is 0x0a000001).
    pub src: u32,
    pub dst: u32,
    pub tcp: TcpHdr,
    /// Where the TCP payload starts in the frame, and its length (Ethernet
    /// padding excluded), as `IpPacket`'s fields of the same names.
    pub payload_off: u16,
    pub payload_len: u16,
}

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const TCP_AT: usize = ETH_HLEN + IP_HLEN;
/// NOP, NOP, timestamp (kind 8, length 10): the option block Linux sends on
/// every segment once timestamps are agreed.
const TS_BLOCK: [u8; 4] = [1, 1, 8, 10];

#[inline(always)]
fn be16(f: &[u8; 54], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

#[inline(always)]
fn be32(f: &[u8; 54], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// The segment in `frame` when it has the common shape above, else None
/// (and the general parser decides, including whether it is malformed).
#[inline(always)]
pub fn v4_tcp(frame: &[u8]) -> Option<V4TcpSegment> {
    // Every fixed offset below is within these 54 bytes: one bounds check.
    let f: &[u8; 54] = frame.first_chunk()?;
    let total = usize::from(be16(f, ETH_HLEN + 2));
    let shape_ok = be16(f, 12) == 0x0800
        && f[ETH_HLEN] == 0x45 // version 4, no options
        && f[ETH_HLEN + 9] == proto::TCP
        && be16(f, ETH_HLEN + 6) & 0x3fff == 0; // no more-fragments, offset 0 (DF may be set)
    if !shape_ok || ETH_HLEN + total > frame.len() {
        return None;
    }
    let doff = usize::from(f[TCP_AT + 12] >> 4) * 4;
    let opts = match doff {
        TCP_HLEN => TcpOpts::default(),
        32 => {
            let o: &[u8; 12] = frame.get(TCP_AT + TCP_HLEN..)?.first_chunk()?;
            if o[..4] != TS_BLOCK {
                return None;
            }
            let tsval = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
            let tsecr = u32::from_be_bytes([o[8], o[9], o[10], o[11]]);
            TcpOpts { timestamp: Some((tsval, tsecr)), ..TcpOpts::default() }
        }
        _ => return None,
    };
    let payload_len = total.checked_sub(IP_HLEN + doff)?;
    Some(V4TcpSegment {
        src: be32(f, ETH_HLEN + 12),
        dst: be32(f, ETH_HLEN + 16),
        tcp: TcpHdr {
            sport: be16(f, TCP_AT),
            dport: be16(f, TCP_AT + 2),
            seq: be32(f, TCP_AT + 4),
            ack: be32(f, TCP_AT + 8),
            flags: f[TCP_AT + 13],
            window: be16(f, TCP_AT + 14),
            opts,
        },
        // A frame is at most 64 KiB here (the IP total length is a u16 and
        // bounds both), so neither can wrap.
        payload_off: (TCP_AT + doff) as u16,
        payload_len: payload_len as u16,
    })
}
