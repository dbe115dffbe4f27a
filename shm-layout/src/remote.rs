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
/// 2: the writer's epoch in the header and first in the order, the worker
/// and portion count under every tag, sealed deletes.
/// 3: the writer's worker count in the header and under every tag, so a
/// reader with another count places the connection by its own RSS. 2 is
/// read (its worker count unknown), never written.
pub const REMOTE_FORMAT: u8 = 3;
/// The previous format, still read.
pub const REMOTE_FORMAT_OLDEST: u8 = 2;
/// The format byte a delete's tag covers: deletes are as format 2 made them.
const DELETE_FORMAT: u8 = 2;

/// Buckets a namespace's connections are spread over. Fixed by the format:
/// a reader with another count would look in the wrong hashes.
pub const REMOTE_BUCKETS: u16 = 256;

/// The bucket's fencing token, decimal.
pub const EPOCH_FIELD: &str = "epoch";
/// The appliance that raised the bucket's epoch (or first wrote it).
pub const OWNER_FIELD: &str = "owner";
/// The bucket's count of script calls that wrote something; each is
/// published with its number, so a follower sees a gap.
pub const SEQ_FIELD: &str = "seq";

/// HMAC-SHA256 tag bytes after each portion, and after a delete.
pub const TAG_BYTES: usize = 32;
/// A key file shorter than this is refused (RFC 2104: at least the hash's
/// output length).
pub const KEY_MIN_BYTES: usize = 32;

const RECORD_HEADER_BYTES: usize = 24;
const PORTION_HEADER_BYTES: usize = 20;
/// `D`, epoch, version, tag.
const DELETE_BYTES: usize = 1 + 8 + 8 + TAG_BYTES;
/// The module byte a delete's tag is computed with.
const DELETE_MODULE: u8 = 0xFF;

/// The Lua the writer runs on one bucket (`KEYS[1]`). `ARGV[1]` the writer's
/// epoch, `ARGV[2]` when the oldest change in the call was drained (Unix ns,
/// for the followers' lag), `ARGV[3]` the appliance, then pairs: a
/// connection field and a sealed record or sealed delete. Refuses the whole
/// call when the bucket's epoch is newer (a fenced-off writer). Orders a
/// value by (epoch, version): a put or delete before what the field holds
/// is skipped; a stored value it cannot read (another format, cut short) is
/// taken as older. What it wrote it numbers ([`SEQ_FIELD`]) and publishes on
/// the channel named like the bucket ([`decode_change`]). A protected
/// connection's log chunk (a field of 33 bytes, [`crate::remote_log`]) is
/// written, or removed by `X`, without an order check. Returns `{status,
/// epoch, written, stale}`: status 1 ok, 0 fenced, 2 ok but the bucket had
/// no epoch (new, or lost by the server).
pub const WRITE_SCRIPT: &str = r#"
local key = KEYS[1]
local epoch = tonumber(ARGV[1])
local cur = redis.call('HGET', key, 'epoch')
local status = 1
if cur == false then
  status = 2
  redis.call('HSET', key, 'epoch', ARGV[1], 'owner', ARGV[3])
elseif tonumber(cur) > epoch then
  return {0, tonumber(cur), 0, 0}
elseif tonumber(cur) < epoch then
  redis.call('HSET', key, 'epoch', ARGV[1], 'owner', ARGV[3])
end
-- (epoch, version) of a value as four 32-bit halves, or nil.
local function order(s)
  local f = string.byte(s, 1)
  local t
  if f == 68 and #s >= 17 then
    t = {struct.unpack('>I4I4I4I4', s, 2)}
  elseif (f == 2 or f == 3) and #s >= 24 then
    t = {struct.unpack('>I4I4I4I4', s, 9)}
  else
    return nil
  end
  return {t[1], t[2], t[3], t[4]}
end
local function before(a, b)
  for i = 1, 4 do
    if a[i] ~= b[i] then return a[i] < b[i] end
  end
  return false
end
local written, stale = 0, 0
local msg = {}
for i = 4, #ARGV, 2 do
  local field, val = ARGV[i], ARGV[i + 1]
  local f = string.byte(val, 1)
  local wrote = false
  local chunk = #field == 33
  if chunk and f == 76 then
    -- A protected connection's log chunk (remote_log.rs): written as it
    -- comes, its head's order covers it; X removes one.
    redis.call('HSET', key, field, val)
    wrote = true
  elseif chunk and f == 88 then
    redis.call('HDEL', key, field)
    wrote = true
  else
    local new = order(val)
    local old = redis.call('HGET', key, field)
    local o = old and order(old)
    local delete = f == 68
    if new == nil then
      stale = stale + 1
    elseif o and before(new, o) then
      stale = stale + 1
    elseif delete and not old then
      -- nothing to delete
    else
      if delete then
        redis.call('HDEL', key, field)
      else
        redis.call('HSET', key, field, val)
      end
      wrote = true
    end
  end
  if wrote then
    written = written + 1
    msg[#msg + 1] = struct.pack('>I2', #field) .. field .. struct.pack('>I4', #val) .. val
  end
end
if written > 0 then
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  redis.call('PUBLISH', key, tostring(seq) .. '\n' .. ARGV[2] .. '\n' .. table.concat(msg))
end
return {status, epoch, written, stale}
"#;

/// Raises a bucket's epoch to `ARGV[1]`, owned by appliance `ARGV[2]`, when
/// it is below (compare and set: a takeover, or an active's start). Returns
/// `{epoch, owner}` as the bucket holds them after the call: another owner
/// at that epoch or above means another appliance got there first.
pub const RAISE_SCRIPT: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local want = tonumber(ARGV[1])
if cur < want then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'owner', ARGV[2])
  return {want, ARGV[2]}
end
return {cur, redis.call('HGET', KEYS[1], 'owner') or ''}
"#;

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

/// Why a remote key or record cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteError {
    #[error("cannot read the key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("the key file {path} holds {len} byte(s); use at least {KEY_MIN_BYTES} random bytes (e.g. `head -c 32 /dev/urandom > {path}`)")]
    KeyTooShort { path: String, len: usize },
    #[error("record of {len} byte(s) is cut short")]
    Truncated { len: usize },
    #[error("record format {0} is neither {REMOTE_FORMAT} nor {REMOTE_FORMAT_OLDEST}: written by another Lazarus build")]
    Format(u8),
    #[error("the delete's HMAC does not match (forged, or copied from another connection)")]
    ForgedDelete,
    #[error("a protected connection's log chunk: its HMAC does not match (forged, or copied from another connection or offset)")]
    ForgedChunk,
    #[error("reserved bytes are not zero: written by another Lazarus build, or damaged")]
    Reserved,
    #[error("portion of module {module}: its HMAC does not match (forged, or copied from another connection)")]
    Forged { module: u8 },
    #[error(
        "the record's header ({header:?}, epoch and version) is not its portions' ({portions:?})"
    )]
    Inconsistent { header: (u64, u64), portions: (u64, u64) },
}

/// The key every portion is sealed under, read from a file so that it never
/// sits in the config.
#[derive(Clone)]
pub struct SealKey(pub(crate) Hmac<Sha256>);

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

    fn mac(
        &self,
        conn_id: u64,
        format: u8,
        p: &RemotePortion<'_>,
        place: Option<Place>,
    ) -> Hmac<Sha256> {
        let mut m = self.0.clone();
        m.update(&[format, p.module]);
        m.update(&conn_id.to_be_bytes());
        m.update(&p.version.to_be_bytes());
        m.update(&p.epoch.to_be_bytes());
        if let Some(Place { worker, workers, count }) = place {
            m.update(&worker.to_be_bytes());
            if let Some(n) = workers {
                m.update(&n.to_be_bytes());
            }
            m.update(&[count]);
        }
        m.update(&(p.payload.len() as u16).to_be_bytes());
        m.update(p.payload);
        m
    }
}

/// What a record's tags cover besides each portion: where it was stored
/// and how many portions it has (format 2 without the worker count).
#[derive(Clone, Copy)]
struct Place {
    worker: u16,
    workers: Option<u16>,
    count: u8,
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
    /// The writer's worker count (None from a format 2 writer).
    pub workers: Option<u16>,
    /// The writer's epoch and the newest version: the record's place in the
    /// order the write script keeps.
    pub order: (u64, u64),
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

/// A sealed delete of `conn_id`, made at `version` by a writer at `epoch`:
/// `D`, the epoch and the version (big-endian, where the script reads
/// them), and a tag over them and the connection id.
pub fn encode_delete(key: &SealKey, conn_id: u64, epoch: u64, version: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(DELETE_BYTES);
    v.push(b'D');
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    let p = RemotePortion { module: DELETE_MODULE, version, epoch, payload: &[] };
    v.extend_from_slice(&key.mac(conn_id, DELETE_FORMAT, &p, None).finalize().into_bytes());
    v
}

/// Whether a stored or published value is a delete.
pub fn is_delete(value: &[u8]) -> bool {
    value.first() == Some(&b'D')
}

/// Verifies a sealed delete of `conn_id`; its (epoch, version).
pub fn decode_delete(key: &SealKey, conn_id: u64, value: &[u8]) -> Result<(u64, u64), RemoteError> {
    if value.len() != DELETE_BYTES || value[0] != b'D' {
        return Err(RemoteError::Truncated { len: value.len() });
    }
    let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    let (epoch, version) = (be64(&value[1..9]), be64(&value[9..17]));
    let p = RemotePortion { module: DELETE_MODULE, version, epoch, payload: &[] };
    key.mac(conn_id, DELETE_FORMAT, &p, None)
        .verify_slice(&value[17..])
        .map_err(|_| RemoteError::ForgedDelete)?;
    Ok((epoch, version))
}

/// Seals `portions` of `conn_id`, stored for `worker` of a dataplane of
/// `workers`, into `out` (cleared first): a 24-byte header (format, count,
/// worker, workers, 0, then the epoch and the newest version, big-endian,
/// where the script reads them), then each portion (module, 0, length,
/// version, epoch, payload) followed by its HMAC-SHA256 tag over the
/// format, module, connection id, version, epoch, worker, workers, count,
/// length and payload.
pub fn encode_record(
    key: &SealKey,
    conn_id: u64,
    worker: u16,
    workers: u16,
    portions: &[RemotePortion<'_>],
    out: &mut Vec<u8>,
) {
    out.clear();
    let newest = portions.iter().map(|p| p.version).max().unwrap_or(0);
    let epoch = portions.iter().map(|p| p.epoch).max().unwrap_or(0);
    let count = portions.len() as u8;
    out.extend_from_slice(&[REMOTE_FORMAT, count]);
    out.extend_from_slice(&worker.to_be_bytes());
    out.extend_from_slice(&workers.to_be_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&newest.to_be_bytes());
    for p in portions {
        out.extend_from_slice(&[p.module, 0]);
        out.extend_from_slice(&(p.payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&p.version.to_be_bytes());
        out.extend_from_slice(&p.epoch.to_be_bytes());
        out.extend_from_slice(p.payload);
        let place = Place { worker, workers: Some(workers), count };
        let tag = key.mac(conn_id, REMOTE_FORMAT, p, Some(place)).finalize();
        out.extend_from_slice(&tag.into_bytes());
    }
}

/// Reads back a record stored under `conn_id`'s field, verifying every tag
/// (format 2 records too: their tags do not cover the worker count, which
/// they do not carry).
pub fn decode_record<'a>(
    key: &SealKey,
    conn_id: u64,
    bytes: &'a [u8],
) -> Result<RemoteRecord<'a>, RemoteError> {
    let cut = || RemoteError::Truncated { len: bytes.len() };
    let format = *bytes.first().ok_or_else(cut)?;
    if format != REMOTE_FORMAT && format != REMOTE_FORMAT_OLDEST {
        return Err(RemoteError::Format(format));
    }
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(cut());
    }
    let workers = (format == REMOTE_FORMAT).then(|| u16::from_be_bytes([bytes[4], bytes[5]]));
    let reserved = if workers.is_some() { &bytes[6..8] } else { &bytes[4..8] };
    if reserved.iter().any(|&b| b != 0) {
        return Err(RemoteError::Reserved);
    }
    let count = bytes[1];
    let worker = u16::from_be_bytes([bytes[2], bytes[3]]);
    let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    let order = (be64(&bytes[8..16]), be64(&bytes[16..24]));
    let place = Some(Place { worker, workers, count });
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
        key.mac(conn_id, format, &p, place)
            .verify_slice(tag)
            .map_err(|_| RemoteError::Forged { module: p.module })?;
        portions.push(p);
        at = body + len + TAG_BYTES;
    }
    if at != bytes.len() {
        return Err(cut());
    }
    let newest = portions.iter().map(|p| p.version).max().unwrap_or(0);
    let epoch = portions.iter().map(|p| p.epoch).max().unwrap_or(0);
    if (epoch, newest) != order {
        return Err(RemoteError::Inconsistent { header: order, portions: (epoch, newest) });
    }
    Ok(RemoteRecord { worker, workers, order, portions })
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
        encode_record(&key(1), 42, 5, 6, &sample(), &mut out);
        let r = decode_record(&key(1), 42, &out).unwrap();
        assert_eq!((r.worker, r.workers, r.order), (5, Some(6), (3, 9)));
        assert_eq!(r.portions, sample());
        let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
        assert_eq!((be(&out[8..16]), be(&out[16..24])), (3, 9), "the script reads here");
    }

    #[test]
    fn forged_transplanted_moved_and_cut_records_are_refused() {
        let mut out = Vec::new();
        encode_record(&key(1), 42, 0, 2, &sample(), &mut out);
        assert_eq!(decode_record(&key(2), 42, &out), Err(RemoteError::Forged { module: 0 }));
        assert_eq!(decode_record(&key(1), 43, &out), Err(RemoteError::Forged { module: 0 }));
        // Every byte is covered: the worker, the worker count, the count,
        // the header's order.
        for i in 1..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x20;
            assert!(decode_record(&key(1), 42, &bad).is_err(), "byte {i} flipped");
        }
        for n in 0..out.len() {
            assert!(decode_record(&key(1), 42, &out[..n]).is_err(), "cut at {n}");
        }
        let mut other = out.clone();
        other[0] = 4;
        assert_eq!(decode_record(&key(1), 42, &other), Err(RemoteError::Format(4)));
    }

    #[test]
    fn deletes_are_sealed() {
        let d = encode_delete(&key(1), 42, 4, 100);
        assert!(is_delete(&d));
        assert_eq!(decode_delete(&key(1), 42, &d), Ok((4, 100)));
        assert_eq!(decode_delete(&key(1), 41, &d), Err(RemoteError::ForgedDelete));
        assert_eq!(decode_delete(&key(2), 42, &d), Err(RemoteError::ForgedDelete));
        for i in 1..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert!(decode_delete(&key(1), 42, &bad).is_err(), "byte {i} flipped");
        }
    }

    /// Format 2 (no worker count, tags without it): the bytes the previous
    /// build wrote, read back with the worker count unknown.
    #[test]
    fn a_format_2_record_is_still_read() {
        let k = key(1);
        let p = RemotePortion { module: 1, version: 9, epoch: 3, payload: b"tcp" };
        let mut v2 = vec![2u8, 1, 0, 5, 0, 0, 0, 0];
        v2.extend_from_slice(&3u64.to_be_bytes());
        v2.extend_from_slice(&9u64.to_be_bytes());
        v2.extend_from_slice(&[1, 0, 0, 3]);
        v2.extend_from_slice(&9u64.to_be_bytes());
        v2.extend_from_slice(&3u64.to_be_bytes());
        v2.extend_from_slice(b"tcp");
        let mut m = k.0.clone();
        m.update(&[2, 1]);
        m.update(&42u64.to_be_bytes());
        m.update(&9u64.to_be_bytes());
        m.update(&3u64.to_be_bytes());
        m.update(&5u16.to_be_bytes());
        m.update(&[1]);
        m.update(&3u16.to_be_bytes());
        m.update(b"tcp");
        v2.extend_from_slice(&m.finalize().into_bytes());
        let r = decode_record(&k, 42, &v2).unwrap();
        assert_eq!((r.worker, r.workers, r.order, r.portions), (5, None, (3, 9), vec![p]));
        // The same bytes called format 3 read a worker count of 0 that no
        // tag covers.
        v2[0] = 3;
        assert!(decode_record(&k, 42, &v2).is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            SealKey::new(&[0; 31], "k"),
            Err(RemoteError::KeyTooShort { len: 31, .. })
        ));
    }

    #[test]
    fn keys_fields_and_change_sets() {
        assert_eq!(bucket_key("pair1", 17), "lazarus:{pair1:17}");
        assert_eq!(field_conn(conn_field(0xdead_beef).as_bytes()), Some(0xdead_beef));
        assert_eq!(field_conn(EPOCH_FIELD.as_bytes()), None);
        assert_eq!(field_conn(SEQ_FIELD.as_bytes()), None);
        let mut seen = vec![0u32; usize::from(REMOTE_BUCKETS)];
        for id in 0..100_000u64 {
            seen[usize::from(bucket_of(id))] += 1;
        }
        assert!(seen.iter().all(|&n| (300..500).contains(&n)), "{seen:?}");
        let mut msg = b"12\n99\n".to_vec();
        let del = encode_delete(&key(1), 0xcd, 1, 5);
        for (f, v) in [(&b"00000000000000ab"[..], &b"record"[..]), (b"00000000000000cd", &del[..])]
        {
            msg.extend_from_slice(&(f.len() as u16).to_be_bytes());
            msg.extend_from_slice(f);
            msg.extend_from_slice(&(v.len() as u32).to_be_bytes());
            msg.extend_from_slice(v);
        }
        let c = decode_change(&msg).unwrap();
        assert_eq!((c.seq, c.drained_unix_ns, c.pairs.len()), (12, 99, 2));
        assert!(is_delete(c.pairs[1].1) && !is_delete(c.pairs[0].1));
        assert!(decode_change(&msg[..msg.len() - 1]).is_none());
    }
}
