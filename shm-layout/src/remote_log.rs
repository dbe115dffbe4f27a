//! A protected connection in the remote copy (docs/CHECKPOINT.md#remote):
//! its head (snapshot, log base and end) is the PROTECT portion of a sealed
//! record under its own id, and its client log lies beside it in chunks,
//! each a field of the same bucket named by the id and the chunk's stream
//! offset. A change sends only the log bytes that are new; the head and
//! its new chunk go in one script call. Head and chunks name the log's
//! lineage, a random number drawn whenever its bytes start again (a new
//! connection, a log rebuilt after a lost record): a reader takes only the
//! chunks of its head's lineage, never bytes of an earlier log or of an
//! earlier connection with the same id.

use crate::remote::{RemoteError, SealKey, TAG_BYTES};
use hmac::Mac;

/// The first byte of a chunk's value.
pub const CHUNK_MARK: u8 = b'L';
/// A chunk field's value that removes it (the write script deletes the
/// field): the log was truncated past it, or the connection ended.
pub const CHUNK_GONE: &[u8] = b"X";
/// Bytes of a chunk's value besides its log bytes: the mark, the lineage,
/// the offset, the tag.
pub const CHUNK_OVERHEAD: usize = 1 + 8 + 8 + TAG_BYTES;
/// Bytes of a head's header.
pub const HEAD_HEADER_BYTES: usize = 30;
/// The most log bytes in one chunk: a standby's subscription carries each
/// call whole, and Redis cuts a subscriber off past its output buffer's
/// limit (`client-output-buffer-limit pubsub`, 32 MB by default).
pub const CHUNK_MAX: usize = 1 << 20;

/// The field a chunk of `id`'s log that starts at stream offset `offset`
/// sits under: 16 hex digits, a dot, 16 hex digits (a reader of connection
/// fields, 16 digits, passes over it).
pub fn chunk_field(id: u64, offset: u64) -> String {
    format!("{id:016x}.{offset:016x}")
}

/// The protected connection and offset of a chunk field.
pub fn field_chunk(field: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(field).ok().filter(|s| s.len() == 33)?;
    let (id, offset) = s.split_once('.')?;
    Some((u64::from_str_radix(id, 16).ok()?, u64::from_str_radix(offset, 16).ok()?))
}

fn chunk_mac(
    key: &SealKey,
    id: u64,
    (lineage, offset): (u64, u64),
    bytes: &[u8],
) -> hmac::Hmac<sha2::Sha256> {
    let mut m = key.0.clone();
    m.update(&[CHUNK_MARK]);
    m.update(&id.to_be_bytes());
    m.update(&lineage.to_be_bytes());
    m.update(&offset.to_be_bytes());
    m.update(&(bytes.len() as u64).to_be_bytes());
    m.update(bytes);
    m
}

/// Seals `bytes` of `id`'s log of `lineage`, from stream offset `offset`:
/// the mark, the lineage and the offset (big-endian), the bytes, a tag over
/// the id, lineage, offset, length and bytes.
pub fn encode_chunk(
    key: &SealKey,
    id: u64,
    (lineage, offset): (u64, u64),
    bytes: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(CHUNK_OVERHEAD + bytes.len());
    v.push(CHUNK_MARK);
    v.extend_from_slice(&lineage.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(bytes);
    v.extend_from_slice(&chunk_mac(key, id, (lineage, offset), bytes).finalize().into_bytes());
    v
}

/// Verifies a chunk read from field (`id`, `offset`); its lineage and log
/// bytes.
pub fn decode_chunk<'a>(
    key: &SealKey,
    (id, offset): (u64, u64),
    value: &'a [u8],
) -> Result<(u64, &'a [u8]), RemoteError> {
    if value.len() < CHUNK_OVERHEAD || value[0] != CHUNK_MARK {
        return Err(RemoteError::Truncated { len: value.len() });
    }
    let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    let (lineage, sealed) = (be64(&value[1..9]), be64(&value[9..17]));
    let (bytes, tag) = value[17..].split_at(value.len() - CHUNK_OVERHEAD);
    if sealed != offset {
        return Err(RemoteError::ForgedChunk);
    }
    chunk_mac(key, id, (lineage, offset), bytes)
        .verify_slice(tag)
        .map_err(|_| RemoteError::ForgedChunk)?;
    Ok((lineage, bytes))
}

/// A protected connection's head: the payload of its PROTECT portion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectedHead<'a> {
    /// A record of its log was lost: it cannot be replayed.
    pub broken: bool,
    /// The dataplane's newest record of it.
    pub record: &'a [u8],
    /// The stream offset of the log's first byte held (what was truncated
    /// before).
    pub base: u64,
    /// The stream offset past its last byte: the chunks cover `base..end`.
    pub end: u64,
    /// Its log's lineage: only chunks of the same one are its bytes.
    pub lineage: u64,
}

impl ProtectedHead<'_> {
    /// Appends the payload, big-endian as the rest of the remote copy:
    /// `broken` u8, 0 u8, record length u32, base u64, end u64, lineage
    /// u64, the record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[u8::from(self.broken), 0]);
        out.extend_from_slice(&(self.record.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.base.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.extend_from_slice(&self.lineage.to_be_bytes());
        out.extend_from_slice(self.record);
    }

    pub fn parse(payload: &[u8]) -> Result<ProtectedHead<'_>, RemoteError> {
        let bad = || RemoteError::Truncated { len: payload.len() };
        let (head, record) = payload.split_at_checked(HEAD_HEADER_BYTES).ok_or_else(bad)?;
        if head[0] > 1 || head[1] != 0 {
            return Err(RemoteError::Reserved);
        }
        let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        let (base, end, lineage) = (be64(&head[6..14]), be64(&head[14..22]), be64(&head[22..30]));
        let len = u32::from_be_bytes(head[2..6].try_into().expect("4 bytes")) as usize;
        if record.len() != len || end < base {
            return Err(bad());
        }
        Ok(ProtectedHead { broken: head[0] == 1, record, base, end, lineage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::new(&[b; 32], "k").unwrap()
    }

    #[test]
    fn a_chunk_reads_back_only_where_it_was_sealed() {
        let c = encode_chunk(&key(1), 7, (99, 1 << 33), b"INCR k\r\n");
        assert_eq!(decode_chunk(&key(1), (7, 1 << 33), &c), Ok((99, &b"INCR k\r\n"[..])));
        let mut other = c.clone();
        other[8] ^= 1;
        assert_eq!(
            decode_chunk(&key(1), (7, 1 << 33), &other),
            Err(RemoteError::ForgedChunk),
            "another lineage"
        );
        assert_eq!(decode_chunk(&key(2), (7, 1 << 33), &c), Err(RemoteError::ForgedChunk));
        assert_eq!(decode_chunk(&key(1), (8, 1 << 33), &c), Err(RemoteError::ForgedChunk));
        assert_eq!(decode_chunk(&key(1), (7, 1), &c), Err(RemoteError::ForgedChunk));
        for i in 1..c.len() {
            let mut bad = c.clone();
            bad[i] ^= 4;
            assert!(decode_chunk(&key(1), (7, 1 << 33), &bad).is_err(), "byte {i} flipped");
        }
        for n in 0..c.len() {
            assert!(decode_chunk(&key(1), (7, 1 << 33), &c[..n]).is_err(), "cut at {n}");
        }
        assert!(decode_chunk(&key(1), (7, 1 << 33), CHUNK_GONE).is_err());
    }

    #[test]
    fn fields_name_the_connection_and_offset() {
        let f = chunk_field(0xdead_beef, 42);
        assert_eq!(field_chunk(f.as_bytes()), Some((0xdead_beef, 42)));
        assert_eq!(crate::remote::field_conn(f.as_bytes()), None);
        assert_eq!(field_chunk(b"00000000deadbeef"), None);
        assert_eq!(field_chunk(b"00000000deadbeef-000000000000002a"), None);
    }

    #[test]
    fn a_head_reads_back_or_is_refused() {
        let h = ProtectedHead {
            broken: true,
            record: b"snap",
            base: 1 << 40,
            end: (1 << 40) + 9,
            lineage: 0xfeed,
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(ProtectedHead::parse(&out), Ok(h));
        for n in 0..out.len() {
            assert!(ProtectedHead::parse(&out[..n]).is_err(), "cut at {n}");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert!(ProtectedHead::parse(&longer).is_err());
        out[1] = 1;
        assert_eq!(ProtectedHead::parse(&out), Err(RemoteError::Reserved));
    }
}
