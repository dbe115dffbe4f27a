//! Later fragments carry no ports: they follow the verdict of their first
//! fragment, remembered here by (source, destination, id, protocol).

use crate::parse::{Addr, IpPacket};

#[derive(Debug, Clone, Copy, Default)]
struct FragEntry {
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    forward: bool,
    deadline: u64,
}

/// A fixed table of first fragments' verdicts; a newer first fragment takes
/// the place of an older one in the same slot.
pub(crate) struct Fragments {
    entries: Box<[FragEntry]>,
    /// How long a verdict stands, in TSC ticks.
    lifetime: u64,
}

/// What the table says of a later fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaterFragment {
    Forward,
    /// Its first fragment was dropped.
    Drop,
    /// No first fragment seen (or too long ago).
    Unmatched,
}

impl Fragments {
    pub fn new(slots: usize, lifetime: u64) -> Fragments {
        Fragments { entries: vec![FragEntry::default(); slots.max(1)].into_boxed_slice(), lifetime }
    }

    fn slot(&self, p: &IpPacket) -> usize {
        let mut b = [0u8; 37];
        b[..16].copy_from_slice(&p.src);
        b[16..32].copy_from_slice(&p.dst);
        b[32..36].copy_from_slice(&p.frag_id.to_be_bytes());
        b[36] = p.proto;
        (xxhash_rust::xxh3::xxh3_64(&b) % self.entries.len() as u64) as usize
    }

    /// Remembers the verdict on first fragment `p`.
    pub fn remember(&mut self, p: &IpPacket, forward: bool, now: u64) {
        let i = self.slot(p);
        self.entries[i] = FragEntry {
            src: p.src,
            dst: p.dst,
            id: p.frag_id,
            proto: p.proto,
            forward,
            deadline: now + self.lifetime,
        };
    }

    /// The verdict for later fragment `p`.
    pub fn later(&self, p: &IpPacket, now: u64) -> LaterFragment {
        let e = &self.entries[self.slot(p)];
        let matched = e.deadline > now
            && e.id == p.frag_id
            && e.proto == p.proto
            && e.src == p.src
            && e.dst == p.dst;
        match (matched, e.forward) {
            (true, true) => LaterFragment::Forward,
            (true, false) => LaterFragment::Drop,
            (false, _) => LaterFragment::Unmatched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Fragment;

    fn first(id: u32, src: u8) -> IpPacket {
        let mut p =
            IpPacket { frag_id: id, proto: 17, frag: Fragment::First, ..Default::default() };
        p.src[15] = src;
        p.dst[15] = 2;
        p
    }

    #[test]
    fn later_fragments_follow_their_first_until_it_expires() {
        let mut f = Fragments::new(64, 100);
        f.remember(&first(7, 1), true, 10);
        f.remember(&first(8, 1), false, 10);
        assert_eq!(f.later(&first(7, 1), 50), LaterFragment::Forward);
        assert_eq!(f.later(&first(8, 1), 50), LaterFragment::Drop);
        // Another source with the same id, and an id never seen.
        assert_eq!(f.later(&first(7, 3), 50), LaterFragment::Unmatched);
        assert_eq!(f.later(&first(9, 1), 50), LaterFragment::Unmatched);
        assert_eq!(f.later(&first(7, 1), 110), LaterFragment::Unmatched, "expired");
    }
}
