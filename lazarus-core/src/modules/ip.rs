//! The ip module: which side opened the connection, and traffic counters.

use crate::conn::{vlan_ids, ConnKey, Dir};
use crate::modules::Module;
use crate::portion::{Portion, PortionError, Reader, Writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct IpPortion {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// TSC when the connection was created.
    pub created: u64,
    /// Whether the original direction's source is the canonical key's low side.
    pub orig_src_is_lo: bool,
    /// Whether an expectation admitted it (an FTP data connection) rather
    /// than the policy: a restore checks the policy on the others only.
    pub related: bool,
    /// Stable id of the port its first packet entered (`ports::stable_id`);
    /// `UNKNOWN_PORT` when stored by a build that did not record it.
    pub ingress: u16,
}

/// Bytes of the ip portion after its format byte: the key (its outer VLAN
/// id), the direction, the counters and the creation time (format 1); format
/// 2 makes the direction byte a set of flags (bit 0 the direction, bit 1
/// related) and appends the ingress port and the inner VLAN id.
const IP_FIXED: usize = 16 + 16 + 2 + 2 + 1 + 1 + 2 + 2 + 1 + 5 * 8;
const IP_FORMAT2: usize = 2 + 2;
const FLAG_ORIG_SRC_IS_LO: u8 = 1;
const FLAG_RELATED: u8 = 2;

impl IpPortion {
    pub fn new(src_is_lo: bool, ingress: u16, now: u64) -> Self {
        IpPortion { orig_src_is_lo: src_is_lo, created: now, ingress, ..Default::default() }
    }

    /// The direction of a packet whose source is (or is not) the key's low side.
    #[inline]
    pub fn dir_of(&self, src_is_lo: bool) -> Dir {
        Dir::reply_if(src_is_lo != self.orig_src_is_lo)
    }

    /// Counters change on every packet; they are not worth a checkpoint: the
    /// ip portion is written once, at creation, so a restored connection's
    /// counters restart from those (docs/TELEMETRY.md, `conns`).
    #[inline]
    pub fn count(&mut self, dir: Dir, len: usize) {
        self.packets[dir.idx()] += 1;
        self.bytes[dir.idx()] += len as u64;
    }
}

/// The ip portion as checkpointed: the canonical key travels with it, so a
/// restore can rebuild the record and check the id against the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRecord {
    pub key: ConnKey,
    pub ip: IpPortion,
    /// The portion format it was read from. Format 1 named the bridge in
    /// `key.zone` by its position in the config, not its stable id, and did
    /// not record the ingress port: restore translates it.
    pub format: u8,
}

// The format byte, then the fixed fields.
const IP_ENCODED: usize = 1 + IP_FIXED + IP_FORMAT2;
const _: () = assert!(IP_ENCODED <= shm_layout::IP_PORTION_MAX);

impl IpPortion {
    /// Writes the ip portion of the connection keyed `key` (what
    /// [`IpRecord::encode`] writes, without copying the key into a record).
    pub fn encode(&self, key: &ConnKey, out: &mut [u8]) -> Result<usize, PortionError> {
        let mut w = Writer::new(out, Module::Ip);
        if let Some(mut f) = w.fields::<{ IP_FIXED }>() {
            f.bytes(&key.lo_addr);
            f.bytes(&key.hi_addr);
            f.u16(key.lo_port);
            f.u16(key.hi_port);
            f.u8(key.proto);
            f.u8(key.family);
            f.u16(key.zone);
            f.u16(vlan_ids(key.vlan).0);
            let flags = if self.orig_src_is_lo { FLAG_ORIG_SRC_IS_LO } else { 0 }
                | if self.related { FLAG_RELATED } else { 0 };
            f.u8(flags);
            for v in self.packets.iter().chain(&self.bytes) {
                f.u64(*v);
            }
            f.u64(self.created);
        }
        w.u16(self.ingress);
        w.u16(vlan_ids(key.vlan).1);
        w.finish()
    }
}

impl IpRecord {
    /// The previous format's encoder (format 1, `v0.1.0`), kept for the
    /// upgrade tests: no flags but the direction, no ingress or inner VLAN,
    /// and the zone `bridge_position` (format 1 named a bridge by its place
    /// in the config). Not for production use.
    #[doc(hidden)]
    pub fn encode_format_1(
        &self,
        bridge_position: u16,
        out: &mut [u8],
    ) -> Result<usize, PortionError> {
        let mut b = [0u8; IP_ENCODED];
        let n = self.ip.encode(&self.key, &mut b)?;
        let len = n - IP_FORMAT2;
        if out.len() < len {
            return Err(PortionError::TooLong { module: Module::Ip.name(), max: out.len() });
        }
        b[0] = 1;
        b[39..41].copy_from_slice(&bridge_position.to_le_bytes());
        b[43] = self.ip.orig_src_is_lo as u8;
        out[..len].copy_from_slice(&b[..len]);
        Ok(len)
    }
}

impl Portion for IpRecord {
    const MODULE: Module = Module::Ip;
    const MAX_LEN: usize = shm_layout::IP_PORTION_MAX;

    fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError> {
        self.ip.encode(&self.key, out)
    }

    fn decode(b: &[u8]) -> Result<Self, PortionError> {
        let mut r = Reader::new(b, Module::Ip)?;
        let mut f = r.fields::<{ IP_FIXED }>()?;
        let key = ConnKey {
            lo_addr: f.array(),
            hi_addr: f.array(),
            lo_port: f.u16(),
            hi_port: f.u16(),
            proto: f.u8(),
            family: f.u8(),
            zone: f.u16(),
            vlan: u32::from(f.u16()),
        };
        let mut key = key;
        if key.family != 4 && key.family != 6 || key.vlan > 0xfff {
            return Err(r.bad("address family or VLAN id"));
        }
        let flags = f.u8();
        let packets = [f.u64(), f.u64()];
        let bytes = [f.u64(), f.u64()];
        let created = f.u64();
        let (ingress, orig_src_is_lo, related) = if r.format >= 2 {
            if flags & !(FLAG_ORIG_SRC_IS_LO | FLAG_RELATED) != 0 {
                return Err(r.bad("flags"));
            }
            let ingress = r.u16()?;
            let inner = r.u16()?;
            if inner > 0xfff {
                return Err(r.bad("inner VLAN id"));
            }
            key.vlan |= u32::from(inner) << 12;
            (ingress, flags & FLAG_ORIG_SRC_IS_LO != 0, flags & FLAG_RELATED != 0)
        } else {
            let lo = crate::portion::bool_of(flags).ok_or_else(|| r.bad("boolean"))?;
            (crate::ports::UNKNOWN_PORT, lo, false)
        };
        let ip = IpPortion { packets, bytes, created, orig_src_is_lo, related, ingress };
        Ok(IpRecord { key, ip, format: r.format })
    }
}
