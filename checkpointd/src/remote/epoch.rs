//! Epochs, the fencing tokens: each bucket holds the highest epoch and the
//! appliance that raised it. An active raises them at its start (its
//! versions restart with the TSC after a reboot, and the write script
//! orders by epoch first), a standby at its takeover; both by compare and
//! set, so two appliances racing cannot both win.

use super::link::Link;
use redis::aio::MultiplexedConnection;
use shm_layout::remote::{bucket_key, EPOCH_FIELD, OWNER_FIELD, RAISE_SCRIPT, REMOTE_BUCKETS};

/// What a raise found.
#[derive(Debug, PartialEq, Eq)]
pub enum Raised {
    /// Every bucket is at this epoch, owned by this appliance.
    Won(u64),
    /// Another appliance holds a bucket at or past the epoch wanted.
    Taken { epoch: u64, owner: String },
}

/// Every bucket's (epoch, owner).
pub async fn held(
    conn: &mut MultiplexedConnection,
    link: &Link,
) -> redis::RedisResult<Vec<(Option<u64>, Option<String>)>> {
    let mut pipe = redis::pipe();
    for b in 0..REMOTE_BUCKETS {
        pipe.cmd("HMGET").arg(bucket_key(&link.namespace, b)).arg(EPOCH_FIELD).arg(OWNER_FIELD);
    }
    pipe.query_async(conn).await
}

/// The highest epoch held and its owner.
pub fn top(held: &[(Option<u64>, Option<String>)]) -> Option<(u64, String)> {
    held.iter()
        .filter_map(|(e, o)| e.map(|e| (e, o.clone().unwrap_or_default())))
        .max_by_key(|(e, _)| *e)
}

/// Raises every bucket to one past the highest epoch held.
pub async fn raise(conn: &mut MultiplexedConnection, link: &Link) -> redis::RedisResult<Raised> {
    let want = top(&held(conn, link).await?).map_or(1, |(e, _)| e + 1);
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(RAISE_SCRIPT).query_async(conn).await?;
    let mut pipe = redis::pipe();
    for b in 0..REMOTE_BUCKETS {
        pipe.cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(bucket_key(&link.namespace, b))
            .arg(want)
            .arg(&link.appliance);
    }
    let got: Vec<(u64, String)> = pipe.query_async(conn).await?;
    Ok(match got.into_iter().find(|(e, o)| *e >= want && *o != link.appliance) {
        Some((epoch, owner)) => Raised::Taken { epoch, owner },
        None => Raised::Won(want),
    })
}
