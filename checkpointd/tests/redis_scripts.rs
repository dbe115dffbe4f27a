//! The remote copy's scripts inside a real redis-server (Debian's, started
//! on a loopback port for each test): fencing and version checks happen in
//! Redis, atomically, not in the client.

use redis::aio::MultiplexedConnection;
use shm_layout::remote::{
    bucket_key, decode_change, delete_value, encode_record, RemotePortion, SealKey, RAISE_SCRIPT,
    WRITE_SCRIPT,
};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: run scripts/setup.sh");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(s: &Server) -> MultiplexedConnection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

fn sealed(id: u64, version: u64, epoch: u64) -> Vec<u8> {
    let key = SealKey::new(&[9; 32], "k").unwrap();
    let mut out = Vec::new();
    let p = [RemotePortion { module: 1, version, epoch, payload: b"tcp state" }];
    encode_record(&key, id, 0, &p, &mut out);
    out
}

/// One write-script call: (status, epoch, written, stale).
async fn write(
    c: &mut MultiplexedConnection,
    epoch: u64,
    owner: &str,
    pairs: &[(&str, Vec<u8>)],
) -> (i64, u64, u64, u64) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WRITE_SCRIPT).arg(1).arg(bucket_key("t", 0)).arg(epoch).arg("origin").arg(1).arg(owner);
    for (f, v) in pairs {
        cmd.arg(*f).arg(v.as_slice());
    }
    cmd.query_async(c).await.unwrap()
}

async fn field(c: &mut MultiplexedConnection, f: &str) -> Option<Vec<u8>> {
    redis::cmd("HGET").arg(bucket_key("t", 0)).arg(f).query_async(c).await.unwrap()
}

#[test]
fn an_older_epoch_is_refused_inside_redis() {
    let s = server();
    rt().block_on(async {
        let mut c = connect(&s).await;
        let f = "000000000000002a";
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(42, 10, 1))]).await, (2, 1, 1, 0));
        let raised: u64 = redis::cmd("EVAL")
            .arg(RAISE_SCRIPT)
            .arg(1)
            .arg(bucket_key("t", 0))
            .arg(2)
            .arg("B")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(raised, 2);
        // The old active, still at epoch 1, with newer state: refused whole.
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(42, 11, 1))]).await, (0, 2, 0, 0));
        assert_eq!(field(&mut c, f).await, Some(sealed(42, 10, 1)));
        assert_eq!(field(&mut c, "owner").await.as_deref(), Some(&b"B"[..]));
        // The new one, at epoch 2, writes.
        assert_eq!(write(&mut c, 2, "B", &[(f, sealed(42, 12, 2))]).await, (1, 2, 1, 0));
        assert_eq!(field(&mut c, f).await, Some(sealed(42, 12, 2)));
    });
}

#[test]
fn an_older_version_or_delete_is_skipped_inside_redis() {
    let s = server();
    rt().block_on(async {
        let mut c = connect(&s).await;
        let f = "0000000000000007";
        write(&mut c, 1, "A", &[(f, sealed(7, 100, 1))]).await;
        // A rolled-back record and a delete older than the record: skipped.
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(7, 99, 1))]).await, (1, 1, 0, 1));
        assert_eq!(write(&mut c, 1, "A", &[(f, delete_value(50).to_vec())]).await, (1, 1, 0, 1));
        assert_eq!(field(&mut c, f).await, Some(sealed(7, 100, 1)));
        // Versions compare as 64-bit numbers across the 32-bit halves.
        let big = (5u64 << 32) + 1;
        write(&mut c, 1, "A", &[(f, sealed(7, big, 1))]).await;
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(7, (4u64 << 32) + 9, 1))]).await.3, 1);
        assert_eq!(write(&mut c, 1, "A", &[(f, delete_value(big).to_vec())]).await, (1, 1, 1, 0));
        assert_eq!(field(&mut c, f).await, None);
    });
}

#[test]
fn what_is_written_is_numbered_and_published() {
    let s = server();
    rt().block_on(async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).unwrap();
        let mut sub = client.get_async_pubsub().await.unwrap();
        sub.subscribe(bucket_key("t", 0)).await.unwrap();
        let mut c = connect(&s).await;
        let f = "0000000000000009";
        write(&mut c, 1, "A", &[(f, sealed(9, 5, 1))]).await;
        write(&mut c, 1, "A", &[(f, sealed(9, 4, 1))]).await; // stale: not published
        write(&mut c, 1, "A", &[(f, delete_value(6).to_vec())]).await;
        use futures_util::StreamExt;
        let mut msgs = sub.on_message();
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await.unwrap().unwrap();
            got.push(m.get_payload_bytes().to_vec());
        }
        let a = decode_change(&got[0]).unwrap();
        let b = decode_change(&got[1]).unwrap();
        assert_eq!((a.seq, a.pairs.len(), b.seq), (1, 1, 2));
        assert_eq!(a.pairs[0], (f.as_bytes(), &sealed(9, 5, 1)[..]));
        assert_eq!(b.pairs[0].1, &delete_value(6)[..]);
        assert_eq!(a.drained_unix_ns, 1);
    });
}
