//! How checkpointd reaches the remote store: the URL and credentials of
//! `[checkpoint.remote]`, read once at start, and a connect that says what
//! went wrong.

use anyhow::{bail, Context};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use shm_layout::remote::SealKey;
use shm_layout::RemoteSection;
use std::time::Duration;

/// Everything needed to talk to the store, validated.
pub struct Link {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// The URL as logs show it (it never holds a password).
    pub shown: String,
    pub key: SealKey,
    pub namespace: String,
    pub timeout: Duration,
    /// This appliance's name (the owner of the epochs it raises).
    pub appliance: String,
    /// `role = "standby"`: follow the remote copy instead of writing it.
    pub standby: bool,
    pub takeover_max_lag: Duration,
}

impl Link {
    /// None when `url` is "" (no remote copy).
    pub fn load(sec: &RemoteSection) -> anyhow::Result<Option<Link>> {
        if sec.url.is_empty() {
            return Ok(None);
        }
        let info = sec.url.as_str().into_connection_info().with_context(|| {
            format!("checkpoint.remote.url {:?} is not a redis:// URL", sec.url)
        })?;
        if info.redis_settings().password().is_some() {
            bail!(
                "checkpoint.remote.url holds a password: put it in the file named by \
                 checkpoint.remote.password_file instead, so the config can be shared"
            );
        }
        let mut redis = info.redis_settings().clone();
        if !sec.user.is_empty() {
            redis = redis.set_username(&sec.user);
        }
        if !sec.password_file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(&sec.password_file).with_context(|| {
                format!(
                    "checkpoint.remote.password_file {}: cannot read it",
                    sec.password_file.display()
                )
            })?;
            let pass = text.trim_end_matches(['\n', '\r']);
            if pass.is_empty() {
                bail!("checkpoint.remote.password_file {} is empty", sec.password_file.display());
            }
            redis = redis.set_password(pass);
        }
        if sec.hmac_key_file.as_os_str().is_empty() {
            bail!(
                "checkpoint.remote.hmac_key_file is not set: every portion sent to the remote store \
                 is sealed with a key only the appliances have (make one with `head -c 32 \
                 /dev/urandom > /etc/lazarus/remote.key`)"
            );
        }
        let key =
            SealKey::from_file(&sec.hmac_key_file).context("checkpoint.remote.hmac_key_file")?;
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if sec.namespace.is_empty() || !sec.namespace.chars().all(name_ok) {
            bail!(
                "checkpoint.remote.namespace {:?}: need letters, digits, '-', '_' or '.'",
                sec.namespace
            );
        }
        if sec.batch == 0 || sec.timeout_ms == 0 {
            bail!("checkpoint.remote.batch and timeout_ms must be at least 1");
        }
        let standby = match sec.role.as_str() {
            "active" => false,
            "standby" => true,
            other => bail!("checkpoint.remote.role {other:?}: \"active\" or \"standby\""),
        };
        let appliance = if sec.appliance.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            sec.appliance.clone()
        };
        if appliance.is_empty() || appliance.len() > 64 {
            bail!("checkpoint.remote.appliance: need a name of 1 to 64 bytes (the host name is used when it is \"\")");
        }
        let timeout = Duration::from_millis(sec.timeout_ms);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let user = if sec.user.is_empty() { String::new() } else { format!(" as {}", sec.user) };
        let client = redis::Client::open(info.set_redis_settings(redis))
            .with_context(|| format!("checkpoint.remote.url {:?}", sec.url))?;
        Ok(Some(Link {
            client,
            config,
            shown: format!("{}{user}", sec.url),
            key,
            namespace: sec.namespace.clone(),
            timeout,
            appliance,
            standby,
            takeover_max_lag: Duration::from_millis(sec.takeover_max_lag_ms),
        }))
    }

    pub async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.client.get_multiplexed_async_connection_with_config(&self.config).await
    }

    /// A connection in subscriber mode.
    pub async fn subscriber(&self) -> redis::RedisResult<redis::aio::PubSub> {
        tokio::time::timeout(self.timeout, self.client.get_async_pubsub()).await.map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })?
    }
}

/// Whether an error means the credentials are wrong (no retry will help).
pub fn is_auth_error(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || ["WRONGPASS", "NOAUTH", "NOPERM", "NoPerm"].iter().any(|t| text.contains(t))
}

/// Why a connect failed, for the caller to tell a fatal cause from an outage.
#[derive(Debug, thiserror::Error)]
#[error("{0}: check checkpoint.remote.user and password_file (and the user's ACL)")]
pub struct Refused(pub redis::RedisError);

/// Connects once and runs the writer's reads, within `timeout`.
pub fn probe(link: &Link, timeout: Duration) -> anyhow::Result<()> {
    let r = super::block_on_timeout(timeout, async {
        let mut c = link.connect().await?;
        // What the writer runs, so that an ACL missing a command fails
        // the start instead of every write.
        let key = shm_layout::remote::bucket_key(&link.namespace, 0);
        redis::cmd("HMGET")
            .arg(&key)
            .arg("epoch")
            .arg("owner")
            .query_async::<redis::Value>(&mut c)
            .await?;
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(shm_layout::remote::WRITE_SCRIPT)
            .query_async::<String>(&mut c)
            .await
    })?
    .ok_or_else(|| anyhow::anyhow!("no answer within {timeout:?}"))?;
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_auth_error(&e) => Err(Refused(e).into()),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error from [`probe`] or a restore means retrying cannot help.
pub fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Refused>())
}
