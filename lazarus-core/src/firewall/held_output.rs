//! Output commit at the remote level: a server's segments held until the
//! client bytes they acknowledge are in the remote store, in frames taken
//! at start (the packet path allocates nothing), released in order.

use super::protect::OUT_FRAME;
use std::collections::VecDeque;

struct Held<K> {
    key: K,
    port: usize,
    /// The client's stream offset the remote store must hold up to.
    needs: u64,
    slot: u16,
    len: u16,
}

/// What `release` asks of a held frame's connection.
pub enum Ask {
    /// How far its client bytes are committed (None: it is gone).
    Committed,
    /// One of its frames left the hold (sent or dropped).
    Left,
}

pub struct HeldOutput<K> {
    frames: Vec<[u8; OUT_FRAME]>,
    free: Vec<u16>,
    queue: VecDeque<Held<K>>,
    /// Connections with a frame that cannot go yet, during a release.
    blocked: Vec<K>,
}

impl<K: Copy + Eq> HeldOutput<K> {
    /// Room for `n` frames, taken now (none: nothing is ever held).
    pub fn new(n: usize) -> HeldOutput<K> {
        let n = n.min(usize::from(u16::MAX));
        HeldOutput {
            frames: vec![[0; OUT_FRAME]; n],
            free: (0..n as u16).rev().collect(),
            queue: VecDeque::with_capacity(n),
            blocked: Vec::with_capacity(n),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Holds the frame `write` writes, to leave by config port `port` once
    /// its connection's client bytes are committed up to `needs`; false
    /// when the hold is full or the frame does not fit.
    pub fn push(
        &mut self,
        key: K,
        port: usize,
        needs: u64,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let Some(&slot) = self.free.last() else { return false };
        let Some(len) = write(&mut self.frames[usize::from(slot)]) else { return false };
        self.free.pop();
        self.queue.push_back(Held { key, port, needs, slot, len: len as u16 });
        true
    }

    /// Hands `send` (config port, frame) each frame whose connection is
    /// committed far enough, in order: a frame that cannot go yet holds
    /// back its connection's later ones; one whose connection is gone is
    /// dropped; when `send` has no room the rest wait. `ask` answers for a
    /// connection. Returns (sent, dropped).
    pub fn release(
        &mut self,
        mut ask: impl FnMut(&K, Ask) -> Option<u64>,
        mut send: impl FnMut(usize, &[u8]) -> bool,
    ) -> (u64, u64) {
        let (mut sent, mut dropped, mut full) = (0, 0, false);
        let HeldOutput { frames, free, queue, blocked } = self;
        blocked.clear();
        queue.retain(|h| {
            if full || blocked.contains(&h.key) {
                return true;
            }
            let go = match ask(&h.key, Ask::Committed) {
                None => {
                    dropped += 1;
                    true
                }
                Some(c) if c >= h.needs => {
                    if !send(h.port, &frames[usize::from(h.slot)][..usize::from(h.len)]) {
                        full = true;
                        return true;
                    }
                    sent += 1;
                    true
                }
                Some(_) => false,
            };
            if go {
                ask(&h.key, Ask::Left);
                free.push(h.slot);
                return false;
            }
            if blocked.len() < blocked.capacity() {
                blocked.push(h.key);
            }
            true
        });
        (sent, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_in_order_once_their_bytes_are_committed() {
        let mut h = HeldOutput::<u8>::new(3);
        let frame = |b: u8| {
            move |out: &mut [u8]| -> Option<usize> {
                out[0] = b;
                Some(1)
            }
        };
        assert!(h.push(1, 0, 10, frame(b'a')));
        assert!(h.push(2, 0, 5, frame(b'b')));
        assert!(h.push(1, 0, 8, frame(b'c')));
        assert!(!h.push(3, 0, 1, frame(b'd')), "full");
        let mut committed = [0u64, 9, 5];
        let mut left = Vec::new();
        let mut out = Vec::new();
        let r = h.release(
            |k, a| match a {
                Ask::Committed => Some(committed[usize::from(*k)]),
                Ask::Left => {
                    left.push(*k);
                    None
                }
            },
            |_, f| {
                out.push(f[0]);
                true
            },
        );
        // Connection 1's first frame needs 10: its second (8) waits behind it.
        assert_eq!((r, &out[..], &left[..]), ((1, 0), &b"b"[..], &[2][..]));
        committed[1] = 10;
        out.clear();
        h.release(
            |k, _| Some(committed[usize::from(*k)]),
            |_, f| {
                out.push(f[0]);
                true
            },
        );
        assert_eq!(out, b"ac");
        assert!(h.is_empty());
        // A gone connection's frame is dropped; no room keeps the rest.
        assert!(h.push(1, 0, 1, frame(b'x')));
        assert!(h.push(2, 0, 1, frame(b'y')));
        let r = h.release(|k, _| (*k == 2).then_some(9), |_, _| false);
        assert_eq!(r, (0, 1));
        assert_eq!(h.len(), 1);
    }
}
