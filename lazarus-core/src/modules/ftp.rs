//! The ftp module: follows the control channel in both directions (lines split
//! across segments are joined), and turns PORT/EPRT commands and 227/229
//! replies into expectations, so that the data connection they announce is
//! admitted as related even where policy would drop it as new. RFC 959 §4.1
//! (PORT, PASV), RFC 2428 (EPRT, EPSV).

use crate::conn::{ConnId, Dir};
use crate::modules::Module;
use crate::parse::{v4_mapped, Addr, Family};
use crate::portion::{Portion, PortionError, Reader, Writer};

/// Longest control line the module keeps; longer lines are not PORT/EPRT/227/229
/// lines (those fit in about 60 bytes), so they are skipped up to their newline.
pub const MAX_LINE: usize = 160;

/// What a control line announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpEvent {
    /// PORT or EPRT from the client: the server will connect to addr:port.
    Active { addr: Addr, port: u16 },
    /// 227 from the server: the client will connect to addr:port.
    Passive { addr: Addr, port: u16 },
    /// 229 from the server: the client will connect to the server's own address, port.
    ExtendedPassive { port: u16 },
}

fn trim_crlf(mut l: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = l {
        l = rest;
    }
    l
}

fn parse_u8_list<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut it = s.split(|&c| c == b',');
    for o in out.iter_mut() {
        let f = std::str::from_utf8(it.next()?).ok()?.trim();
        *o = f.parse().ok()?;
    }
    it.next().is_none().then_some(out)
}

/// h1,h2,h3,h4,p1,p2 → (address, port).
fn host_port(s: &[u8]) -> Option<(Addr, u16)> {
    let v: [u8; 6] = parse_u8_list(s)?;
    Some((v4_mapped([v[0], v[1], v[2], v[3]]), u16::from_be_bytes([v[4], v[5]])))
}

/// `|1|132.235.1.2|6275|` or `|2|1080::8:800:200C:417A|5282|` (any delimiter).
fn eprt_arg(s: &[u8]) -> Option<(Addr, u16)> {
    let d = *s.first()?;
    let parts: Vec3<'_> = split3(&s[1..], d)?;
    let addr_s = std::str::from_utf8(parts.1).ok()?;
    let port: u16 = std::str::from_utf8(parts.2).ok()?.parse().ok()?;
    let addr = match parts.0 {
        b"1" => v4_mapped(addr_s.parse::<std::net::Ipv4Addr>().ok()?.octets()),
        b"2" => addr_s.parse::<std::net::Ipv6Addr>().ok()?.octets(),
        _ => return None,
    };
    (port != 0).then_some((addr, port))
}

type Vec3<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits "a|b|c|" into (a, b, c).
fn split3(s: &[u8], d: u8) -> Option<Vec3<'_>> {
    let mut it = s.splitn(4, |&c| c == d);
    let (a, b, c) = (it.next()?, it.next()?, it.next()?);
    it.next()?; // the closing delimiter must be there
    Some((a, b, c))
}

fn starts_with_ci(l: &[u8], word: &[u8]) -> bool {
    l.len() >= word.len() && l[..word.len()].eq_ignore_ascii_case(word)
}

/// A line the client sent (PORT, EPRT).
pub fn parse_command(line: &[u8]) -> Option<FtpEvent> {
    let l = trim_crlf(line);
    if starts_with_ci(l, b"PORT ") {
        let (addr, port) = host_port(&l[5..])?;
        return (port != 0).then_some(FtpEvent::Active { addr, port });
    }
    if starts_with_ci(l, b"EPRT ") {
        let (addr, port) = eprt_arg(&l[5..])?;
        return Some(FtpEvent::Active { addr, port });
    }
    None
}

/// A line the server sent (227, 229).
pub fn parse_reply(line: &[u8]) -> Option<FtpEvent> {
    let l = trim_crlf(line);
    if l.starts_with(b"227 ") || l.starts_with(b"227-") {
        // The numbers may or may not be in parentheses (RFC 1123 §4.1.2.6): take
        // the first run of digits and commas that holds six numbers.
        let body = &l[4..];
        let first = body.iter().position(|c| c.is_ascii_digit())?;
        let len = body[first..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b',' || **c == b' ')
            .count();
        let (addr, port) = host_port(&body[first..first + len])?;
        return (port != 0).then_some(FtpEvent::Passive { addr, port });
    }
    if l.starts_with(b"229 ") || l.starts_with(b"229-") {
        let open = l.iter().position(|&c| c == b'(')?;
        let close = l.iter().rposition(|&c| c == b')')?;
        let inner = l.get(open + 1..close)?;
        let d = *inner.first()?;
        let (net, addr, port) = split3(&inner[1..], d)?;
        if !net.is_empty() || !addr.is_empty() {
            return None;
        }
        let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
        return (port != 0).then_some(FtpEvent::ExtendedPassive { port });
    }
    None
}

/// Joins one direction's byte stream into lines.
#[derive(Clone, Copy)]
pub struct LineBuf {
    buf: [u8; MAX_LINE],
    len: u8,
    /// The current line outgrew the buffer: skip to its newline.
    skipping: bool,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf { buf: [0; MAX_LINE], len: 0, skipping: false }
    }
}

impl LineBuf {
    /// Feeds bytes; calls `line` for each complete line. Returns the number of
    /// over-long lines skipped.
    pub fn feed(&mut self, mut data: &[u8], mut line: impl FnMut(&[u8])) -> u32 {
        let mut skipped = 0;
        while !data.is_empty() {
            let nl = data.iter().position(|&c| c == b'\n');
            let (chunk, rest, complete) = match nl {
                Some(i) => (&data[..=i], &data[i + 1..], true),
                None => (data, &[][..], false),
            };
            data = rest;
            if !self.skipping {
                let len = self.len as usize;
                if len + chunk.len() <= MAX_LINE {
                    self.buf[len..len + chunk.len()].copy_from_slice(chunk);
                    self.len = (len + chunk.len()) as u8;
                    if complete {
                        line(&self.buf[..self.len as usize]);
                        self.len = 0;
                    }
                    continue;
                }
                self.skipping = true;
                skipped += 1;
            }
            if complete {
                self.skipping = false;
                self.len = 0;
            }
        }
        skipped
    }

    pub fn reset(&mut self) {
        self.len = 0;
        self.skipping = false;
    }

    /// The unfinished line, and whether it is being skipped as over-long.
    pub fn partial(&self) -> (&[u8], bool) {
        (&self.buf[..self.len as usize], self.skipping)
    }

    fn restored(partial: &[u8], skipping: bool) -> LineBuf {
        let mut l = LineBuf { skipping, ..Default::default() };
        let n = partial.len().min(MAX_LINE);
        l.buf[..n].copy_from_slice(&partial[..n]);
        l.len = n as u8;
        l
    }
}

/// The ftp module's portion of a control connection: where each direction's
/// byte stream stands and its unfinished line.
#[derive(Clone, Copy, Default)]
pub struct FtpPortion {
    pub next_seq: [u32; 2],
    pub synced: [bool; 2],
    pub lines: [LineBuf; 2],
    /// Expectations this control connection created (checkpoint version).
    pub expectations_made: u32,
}

/// Expectations an FTP portion carries in its checkpoint (a control
/// connection rarely has more than one outstanding).
pub const CHECKPOINT_EXPECTATIONS: usize = 2;
/// Longest unfinished line a checkpoint keeps per direction; a longer one is
/// restored as "skip to the next line" (commands that matter are shorter).
const CHECKPOINT_LINE: usize = 48;

/// The ftp portion as checkpointed: the control connection's parse state
/// and the live expectations it created (their `master` is the connection's
/// id, set by the restore).
#[derive(Clone, Copy)]
pub struct FtpRecord {
    pub portion: FtpPortion,
    pub expectations: [Expectation; CHECKPOINT_EXPECTATIONS],
    /// How many of `expectations` are meaningful.
    pub count: usize,
}

// The format byte, both directions' lines and the expectations at their longest.
const FTP_ENCODED_MAX: usize =
    1 + 2 * (4 + 1 + 1 + 1 + CHECKPOINT_LINE) + 4 + 1 + CHECKPOINT_EXPECTATIONS * 47;
const _: () = assert!(FTP_ENCODED_MAX <= shm_layout::FTP_PORTION_MAX);

impl FtpPortion {
    /// Writes the portion with `expectations` (what [`FtpRecord::encode`]
    /// writes, without copying the portion into a record).
    pub fn encode(
        &self,
        expectations: &[Expectation],
        out: &mut [u8],
    ) -> Result<usize, PortionError> {
        let mut w = Writer::new(out, Module::Ftp);
        for d in 0..2 {
            w.u32(self.next_seq[d]);
            w.u8(self.synced[d] as u8);
            let (line, skipping) = self.lines[d].partial();
            if line.len() > CHECKPOINT_LINE {
                w.u8(1);
                w.u8(0);
            } else {
                w.u8(skipping as u8);
                w.u8(line.len() as u8);
                w.bytes(line);
            }
        }
        w.u32(self.expectations_made);
        let n = expectations.len().min(CHECKPOINT_EXPECTATIONS);
        w.u8(n as u8);
        for e in &expectations[..n] {
            w.u8(e.family);
            w.u16(e.zone);
            w.u16(crate::conn::vlan_ids(e.vlan).0);
            w.bytes(&e.src);
            w.bytes(&e.dst);
            w.u16(e.dport);
            w.u64(e.deadline);
        }
        w.finish()
    }
}

impl Portion for FtpRecord {
    const MODULE: Module = Module::Ftp;
    const MAX_LEN: usize = shm_layout::FTP_PORTION_MAX;

    fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError> {
        self.portion.encode(&self.expectations[..self.count], out)
    }

    fn decode(b: &[u8]) -> Result<Self, PortionError> {
        let mut r = Reader::new(b, Module::Ftp)?;
        let mut p = FtpPortion::default();
        for d in 0..2 {
            p.next_seq[d] = r.u32()?;
            p.synced[d] = r.bool()?;
            let skipping = r.bool()?;
            let len = r.u8()? as usize;
            if len > CHECKPOINT_LINE {
                return Err(r.bad("line length"));
            }
            p.lines[d] = LineBuf::restored(r.bytes(len)?, skipping);
        }
        p.expectations_made = r.u32()?;
        let n = r.u8()? as usize;
        if n > CHECKPOINT_EXPECTATIONS {
            return Err(r.bad("expectation count"));
        }
        let mut x = [Expectation::default(); CHECKPOINT_EXPECTATIONS];
        for e in x.iter_mut().take(n) {
            *e = Expectation {
                family: r.u8()?,
                zone: r.u16()?,
                vlan: u32::from(r.u16()?),
                src: r.array()?,
                dst: r.array()?,
                dport: r.u16()?,
                master: ConnId(0),
                deadline: r.u64()?,
                live: true,
            };
        }
        Ok(FtpRecord { portion: p, expectations: x, count: n })
    }
}

/// What feeding a segment found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FeedResult {
    pub event: Option<FtpEvent>,
    /// Bytes missing before this segment (a gap): the line state was reset.
    pub gap: bool,
    pub skipped_long_lines: u32,
}

impl FtpPortion {
    /// Feeds one TCP segment's payload of direction `dir`, with sequence `seq`.
    /// In-order bytes are parsed once; retransmitted bytes are skipped.
    pub fn feed(&mut self, dir: Dir, seq: u32, payload: &[u8]) -> FeedResult {
        let d = dir.idx();
        let mut res = FeedResult::default();
        if payload.is_empty() {
            return res;
        }
        if !self.synced[d] {
            self.synced[d] = true;
            self.next_seq[d] = seq;
        }
        let off = self.next_seq[d].wrapping_sub(seq) as i32;
        let data = if off < 0 {
            // A gap: we never saw some bytes (reordering); start over at this segment.
            res.gap = true;
            self.lines[d].reset();
            payload
        } else if off as usize >= payload.len() {
            return res; // all retransmitted
        } else {
            &payload[off as usize..]
        };
        self.next_seq[d] = seq.wrapping_add(payload.len() as u32);
        let mut ev = None;
        res.skipped_long_lines = self.lines[d].feed(data, |l| {
            let e = if dir == Dir::Original { parse_command(l) } else { parse_reply(l) };
            if e.is_some() {
                ev = e;
            }
        });
        res.event = ev;
        res
    }
}

/// A data connection announced on a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expectation {
    pub family: u8,
    pub zone: u16,
    /// The control connection's VLAN ids (`conn::vlan_ids`); a checkpoint
    /// keeps the outer one only, and a restore takes both from the control
    /// connection again.
    pub vlan: u32,
    /// Who will open the data connection, and to where.
    pub src: Addr,
    pub dst: Addr,
    pub dport: u16,
    pub master: ConnId,
    pub deadline: u64,
    pub live: bool,
}

/// Fixed-size expectation table of one worker. Small (a few per FTP session
/// for a few seconds each), so a linear scan on the new-connection path is
/// cheaper than any index.
pub struct Expectations {
    slots: Box<[Expectation]>,
    live: usize,
    /// Live expectations one control connection may hold.
    per_master: usize,
}

/// A new connection, as an expectation is matched against it.
#[derive(Debug, Clone, Copy)]
pub struct DataConn<'a> {
    pub family: Family,
    pub zone: u16,
    pub vlan: u32,
    pub src: &'a Addr,
    pub dst: &'a Addr,
    pub dport: u16,
}

impl Expectations {
    pub fn new(capacity: usize, per_master: usize) -> Self {
        Expectations {
            slots: vec![Expectation::default(); capacity.max(1)].into_boxed_slice(),
            live: 0,
            per_master: per_master.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds an expectation; false when every slot holds a live, unexpired one.
    /// A control connection already holding `per_master` live ones gives up
    /// its oldest for it: one session cannot fill the table.
    pub fn add(&mut self, e: Expectation, now: u64) -> bool {
        let same = |s: &Expectation| s.src == e.src && s.dst == e.dst && s.dport == e.dport;
        let mine = |s: &Expectation| s.live && s.deadline > now && s.master == e.master;
        let held = self.slots.iter().filter(|s| mine(s)).count();
        let renewal = self.slots.iter().any(|s| mine(s) && same(s));
        let slot = if held >= self.per_master && !renewal {
            // The oldest is the one due first: every deadline is now + the same timeout.
            self.slots.iter_mut().filter(|s| mine(s)).min_by_key(|s| s.deadline)
        } else {
            self.slots.iter_mut().find(|s| !s.live || s.deadline <= now || same(s))
        };
        match slot {
            Some(s) => {
                if !s.live {
                    self.live += 1;
                }
                *s = Expectation { live: true, ..e };
                true
            }
            None => false,
        }
    }

    /// Takes the expectation new connection `c` fulfils, if any.
    #[inline]
    pub fn take(&mut self, c: &DataConn<'_>, now: u64) -> Option<Expectation> {
        let DataConn { family, zone, vlan, src, dst, dport } = *c;
        if self.live == 0 {
            return None;
        }
        let s = self.slots.iter_mut().find(|s| {
            s.live
                && s.deadline > now
                && s.dport == dport
                && s.dst == *dst
                && s.src == *src
                && s.zone == zone
                && s.vlan == vlan
                && s.family == family as u8
        })?;
        s.live = false;
        self.live -= 1;
        Some(*s)
    }

    /// The live expectations a control connection created.
    pub fn of_master(&self, id: ConnId) -> impl Iterator<Item = &Expectation> {
        self.slots.iter().filter(move |s| s.live && s.master == id)
    }

    /// Drops expired expectations; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.live && s.deadline <= now) {
            s.live = false;
            n += 1;
        }
        self.live -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data connection to `e`'s addresses on `dport`.
    fn to(e: &Expectation, dport: u16) -> DataConn<'_> {
        DataConn { family: Family::V4, zone: 0, vlan: 0, src: &e.src, dst: &e.dst, dport }
    }

    #[test]
    fn port_and_eprt_commands() {
        assert_eq!(
            parse_command(b"PORT 10,99,0,1,195,80\r\n"),
            Some(FtpEvent::Active { addr: v4_mapped([10, 99, 0, 1]), port: 50000 })
        );
        assert_eq!(
            parse_command(b"port 10,99,0,1,0,21\r\n"),
            Some(FtpEvent::Active { addr: v4_mapped([10, 99, 0, 1]), port: 21 })
        );
        assert_eq!(
            parse_command(b"EPRT |1|132.235.1.2|6275|\r\n"),
            Some(FtpEvent::Active { addr: v4_mapped([132, 235, 1, 2]), port: 6275 })
        );
        let v6: std::net::Ipv6Addr = "1080::8:800:200c:417a".parse().unwrap();
        assert_eq!(
            parse_command(b"EPRT |2|1080::8:800:200C:417A|5282|\r\n"),
            Some(FtpEvent::Active { addr: v6.octets(), port: 5282 })
        );
        assert_eq!(parse_command(b"PORT 10,99,0,1,195\r\n"), None);
        assert_eq!(parse_command(b"PORT 10,99,0,1,195,80,1\r\n"), None);
        assert_eq!(parse_command(b"PORT 300,99,0,1,195,80\r\n"), None);
        assert_eq!(parse_command(b"EPRT |3|x|1|\r\n"), None);
        assert_eq!(parse_command(b"RETR file\r\n"), None);
    }

    #[test]
    fn passive_replies() {
        assert_eq!(
            parse_reply(b"227 Entering Passive Mode (10,99,0,2,117,48).\r\n"),
            Some(FtpEvent::Passive { addr: v4_mapped([10, 99, 0, 2]), port: 30000 })
        );
        assert_eq!(
            parse_reply(b"227 Entering Passive Mode 10,99,0,2,117,48\r\n"),
            Some(FtpEvent::Passive { addr: v4_mapped([10, 99, 0, 2]), port: 30000 })
        );
        assert_eq!(
            parse_reply(b"229 Entering Extended Passive Mode (|||6446|)\r\n"),
            Some(FtpEvent::ExtendedPassive { port: 6446 })
        );
        assert_eq!(parse_reply(b"229 Entering Extended Passive Mode (|||0|)\r\n"), None);
        assert_eq!(parse_reply(b"230 Login successful.\r\n"), None);
    }

    #[test]
    fn a_command_split_across_segments_is_joined() {
        let mut p = FtpPortion::default();
        let line = b"PORT 10,99,0,1,195,80\r\n";
        for cut in 1..line.len() {
            let mut p2 = FtpPortion::default();
            assert_eq!(p2.feed(Dir::Original, 100, &line[..cut]).event, None);
            let r = p2.feed(Dir::Original, 100 + cut as u32, &line[cut..]);
            assert_eq!(
                r.event,
                Some(FtpEvent::Active { addr: v4_mapped([10, 99, 0, 1]), port: 50000 }),
                "cut at {cut}"
            );
        }
        // Three pieces, with a retransmission of the middle one.
        assert_eq!(p.feed(Dir::Original, 1, b"EPRT |2|::1").event, None);
        assert_eq!(p.feed(Dir::Original, 12, b"|2121").event, None);
        assert_eq!(p.feed(Dir::Original, 12, b"|2121").event, None);
        assert_eq!(
            p.feed(Dir::Original, 17, b"|\r\n").event,
            Some(FtpEvent::Active { addr: std::net::Ipv6Addr::LOCALHOST.octets(), port: 2121 })
        );
    }

    #[test]
    fn overlong_lines_are_skipped_without_losing_the_next() {
        let mut p = FtpPortion::default();
        let long = vec![b'A'; 500];
        let r = p.feed(Dir::Original, 0, &long);
        assert_eq!(r.skipped_long_lines, 1);
        let r = p.feed(Dir::Original, 500, b"\r\nPORT 1,2,3,4,0,99\r\n");
        assert_eq!(r.event, Some(FtpEvent::Active { addr: v4_mapped([1, 2, 3, 4]), port: 99 }));
    }

    #[test]
    fn expectations_match_once_and_expire() {
        let mut x = Expectations::new(2, 2);
        let e = Expectation {
            family: 4,
            src: v4_mapped([1, 1, 1, 1]),
            dst: v4_mapped([2, 2, 2, 2]),
            dport: 5000,
            deadline: 100,
            ..Default::default()
        };
        assert!(x.add(e, 0));
        assert!(x.take(&to(&e, 5001), 10).is_none());
        assert!(x.take(&to(&e, 5000), 10).is_some());
        assert!(x.take(&to(&e, 5000), 10).is_none(), "used once");
        assert!(x.add(e, 0));
        assert!(x.take(&to(&e, 5000), 100).is_none(), "expired");
        assert_eq!(x.expire(200), 1);
        assert!(x.is_empty());
    }

    /// One control connection holds at most `per_master` live expectations:
    /// a further PASV/PORT replaces its oldest, and another connection's are
    /// never touched. Fails with the cap removed (the table fills up).
    #[test]
    fn a_session_holds_at_most_its_cap_and_replaces_its_oldest() {
        let mut x = Expectations::new(16, 2);
        let exp = |master: u64, dport: u16, deadline: u64| Expectation {
            family: 4,
            src: v4_mapped([1, 1, 1, 1]),
            dst: v4_mapped([2, 2, 2, 2]),
            dport,
            master: ConnId(master),
            deadline,
            ..Default::default()
        };
        assert!(x.add(exp(9, 7000, 1000), 0), "another session's");
        for (i, port) in (5000..5010).enumerate() {
            assert!(x.add(exp(1, port, 100 + i as u64), i as u64));
        }
        assert_eq!(x.of_master(ConnId(1)).count(), 2, "capped");
        let ports: Vec<u16> = x.of_master(ConnId(1)).map(|e| e.dport).collect();
        assert!(ports.contains(&5008) && ports.contains(&5009), "the newest two: {ports:?}");
        assert_eq!(x.of_master(ConnId(9)).count(), 1, "untouched");
        assert_eq!(x.len(), 3);
        // Renewing one it holds takes no other's place.
        assert!(x.add(exp(1, 5009, 500), 20));
        assert_eq!(x.of_master(ConnId(1)).count(), 2);
        assert!(x.take(&to(&exp(1, 5008, 0), 5008), 30).is_some());
    }
}
