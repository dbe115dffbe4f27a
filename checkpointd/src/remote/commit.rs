//! Output commit at the remote level: how far each worker's ring is in the
//! remote store, as far as protected connections go (a dataplane holds a
//! server's segment until the client bytes it acknowledges are there).
//!
//! Each drain of a ring that brought protected changes is a generation.
//! A change waiting in the tracker or in flight keeps its generation open
//! (changes that coalesce keep the oldest); a generation closes when none
//! is left. A worker's ring is committed up to the first of its drains
//! whose generation is still open, or up to its last drain when none is.

use std::collections::{BTreeMap, VecDeque};

pub struct Commit {
    /// The generation the next drain's protected changes get.
    next: u64,
    /// Open generations: how many changes of each are not in Redis yet.
    open: BTreeMap<u64, u32>,
    /// Per worker: its drains with protected changes not known committed,
    /// (generation, ring position before the drain).
    drains: Vec<VecDeque<(u64, u64)>>,
    /// Per worker: where its last drain ended.
    tails: Vec<u64>,
}

impl Commit {
    pub fn new(workers: usize) -> Commit {
        Commit {
            next: 1,
            open: BTreeMap::new(),
            drains: vec![VecDeque::new(); workers],
            tails: vec![0; workers],
        }
    }

    /// The generation of the drain being noted.
    pub fn current(&self) -> u64 {
        self.next
    }

    /// Ring `w` was drained from `before` to `after`; `protected`: some of
    /// its changes got [`Commit::current`].
    pub fn drained(&mut self, w: usize, before: u64, after: u64, protected: bool) {
        let (Some(drains), Some(tail)) = (self.drains.get_mut(w), self.tails.get_mut(w)) else {
            return;
        };
        if protected {
            drains.push_back((self.next, before));
            self.next += 1;
        }
        *tail = after;
    }

    /// One more change of generation `gen` not in Redis yet.
    pub fn add(&mut self, gen: u64) {
        *self.open.entry(gen).or_default() += 1;
    }

    /// A change of generation `gen` is in Redis (or needs nothing there).
    pub fn done(&mut self, gen: u64) {
        if let Some(n) = self.open.get_mut(&gen) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&gen);
            }
        }
    }

    /// Where worker `w`'s ring is committed up to: every protected record
    /// below it is in Redis.
    pub fn committed(&mut self, w: usize) -> u64 {
        let oldest_open = self.open.keys().next().copied().unwrap_or(u64::MAX);
        let Some(drains) = self.drains.get_mut(w) else { return 0 };
        while drains.front().is_some_and(|&(gen, _)| gen < oldest_open) {
            drains.pop_front();
        }
        drains.front().map_or(self.tails[w], |&(_, before)| before)
    }
}

#[cfg(test)]
mod tests {
    use super::Commit;

    #[test]
    fn a_ring_is_committed_up_to_its_oldest_open_drain() {
        let mut c = Commit::new(2);
        // Worker 0: a drain with two protected changes, then one without.
        let g1 = c.current();
        c.add(g1);
        c.add(g1);
        c.drained(0, 100, 110, true);
        c.drained(0, 110, 120, false);
        // Worker 1: a drain of its own.
        let g2 = c.current();
        c.add(g2);
        c.drained(1, 50, 60, true);
        assert_eq!((c.committed(0), c.committed(1)), (100, 50));
        c.done(g1);
        assert_eq!(c.committed(0), 100, "one of its changes is still out");
        c.done(g1);
        assert_eq!(c.committed(0), 120);
        assert_eq!(c.committed(1), 50, "an older generation does not close a newer one");
        c.done(g2);
        assert_eq!(c.committed(1), 60);
    }

    #[test]
    fn a_newer_generation_closing_first_commits_nothing_of_an_older_one() {
        let mut c = Commit::new(1);
        let (g1, g2) = (c.current(), c.current() + 1);
        c.add(g1);
        c.drained(0, 0, 10, true);
        c.add(g2);
        c.drained(0, 10, 20, true);
        c.done(g2);
        assert_eq!(c.committed(0), 0);
        c.done(g1);
        assert_eq!(c.committed(0), 20);
    }
}
