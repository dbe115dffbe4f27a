//! How checkpointd reaches the remote store: the URL and credentials of
//! `[checkpoint.remote]`, read once at start, and a connect that says what
//! went wrong.

use anyhow::{anyhow, bail, Context};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
        let tls = tls_of(sec, info.addr())?;
        let info = info.set_redis_settings(redis);
        let client = match tls {
            Some(certs) => redis::Client::build_with_tls(info, certs),
            None => redis::Client::open(info),
        }
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

/// The certificates of a `rediss://` URL, None for `redis://`; refuses TLS
/// files beside a plain URL (the operator meant TLS) and a URL that turns
/// certificate checks off.
fn tls_of(
    sec: &RemoteSection,
    addr: &ConnectionAddr,
) -> anyhow::Result<Option<redis::TlsCertificates>> {
    let set = |p: &std::path::Path| !p.as_os_str().is_empty();
    let any_file = set(&sec.tls_ca_file) || set(&sec.tls_cert_file) || set(&sec.tls_key_file);
    let insecure = match addr {
        ConnectionAddr::TcpTls { insecure, .. } => *insecure,
        _ if any_file => bail!(
            "checkpoint.remote.tls_* files are set but url {:?} is not rediss://: \
             use rediss://host:port for TLS, or remove the tls_* keys",
            sec.url
        ),
        _ => return Ok(None),
    };
    if insecure || sec.url.contains('#') {
        bail!(
            "checkpoint.remote.url {:?} turns certificate checks off: name the authority \
             that signed Redis's certificate in checkpoint.remote.tls_ca_file instead",
            sec.url
        );
    }
    let read = |key: &str, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        std::fs::read(path)
            .with_context(|| format!("checkpoint.remote.{key} {}: cannot read it", path.display()))
    };
    let certs_in = |key: &str, path: &std::path::Path, pem: &[u8]| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("checkpoint.remote.{key} {}: {e:?}", path.display()))?;
        if certs.is_empty() {
            bail!("checkpoint.remote.{key} {}: no PEM certificate in it", path.display());
        }
        Ok(certs)
    };
    let root_cert = if set(&sec.tls_ca_file) {
        let pem = read("tls_ca_file", &sec.tls_ca_file)?;
        certs_in("tls_ca_file", &sec.tls_ca_file, &pem)?;
        Some(pem)
    } else {
        None
    };
    let client_tls = match (set(&sec.tls_cert_file), set(&sec.tls_key_file)) {
        (true, true) => {
            let cert = read("tls_cert_file", &sec.tls_cert_file)?;
            let key = read("tls_key_file", &sec.tls_key_file)?;
            // The client builds its TLS settings at each connect: a pair
            // that does not match would fail every connect as an outage.
            let chain = certs_in("tls_cert_file", &sec.tls_cert_file, &cert)?;
            let der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                anyhow!(
                    "checkpoint.remote.tls_key_file {}: no PEM private key in it ({e:?})",
                    sec.tls_key_file.display()
                )
            })?;
            let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| {
                anyhow!("checkpoint.remote.tls_key_file {}: {e}", sec.tls_key_file.display())
            })?;
            match rustls::sign::CertifiedKey::new(chain, signer).keys_match() {
                Ok(())
                | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                Err(e) => bail!(
                    "checkpoint.remote.tls_key_file {} does not go with tls_cert_file {}: {e}",
                    sec.tls_key_file.display(),
                    sec.tls_cert_file.display()
                ),
            }
            Some(redis::ClientTlsConfig { client_cert: cert, client_key: key })
        }
        (false, false) => None,
        _ => bail!(
            "checkpoint.remote.tls_cert_file and tls_key_file go together: set both for a \
             Redis that asks for client certificates (tls-auth-clients), or neither"
        ),
    };
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
}

/// Whether an error means the credentials are wrong (no retry will help).
pub fn is_auth_error(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || ["WRONGPASS", "NOAUTH", "NOPERM", "NoPerm"].iter().any(|t| text.contains(t))
}

/// What a failed TLS handshake says of the setup, read from the TLS
/// library's own error rather than from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFault {
    /// A certificate or key that no retry will fix: an authority not
    /// trusted, a name that does not match, a client certificate refused or
    /// missing.
    Setup,
    /// A certificate expired or not valid yet: a clock not yet set at boot
    /// looks the same, so it is retried.
    Clock,
}

pub fn tls_fault(e: &redis::RedisError) -> Option<TlsFault> {
    use rustls::{AlertDescription as A, CertificateError as C};
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        return Some(TlsFault::Setup);
    }
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        // The client keeps an I/O error in an Arc: look through it, then
        // into the I/O error for the TLS library's.
        type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
        let io = err.downcast_ref::<std::io::Error>().or_else(|| {
            err.downcast_ref::<Shared>().and_then(|a| a.downcast_ref::<std::io::Error>())
        });
        let tls = err
            .downcast_ref::<rustls::Error>()
            .or_else(|| io.and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>()));
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(
                    C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. },
                )
                | rustls::Error::AlertReceived(A::CertificateExpired) => Some(TlsFault::Clock),
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InconsistentKeys(_)
                | rustls::Error::AlertReceived(
                    A::UnknownCA
                    | A::BadCertificate
                    | A::CertificateRequired
                    | A::UnsupportedCertificate
                    | A::CertificateUnknown
                    | A::CertificateRevoked
                    | A::HandshakeFailure
                    | A::AccessDenied,
                ) => Some(TlsFault::Setup),
                _ => None,
            };
        }
        at = err.source();
    }
    None
}

/// Why a connect failed, for the caller to tell a fatal cause from an outage.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}: check checkpoint.remote.user and password_file (and the user's ACL)")]
    Credentials(redis::RedisError),
    #[error(
        "{0}: the TLS handshake failed on a certificate: check checkpoint.remote.tls_ca_file \
         (the authority that signed Redis's tls-cert-file, whose subjectAltName must hold the \
         URL's host name or address), and tls_cert_file and tls_key_file (a certificate \
         Redis's tls-ca-cert-file trusts) if Redis asks for a client certificate"
    )]
    Certificate(redis::RedisError),
}

impl Refused {
    /// A connect's error as [`Refused`] when no retry can help, else as is.
    pub fn classify(e: redis::RedisError) -> anyhow::Error {
        if is_auth_error(&e) {
            Refused::Credentials(e).into()
        } else if tls_fault(&e) == Some(TlsFault::Setup) {
            Refused::Certificate(e).into()
        } else {
            e.into()
        }
    }
}

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
        Err(e) => Err(Refused::classify(e)),
    }
}

/// Whether an error from [`probe`] or a restore means retrying cannot help.
pub fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Refused>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(sec: &RemoteSection) -> String {
        let info = sec.url.as_str().into_connection_info().unwrap();
        match tls_of(sec, info.addr()) {
            Ok(_) => "accepted".into(),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn tls_settings_that_cannot_be_meant_are_refused() {
        let plain_with_files = RemoteSection {
            url: "redis://10.0.0.1:6379".into(),
            tls_ca_file: "/etc/lazarus/ca.crt".into(),
            ..RemoteSection::default()
        };
        assert!(tls_error(&plain_with_files).contains("not rediss://"));
        let insecure =
            RemoteSection { url: "rediss://10.0.0.1:6380/#insecure".into(), ..Default::default() };
        assert!(tls_error(&insecure).contains("tls_ca_file instead"));
        let half_pair = RemoteSection {
            url: "rediss://10.0.0.1:6380".into(),
            tls_cert_file: "/etc/lazarus/appliance.crt".into(),
            ..Default::default()
        };
        assert!(tls_error(&half_pair).contains("go together"));
        let not_pem = std::env::temp_dir().join(format!("lz-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, b"hello").unwrap();
        let wrong_file = RemoteSection {
            url: "rediss://10.0.0.1:6380".into(),
            tls_ca_file: not_pem.clone(),
            ..Default::default()
        };
        assert!(tls_error(&wrong_file).contains("no PEM certificate"));
        let _ = std::fs::remove_file(not_pem);
        let plain = RemoteSection { url: "redis://10.0.0.1:6379".into(), ..Default::default() };
        assert_eq!(tls_error(&plain), "accepted");
        let system_roots =
            RemoteSection { url: "rediss://redis.example:6380".into(), ..Default::default() };
        assert_eq!(tls_error(&system_roots), "accepted");
    }

    /// A handshake's failure as the client reports it: the TLS library's
    /// error inside an I/O error inside Redis's.
    fn handshake_error(e: rustls::Error) -> redis::RedisError {
        redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn tls_faults_are_told_from_outages_by_type() {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let setup = [
            E::InvalidCertificate(C::UnknownIssuer),
            E::InvalidCertificate(C::NotValidForName),
            E::AlertReceived(A::UnknownCA),
            E::AlertReceived(A::CertificateRequired),
            E::AlertReceived(A::HandshakeFailure),
            E::NoCertificatesPresented,
        ];
        for e in setup {
            let shown = format!("{e:?}");
            let r = handshake_error(e);
            assert_eq!(tls_fault(&r), Some(TlsFault::Setup), "{shown}");
            assert!(is_fatal(&Refused::classify(r)), "{shown}");
        }
        for e in [E::InvalidCertificate(C::Expired), E::InvalidCertificate(C::NotValidYet)] {
            let r = handshake_error(e);
            assert_eq!(tls_fault(&r), Some(TlsFault::Clock));
            assert!(!is_fatal(&Refused::classify(r)), "a clock not yet set is retried");
        }
        let down =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_fault(&down), None);
        assert!(!is_fatal(&Refused::classify(down)));
        // Text that merely mentions certificates is no certificate fault.
        let store = redis::RedisError::from(std::io::Error::other(
            "cannot read /etc/ssl/certs/ca-certificates.crt",
        ));
        assert_eq!(tls_fault(&store), None);
    }
}
