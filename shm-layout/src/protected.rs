//! The protected connections checkpointd keeps in its memory, as its control
//! socket's `protected` command hands them over (to a restarting dataplane,
//! and to `lazarusctl conns`): a JSON line `{"protected": n, "bytes": b}`,
//! then `b` bytes of `n` entries, each a little-endian header (`conn_id` u64,
//! `worker` u16, `broken` u8, 0 u8, record length u32, log length u32, the
//! log's stream offset u64, the record's version u64), the record, the log.

/// Bytes of an entry's header.
pub const PROTECTED_HEADER_BYTES: usize = 36;

/// One protected connection as checkpointd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldProtected {
    /// Its id in the rings' records.
    pub id: u64,
    /// The ring (worker) that wrote it last.
    pub worker: u16,
    /// A record of its log was lost: it cannot be replayed.
    pub broken: bool,
    /// Its newest PROTECT portion (empty when none came yet).
    pub record: Vec<u8>,
    /// Its client log, from stream offset `base`.
    pub log: Vec<u8>,
    pub base: u64,
    /// The record's version (when it was written): of two records of one
    /// client port, the newer is the live connection.
    pub version: u64,
}

/// Appends one entry to a `protected` reply's body.
pub fn encode_protected(
    out: &mut Vec<u8>,
    id: u64,
    worker: u16,
    broken: bool,
    (record, version): (&[u8], u64),
    (log, base): (&[u8], u64),
) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&worker.to_le_bytes());
    out.extend_from_slice(&[u8::from(broken), 0]);
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(&(log.len() as u32).to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(log);
}

/// Why a `protected` reply's body cannot be read.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProtectedReplyError {
    #[error("protected connection {at} of {n}: the reply ends in its {part}; checkpointd's reply was cut or damaged")]
    Short { at: u64, n: u64, part: &'static str },
    #[error("{0} bytes after the last protected connection: checkpointd's reply is damaged")]
    Trailing(usize),
}

/// The `n` entries of a `protected` reply's body.
pub fn parse_protected(mut body: &[u8], n: u64) -> Result<Vec<HeldProtected>, ProtectedReplyError> {
    let mut out = Vec::new();
    for at in 0..n {
        let short = |part| ProtectedReplyError::Short { at, n, part };
        let (head, rest) = body.split_at_checked(PROTECTED_HEADER_BYTES).ok_or(short("header"))?;
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap()) as usize;
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap());
        let (record, rest) = rest.split_at_checked(u32_at(12)).ok_or(short("record"))?;
        let (log, rest) = rest.split_at_checked(u32_at(16)).ok_or(short("log"))?;
        out.push(HeldProtected {
            id: u64_at(0),
            worker: u16::from_le_bytes([head[8], head[9]]),
            broken: head[10] != 0,
            record: record.to_vec(),
            log: log.to_vec(),
            base: u64_at(20),
            version: u64_at(28),
        });
        body = rest;
    }
    if !body.is_empty() {
        return Err(ProtectedReplyError::Trailing(body.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_whole_or_refused() {
        let mut body = Vec::new();
        encode_protected(&mut body, 7, 1, false, (b"rec", 3), (b"log bytes", 9));
        encode_protected(&mut body, 8, 0, true, (b"r2", 4), (b"", 0));
        let held = parse_protected(&body, 2).unwrap();
        assert_eq!(
            held[0],
            HeldProtected {
                id: 7,
                worker: 1,
                broken: false,
                record: b"rec".to_vec(),
                log: b"log bytes".to_vec(),
                base: 9,
                version: 3
            }
        );
        assert_eq!((held[1].id, held[1].broken, &held[1].record[..]), (8, true, &b"r2"[..]));
        assert!(parse_protected(&body[..body.len() - 1], 2).is_err());
        assert_eq!(parse_protected(&body, 1).err(), Some(ProtectedReplyError::Trailing(38)));
        assert!(parse_protected(&body, 3).is_err());
    }
}
