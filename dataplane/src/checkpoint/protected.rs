//! Protected connections at a restart: checkpointd keeps their records and
//! logs in its own memory (not the store segment), so a restarting
//! dataplane asks for them on checkpointd's control socket, before its
//! ports start.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One protected connection as checkpointd held it.
pub struct Held {
    /// Its id in checkpointd's records.
    pub id: u64,
    pub worker: u16,
    /// A record of its log was lost: it cannot be replayed.
    pub broken: bool,
    pub record: Vec<u8>,
    pub log: Vec<u8>,
    /// The stream offset of the log's first byte.
    pub base: u64,
    /// Its record's version (when it was written): of two records of one
    /// client port, the newer is the live connection.
    pub version: u64,
}

/// The most bytes a reply may announce: far above what any config's
/// `log_bound` × `connections` allows, and a stop for a damaged reply.
const REPLY_MAX: u64 = 64 << 30;

/// Everything checkpointd holds of protected connections.
pub fn fetch(control: &Path) -> Result<Vec<Held>> {
    let mut s = UnixStream::connect(control).with_context(|| {
        format!("connecting to checkpointd's control socket {}", control.display())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"{\"cmd\":\"protected\"}\n")?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).context("reading checkpointd's answer")?;
    let head: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("checkpointd answered {line:?}"))?;
    if let Some(e) = head.get("error") {
        bail!("checkpointd: {e} (a checkpointd older than this dataplane? upgrade it first)");
    }
    let n = head.get("protected").and_then(|v| v.as_u64()).context("no \"protected\" count")?;
    let bytes = head.get("bytes").and_then(|v| v.as_u64()).context("no \"bytes\" count")?;
    if bytes > REPLY_MAX {
        bail!("checkpointd announced {bytes} bytes of protected connections: refused");
    }
    // Read as it comes, not allocated up front: a damaged count costs an
    // error, not the memory it names.
    let mut body = Vec::new();
    r.take(bytes).read_to_end(&mut body).context("reading the protected connections")?;
    if body.len() as u64 != bytes {
        bail!(
            "checkpointd announced {bytes} bytes of protected connections and sent {}",
            body.len()
        );
    }
    parse(&body, n)
}

fn parse(mut body: &[u8], n: u64) -> Result<Vec<Held>> {
    let mut out = Vec::new();
    for i in 0..n {
        let Some((head, rest)) = body.split_at_checked(36) else {
            bail!("protected connection {i} of {n}: the reply ends in its header");
        };
        let id = u64::from_le_bytes(head[..8].try_into().unwrap());
        let worker = u16::from_le_bytes([head[8], head[9]]);
        let broken = head[10] != 0;
        let rec = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
        let log = u32::from_le_bytes(head[16..20].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(head[20..28].try_into().unwrap());
        let version = u64::from_le_bytes(head[28..36].try_into().unwrap());
        let Some((record, rest)) = rest.split_at_checked(rec) else {
            bail!("protected connection {i} of {n}: the reply ends in its record");
        };
        let Some((log, rest)) = rest.split_at_checked(log) else {
            bail!("protected connection {i} of {n}: the reply ends in its log");
        };
        out.push(Held {
            id,
            worker,
            broken,
            record: record.to_vec(),
            log: log.to_vec(),
            base,
            version,
        });
        body = rest;
    }
    if !body.is_empty() {
        bail!("{} bytes after the last protected connection", body.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(worker: u16, broken: bool, rec: &[u8], log: &[u8]) -> Vec<u8> {
        let mut b = 7u64.to_le_bytes().to_vec();
        b.extend_from_slice(&worker.to_le_bytes());
        b.extend_from_slice(&[u8::from(broken), 0]);
        b.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        b.extend_from_slice(&(log.len() as u32).to_le_bytes());
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(rec);
        b.extend_from_slice(log);
        b
    }

    #[test]
    fn a_reply_is_read_whole_or_refused() {
        let mut body = one(1, false, b"rec", b"log bytes");
        body.extend(one(0, true, b"r2", b""));
        let held = parse(&body, 2).unwrap();
        assert_eq!(
            (held[0].worker, held[0].broken, &held[0].log[..]),
            (1, false, &b"log bytes"[..])
        );
        assert_eq!((held[1].worker, held[1].broken, &held[1].record[..]), (0, true, &b"r2"[..]));
        assert!(parse(&body[..body.len() - 1], 2).is_err());
        assert!(parse(&body, 1).is_err(), "bytes left over");
        assert!(parse(&body, 3).is_err());
    }
}
