//! Test support for `tests/e2e/upgrade.sh`: rewrites a stopped pair's
//! checkpoint segments as the previous release (`v0.1.0`) wrote them, with
//! the previous versions' encoders kept in the code: layout-3 headers
//! (`shm_layout::test_downgrade_to`) and format-1 portions
//! (`IpRecord::encode_format_1`; the other modules' format 1 differs only
//! in its format byte). Format 1 named a bridge by its position, so each
//! connection is stored again under the id of its key with that position.
//! Not for production use.
//!
//!     write_previous_format DIR [ZONE_ID=POSITION ...]
//!
//! Without pairs every zone becomes position 0, and a store holding more
//! than one zone is refused.

use lazarus_core::modules::ip::IpRecord;
use lazarus_core::portion::Portion;
use shm_layout::{PortionSlot, StoreSegment, RINGS_FILE, STORE_FILE};
use std::collections::HashMap;
use std::path::Path;

fn main() {
    if let Err(e) = run() {
        eprintln!("write_previous_format: {e}");
        std::process::exit(1);
    }
}

fn reseal<const N: usize>(
    slot: &mut PortionSlot<N>,
    id: u64,
    format_1: Option<&[u8]>,
) -> Result<(), String> {
    if !slot.is_present() {
        return Ok(());
    }
    let mut bytes = format_1.map(<[u8]>::to_vec).unwrap_or_else(|| slot.payload().to_vec());
    bytes[0] = 1;
    *slot = PortionSlot::seal(id, slot.module, slot.version, &bytes).map_err(|e| e.to_string())?;
    Ok(())
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir =
        Path::new(args.first().ok_or("usage: write_previous_format DIR [ZONE_ID=POSITION ...]")?);
    let positions: HashMap<u16, u16> = args[1..]
        .iter()
        .map(|p| {
            let (z, i) = p.split_once('=').ok_or(format!("{p}: not ZONE_ID=POSITION"))?;
            Ok((
                z.parse().map_err(|_| format!("{z}: not a zone id"))?,
                i.parse().map_err(|_| format!("{i}: not a position"))?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let store_path = dir.join(STORE_FILE);
    let mut store = StoreSegment::open_file(&store_path)
        .map_err(|e| format!("{}: {e}", store_path.display()))?;
    let geom = store.geometry();
    let mut zones = std::collections::HashSet::new();
    let mut moved = HashMap::new();
    let mut rewritten = 0;
    for i in 0..geom.conn_capacity {
        let mut rec = store.record(i);
        if rec.used == 0 || !rec.ip.is_present() {
            continue;
        }
        let ip = IpRecord::decode(rec.ip.payload()).map_err(|e| format!("record {i}: {e}"))?;
        zones.insert(ip.key.zone);
        let position = match positions.get(&ip.key.zone) {
            Some(&p) => p,
            None if positions.is_empty() => 0,
            None => return Err(format!("zone {} has no position given", ip.key.zone)),
        };
        if positions.is_empty() && zones.len() > 1 {
            return Err(
                "the store holds more than one zone: give ZONE_ID=POSITION for each bridge".into(),
            );
        }
        let old_key =
            lazarus_core::conn::ConnKey { zone: position, vlan: ip.key.vlan & 0xfff, ..ip.key };
        let old_id = old_key.id().0;
        let mut b = [0u8; shm_layout::IP_PORTION_MAX];
        let n = ip.encode_format_1(position, &mut b).map_err(|e| e.to_string())?;
        reseal(&mut rec.ip, old_id, Some(&b[..n]))?;
        reseal(&mut rec.l4, old_id, None)?;
        moved.insert(rec.conn_id, old_id);
        rec.conn_id = old_id;
        store.write_record(i, &rec);
        rewritten += 1;
    }
    let mut ftp = 0;
    for i in 0..geom.ftp_capacity {
        let mut rec = store.ftp_record(i);
        if rec.used == 0 {
            continue;
        }
        let Some(&old_id) = moved.get(&rec.conn_id) else { continue };
        reseal(&mut rec.portion, old_id, None)?;
        rec.conn_id = old_id;
        store.write_ftp(i, &rec);
        ftp += 1;
    }
    drop(store);
    for f in [STORE_FILE, RINGS_FILE] {
        let p = dir.join(f);
        shm_layout::test_downgrade_to(&p, 3).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!("rewrote {rewritten} connections ({ftp} with FTP) as portion format 1, segments as layout 3");
    Ok(())
}
