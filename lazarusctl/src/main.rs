//! `lazarusctl [--config FILE] [--json] status|conns|stats|flush`
//!
//! Talks to checkpointd's control socket (JSON lines; the path is
//! `[checkpoint] control_socket` of the config) and to the dataplane's DPDK
//! telemetry socket (`/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2`,
//! commands `/lazarus/...`). Every command and its output: docs/TELEMETRY.md.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use lazarus_core::modules::{
    ftp::FtpRecord, icmp::IcmpPortion, ip::IpRecord, tcp::TcpPortion, udp::UdpPortion,
};
use lazarus_core::portion::Portion;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use telemetry_client::{socket_path, TelemetryClient};

#[derive(Debug, Parser)]
#[command(
    name = "lazarusctl",
    version,
    about = "Operate Lazarus: status, connections, stats, flush, takeover"
)]
struct Args {
    /// The TOML config both daemons read (only `[checkpoint] control_socket` is used).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// checkpointd's control socket (overrides the config).
    #[arg(long, global = true)]
    checkpointd_socket: Option<PathBuf>,
    /// The dataplane's EAL --file-prefix (its telemetry socket is /var/run/dpdk/<prefix>/dpdk_telemetry.v2).
    #[arg(long, global = true, default_value = "rte")]
    file_prefix: String,
    /// The dataplane's telemetry socket (overrides --file-prefix).
    #[arg(long, global = true)]
    telemetry_socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Whether each daemon is up; pids, uptimes, ring lag, connection counts.
    Status,
    /// Every connection in checkpointd's store, one line each (like `conntrack -L`).
    Conns {
        /// At most this many connections.
        #[arg(long, default_value_t = 1_000_000)]
        limit: u64,
    },
    /// The dataplane's packet and connection counters (/lazarus/stats, /lazarus/workers).
    Stats,
    /// Empty every worker's connection table (checkpointd's store follows).
    Flush,
    /// Make this standby appliance the active one: checkpointd proves its
    /// mirror caught up with the remote store, raises the epoch (fencing the
    /// old active), then the dataplane's standby worker process restores the
    /// mirror and forwards. What keepalived's notify-master script calls.
    Takeover {
        /// Take over even when the mirror cannot be shown caught up or the
        /// epoch cannot be raised (the remote store is unreachable).
        #[arg(long)]
        force: bool,
    },
    /// The hook of a protected service's host (systemd ExecStopPost= and
    /// ExecStartPost=): tells the dataplane the service went down or came
    /// back, so it keeps its clients waiting, then replays their connections.
    Protect {
        /// down or up.
        #[arg(value_parser = ["down", "up"])]
        word: String,
        /// The service, as in its [[protected]] entry: ADDR:PORT
        /// ([ADDR]:PORT for IPv6).
        service: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazarusctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let ep = Endpoints::from_args(args)?;
    match &args.cmd {
        Cmd::Status => status(&ep, args.json),
        Cmd::Conns { limit } => conns(&ep, *limit, args.json),
        Cmd::Stats => stats(&ep, args.json),
        Cmd::Flush => flush(&ep, args.json),
        Cmd::Takeover { force } => takeover(&ep, *force, args.json),
        Cmd::Protect { word, service } => protect(&ep, word, service, args.json),
    }
}

/// Where the two daemons answer.
struct Endpoints {
    checkpointd: PathBuf,
    telemetry: PathBuf,
    prefix_hint: String,
}

impl Endpoints {
    fn from_args(a: &Args) -> Result<Self> {
        let checkpointd = match (&a.checkpointd_socket, &a.config) {
            (Some(p), _) => p.clone(),
            (None, Some(cfg)) => control_socket_of(cfg)?,
            (None, None) => shm_layout::CheckpointSection::default().control_socket,
        };
        let telemetry = a.telemetry_socket.clone().unwrap_or_else(|| socket_path(&a.file_prefix));
        Ok(Endpoints { checkpointd, telemetry, prefix_hint: a.file_prefix.clone() })
    }

    /// One request to checkpointd, one JSON reply.
    fn checkpointd(&self, req: Value) -> Result<Value> {
        let down = |e: std::io::Error| {
            anyhow!(
                "checkpointd is not running: no answer on its control socket {} ({e}); start it with `lazarus-checkpointd --config FILE` (systemctl start lazarus-checkpointd), or pass --config/--checkpointd-socket",
                self.checkpointd.display()
            )
        };
        let mut s = UnixStream::connect(&self.checkpointd).map_err(down)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(format!("{req}\n").as_bytes()).map_err(down)?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).map_err(down)?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("checkpointd's reply is not JSON: {line}"))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            bail!("checkpointd: {e}");
        }
        Ok(v)
    }

    /// The protected connections checkpointd holds (`protected`); empty
    /// from a checkpointd that keeps none.
    fn protected(&self) -> Result<Vec<shm_layout::HeldProtected>> {
        let mut s = UnixStream::connect(&self.checkpointd).with_context(|| {
            format!("checkpointd's control socket {}", self.checkpointd.display())
        })?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"{\"cmd\":\"protected\"}\n")?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("checkpointd's reply is not JSON: {line}"))?;
        if v.get("error").is_some() {
            return Ok(Vec::new());
        }
        let (n, bytes) = (n(&v, "protected"), n(&v, "bytes"));
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut r, bytes), &mut body)?;
        if body.len() as u64 != bytes {
            bail!(
                "checkpointd announced {bytes} bytes of protected connections and sent {}",
                body.len()
            );
        }
        Ok(shm_layout::parse_protected(&body, n)?)
    }

    fn telemetry(&self) -> Result<TelemetryClient> {
        TelemetryClient::connect(&self.telemetry).map_err(|e| {
            if e.is_not_running() {
                anyhow!(
                    "the dataplane is not running ({e}); start lazarus-dataplane (EAL --file-prefix {}), or pass --file-prefix/--telemetry-socket",
                    self.prefix_hint
                )
            } else {
                anyhow!("the dataplane's telemetry socket: {e}")
            }
        })
    }
}

/// `[checkpoint] control_socket` of `cfg`, or the default.
fn control_socket_of(cfg: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(cfg)
        .with_context(|| format!("cannot read config {}", cfg.display()))?;
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("config {}", cfg.display()))?;
    Ok(match v.get("checkpoint").and_then(|c| c.get("control_socket")).and_then(|s| s.as_str()) {
        Some(s) => PathBuf::from(s),
        None => shm_layout::CheckpointSection::default().control_socket,
    })
}

/// `cmd`'s value in the dataplane's telemetry reply.
fn ask(c: &mut TelemetryClient, cmd: &str) -> Result<Value> {
    c.query(cmd).with_context(|| format!("dataplane telemetry {cmd}"))
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn status(ep: &Endpoints, as_json: bool) -> Result<()> {
    let ck = ep.checkpointd(json!({"cmd": "status"}));
    let dp = ep.telemetry().and_then(|mut c| {
        let g = c.greeting().clone();
        Ok(json!({
            "pid": g.pid,
            "dpdk": g.version,
            "stats": ask(&mut c, "/lazarus/stats")?,
            "conns": ask(&mut c, "/lazarus/conns")?,
            "checkpoint": ask(&mut c, "/lazarus/checkpoint")?,
        }))
    });
    if as_json {
        let part = |r: &Result<Value>, sock: &Path| match r {
            Ok(v) => json!({"up": true, "socket": sock.display().to_string(), "status": v}),
            Err(e) => {
                json!({"up": false, "socket": sock.display().to_string(), "error": format!("{e:#}")})
            }
        };
        return print_json(
            &json!({"checkpointd": part(&ck, &ep.checkpointd), "dataplane": part(&dp, &ep.telemetry)}),
        );
    }
    match &ck {
        Ok(s) => {
            let store = &s["store"];
            println!(
                "checkpointd: up, pid {}, uptime {:.1} s, dir {}, store {} conn(s) of {} ({} ftp), full_drops {}",
                n(s, "pid"),
                s["uptime_s"].as_f64().unwrap_or(0.0),
                s["dir"].as_str().unwrap_or("?"),
                n(store, "conns"),
                n(store, "capacity"),
                n(store, "ftp"),
                n(store, "full_drops")
            );
            for r in s["rings"].as_array().into_iter().flatten() {
                println!(
                    "  ring {}: head {} tail {} lag {} applied {} torn {}",
                    n(r, "worker"),
                    n(r, "head"),
                    n(r, "tail"),
                    n(r, "lag"),
                    n(r, "applied"),
                    n(r, "torn")
                );
            }
            let r = &s["remote"];
            if r.is_object() {
                let yes = |k: &str| r[k].as_bool() == Some(true);
                let role = if yes("following") {
                    "standby, following"
                } else if yes("fenced") {
                    "FENCED (another appliance took over)"
                } else {
                    "active"
                };
                println!(
                    "  remote: {}, {role}, epoch {}, {} pending, {} written, {} refused, {} errors; mirror lag p99 {} us",
                    if yes("up") { "up" } else { "DOWN" },
                    n(r, "epoch"),
                    n(r, "pending"),
                    n(r, "records_written") + n(r, "deletes_written"),
                    n(r, "refused_calls") + n(r, "fenced_writes"),
                    n(r, "errors"),
                    r["mirror_lag_p99_us"].as_u64().map_or("-".into(), |v| v.to_string())
                );
            }
        }
        Err(e) => println!("checkpointd: down ({e:#})"),
    }
    match &dp {
        Ok(d) => {
            let st = &d["stats"];
            let ckp = &d["checkpoint"];
            println!(
                "dataplane: up, pid {}, {}, uptime {:.1} s, {} worker(s), {} conn(s), rx {} tx {} dropped {}",
                n(d, "pid"),
                d["dpdk"].as_str().unwrap_or("DPDK ?"),
                n(st, "uptime_ms") as f64 / 1e3,
                n(st, "workers"),
                n(st, "conns"),
                n(st, "rx"),
                n(st, "tx"),
                n(st, "dropped")
            );
            if n(ckp, "enabled") == 1 {
                let lag: Vec<String> =
                    ckp["lag"].as_array().into_iter().flatten().map(|x| x.to_string()).collect();
                println!(
                    "  checkpoint: on, ring lag [{}], restored {} conn(s) in {} ms",
                    lag.join(", "),
                    n(ckp, "restored"),
                    n(ckp, "restore_ms")
                );
            } else {
                println!("  checkpoint: off (connections do not survive a restart)");
            }
        }
        Err(e) => println!("dataplane: down ({e:#})"),
    }
    Ok(())
}

/// A connection decoded from checkpointd's store, as `lazarusctl conns` prints it.
fn decode_conn(c: &Value) -> Result<Value> {
    let id = c["conn_id"].as_str().unwrap_or("?").to_string();
    let mut out = json!({"id": id, "worker": c["worker"], "versions": {}});
    let mut ip = None;
    for m in c["modules"].as_array().into_iter().flatten() {
        let name = m["module"].as_str().unwrap_or("?");
        out["versions"][name] = m["version"].clone();
        let bytes = unhex(m["hex"].as_str().ok_or_else(|| {
            anyhow!("checkpointd sent no portion bytes (an older checkpointd?)")
        })?)?;
        match name {
            "ip" => ip = Some(IpRecord::decode(&bytes).map_err(|e| anyhow!("ip portion: {e}"))?),
            "tcp" => {
                let t = TcpPortion::decode(&bytes).map_err(|e| anyhow!("tcp portion: {e}"))?;
                out["state"] = json!(t.state.name());
                out["assured"] = json!(t.seen_reply);
            }
            "udp" => {
                let u = UdpPortion::decode(&bytes).map_err(|e| anyhow!("udp portion: {e}"))?;
                out["assured"] = json!(u.replied);
            }
            "icmp" => {
                let i = IcmpPortion::decode(&bytes).map_err(|e| anyhow!("icmp portion: {e}"))?;
                out["echo_id"] = json!(i.echo_id);
                out["assured"] = json!(i.replied);
            }
            "ftp" => {
                let r = FtpRecord::decode(&bytes).map_err(|e| anyhow!("ftp portion: {e}"))?;
                out["helper"] = json!("ftp");
                out["expectations"] = json!(r.count);
            }
            other => bail!("a portion of unknown module {other:?}"),
        }
    }
    let IpRecord { key, ip: ipp, .. } = ip.ok_or_else(|| anyhow!("no ip portion stored"))?;
    let addr = |a: &[u8; 16]| -> String {
        if key.family == 4 {
            std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string()
        } else {
            std::net::Ipv6Addr::from(*a).to_string()
        }
    };
    let (src, dst, sport, dport) = if ipp.orig_src_is_lo {
        (key.lo_addr, key.hi_addr, key.lo_port, key.hi_port)
    } else {
        (key.hi_addr, key.lo_addr, key.hi_port, key.lo_port)
    };
    let proto = match key.proto {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "ip",
    };
    for (k, v) in [
        ("proto", json!(proto)),
        ("protonum", json!(key.proto)),
        ("family", json!(if key.family == 4 { "ipv4" } else { "ipv6" })),
        ("src", json!(addr(&src))),
        ("dst", json!(addr(&dst))),
        ("sport", json!(sport)),
        ("dport", json!(dport)),
        ("zone", json!(key.zone)),
        ("vlan", json!(lazarus_core::conn::vlan_ids(key.vlan).0)),
        ("inner_vlan", json!(lazarus_core::conn::vlan_ids(key.vlan).1)),
        ("packets", json!(ipp.packets)),
        ("bytes", json!(ipp.bytes)),
    ] {
        out[k] = v;
    }
    Ok(out)
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd hex length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}

/// One connection as a `conntrack -L`-like line.
fn conn_line(c: &Value) -> String {
    let proto = c["proto"].as_str().unwrap_or("?");
    let mut s = format!("{proto:<5} {:>3} ", n(c, "protonum"));
    if let Some(st) = c["state"].as_str() {
        s += &format!("{st:<11} ");
    }
    let p = |i: usize, k: &str| c[k].get(i).and_then(Value::as_u64).unwrap_or(0);
    let ends = |src: &str, dst: &str, sport: u64, dport: u64| {
        if proto == "icmp" {
            format!("src={src} dst={dst} id={sport}")
        } else {
            format!("src={src} dst={dst} sport={sport} dport={dport}")
        }
    };
    let (src, dst) = (c["src"].as_str().unwrap_or("?"), c["dst"].as_str().unwrap_or("?"));
    let (sport, dport) = (n(c, "sport"), n(c, "dport"));
    s += &format!(
        "{} packets={} bytes={} ",
        ends(src, dst, sport, dport),
        p(0, "packets"),
        p(0, "bytes")
    );
    if c["assured"] == json!(false) {
        s += "[UNREPLIED] ";
    }
    s += &format!(
        "{} packets={} bytes={} ",
        ends(dst, src, dport, sport),
        p(1, "packets"),
        p(1, "bytes")
    );
    if c["assured"] == json!(true) {
        s += "[ASSURED] ";
    }
    if c.get("helper").is_some() {
        s += &format!("helper=ftp expectations={} ", n(c, "expectations"));
    }
    s += &format!("zone={}", n(c, "zone"));
    if n(c, "vlan") != 0 {
        s += &format!(" vlan={}", n(c, "vlan"));
    }
    if n(c, "inner_vlan") != 0 {
        s += &format!(" inner_vlan={}", n(c, "inner_vlan"));
    }
    if let Some(p) = c.get("protect") {
        s += &format!(
            " protect={} log={} recoveries={}",
            p["phase"].as_str().unwrap_or("?"),
            n(p, "log_bytes"),
            n(p, "recoveries")
        );
        if p["broken"] == json!(true) {
            s += " [LOG LOST]";
        }
    }
    let versions: Vec<String> =
        c["versions"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}:{v}")).collect();
    s += &format!(
        " worker={} id={} versions={}",
        n(c, "worker"),
        c["id"].as_str().unwrap_or("?"),
        versions.join(",")
    );
    s
}

/// What checkpointd holds of protected connections, by (client address,
/// client port, server address, server port, VLAN ids).
fn protection(ep: &Endpoints) -> HashMap<(String, u64, String, u64, u64), Value> {
    let held = ep.protected().unwrap_or_else(|e| {
        eprintln!("lazarusctl: protected connections not shown: {e:#}");
        Vec::new()
    });
    held.iter()
        .filter_map(|h| {
            let v = lazarus_core::firewall::describe_record(&h.record).ok()?;
            let s = v.snapshot;
            let key = (
                v.client.0.to_string(),
                u64::from(v.client.1),
                v.server.0.to_string(),
                u64::from(v.server.1),
                u64::from(v.vlan),
            );
            Some((
                key,
                json!({"phase": s.phase, "log_bytes": s.log_bytes, "log_base": s.log_base, "recoveries": s.recoveries, "broken": h.broken}),
            ))
        })
        .collect()
}

fn conns(ep: &Endpoints, limit: u64, as_json: bool) -> Result<()> {
    let reply = ep.checkpointd(json!({"cmd": "conns", "limit": limit, "payloads": true}))?;
    let protected = protection(ep);
    let mut list = Vec::new();
    let mut bad = 0;
    for c in reply["conns"].as_array().into_iter().flatten() {
        match decode_conn(c) {
            Ok(mut v) => {
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                let vlan = n(&v, "vlan") | n(&v, "inner_vlan") << 12;
                let key = (s("src"), n(&v, "sport"), s("dst"), n(&v, "dport"), vlan);
                if let Some(p) = protected.get(&key) {
                    v["protect"] = p.clone();
                }
                list.push(v)
            }
            Err(e) => {
                bad += 1;
                eprintln!(
                    "lazarusctl: connection {}: cannot decode: {e:#}",
                    c["conn_id"].as_str().unwrap_or("?")
                );
            }
        }
    }
    if as_json {
        return print_json(
            &json!({"conns": list, "total": reply["total"], "truncated": reply["truncated"], "undecodable": bad}),
        );
    }
    for c in &list {
        println!("{}", conn_line(c));
    }
    eprintln!(
        "lazarusctl: {} connection(s) shown from checkpointd's store{}",
        list.len(),
        if reply["truncated"] == json!(true) {
            format!(" (of {}; raise --limit)", n(&reply, "total"))
        } else {
            String::new()
        }
    );
    Ok(())
}

fn stats(ep: &Endpoints, as_json: bool) -> Result<()> {
    let mut c = ep.telemetry()?;
    let st = ask(&mut c, "/lazarus/stats")?;
    let workers = ask(&mut c, "/lazarus/workers")?;
    if as_json {
        return print_json(&json!({"stats": st, "workers": workers}));
    }
    println!(
        "uptime {:.1} s  rx {}  tx {}  dropped {}  tx_full {}  conns {}",
        n(&st, "uptime_ms") as f64 / 1e3,
        n(&st, "rx"),
        n(&st, "tx"),
        n(&st, "dropped"),
        n(&st, "tx_full"),
        n(&st, "conns")
    );
    for name in st["ports"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let p = &st[format!("port/{name}")];
        println!(
            "  port {name} (ethdev {}): rx {} tx {} dropped {} tx_full {}",
            n(p, "eth_port"),
            n(p, "rx"),
            n(p, "tx"),
            n(p, "dropped"),
            n(p, "tx_full")
        );
    }
    let mut ws: Vec<(&String, &Value)> = workers.as_object().into_iter().flatten().collect();
    ws.sort_by_key(|(_, w)| n(w, "worker"));
    for (name, w) in ws {
        let fields: Vec<String> = w
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "worker")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  {name}: {}", fields.join(" "));
    }
    Ok(())
}

fn takeover(ep: &Endpoints, force: bool, as_json: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let ck = ep.checkpointd(json!({"cmd": "takeover", "force": force}))?;
    let ck = ck.get("takeover").cloned().unwrap_or(Value::Null);
    let mut c = ep.telemetry()?;
    let h = ask(&mut c, "/lazarus/handoff")?;
    if let Some(e) = h.get("error").and_then(Value::as_str) {
        bail!(
            "checkpointd took over (epoch {}), but the dataplane did not hand off: {e}",
            n(&ck, "epoch")
        );
    }
    let before = n(&h, "activations_before");
    // Forwarding again once the standby worker process is active.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let st = ask(&mut c, "/lazarus/stats")?;
        let w = st.get("worker_processes").cloned().unwrap_or(Value::Null);
        if n(&w, "activations") > before {
            break w;
        }
        if std::time::Instant::now() > deadline {
            bail!("checkpointd took over, but no worker process became active within 10 s; see the dataplane's log");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let out = json!({"checkpointd": ck, "dataplane": stats, "ms": ms});
    if as_json {
        return print_json(&out);
    }
    println!(
        "took over in {ms:.1} ms: epoch {}, {} connection(s) in the mirror{}, worker process {} forwarding",
        n(&ck, "epoch"),
        n(&ck, "conns"),
        if ck.get("forced").and_then(Value::as_bool) == Some(true) { " (forced)" } else { "" },
        n(&stats, "active_pid")
    );
    Ok(())
}

fn protect(ep: &Endpoints, word: &str, service: &str, as_json: bool) -> Result<()> {
    let mut c = ep.telemetry()?;
    let r = ask(&mut c, &format!("/lazarus/protect,{word} {service}"))?;
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        bail!("the dataplane refused: {e}");
    }
    if as_json {
        return print_json(&r);
    }
    println!("{service} {word}: told {} worker(s)", n(&r, "workers_told"));
    Ok(())
}

fn flush(ep: &Endpoints, as_json: bool) -> Result<()> {
    let mut c = ep.telemetry()?;
    let r = ask(&mut c, "/lazarus/flush")?;
    if as_json {
        return print_json(&r);
    }
    println!("flush asked of {} worker(s) holding {} connection(s); each empties its table on its next rounds (checkpointd's store follows)", n(&r, "workers_asked"), n(&r, "conns_before"));
    Ok(())
}
