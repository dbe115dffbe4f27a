//! The client against a real SOCK_SEQPACKET socket, a thread playing the
//! DPDK side: greeting, then one reply per command.

use serde_json::{json, Value};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;
use telemetry_client::{socket_path, Error, TelemetryClient};

const GREETING: &str = r#"{"version": "DPDK 22.11.4", "pid": 4242, "max_output_len": 16384}"#;

/// What the fake process does with one command.
enum Answer {
    Send(Vec<u8>),
    /// Reads on without replying (a stuck telemetry thread).
    Ignore,
    Hangup,
}

/// DPDK's reply to `cmd` carrying `data`.
fn reply(cmd: &str, data: Value) -> Answer {
    let name = cmd.split(',').next().unwrap();
    Answer::Send(json!({ name: data }).to_string().into_bytes())
}

struct Fake {
    path: PathBuf,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl Fake {
    /// Listens at a fresh path; the one client that connects gets
    /// `greeting` (None: hung up on at once), then `answer` per command.
    fn start(
        name: &str,
        greeting: Option<&str>,
        answer: impl Fn(&str) -> Answer + Send + 'static,
    ) -> Fake {
        let path = std::env::temp_dir()
            .join(format!("lazarus-telemetry-client-{}-{name}.v2", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        l.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        l.listen(1).unwrap();
        let greeting = greeting.map(str::to_string);
        let thread = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            let Some(g) = greeting else { return seen };
            (&c).write_all(g.as_bytes()).unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = (&c).read(&mut buf).unwrap_or(0);
                if n == 0 {
                    return seen;
                }
                let cmd = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(cmd.clone());
                match answer(&cmd) {
                    Answer::Send(bytes) => {
                        (&c).write_all(&bytes).unwrap();
                    }
                    Answer::Ignore => {}
                    Answer::Hangup => return seen,
                }
            }
        });
        Fake { path, thread: Some(thread) }
    }

    /// The commands the fake saw; the client must be dropped first.
    fn seen(mut self) -> Vec<String> {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn greeting_then_one_json_reply_per_command() {
    let fake = Fake::start("ok", Some(GREETING), |cmd| match cmd {
        "/lazarus/stats" => reply(cmd, json!({"rx": 7, "ports": ["a", "b"]})),
        "/ethdev/stats,0" => reply(cmd, json!({"ipackets": 3})),
        _ => reply(cmd, Value::Null),
    });
    let mut c = TelemetryClient::connect(&fake.path).unwrap();
    assert_eq!(c.greeting().version, "DPDK 22.11.4");
    assert_eq!(c.greeting().pid, Some(4242));
    assert_eq!(c.greeting().max_output_len, 16384);
    assert_eq!(c.query("/lazarus/stats").unwrap(), json!({"rx": 7, "ports": ["a", "b"]}));
    // Keyed by the name alone, as DPDK does.
    assert_eq!(c.query("/ethdev/stats,0").unwrap()["ipackets"], 3);
    let e = c.query("/lazarus/nope").unwrap_err();
    assert!(matches!(&e, Error::NoData { cmd } if cmd == "/lazarus/nope"), "{e:?}");
    assert!(e.is_reply_only());
    assert!(e.to_string().contains("does not know the command"), "{e}");
    assert_eq!(
        c.query_text("/lazarus/stats").unwrap(),
        r#"{"/lazarus/stats":{"ports":["a","b"],"rx":7}}"#
    );
    drop(c);
    assert_eq!(
        fake.seen(),
        ["/lazarus/stats", "/ethdev/stats,0", "/lazarus/nope", "/lazarus/stats"]
    );
}

#[test]
fn a_reply_over_the_announced_limit_is_an_error_and_the_next_one_is_read() {
    let greeting = r#"{"version": "DPDK 22.11.4", "pid": 1, "max_output_len": 1024}"#;
    let fake = Fake::start("large", Some(greeting), |cmd| match cmd {
        "/big" => reply(cmd, json!("x".repeat(4000))),
        _ => reply(cmd, json!(1)),
    });
    let mut c = TelemetryClient::connect(&fake.path).unwrap();
    assert_eq!(c.greeting().max_output_len, 1024);
    let e = c.query("/big").unwrap_err();
    assert!(matches!(&e, Error::TooLarge { limit: 1024, .. }), "{e:?}");
    assert!(e.is_reply_only());
    let msg = e.to_string();
    assert!(
        msg.contains("/big") && msg.contains("1024 bytes") && msg.contains("max_output_len"),
        "{msg}"
    );
    // SOCK_SEQPACKET dropped the rest of the long message: still in step.
    assert_eq!(c.query("/small").unwrap(), json!(1));
}

#[test]
fn a_non_json_reply_names_the_command_and_shows_the_text() {
    let fake = Fake::start("notjson", Some(GREETING), |cmd| match cmd {
        "/text" => Answer::Send(b"hello, not json".to_vec()),
        "/other" => Answer::Send(br#"{"/something_else": 1}"#.to_vec()),
        _ => reply(cmd, json!(2)),
    });
    let mut c = TelemetryClient::connect(&fake.path).unwrap();
    let e = c.query("/text").unwrap_err();
    assert!(matches!(e, Error::NotJson { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/text is not JSON") && e.to_string().contains("hello, not json"),
        "{e}"
    );
    let e = c.query("/other").unwrap_err();
    assert!(matches!(&e, Error::Unexpected { key, .. } if key == "/other"), "{e:?}");
    assert_eq!(c.query("/fine").unwrap(), json!(2));

    let long = "y".repeat(5000);
    let fake = Fake::start("badgreeting", Some(&long), |_| Answer::Hangup);
    let e = TelemetryClient::connect(&fake.path).unwrap_err();
    assert!(matches!(e, Error::BadGreeting { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("not a DPDK telemetry v2 socket") && msg.contains("(5000 bytes)"),
        "{msg}"
    );
    assert!(msg.len() < 600, "the text is cut for a one-line message: {msg}");
}

#[test]
fn a_closed_socket_says_when_it_closed() {
    let fake = Fake::start("hangup", Some(GREETING), |_| Answer::Hangup);
    let mut c = TelemetryClient::connect(&fake.path).unwrap();
    let e = c.query("/lazarus/stats").unwrap_err();
    assert!(
        matches!(&e, Error::Closed { during, .. } if during == "the reply to /lazarus/stats"),
        "{e:?}"
    );
    assert!(!e.is_reply_only());
    assert!(e.to_string().contains("the process exited"), "{e}");

    // DPDK hangs up at once on a client over its limit.
    let fake = Fake::start("full", None, |_| Answer::Hangup);
    let e = TelemetryClient::connect(&fake.path).unwrap_err();
    assert!(matches!(&e, Error::Closed { during, .. } if during == "its greeting"), "{e:?}");
    assert!(e.to_string().contains("close one"), "{e}");
}

#[test]
fn a_silent_process_times_out() {
    let fake = Fake::start("silent", Some(GREETING), |_| Answer::Ignore);
    let mut c = TelemetryClient::connect_timeout(&fake.path, Duration::from_millis(100)).unwrap();
    let e = c.query("/lazarus/stats").unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("stuck"), "{e}");
}

#[test]
fn no_process_behind_the_path_is_not_running() {
    let path = std::env::temp_dir()
        .join(format!("lazarus-telemetry-client-{}-absent.v2", std::process::id()));
    let e = TelemetryClient::connect(&path).unwrap_err();
    assert!(matches!(e, Error::NoSocket { .. }), "{e:?}");
    assert!(e.is_not_running());
    let msg = e.to_string();
    assert!(msg.contains(path.to_str().unwrap()) && msg.contains("--file-prefix"), "{msg}");

    // A socket file left by a process that exited: nobody listens.
    let stale = std::env::temp_dir()
        .join(format!("lazarus-telemetry-client-{}-stale.v2", std::process::id()));
    let _ = std::fs::remove_file(&stale);
    drop(
        Socket::new(Domain::UNIX, Type::SEQPACKET, None)
            .unwrap()
            .bind(&SockAddr::unix(&stale).unwrap()),
    );
    let e = TelemetryClient::connect(&stale).unwrap_err();
    let _ = std::fs::remove_file(&stale);
    assert!(matches!(e, Error::Refused { .. }), "{e:?}");
    assert!(e.is_not_running());
    assert!(e.to_string().contains("stale"), "{e}");
}

#[test]
fn commands_dpdk_would_misread_are_refused_before_sending() {
    let fake = Fake::start("badcmd", Some(GREETING), |cmd| reply(cmd, json!(0)));
    let mut c = TelemetryClient::connect(&fake.path).unwrap();
    for cmd in [String::new(), format!("/{}", "a".repeat(1100))] {
        let e = c.query(&cmd).unwrap_err();
        assert!(matches!(e, Error::BadCommand { .. }), "{e:?}");
        assert!(e.is_reply_only());
    }
    assert_eq!(c.query("/ok").unwrap(), json!(0));
    drop(c);
    assert_eq!(fake.seen(), ["/ok"]);
}

#[test]
fn socket_path_is_eals_runtime_dir() {
    let p = socket_path("lz-test");
    assert!(p.ends_with("dpdk/lz-test/dpdk_telemetry.v2"), "{}", p.display());
}
