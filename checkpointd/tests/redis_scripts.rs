//! The remote copy's scripts inside a real redis-server (Debian's, started
//! on a loopback port for each test): fencing and version checks happen in
//! Redis, atomically, not in the client.

use redis::aio::MultiplexedConnection;
use shm_layout::remote::{
    bucket_key, decode_change, encode_delete, encode_record, RemotePortion, SealKey, RAISE_SCRIPT,
    WRITE_SCRIPT,
};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A redis-server of the test's own on a Unix socket (TCP ports picked in
/// parallel tests can collide).
fn server(name: &str) -> Server {
    let socket = std::env::temp_dir().join(format!("lz-redis-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--unixsocket",
            socket.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: run scripts/setup.sh");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, socket }
}

fn url(s: &Server) -> String {
    format!("unix://{}", s.socket.display())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(s: &Server) -> MultiplexedConnection {
    let c = redis::Client::open(url(s)).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

fn key() -> SealKey {
    SealKey::new(&[9; 32], "k").unwrap()
}

fn sealed(id: u64, version: u64, epoch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let p = [RemotePortion { module: 1, version, epoch, payload: b"tcp state" }];
    encode_record(&key(), id, 0, 1, &p, &mut out);
    out
}

fn deleted(id: u64, version: u64, epoch: u64) -> Vec<u8> {
    encode_delete(&key(), id, epoch, version)
}

async fn raise(c: &mut MultiplexedConnection, epoch: u64, owner: &str) -> (u64, String) {
    redis::cmd("EVAL")
        .arg(RAISE_SCRIPT)
        .arg(1)
        .arg(bucket_key("t", 0))
        .arg(epoch)
        .arg(owner)
        .query_async(c)
        .await
        .unwrap()
}

/// One write-script call: (status, epoch, written, stale).
async fn write(
    c: &mut MultiplexedConnection,
    epoch: u64,
    owner: &str,
    pairs: &[(&str, Vec<u8>)],
) -> (i64, u64, u64, u64) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WRITE_SCRIPT).arg(1).arg(bucket_key("t", 0)).arg(epoch).arg(1).arg(owner);
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
    let s = server("epoch");
    rt().block_on(async {
        let mut c = connect(&s).await;
        let f = "000000000000002a";
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(42, 10, 1))]).await, (2, 1, 1, 0));
        assert_eq!(raise(&mut c, 2, "B").await, (2, "B".into()));
        // Compare and set: a second appliance raising to the same epoch
        // finds it taken.
        assert_eq!(raise(&mut c, 2, "C").await, (2, "B".into()));
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
    let s = server("version");
    rt().block_on(async {
        let mut c = connect(&s).await;
        let f = "0000000000000007";
        write(&mut c, 1, "A", &[(f, sealed(7, 100, 1))]).await;
        // A rolled-back record and a delete older than the record: skipped.
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(7, 99, 1))]).await, (1, 1, 0, 1));
        assert_eq!(write(&mut c, 1, "A", &[(f, deleted(7, 50, 1))]).await, (1, 1, 0, 1));
        assert_eq!(field(&mut c, f).await, Some(sealed(7, 100, 1)));
        // Versions compare as 64-bit numbers across the 32-bit halves.
        let big = (5u64 << 32) + 1;
        write(&mut c, 1, "A", &[(f, sealed(7, big, 1))]).await;
        assert_eq!(write(&mut c, 1, "A", &[(f, sealed(7, (4u64 << 32) + 9, 1))]).await.3, 1);
        // A later epoch comes after, whatever its version: a rebooted
        // writer's TSC starts again near 0.
        assert_eq!(write(&mut c, 2, "A", &[(f, sealed(7, 3, 2))]).await, (1, 2, 1, 0));
        assert_eq!(write(&mut c, 2, "A", &[(f, deleted(7, 4, 2))]).await, (1, 2, 1, 0));
        assert_eq!(field(&mut c, f).await, None);
        // A value the script cannot read is taken as older and replaced.
        redis::cmd("HSET")
            .arg(bucket_key("t", 0))
            .arg(f)
            .arg("x")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        assert_eq!(write(&mut c, 2, "A", &[(f, sealed(7, 5, 2))]).await, (1, 2, 1, 0));
    });
}

/// A protected connection's log chunks: written and removed as they come,
/// and refused with the rest of a fenced call.
#[test]
fn log_chunks_are_written_and_removed_inside_redis() {
    use shm_layout::remote_log::{chunk_field, encode_chunk, CHUNK_GONE};
    let s = server("chunks");
    rt().block_on(async {
        let mut c = connect(&s).await;
        let f = "0000000000000007";
        let (c0, c9) = (chunk_field(7, 0), chunk_field(7, 9));
        let one = encode_chunk(&key(), 7, (1, 0), b"SET k 1\r\n");
        let two = encode_chunk(&key(), 7, (1, 9), b"INCR k\r\n");
        let w = write(&mut c, 2, "A", &[(f, sealed(7, 5, 2)), (&c0, one.clone())]).await;
        assert_eq!(w, (2, 2, 2, 0));
        assert_eq!(write(&mut c, 2, "A", &[(&c9, two.clone())]).await, (1, 2, 1, 0));
        assert_eq!(field(&mut c, &c0).await, Some(one));
        assert_eq!(field(&mut c, &c9).await, Some(two));
        assert_eq!(write(&mut c, 2, "A", &[(&c0, CHUNK_GONE.to_vec())]).await, (1, 2, 1, 0));
        assert_eq!(field(&mut c, &c0).await, None);
        // A fenced writer's chunks are refused with its call.
        let three = encode_chunk(&key(), 7, (1, 17), b"GET k\r\n");
        let c17 = chunk_field(7, 17);
        assert_eq!(write(&mut c, 1, "A", &[(&c17, three)]).await.0, 0);
        assert_eq!(write(&mut c, 1, "A", &[(&c9, CHUNK_GONE.to_vec())]).await.0, 0);
        assert_eq!(field(&mut c, &c17).await, None);
        assert!(field(&mut c, &c9).await.is_some());
        // Under a connection's own field a chunk is no record: refused as
        // one the script cannot order, the record kept.
        assert_eq!(write(&mut c, 2, "A", &[(f, CHUNK_GONE.to_vec())]).await, (1, 2, 0, 1));
        assert_eq!(field(&mut c, f).await, Some(sealed(7, 5, 2)));
    });
}

#[test]
fn what_is_written_is_numbered_and_published() {
    let s = server("publish");
    rt().block_on(async {
        let client = redis::Client::open(url(&s)).unwrap();
        let mut sub = client.get_async_pubsub().await.unwrap();
        sub.subscribe(bucket_key("t", 0)).await.unwrap();
        let mut c = connect(&s).await;
        let f = "0000000000000009";
        write(&mut c, 1, "A", &[(f, sealed(9, 5, 1))]).await;
        write(&mut c, 1, "A", &[(f, sealed(9, 4, 1))]).await; // stale: not published
        write(&mut c, 1, "A", &[(f, deleted(9, 6, 1))]).await;
        use futures_util::StreamExt;
        let mut msgs = sub.on_message();
        let mut got = Vec::new();
        for _ in 0..2 {
            let m =
                tokio::time::timeout(Duration::from_secs(5), msgs.next()).await.unwrap().unwrap();
            got.push(m.get_payload_bytes().to_vec());
        }
        let a = decode_change(&got[0]).unwrap();
        let b = decode_change(&got[1]).unwrap();
        assert_eq!((a.seq, a.pairs.len(), b.seq), (1, 1, 2));
        assert_eq!(a.pairs[0], (f.as_bytes(), &sealed(9, 5, 1)[..]));
        assert_eq!(b.pairs[0].1, &deleted(9, 6, 1)[..]);
        assert_eq!(a.drained_unix_ns, 1);
    });
}
