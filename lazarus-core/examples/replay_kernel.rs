//! The replay and the splice against a real Linux kernel (issue 21): run by
//! `tests/e2e/replay.sh` inside a network namespace of its own. This program
//! plays a client and the firewall beside it over a TAP device; the kernel
//! behind the device runs a line-echo server, which is SIGKILLed and started
//! again. The replay rebuilds the connection on the new server, and the
//! client goes on through the splice: every echoed byte checked, sequence
//! numbers and timestamps continuing, no RST from the kernel.
//!
//!   replay_kernel serve ADDR:PORT [--upper]   the line-echo server
//!   replay_kernel run                          the test (in the namespace)

#[path = "common/echo.rs"]
mod echo;

use anyhow::{bail, ensure, Context, Result};
use lazarus_core::parse::{parse, tcp_flags, Parsed, TcpHdr, L4};
use lazarus_core::protect::{
    AckedDigest, ClientLog, Endpoints, Logged, Rebuild, Replay, Segment, ServerSide, Splice,
    SynOptions,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tun_tap::{Iface, Mode};

const DEV: &str = "lzrp0";
const SERVER: [u8; 4] = [10, 77, 0, 1];
const CLIENT: [u8; 4] = [10, 77, 0, 2];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0x77, 0, 2];
const PORT: u16 = 7000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => echo::serve(
            &args[2],
            args.get(3).is_some_and(|a| a == "--upper"),
            std::time::Duration::ZERO,
        ),
        Some("run") => run(),
        _ => bail!("usage: replay_kernel serve ADDR:PORT [--upper] | run (inside tests/e2e/replay.sh's namespace)"),
    }
}

fn sh(cmd: &str) -> Result<()> {
    let ok = Command::new("sh").arg("-c").arg(cmd).status()?.success();
    ensure!(ok, "{cmd} failed");
    Ok(())
}

/// The echo server, SIGKILLed when dropped: no error path leaves it behind
/// (it would hold the test's output open).
struct Server(Child);

impl Server {
    fn kill(&mut self) -> Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn start_server(upper: bool) -> Result<Server> {
    let me = std::env::current_exe()?;
    let mut c = Command::new(me);
    c.args(["serve", &format!("10.77.0.1:{PORT}")]).stdout(Stdio::piped());
    if upper {
        c.arg("--upper");
    }
    let mut server = Server(c.spawn()?);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().context("server stdout")?).read_line(&mut line)?;
    ensure!(line.trim() == "ready", "the echo server did not start: {line:?}");
    Ok(server)
}

/// The TAP device with the kernel's side of it; frames to and from the client.
struct Wire {
    tap: Iface,
    ends: Endpoints,
    buf: Vec<u8>,
    /// RSTs the kernel sent (none may reach a client).
    resets: u32,
}

/// A TCP segment from the server: its header and payload.
struct FromServer {
    t: TcpHdr,
    payload: Vec<u8>,
    /// The frame's TCP header and payload, for the splice's rewrite.
    tcp: Vec<u8>,
}

impl Wire {
    fn open() -> Result<Wire> {
        let tap = Iface::without_packet_info(DEV, Mode::Tap)
            .context("open the TAP device (root, in the namespace)")?;
        sh(&format!(
            "sysctl -qw net.ipv6.conf.{DEV}.disable_ipv6=1 && ip link set lo up && ip link set {DEV} up && \
             ip addr add 10.77.0.1/24 dev {DEV} && ip neigh replace 10.77.0.2 lladdr 02:00:00:77:00:02 dev {DEV} nud permanent"
        ))?;
        let mac = std::fs::read_to_string(format!("/sys/class/net/{DEV}/address"))?;
        let mut dst_mac = [0u8; 6];
        for (d, h) in dst_mac.iter_mut().zip(mac.trim().split(':')) {
            *d = u8::from_str_radix(h, 16)?;
        }
        tap.set_non_blocking()?;
        let ends = Endpoints {
            src_mac: CLIENT_MAC,
            dst_mac,
            src_ip: lazarus_core::parse::v4_mapped(CLIENT),
            dst_ip: lazarus_core::parse::v4_mapped(SERVER),
            sport: 40000 + (std::process::id() % 20000) as u16,
            dport: PORT,
            tags: lazarus_core::protect::VlanTags::UNTAGGED,
        };
        Ok(Wire { tap, ends, buf: vec![0; 2048], resets: 0 })
    }

    /// Sends a segment as the client; `splice` rewrites it for a new server.
    fn send(&mut self, seg: &Segment, payload: &[u8], splice: Option<&Splice>) -> Result<()> {
        let n =
            lazarus_core::protect::segment::write_segment(&mut self.buf, &self.ends, seg, payload)
                .context("frame too large")?;
        if let Some(s) = splice {
            s.to_server(&mut self.buf[34..n])?;
        }
        self.tap.send(&self.buf[..n])?;
        Ok(())
    }

    /// The next segment of our connection from the server, within `wait`.
    fn recv(&mut self, wait: Duration) -> Result<Option<FromServer>> {
        let until = Instant::now() + wait;
        let mut frame = [0u8; 2048];
        while Instant::now() < until {
            let n = match self.tap.recv(&mut frame) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Ok(Parsed::Ip(p)) = parse(&frame[..n]) else { continue };
            let L4::Tcp(t) = p.l4 else { continue };
            if t.dport != self.ends.sport || t.sport != PORT {
                continue;
            }
            if t.flags & tcp_flags::RST != 0 {
                self.resets += 1;
            }
            let payload = p.payload(&frame[..n]).to_vec();
            let tcp = frame[34..n].to_vec();
            return Ok(Some(FromServer { t, payload, tcp }));
        }
        Ok(None)
    }
}

/// The client's side of the connection, and what the firewall beside it
/// keeps for a replay (the log, the digest, the old server's side).
struct Client {
    isn: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    tsval: u32,
    server_ts: u32,
    syn: SynOptions,
    old: ServerSide,
    server_acked: u32,
    log: ClientLog,
    digest: AckedDigest,
    /// A server segment the replay handed over, and where the client's
    /// part of its payload starts.
    handed: Option<(FromServer, usize)>,
}

impl Client {
    fn seg(&self, flags: u8, len: usize) -> Segment {
        Segment {
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags,
            window: 1024,
            syn: None,
            ts: Some((self.tsval, self.server_ts)),
            payload: 0..len,
        }
    }

    fn connect(w: &mut Wire) -> Result<Client> {
        let isn = 0x8000_0000u32.wrapping_sub(7);
        let syn = SynOptions { mss: 1460, wscale: Some(7), sack_perm: true };
        let tsval = 1_000;
        let s = Segment {
            seq: isn,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 64240,
            syn: Some(syn),
            ts: Some((tsval, 0)),
            payload: 0..0,
        };
        w.send(&s, &[], None)?;
        let sa = w.recv(Duration::from_secs(2))?.context("no SYN-ACK from the echo server")?;
        ensure!(sa.t.flags == tcp_flags::SYN | tcp_flags::ACK, "not a SYN-ACK: {:?}", sa.t);
        let server_ts = sa.t.opts.timestamp.context("the kernel answered without timestamps")?.0;
        let old = ServerSide { isn: sa.t.seq, wscale: sa.t.opts.wscale, tsval: Some(server_ts) };
        let mut c = Client {
            isn,
            snd_nxt: isn.wrapping_add(1),
            rcv_nxt: sa.t.seq.wrapping_add(1),
            tsval,
            server_ts,
            syn,
            old,
            server_acked: isn.wrapping_add(1),
            log: ClientLog::new(isn, 1 << 20, lazarus_core::protect::LogMemory::HEAP),
            digest: AckedDigest::new(sa.t.seq),
            handed: None,
        };
        w.send(&c.seg(tcp_flags::ACK, 0), &[], None)?;
        c.tsval += 1;
        Ok(c)
    }

    /// Sends a line, logged first as the firewall would.
    fn send_line(&mut self, w: &mut Wire, line: &[u8], splice: Option<&Splice>) -> Result<()> {
        ensure!(
            self.log.record(self.snd_nxt, line) == Logged::Appended(line.len()),
            "log refused the line"
        );
        w.send(&self.seg(tcp_flags::ACK | tcp_flags::PSH, line.len()), line, splice)?;
        self.snd_nxt = self.snd_nxt.wrapping_add(line.len() as u32);
        self.tsval += 1;
        Ok(())
    }

    /// Reads the server's segments until `want` bytes of echo came in order;
    /// each one acknowledged. Checks what the client sees: sequence numbers
    /// in its space, timestamps never going back.
    fn expect(
        &mut self,
        w: &mut Wire,
        want: &[u8],
        splice: Option<&Splice>,
        wait: Duration,
    ) -> Result<()> {
        let mut got = Vec::new();
        let until = Instant::now() + wait;
        while got.len() < want.len() {
            let left = until.saturating_duration_since(Instant::now());
            let handed = self.handed.take().map(|(mut s, at)| {
                // The firewall trims what the client had before forwarding.
                s.t.seq = s.t.seq.wrapping_add(at as u32);
                s.tcp[4..8].copy_from_slice(&s.t.seq.to_be_bytes());
                s.payload.drain(..at);
                s
            });
            let Some(mut s) = handed.map_or_else(|| w.recv(left), |s| Ok(Some(s)))? else {
                bail!(
                    "waited {wait:?} for {:?}, got {:?}",
                    String::from_utf8_lossy(want),
                    String::from_utf8_lossy(&got)
                )
            };
            if let Some(sp) = splice {
                sp.to_client(&mut s.tcp)?;
                s.t = tcp_header(&s.tcp);
            }
            ensure!(
                s.t.flags & (tcp_flags::RST | tcp_flags::FIN | tcp_flags::SYN) == 0,
                "the client saw {:?}",
                s.t
            );
            let ts = s.t.opts.timestamp.context("a segment without timestamps")?.0;
            ensure!(
                ts.wrapping_sub(self.server_ts) as i32 >= 0,
                "TSval went back: {ts} after {}",
                self.server_ts
            );
            self.server_ts = ts;
            self.old.tsval = Some(ts);
            if s.t.flags & tcp_flags::ACK != 0 {
                self.server_acked = s.t.ack;
            }
            if s.payload.is_empty() {
                continue;
            }
            ensure!(
                s.t.seq == self.rcv_nxt,
                "data at {} where the client expects {}",
                s.t.seq,
                self.rcv_nxt
            );
            self.digest.server_data(s.t.seq, &s.payload);
            got.extend_from_slice(&s.payload);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(s.payload.len() as u32);
            self.digest.client_ack(self.rcv_nxt);
            w.send(&self.seg(tcp_flags::ACK, 0), &[], splice)?;
            self.tsval += 1;
        }
        ensure!(
            got == want,
            "echo {:?}, sent {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        );
        Ok(())
    }

    fn rebuild(&self) -> Rebuild {
        Rebuild {
            client_isn: self.isn,
            syn: self.syn,
            client_tsval: Some(self.tsval),
            old: self.old,
            old_server_acked: self.server_acked,
            client_acked: self.rcv_nxt,
            checked: self.digest.checked(),
            client_fin: false,
        }
    }
}

/// The TCP header at the start of `tcp`, read by the firewall's parser.
fn tcp_header(tcp: &[u8]) -> TcpHdr {
    let mut f = vec![0u8; 34];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f.extend_from_slice(tcp);
    match parse(&f) {
        Ok(Parsed::Ip(p)) => match p.l4 {
            L4::Tcp(t) => t,
            _ => TcpHdr::default(),
        },
        _ => TcpHdr::default(),
    }
}

/// Runs a replay to its end; the number of segments it sent. A server
/// segment the replay hands over is kept for the client (`c.handed`).
fn replay(
    w: &mut Wire,
    c: &mut Client,
) -> Result<(Result<Splice, lazarus_core::protect::ReplayError>, u32)> {
    let mut r = Replay::new(c.rebuild(), c.log.bytes().len())?;
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let mut sent = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        while let Some(seg) = r.poll(now()) {
            let payload = &c.log.bytes()[seg.payload.clone()];
            w.send(&seg, payload, None)?;
            sent += 1;
        }
        if let Some(e) = r.failed() {
            return Ok((Err(e), sent));
        }
        if let Some(s) = r.splice() {
            return Ok((Ok(s), sent));
        }
        if let Some(s) = w.recv(Duration::from_millis(5))? {
            if let Ok(Some(at)) = r.on_segment(&s.t, &s.payload, now()) {
                c.handed = Some((s, at));
            }
        }
    }
    bail!("the replay neither finished nor failed in 10 s")
}

/// One connection through a server SIGKILL and restart; `upper` restarts a
/// server that answers differently.
fn one(w: &mut Wire, upper: bool) -> Result<String> {
    let mut server = start_server(false)?;
    let mut c = Client::connect(w)?;
    for i in 1..=3 {
        let line = format!("line {i}\n");
        c.send_line(w, line.as_bytes(), None)?;
        c.expect(w, line.as_bytes(), None, Duration::from_secs(2))?;
    }
    server.kill()?;
    // The dead server's kernel closes its socket: a FIN (no unread data),
    // which the firewall holds; the client never sees it.
    let fin = w.recv(Duration::from_secs(2))?.context("no FIN from the killed server")?;
    ensure!(fin.t.flags & tcp_flags::FIN != 0, "the killed server sent {:?}, not a FIN", fin.t);
    c.server_acked = fin.t.ack;
    // A line the client sends while the server is down: logged and absorbed
    // (the keep-alive answers it), replayed to the new server.
    c.log.record(c.snd_nxt, b"line 4\n");
    c.snd_nxt = c.snd_nxt.wrapping_add(7);
    c.tsval += 1;
    let _server = start_server(upper)?;
    let back = Instant::now();
    let resets_before = w.resets;
    let (spliced, sent) = replay(w, &mut c)?;
    let replayed = back.elapsed();
    let splice = match spliced {
        Ok(s) => s,
        Err(e) => return Ok(format!("replay failed: {e}")),
    };
    // The new server answers the line sent while it was down in the segment
    // that ends the replay; forwarded at once, the client does not wait for
    // the server's retransmission timeout.
    ensure!(c.handed.is_some(), "the replay did not hand the answer to the line sent while the server was down over to the client");
    // Through the splice: the echo of the line sent while the server was
    // down, then a new one, each in the client's own sequence space.
    c.expect(w, b"line 4\n", Some(&splice), Duration::from_secs(3))?;
    let answered = back.elapsed();
    c.send_line(w, b"line 5\n", Some(&splice))?;
    c.expect(w, b"line 5\n", Some(&splice), Duration::from_secs(2))?;
    ensure!(
        w.resets == resets_before,
        "the kernel sent {} RST(s) after the restart",
        w.resets - resets_before
    );
    Ok(format!(
        "spliced after {sent} replayed segment(s) in {replayed:.1?} from the server's start, \
         the line sent while it was down answered after {answered:.1?}"
    ))
}

fn run() -> Result<()> {
    let mut w = Wire::open()?;
    let same = one(&mut w, false)?;
    ensure!(same.starts_with("spliced"), "the restarted echo server: {same}");
    w.ends.sport += 1;
    let other = one(&mut w, true)?;
    ensure!(other.contains("differs"), "a server answering differently was spliced: {other}");
    println!("replay: echo server SIGKILLed and restarted, {same}, lines 1-5 echoed byte for byte, 0 RST; a server that answers differently: {other}");
    Ok(())
}
