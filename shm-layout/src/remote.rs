//! The remote copy's format: how checkpointd lays connections out in Redis
//! so that a rebooted appliance (or a standby) reads back exactly what was
//! written, and nothing forged, transplanted or fenced off.
//!
//! Keys are Redis Cluster ready: a connection lives in one of
//! [`REMOTE_BUCKETS`] hashes, `lazarus:{<namespace>:<bucket>}`, whose hash
//! tag puts the whole bucket (its epoch included) in one slot, so every write
//! is a single-key script call. Fields: [`EPOCH_FIELD`], [`ORIGIN_FIELD`],
//! and one per connection named by its id in 16 hex digits, holding a
//! [sealed record](encode_record). docs/CHECKPOINT.md has the picture.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;

/// Version of the sealed record's encoding; a change bumps it and keeps a
/// reader of the previous one (the version rule of docs/CHECKPOINT.md).
pub const REMOTE_FORMAT: u8 = 1;

/// Buckets a namespace's connections are spread over. Fixed by the format:
/// a reader with another count would look in the wrong hashes.
pub const REMOTE_BUCKETS: u16 = 256;

/// The bucket's fencing token, decimal.
pub const EPOCH_FIELD: &str = "epoch";
/// The boot and TSC rate the bucket's versions were taken under:
/// 32 hex digits of boot id, ':', TSC Hz.
pub const ORIGIN_FIELD: &str = "origin";

/// HMAC-SHA256 tag bytes after each portion.
pub const TAG_BYTES: usize = 32;
/// A key file shorter than this is refused (RFC 2104: at least the hash's
/// output length).
pub const KEY_MIN_BYTES: usize = 32;

const RECORD_HEADER_BYTES: usize = 16;
const PORTION_HEADER_BYTES: usize = 20;

/// The Lua the writer runs on one bucket (`KEYS[1]`). `ARGV[1]` the writer's
/// epoch, `ARGV[2]` its origin, `ARGV[3]` when the oldest change in the call
/// was drained (Unix ns, for the followers' lag), `ARGV[4]` the appliance
/// (the bucket's owner when the call creates its epoch), then pairs: a connection
/// field and either a sealed record (put) or `D` and 8 big-endian version
/// bytes (delete). Refuses the whole call when the bucket's epoch is newer
/// (a fenced-off writer); skips a put or delete older than what the field
/// holds. What it wrote it numbers (the bucket's [`SEQ_FIELD`]) and
/// publishes on the channel named like the bucket ([`encode_change`]'s
/// format), for standbys to follow. Returns `{status, epoch, written,
/// stale}`: status 1 ok, 0 fenced, 2 ok but the bucket had no epoch (new, or
/// lost by the server).
pub const WRITE_SCRIPT: &str = r#"
local key = KEYS[1]
local epoch = tonumber(ARGV[1])
local cur = redis.call('HGET', key, 'epoch')
local status = 1
if cur == false then
  status = 2
elseif tonumber(cur) > epoch then
  return {0, tonumber(cur), 0, 0}
end
if cur == false then
  redis.call('HSET', key, 'epoch', ARGV[1], 'owner', ARGV[4])
elseif tonumber(cur) < epoch then
  redis.call('HSET', key, 'epoch', ARGV[1])
end
redis.call('HSET', key, 'origin', ARGV[2])
local function ver(s, at)
  local hi, lo = struct.unpack('>I4I4', s, at)
  return hi, lo
end
local function older(nh, nl, oh, ol)
  return nh < oh or (nh == oh and nl < ol)
end
local written, stale = 0, 0
local msg = {}
for i = 5, #ARGV, 2 do
  local field, val = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', key, field)
  if string.sub(val, 1, 1) == 'D' then
    if old then
      local nh, nl = ver(val, 2)
      local oh, ol = ver(old, 9)
      if older(nh, nl, oh, ol) then
        stale = stale + 1
      else
        redis.call('HDEL', key, field)
        written = written + 1
        msg[#msg + 1] = struct.pack('>I2', #field) .. field .. struct.pack('>I4', #val) .. val
      end
    end
  else
    local fresh = true
    if old then
      local nh, nl = ver(val, 9)
      local oh, ol = ver(old, 9)
      fresh = not older(nh, nl, oh, ol)
    end
    if fresh then
      redis.call('HSET', key, field, val)
      written = written + 1
      msg[#msg + 1] = struct.pack('>I2', #field) .. field .. struct.pack('>I4', #val) .. val
    else
      stale = stale + 1
    end
  end
end
if written > 0 then
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  redis.call('PUBLISH', key, tostring(seq) .. '\n' .. ARGV[3] .. '\n' .. table.concat(msg))
end
return {status, epoch, written, stale}
"#;

/// Raises a bucket's epoch to `ARGV[1]`, owned by appliance `ARGV[2]`,
/// unless it is already there or past it (a takeover); returns the epoch
/// the bucket now holds.
pub const RAISE_SCRIPT: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local want = tonumber(ARGV[1])
if cur < want then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'owner', ARGV[2])
  return want
end
return cur
"#;

/// The appliance that raised the bucket's epoch (or first wrote it).
pub const OWNER_FIELD: &str = "owner";

/// The bucket's count of script calls that wrote something; each is
/// published with its number, so a follower sees a gap.
pub const SEQ_FIELD: &str = "seq";

/// One published change set of a bucket.
#[derive(Debug, PartialEq, Eq)]
pub struct ChangeSet<'a> {
    pub seq: u64,
    /// When the writer drained the oldest change in it (Unix ns).
    pub drained_unix_ns: u64,
    /// (field, value) as written: a sealed record or a delete.
    pub pairs: Vec<(&'a [u8], &'a [u8])>,
}

/// Reads a message the write script published; None when it is not one.
pub fn decode_change(msg: &[u8]) -> Option<ChangeSet<'_>> {
    let mut lines = msg.splitn(3, |&b| b == b'\n');
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let seq = num(lines.next()?)?;
    let drained_unix_ns = num(lines.next()?)?;
    let mut rest = lines.next()?;
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let flen = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let field = rest.get(2..2 + flen)?;
        let at = 2 + flen;
        let vlen = u32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
        let value = rest.get(at + 4..at + 4 + vlen)?;
        pairs.push((field, value));
        rest = &rest[at + 4 + vlen..];
    }
    Some(ChangeSet { seq, drained_unix_ns, pairs })
}

/// A delete value's version (see [`delete_value`]); None for a record.
pub fn deleted_version(value: &[u8]) -> Option<u64> {
    (value.len() == 9 && value[0] == b'D')
        .then(|| u64::from_be_bytes(value[1..].try_into().expect("8 bytes")))
}

/// Why a remote key or record cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteError {
    #[error("cannot read the key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("the key file {path} holds {len} byte(s); use at least {KEY_MIN_BYTES} random bytes (e.g. `head -c 32 /dev/urandom > {path}`)")]
    KeyTooShort { path: String, len: usize },
    #[error("record of {len} byte(s) is cut short")]
    Truncated { len: usize },
    #[error("record format {0} is not {REMOTE_FORMAT}: written by another Lazarus build")]
    Format(u8),
    #[error("reserved bytes are not zero: written by another Lazarus build, or damaged")]
    Reserved,
    #[error("portion of module {module}: its HMAC does not match (forged, or copied from another connection)")]
    Forged { module: u8 },
    #[error("the record's newest version {header} is not its portions' ({portions})")]
    Inconsistent { header: u64, portions: u64 },
}

/// The key every portion is sealed under, read from a file so that it never
/// sits in the config.
#[derive(Clone)]
pub struct SealKey(Hmac<Sha256>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn new(bytes: &[u8], path: &str) -> Result<Self, RemoteError> {
        if bytes.len() < KEY_MIN_BYTES {
            return Err(RemoteError::KeyTooShort { path: path.into(), len: bytes.len() });
        }
        let mac = Hmac::<Sha256>::new_from_slice(bytes)
            .map_err(|e| RemoteError::KeyFile { path: path.into(), reason: e.to_string() })?;
        Ok(SealKey(mac))
    }

    /// The whole file is the key (binary is fine; a trailing newline counts).
    pub fn from_file(path: &Path) -> Result<Self, RemoteError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| RemoteError::KeyFile { path: p.clone(), reason: e.to_string() })?;
        SealKey::new(&bytes, &p)
    }

    fn mac(&self, conn_id: u64, p: &RemotePortion<'_>) -> Hmac<Sha256> {
        let mut m = self.0.clone();
        m.update(&[REMOTE_FORMAT, p.module]);
        m.update(&conn_id.to_be_bytes());
        m.update(&p.version.to_be_bytes());
        m.update(&p.epoch.to_be_bytes());
        m.update(&(p.payload.len() as u16).to_be_bytes());
        m.update(p.payload);
        m
    }
}

/// One module's portion as it crosses the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePortion<'a> {
    pub module: u8,
    pub version: u64,
    /// The writer's epoch when it sealed the portion.
    pub epoch: u64,
    pub payload: &'a [u8],
}

/// A record read back and verified.
#[derive(Debug, PartialEq, Eq)]
pub struct RemoteRecord<'a> {
    pub worker: u16,
    pub newest: u64,
    pub portions: Vec<RemotePortion<'a>>,
}

/// The bucket a connection lives in (a multiplicative hash: ids are already
/// hashes of the addresses, this only spreads sequential test ids too).
pub fn bucket_of(conn_id: u64) -> u16 {
    ((conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(REMOTE_BUCKETS)) as u16
}

/// The Redis key of a namespace's bucket.
pub fn bucket_key(namespace: &str, bucket: u16) -> String {
    format!("lazarus:{{{namespace}:{bucket}}}")
}

/// The field a connection's record sits under.
pub fn conn_field(conn_id: u64) -> String {
    format!("{conn_id:016x}")
}

/// The connection id of a field, or None for the bucket's own fields.
pub fn field_conn(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok().filter(|s| s.len() == 16)?;
    u64::from_str_radix(s, 16).ok()
}

/// The value of a delete: `D` and the version, big-endian (the script reads
/// it there).
pub fn delete_value(version: u64) -> [u8; 9] {
    let mut v = [b'D'; 9];
    v[1..].copy_from_slice(&version.to_be_bytes());
    v
}

/// Seals `portions` of `conn_id` into `out` (cleared first): a 16-byte
/// header (format, count, worker, the newest version at byte 8, big-endian,
/// where the script compares it), then each portion (module, 0, length,
/// version, epoch, payload) followed by its HMAC-SHA256 tag over the format,
/// module, connection id, version, epoch, length and payload.
pub fn encode_record(
    key: &SealKey,
    conn_id: u64,
    worker: u16,
    portions: &[RemotePortion<'_>],
    out: &mut Vec<u8>,
) {
    out.clear();
    let newest = portions.iter().map(|p| p.version).max().unwrap_or(0);
    out.extend_from_slice(&[REMOTE_FORMAT, portions.len() as u8]);
    out.extend_from_slice(&worker.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&newest.to_be_bytes());
    for p in portions {
        out.extend_from_slice(&[p.module, 0]);
        out.extend_from_slice(&(p.payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&p.version.to_be_bytes());
        out.extend_from_slice(&p.epoch.to_be_bytes());
        out.extend_from_slice(p.payload);
        out.extend_from_slice(&key.mac(conn_id, p).finalize().into_bytes());
    }
}

/// Reads back a record stored under `conn_id`'s field, verifying every tag.
pub fn decode_record<'a>(
    key: &SealKey,
    conn_id: u64,
    bytes: &'a [u8],
) -> Result<RemoteRecord<'a>, RemoteError> {
    let cut = || RemoteError::Truncated { len: bytes.len() };
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(cut());
    }
    if bytes[0] != REMOTE_FORMAT {
        return Err(RemoteError::Format(bytes[0]));
    }
    if bytes[4..8] != [0; 4] {
        return Err(RemoteError::Reserved);
    }
    let count = bytes[1];
    let worker = u16::from_be_bytes([bytes[2], bytes[3]]);
    let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    let newest = be64(&bytes[8..16]);
    let mut at = RECORD_HEADER_BYTES;
    let mut portions = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let h = bytes.get(at..at + PORTION_HEADER_BYTES).ok_or_else(cut)?;
        if h[1] != 0 {
            return Err(RemoteError::Reserved);
        }
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let body = at + PORTION_HEADER_BYTES;
        let payload = bytes.get(body..body + len).ok_or_else(cut)?;
        let tag = bytes.get(body + len..body + len + TAG_BYTES).ok_or_else(cut)?;
        let p = RemotePortion {
            module: h[0],
            version: be64(&h[4..12]),
            epoch: be64(&h[12..20]),
            payload,
        };
        key.mac(conn_id, &p)
            .verify_slice(tag)
            .map_err(|_| RemoteError::Forged { module: p.module })?;
        portions.push(p);
        at = body + len + TAG_BYTES;
    }
    if at != bytes.len() {
        return Err(cut());
    }
    let top = portions.iter().map(|p| p.version).max().unwrap_or(0);
    if top != newest {
        return Err(RemoteError::Inconsistent { header: newest, portions: top });
    }
    Ok(RemoteRecord { worker, newest, portions })
}

/// The origin as [`ORIGIN_FIELD`] holds it.
pub fn origin_text(o: &crate::SegmentOrigin) -> String {
    let h: String = o.boot_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{h}:{}", o.tsc_hz)
}

/// Parses [`origin_text`]; None when it is not one.
pub fn parse_origin(text: &[u8]) -> Option<crate::SegmentOrigin> {
    let s = std::str::from_utf8(text).ok()?;
    let (hex, hz) = s.split_once(':')?;
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(crate::SegmentOrigin::new(id, hz.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::new(&[b; 32], "k").unwrap()
    }

    fn sample() -> [RemotePortion<'static>; 2] {
        [
            RemotePortion { module: 0, version: 7, epoch: 3, payload: b"ip portion" },
            RemotePortion { module: 1, version: 9, epoch: 3, payload: b"tcp" },
        ]
    }

    #[test]
    fn a_record_reads_back_field_for_field() {
        let mut out = Vec::new();
        encode_record(&key(1), 42, 5, &sample(), &mut out);
        let r = decode_record(&key(1), 42, &out).unwrap();
        assert_eq!((r.worker, r.newest), (5, 9));
        assert_eq!(r.portions, sample());
        assert_eq!(u64::from_be_bytes(out[8..16].try_into().unwrap()), 9, "the script reads here");
    }

    #[test]
    fn forged_transplanted_and_cut_records_are_refused() {
        let mut out = Vec::new();
        encode_record(&key(1), 42, 0, &sample(), &mut out);
        assert_eq!(decode_record(&key(2), 42, &out), Err(RemoteError::Forged { module: 0 }));
        assert_eq!(decode_record(&key(1), 43, &out), Err(RemoteError::Forged { module: 0 }));
        for i in (4..8).chain(16..out.len()) {
            let mut bad = out.clone();
            bad[i] ^= 0x20;
            assert!(decode_record(&key(1), 42, &bad).is_err(), "byte {i} flipped");
        }
        let mut newer = out.clone();
        newer[15] = 10;
        assert_eq!(
            decode_record(&key(1), 42, &newer),
            Err(RemoteError::Inconsistent { header: 10, portions: 9 })
        );
        for n in 0..out.len() {
            assert!(decode_record(&key(1), 42, &out[..n]).is_err(), "cut at {n}");
        }
        let mut other = out.clone();
        other[0] = 2;
        assert_eq!(decode_record(&key(1), 42, &other), Err(RemoteError::Format(2)));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            SealKey::new(&[0; 31], "k"),
            Err(RemoteError::KeyTooShort { len: 31, .. })
        ));
    }

    #[test]
    fn keys_and_fields() {
        assert_eq!(bucket_key("pair1", 17), "lazarus:{pair1:17}");
        assert_eq!(field_conn(conn_field(0xdead_beef).as_bytes()), Some(0xdead_beef));
        assert_eq!(field_conn(EPOCH_FIELD.as_bytes()), None);
        assert_eq!(field_conn(ORIGIN_FIELD.as_bytes()), None);
        let mut seen = vec![0u32; usize::from(REMOTE_BUCKETS)];
        for id in 0..100_000u64 {
            seen[usize::from(bucket_of(id))] += 1;
        }
        assert!(seen.iter().all(|&n| (300..500).contains(&n)), "{seen:?}");
        let mut msg = b"12\n99\n".to_vec();
        for (f, v) in
            [(&b"00000000000000ab"[..], &b"record"[..]), (b"00000000000000cd", &delete_value(5))]
        {
            msg.extend_from_slice(&(f.len() as u16).to_be_bytes());
            msg.extend_from_slice(f);
            msg.extend_from_slice(&(v.len() as u32).to_be_bytes());
            msg.extend_from_slice(v);
        }
        let c = decode_change(&msg).unwrap();
        assert_eq!((c.seq, c.drained_unix_ns, c.pairs.len()), (12, 99, 2));
        assert_eq!(deleted_version(c.pairs[1].1), Some(5));
        assert_eq!(deleted_version(c.pairs[0].1), None);
        assert!(decode_change(&msg[..msg.len() - 1]).is_none());
        let o = crate::SegmentOrigin::new([7; 16], 2_100_000_000);
        assert_eq!(parse_origin(origin_text(&o).as_bytes()), Some(o));
        assert_eq!(parse_origin(b"nonsense"), None);
    }
}
