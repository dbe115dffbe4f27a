//! Protected connections between real kernels (issue 21), run by
//! `tests/e2e/protect.sh`: this program bridges two TAP devices, one in a
//! client namespace and one in a server namespace, and runs every TCP
//! connection to the service through `Protected`, as the dataplane will.
//! Line clients in the client namespace keep echoing through a line-echo
//! server that is SIGKILLed and restarted twice; the hook's word (down, up)
//! is given right after each kill and start. Every client must see every
//! echo, byte for byte, and no error. With `--off` connections are bridged
//! unprotected: the control, whose clients must fail.
//!
//! With `--redis` the server is Debian's redis-server (persistence off) and
//! each client runs SET, INCR and GET on a counter of its own: the replay
//! rebuilds every counter in the restarted server, and each INCR must go on
//! from where it was.
//!
//!   protect_bridge run CLIENT_NS SERVER_NS CLIENTS [--off] [--redis]
//!   protect_bridge client ADDR:PORT SECONDS       (in the client namespace)
//!   protect_bridge redis-client ADDR:PORT SECONDS (in the client namespace)
//!   protect_bridge rtt ADDR:PORT LINES            (one line at a time;
//!                                                  prints the echo's
//!                                                  median and p99 in µs)
//!   protect_bridge close-client ADDR:PORT         (says bye; prints how
//!                                                  long the server's close took)
//!   protect_bridge serve ADDR:PORT [--upper] [--delay-ms N]
//!                                                 (in the server namespace;
//!                                                  --upper: answers differ;
//!                                                  each echo N ms late)
//!   protect_bridge half-close ADDR:PORT LINES     (sends its lines, then
//!                                                  half-closes and reads
//!                                                  every echo and the end)

#[path = "common/echo.rs"]
mod echo;

use anyhow::{bail, ensure, Context, Result};
use lazarus_core::parse::{parse, tcp_flags, Parsed, TcpHdr, L4};
use lazarus_core::protect::segment::write_segment;
use lazarus_core::protect::{Action, Endpoints, ProtectPolicy, Protected, Toward};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tun_tap::{Iface, Mode};

const SERVER: &str = "10.78.0.1";
const PORT: u16 = 7000;
const ETH_IP: usize = 34;

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("serve") => {
            let flag = |f: &str| a[3..].iter().position(|x| x == f);
            let delay = flag("--delay-ms").and_then(|i| a.get(4 + i)).map_or(Ok(0), |v| v.parse())?;
            echo::serve(
                &a[2],
                flag("--upper").is_some(),
                Duration::from_millis(delay),
            )
        }
        Some("client") => client(&a[2], a[3].parse()?),
        Some("redis-client") => redis_client(&a[2], a[3].parse()?),
        Some("close-client") => close_client(&a[2]),
        Some("rtt") => rtt(&a[2], a[3].parse()?),
        Some("half-close") => half_close(&a[2], a[3].parse()?),
        Some("run") => {
            let flag = |f: &str| a[5..].iter().any(|x| x == f);
            run(&a[2], &a[3], a[4].parse()?, flag("--off"), flag("--redis"))
        }
        _ => bail!("usage: protect_bridge run CLIENT_NS SERVER_NS CLIENTS [--off] | client ADDR:PORT SECONDS | serve ADDR:PORT [--upper]"),
    }
}

/// Sends a numbered line every 20 ms for `secs` seconds and checks each
/// echo; any error (a reset, an early end, a wrong byte, 5 s without an
/// answer) fails it.
fn client(addr: &str, secs: f64) -> Result<()> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u32;
    let mut longest = Duration::ZERO;
    while Instant::now() < until {
        n += 1;
        let line = format!("line {n} of client {}\n", std::process::id());
        let t = Instant::now();
        w.write_all(line.as_bytes()).with_context(|| format!("write line {n}"))?;
        let mut got = String::new();
        r.read_line(&mut got).with_context(|| format!("read the echo of line {n}"))?;
        ensure!(got == line, "line {n}: echo {got:?}");
        longest = longest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ok {n} {}", longest.as_micros());
    Ok(())
}

/// Sends `lines` lines at once and half-closes (shutdown of its writes),
/// then reads every echo, checked, and the server's close; prints "ok
/// LINES LONGEST_US" (the longest wait for an echo or the close).
fn half_close(addr: &str, lines: usize) -> Result<()> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let sent: Vec<String> =
        (0..lines).map(|n| format!("line {n} of client {}\n", std::process::id())).collect();
    w.write_all(sent.concat().as_bytes())?;
    w.shutdown(std::net::Shutdown::Write)?;
    let mut t = Instant::now();
    let mut longest = Duration::ZERO;
    for (n, line) in sent.iter().enumerate() {
        let mut got = String::new();
        r.read_line(&mut got).with_context(|| format!("read the echo of line {n}"))?;
        ensure!(&got == line, "line {n}: echo {got:?}");
        longest = longest.max(t.elapsed());
        t = Instant::now();
    }
    let mut rest = String::new();
    let n = r.read_line(&mut rest).context("wait for the server's close")?;
    ensure!(n == 0, "{rest:?} after the last echo");
    longest = longest.max(t.elapsed());
    println!("ok {lines} {}", longest.as_micros());
    Ok(())
}

/// Sends `lines` lines one at a time, each after the last one's echo (every
/// echo checked); prints "MEDIAN_US P99_US".
fn rtt(addr: &str, lines: usize) -> Result<()> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut us = Vec::with_capacity(lines);
    for n in 0..lines {
        let line = format!("rtt line {n}\n");
        let t = Instant::now();
        w.write_all(line.as_bytes())?;
        let mut got = String::new();
        r.read_line(&mut got).with_context(|| format!("read the echo of line {n}"))?;
        ensure!(got == line, "line {n}: echo {got:?}");
        us.push(t.elapsed().as_micros() as u64);
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    println!("{} {}", at(0.5), at(0.99));
    Ok(())
}

/// Echoes a line, says `bye`, and waits for the server's close: prints
/// "closed MS" (how long after the echo of `bye` the end of the stream
/// came). A reset, or no close within 10 s, fails it.
fn close_client(addr: &str) -> Result<()> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    for line in ["hello\n", "bye\n"] {
        w.write_all(line.as_bytes())?;
        let mut got = String::new();
        r.read_line(&mut got).with_context(|| format!("read the echo of {line:?}"))?;
        ensure!(got == line, "echo {got:?} of {line:?}");
    }
    let t = Instant::now();
    let mut rest = String::new();
    let n = r.read_line(&mut rest).context("wait for the server's close")?;
    ensure!(n == 0, "{rest:?} after bye");
    println!("closed {}", t.elapsed().as_millis());
    Ok(())
}

/// One Redis command in RESP, its reply line read back.
fn redis(w: &mut TcpStream, r: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String> {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd += &format!("${}\r\n{a}\r\n", a.len());
    }
    w.write_all(cmd.as_bytes())?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if let Some(n) = line.strip_prefix('$') {
        // A bulk string: its value on the next line.
        if n.trim() != "-1" {
            line.clear();
            r.read_line(&mut line)?;
        }
    }
    ensure!(!line.is_empty(), "the connection ended");
    ensure!(!line.starts_with('-'), "Redis answered an error: {}", line.trim());
    Ok(line.trim().to_string())
}

/// SET a counter of its own to 0, then INCR it every 20 ms (and GET it
/// every fifth time) for `secs` seconds: each answer must be the count so
/// far, so a counter the restarted server lost or doubled fails it.
fn redis_client(addr: &str, secs: f64) -> Result<()> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let key = format!("counter:{}", std::process::id());
    ensure!(redis(&mut w, &mut r, &["SET", &key, "0"])? == "+OK", "SET refused");
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    let mut longest = Duration::ZERO;
    while Instant::now() < until {
        n += 1;
        let t = Instant::now();
        let got = redis(&mut w, &mut r, &["INCR", &key]).with_context(|| format!("INCR {n}"))?;
        ensure!(got == format!(":{n}"), "INCR {n} answered {got}");
        if n.is_multiple_of(5) {
            let got =
                redis(&mut w, &mut r, &["GET", &key]).with_context(|| format!("GET at {n}"))?;
            ensure!(got == n.to_string(), "GET at {n} answered {got}");
        }
        longest = longest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ok {n} {}", longest.as_micros());
    Ok(())
}

fn sh(cmd: &str) -> Result<()> {
    ensure!(Command::new("sh").arg("-c").arg(cmd).status()?.success(), "{cmd} failed");
    Ok(())
}

/// A child process, SIGKILLed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(ns: &str, redis: bool) -> Result<Proc> {
    if redis {
        let port = PORT.to_string();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "redis-server", "--bind", SERVER, "--port", &port]);
        c.args(["--save", "", "--appendonly", "no", "--protected-mode", "no", "--logfile", ""]);
        let p = Proc(c.stdout(Stdio::null()).spawn()?);
        for _ in 0..500 {
            let ping = Command::new("ip")
                .args(["netns", "exec", ns, "redis-cli", "-h", SERVER, "-p", &port, "ping"])
                .output()?;
            if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
                return Ok(p);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("redis-server did not answer in its namespace");
    }
    let me = std::env::current_exe()?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(&me).args(["serve", &format!("{SERVER}:{PORT}")]);
    let mut p = Proc(c.stdout(Stdio::piped()).spawn()?);
    let mut line = String::new();
    BufReader::new(p.0.stdout.take().context("stdout")?).read_line(&mut line)?;
    ensure!(line.trim() == "ready", "the echo server did not start: {line:?}");
    Ok(p)
}

fn tap(name: &str, ns: &str, addr: &str) -> Result<Iface> {
    let t = Iface::without_packet_info(name, Mode::Tap).context("open a TAP device (root)")?;
    t.set_non_blocking()?;
    sh(&format!(
        "ip link set {name} netns {ns} && ip -n {ns} link set lo up && \
         ip netns exec {ns} sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1 && \
         ip -n {ns} addr add {addr}/24 dev {name} && ip -n {ns} link set {name} up"
    ))?;
    Ok(t)
}

/// One protected connection and who its frames are between.
struct Conn {
    p: Protected,
    /// Client to server, as the client's SYN had it.
    ends: Endpoints,
}

struct Bridge {
    c: Iface,
    s: Iface,
    conns: HashMap<u16, Conn>,
    protect: bool,
    policy: ProtectPolicy,
    t0: Instant,
    out: Vec<u8>,
}

/// A TCP segment of the service: its header, where its payload is, and its
/// addresses.
struct ServiceSeg {
    t: TcpHdr,
    off: usize,
    len: usize,
    src: [u8; 4],
    dst: [u8; 4],
}

/// The TCP segment of the service in `frame`, if it is one.
fn service_segment(frame: &[u8]) -> Option<ServiceSeg> {
    let Ok(Parsed::Ip(p)) = parse(frame) else { return None };
    let L4::Tcp(t) = p.l4 else { return None };
    if t.dport != PORT && t.sport != PORT {
        return None;
    }
    let v4 = |a: &[u8; 16]| [a[12], a[13], a[14], a[15]];
    Some(ServiceSeg {
        t,
        off: usize::from(p.payload_off),
        len: usize::from(p.payload_len),
        src: v4(&p.src),
        dst: v4(&p.dst),
    })
}

impl Bridge {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Moves what waits on either device across; true when anything did.
    fn pump(&mut self) -> Result<bool> {
        let mut frame = [0u8; 2048];
        let mut moved = false;
        for from_client in [true, false] {
            let dev = if from_client { &self.c } else { &self.s };
            let n = match dev.recv(&mut frame) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            moved = true;
            self.frame(&mut frame[..n], from_client)?;
        }
        self.poll_all()?;
        Ok(moved)
    }

    fn frame(&mut self, f: &mut [u8], from_client: bool) -> Result<()> {
        let seg = if self.protect { service_segment(f) } else { None };
        let Some(ServiceSeg { t, off, len, src, dst }) = seg else {
            return self.send(f, !from_client);
        };
        let port = if from_client { t.sport } else { t.dport };
        let now = self.now();
        if from_client && t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
            let mut ends = Endpoints {
                src_mac: [0; 6],
                dst_mac: [0; 6],
                src_ip: lazarus_core::parse::v4_mapped(src),
                dst_ip: lazarus_core::parse::v4_mapped(dst),
                sport: t.sport,
                dport: t.dport,
                tags: lazarus_core::protect::VlanTags::UNTAGGED,
            };
            ends.src_mac.copy_from_slice(&f[6..12]);
            ends.dst_mac.copy_from_slice(&f[..6]);
            self.conns.entry(port).or_insert(Conn { p: Protected::new(self.policy, &t), ends });
        }
        let Some(c) = self.conns.get_mut(&port) else { return self.send(f, !from_client) };
        let (head, rest) = f.split_at_mut(ETH_IP);
        let payload = rest[off - ETH_IP..off - ETH_IP + len].to_vec();
        let action = if from_client {
            c.p.from_client(&t, &payload, rest, now)
        } else {
            c.p.from_server(&t, &payload, rest, now)
        };
        let _ = head;
        match action {
            Action::Forward => self.send(f, !from_client),
            Action::ForwardFrom(at) => {
                // The part of the server's segment the client has not had:
                // rebuilt as the new server would have sent it, then
                // rewritten through the splice like any other.
                let splice = c.p.splice().context("handed over without a splice")?;
                let seg = lazarus_core::protect::Segment::tail_of(&t, at);
                let ends = c.ends.reversed();
                let mut out = std::mem::take(&mut self.out);
                let n = write_segment(&mut out, &ends, &seg, &payload[at..]).context("frame")?;
                splice.to_client(&mut out[ETH_IP..n])?;
                self.send(&out[..n], true)?;
                self.out = out;
                Ok(())
            }
            Action::Absorb | Action::Drop(_) => Ok(()),
        }
    }

    fn poll_all(&mut self) -> Result<()> {
        let now = self.now();
        let mut frames = Vec::new();
        for c in self.conns.values_mut() {
            while let Some((to, seg)) = c.p.poll(now) {
                let mut buf = vec![0u8; 2048];
                let n = match to {
                    Toward::Server => {
                        write_segment(&mut buf, &c.ends, &seg, &c.p.log()[seg.payload.clone()])
                    }
                    Toward::Client => write_segment(&mut buf, &c.ends.reversed(), &seg, &[]),
                }
                .context("frame")?;
                buf.truncate(n);
                frames.push((buf, to == Toward::Client));
            }
        }
        for (f, to_client) in frames {
            self.send(&f, to_client)?;
        }
        Ok(())
    }

    fn send(&self, f: &[u8], to_client: bool) -> Result<()> {
        let dev = if to_client { &self.c } else { &self.s };
        dev.send(f)?;
        Ok(())
    }

    /// Bridges for `d`.
    fn bridge_for(&mut self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if !self.pump()? {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(())
    }

    fn hook(&mut self, up: bool) {
        let now = self.now();
        for c in self.conns.values_mut() {
            if up {
                c.p.service_up(now);
            } else {
                c.p.service_down(now);
            }
        }
    }
}

fn run(cns: &str, sns: &str, clients: usize, off: bool, redis: bool) -> Result<()> {
    let c = tap("lzpc0", cns, "10.78.0.2")?;
    let s = tap("lzps0", sns, SERVER)?;
    let policy = ProtectPolicy {
        log_bound: 1 << 20,
        log_memory: lazarus_core::protect::LogMemory::HEAP,
        hold_ns: 2_000_000_000,
        keepalive_ns: 1_000_000_000,
        down_max_ns: 30_000_000_000,
        truncate: false,
        truncate_idle_ns: 0,
    };
    let mut b = Bridge {
        c,
        s,
        conns: HashMap::new(),
        protect: !off,
        policy,
        t0: Instant::now(),
        out: vec![0; 2048],
    };
    let mut server = start_server(sns, redis)?;
    let me = std::env::current_exe()?;
    let secs = 3.0;
    let mut kids = Vec::new();
    for _ in 0..clients {
        let mut cmd = Command::new("ip");
        let mode = if redis { "redis-client" } else { "client" };
        cmd.args(["netns", "exec", cns]).arg(&me).args([
            mode,
            &format!("{SERVER}:{PORT}"),
            &secs.to_string(),
        ]);
        kids.push(Proc(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?));
    }
    let mut stalls = Vec::new();
    b.bridge_for(Duration::from_millis(800))?;
    for _ in 0..2 {
        drop(server);
        let down = Instant::now();
        // The dead server's FIN reaches the firewall before the hook's word
        // does, as it would from a host's ExecStopPost: held meanwhile.
        b.bridge_for(Duration::from_millis(50))?;
        b.hook(false);
        b.bridge_for(Duration::from_millis(250))?;
        server = start_server(sns, redis)?;
        b.hook(true);
        stalls.push(down.elapsed());
        b.bridge_for(Duration::from_millis(500))?;
    }
    let until = Instant::now() + Duration::from_secs_f64(secs + 8.0);
    let mut results = Vec::new();
    for mut k in kids {
        loop {
            if let Some(st) = k.0.try_wait()? {
                let mut out = String::new();
                std::io::Read::read_to_string(k.0.stdout.as_mut().context("stdout")?, &mut out)?;
                let mut err = String::new();
                std::io::Read::read_to_string(k.0.stderr.as_mut().context("stderr")?, &mut err)?;
                results.push((st.success(), out, err));
                break;
            }
            ensure!(Instant::now() < until, "a client did not finish");
            if !b.pump()? {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
    drop(server);
    let ok: Vec<_> = results.iter().filter(|r| r.0).collect();
    let lines: u64 =
        ok.iter().filter_map(|r| r.1.split_whitespace().nth(1)?.parse::<u64>().ok()).sum();
    let longest = ok
        .iter()
        .filter_map(|r| r.1.split_whitespace().nth(2)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let errors: Vec<_> = results
        .iter()
        .filter(|r| !r.0)
        .map(|r| r.2.lines().next().unwrap_or("").to_string())
        .collect();
    let spliced = b.conns.values().filter(|c| c.p.splice().is_some()).count();
    let ended: Vec<_> = b.conns.values().filter_map(|c| c.p.ended()).collect();
    println!(
        "{} client(s) ok, {} failed ({}), {lines} answers checked, longest wait for an answer {} ms; \
         server down (kill to restart) {:?} and {:?}; {spliced} connection(s) spliced, protection ended {:?}",
        ok.len(),
        errors.len(),
        errors.first().map(String::as_str).unwrap_or("-"),
        longest / 1000,
        stalls[0],
        stalls[1],
        ended
    );
    if off {
        ensure!(ok.is_empty(), "control: clients passed without protection: the test cannot tell");
    } else {
        ensure!(errors.is_empty() && ok.len() == clients, "protected clients failed");
        // The client waits for the server's restart and the replay, not for
        // its own retransmission or window-probe timers (200 ms and up):
        // generous, for a noisy machine.
        let bound = stalls.iter().max().copied().unwrap_or_default() + Duration::from_millis(400);
        ensure!(
            Duration::from_micros(longest) < bound,
            "a client waited {} ms for an answer: more than the server was down plus 400 ms",
            longest / 1000
        );
    }
    Ok(())
}
