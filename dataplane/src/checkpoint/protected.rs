//! Protected connections at a restart: checkpointd keeps their records and
//! logs in its own memory (not the store segment), so a restarting
//! dataplane asks for them on checkpointd's control socket, before its
//! ports start.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub use shm_layout::HeldProtected as Held;

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
    Ok(shm_layout::parse_protected(&body, n)?)
}
