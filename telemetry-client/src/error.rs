//! What can go wrong talking to a telemetry socket, each case with the next
//! thing to check.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A failed connection or exchange. `path` is the socket's; `during` names
/// the step ("its greeting", "sending /ethdev/list", "the reply to /ethdev/list").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "no DPDK telemetry socket at {}: is the process running, and started with the --file-prefix this path is for?",
        path.display()
    )]
    NoSocket { path: PathBuf },

    #[error(
        "{} refuses connections: the DPDK process that made it has exited (the socket is stale); start it again",
        path.display()
    )]
    Refused { path: PathBuf },

    #[error(
        "no permission to connect to {}: run as the user that started the DPDK process (root for /var/run/dpdk)",
        path.display()
    )]
    Permission { path: PathBuf },

    #[error("{}: {during}: {source}", path.display())]
    Io {
        path: PathBuf,
        during: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "{}: waited {timeout:?} for {during}: the process is stopped or its telemetry thread is stuck",
        path.display()
    )]
    Timeout { path: PathBuf, during: String, timeout: Duration },

    #[error(
        "{} closed the connection before {during}: the process exited, or it already serves as many telemetry clients as it takes (close one)",
        path.display()
    )]
    Closed { path: PathBuf, during: String },

    #[error(
        "{} is not a DPDK telemetry v2 socket: its greeting is not JSON ({source}): {}",
        path.display(),
        excerpt(text)
    )]
    BadGreeting {
        path: PathBuf,
        text: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("command {cmd:?} cannot be sent: {reason}")]
    BadCommand { cmd: String, reason: &'static str },

    #[error(
        "the reply to {cmd} is longer than the {limit} bytes the process announced (max_output_len) and was cut: is {} a DPDK telemetry v2 socket?",
        path.display()
    )]
    TooLarge { path: PathBuf, cmd: String, limit: usize },

    #[error("the reply to {cmd} is not JSON ({source}): {}", excerpt(text))]
    NotJson {
        cmd: String,
        text: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("the reply to {cmd} has no {key:?} entry: {}", excerpt(text))]
    Unexpected { cmd: String, key: String, text: String },

    #[error(
        "{cmd} answered null: the process does not know the command (an older build?) or refused its parameters; `/` lists the commands it knows"
    )]
    NoData { cmd: String },
}

impl Error {
    /// True when only this reply was unusable: the connection is still in
    /// step, and the next command may be asked.
    pub fn is_reply_only(&self) -> bool {
        matches!(
            self,
            Error::BadCommand { .. }
                | Error::TooLarge { .. }
                | Error::NotJson { .. }
                | Error::Unexpected { .. }
                | Error::NoData { .. }
        )
    }

    /// True when nothing answers at the path: the process is not running.
    pub fn is_not_running(&self) -> bool {
        matches!(self, Error::NoSocket { .. } | Error::Refused { .. })
    }
}

/// The start of a long text, for a one-line message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}
