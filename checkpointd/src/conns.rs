//! `conns`: the stored connections, streamed by the control thread from its
//! own read-only mapping of the store. The drain loop is never asked, so a
//! dump of a million connections does not stall draining; the reply is one
//! JSON line written as the records are read, never built whole in memory.

use shm_layout::{module, StoreSegment};
use std::io::Write;
use std::ops::ControlFlow;

/// `limit` when the request gives none.
pub const DEFAULT_LIMIT: usize = 1000;

/// Writes `{"conns":[...],"total":N,"truncated":B,"torn":T}` and a newline.
/// `total` is the store's count of connections; `torn` counts portions that
/// failed their checksum in the copy (a record written while it was read).
pub fn stream(
    store: &StoreSegment,
    limit: usize,
    payloads: bool,
    total: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut it = store.snapshot_iter();
    out.write_all(b"{\"conns\":[")?;
    let mut sent = 0usize;
    let mut hex = String::new();
    let mut failed: std::io::Result<()> = Ok(());
    it.for_each_stored(|c| {
        if sent >= limit {
            return ControlFlow::Break(());
        }
        failed = (|| -> std::io::Result<()> {
            if sent > 0 {
                out.write_all(b",")?;
            }
            write!(
                out,
                "{{\"conn_id\":\"{:016x}\",\"worker\":{},\"modules\":[",
                c.conn_id, c.worker
            )?;
            let mut first = true;
            let portions = [
                c.ip().map(|p| (p.module, p.version, p.payload())),
                c.l4().map(|p| (p.module, p.version, p.payload())),
                c.ftp().map(|p| (module::FTP, p.version, p.payload())),
            ];
            for (m, version, bytes) in portions.into_iter().flatten() {
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                write!(
                    out,
                    "{{\"module\":\"{}\",\"version\":{version},\"len\":{}",
                    module::name(m),
                    bytes.len()
                )?;
                if payloads {
                    hex.clear();
                    for b in bytes {
                        use std::fmt::Write as _;
                        let _ = write!(hex, "{b:02x}");
                    }
                    write!(out, ",\"hex\":\"{hex}\"")?;
                }
                out.write_all(b"}")?;
            }
            out.write_all(b"]}")?;
            sent += 1;
            Ok(())
        })();
        if failed.is_err() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    failed?;
    let truncated = (sent as u64) < total;
    writeln!(
        out,
        "],\"total\":{total},\"truncated\":{truncated},\"torn\":{}}}",
        it.corrupt_portions()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::StoreGeometry;

    #[test]
    fn the_streamed_reply_is_one_json_line_honouring_the_limit() {
        let dir = std::env::temp_dir().join(format!("ckptd-conns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store");
        let geom = StoreGeometry { conn_capacity: 16, ftp_capacity: 2 };
        let mut st = StoreSegment::create_file(&path, geom).unwrap();
        for i in 0..5u32 {
            st.init_record(i, 100 + u64::from(i), (i % 2) as u16);
            st.put_portion(i, module::IP, 1, &[i as u8; 3]).unwrap();
            st.put_portion(i, module::TCP, 2, b"tcp").unwrap();
        }
        st.put_ftp(2, 0, 102, 3, b"ftp").unwrap();
        let reader = StoreSegment::open_file(&path).unwrap();
        let mut out = Vec::new();
        stream(&reader, 100, true, 5, &mut out).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let list = v["conns"].as_array().unwrap();
        assert_eq!((list.len(), &v["truncated"], &v["torn"]), (5, &false.into(), &0.into()));
        let c2 = list.iter().find(|c| c["conn_id"] == "0000000000000066").unwrap();
        let mods: Vec<_> =
            c2["modules"].as_array().unwrap().iter().map(|m| m["module"].clone()).collect();
        assert_eq!(mods, ["ip", "tcp", "ftp"]);
        assert_eq!(c2["modules"][0]["hex"], "020202");
        out.clear();
        stream(&reader, 2, false, 5, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["conns"].as_array().unwrap().len(), &v["truncated"]), (2, &true.into()));
        assert!(v["conns"][0]["modules"][0].get("hex").is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
