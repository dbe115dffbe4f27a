//! The dataplane's side of a scrape: its `/lazarus/` telemetry commands,
//! asked over its DPDK telemetry socket.

use super::families::{flatten, Families};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use telemetry_client::TelemetryClient;

/// Commands asked of the dataplane at each scrape, and the metric prefix of
/// each reply's numbers. The first decides `lazarus_dataplane_up`.
const DATAPLANE_COMMANDS: [(&str, &str); 2] =
    [("/lazarus/workers", "dataplane"), ("/lazarus/checkpoint", "dataplane_checkpoint")];

/// How long one telemetry exchange may take before the scrape gives up on
/// the dataplane (its telemetry thread is not on the fast path, but it may
/// be wedged).
const TELEMETRY_TIMEOUT: Duration = Duration::from_millis(500);

/// The dataplane's side of a scrape.
#[derive(Debug, Default)]
pub struct Dataplane {
    pub up: bool,
    pub scrape_seconds: f64,
    /// Metric name -> samples (labels, value), every number in the replies.
    pub families: Families,
}

/// Asks the dataplane for its counters. Any failure (socket absent, refused,
/// timeout, unknown command) yields `up = false` and is logged at debug only:
/// a dataplane that is restarting is normal.
pub fn scrape(socket: &Path) -> Dataplane {
    let start = Instant::now();
    let mut dp = Dataplane::default();
    match ask_all(socket) {
        Ok(replies) => {
            for ((cmd, prefix), payload) in DATAPLANE_COMMANDS.iter().zip(&replies) {
                let Some(p) = payload else { continue };
                if *cmd == DATAPLANE_COMMANDS[0].0 {
                    dp.up = true;
                }
                flatten(&format!("lazarus_{prefix}"), p, &Vec::new(), &mut dp.families);
            }
        }
        Err(e) => tracing::debug!("dataplane telemetry: {e}"),
    }
    // Names the reply shares with our own families would make the exposition
    // invalid; they cannot arise with the prefixes above, but be sure.
    dp.families.retain(|name, _| {
        name != "lazarus_dataplane_up" && name != "lazarus_dataplane_scrape_seconds"
    });
    dp.scrape_seconds = start.elapsed().as_secs_f64();
    dp
}

/// Each command's data, None where only that reply was unusable (null from
/// an older dataplane, not JSON); a broken connection fails the whole scrape.
fn ask_all(socket: &Path) -> Result<Vec<Option<Value>>, telemetry_client::Error> {
    let mut c = TelemetryClient::connect_timeout(socket, TELEMETRY_TIMEOUT)?;
    DATAPLANE_COMMANDS
        .iter()
        .map(|(cmd, _)| match c.query(cmd) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.is_reply_only() => {
                tracing::debug!("dataplane telemetry: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};

    fn l(pairs: &[(&str, &str)]) -> crate::metrics::families::Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn absent_socket_is_down_not_an_error() {
        let dp = scrape(Path::new("/nonexistent/dpdk_telemetry.v2"));
        assert!(!dp.up);
        assert!(dp.families.is_empty());
    }

    /// A stand-in for the dataplane's telemetry socket: greets, then answers
    /// each command from `replies` (by command) or with null, as DPDK does
    /// for an unknown command.
    fn fake_telemetry(
        path: &Path,
        replies: Vec<(&'static str, Value)>,
    ) -> std::thread::JoinHandle<Vec<String>> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let _ = std::fs::remove_file(path);
        let l = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        l.bind(&SockAddr::unix(path).unwrap()).unwrap();
        l.listen(1).unwrap();
        std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            (&c).write_all(br#"{"version": "DPDK 22.11.0", "pid": 42, "max_output_len": 16384}"#)
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = (&c).read(&mut buf).unwrap_or(0);
                if n == 0 {
                    return seen;
                }
                let cmd = String::from_utf8_lossy(&buf[..n]).into_owned();
                let data =
                    replies.iter().find(|(k, _)| *k == cmd).map_or(Value::Null, |(_, v)| v.clone());
                (&c).write_all(json!({ cmd.clone(): data }).to_string().as_bytes()).unwrap();
                seen.push(cmd);
            }
        })
    }

    #[test]
    fn scrape_reads_a_dataplane_over_telemetry_v2() {
        let path =
            std::env::temp_dir().join(format!("lazarus-fake-telemetry-{}.v2", std::process::id()));
        let server = fake_telemetry(
            &path,
            // The shape the dataplane answers (dataplane/src/telemetry.rs).
            vec![(
                "/lazarus/workers",
                json!({"worker0": {"worker": 0, "lcore": 1, "rx": 7}, "worker1": {"worker": 1, "lcore": 2, "rx": 9}}),
            )],
        );
        let dp = scrape(&path);
        assert!(dp.up);
        assert_eq!(
            dp.families["lazarus_dataplane_rx"],
            vec![(l(&[("worker", "0")]), 7.0), (l(&[("worker", "1")]), 9.0)]
        );
        // /lazarus/checkpoint answered null (not in this build): no samples, still up.
        assert!(!dp.families.keys().any(|k| k.starts_with("lazarus_dataplane_checkpoint")));
        assert_eq!(server.join().unwrap(), vec!["/lazarus/workers", "/lazarus/checkpoint"]);
        let server = fake_telemetry(&path, vec![]);
        assert!(!scrape(&path).up, "a dataplane without /lazarus/workers is down");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
