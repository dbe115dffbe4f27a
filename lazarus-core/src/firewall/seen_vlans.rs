//! The VLANs in which each protected service answered its clients, shared
//! by every worker of a process. ARP and neighbour solicitations for a
//! probe address reach one worker (ARP is not hashed across queues at
//! all), whichever worker's connections saw the VLAN; they are answered
//! only where the service lives, since another VLAN of a trunk may hold the
//! same address.

use crate::protect::VlanTags;
use crate::stats::MAX_PROTECTED;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// VLANs remembered per service. Past them, probe addresses are answered
/// in every VLAN: a probe nobody can answer would take every close for a
/// crash.
pub const VLANS_MAX: usize = 16;

/// Lock-free and fixed in size: the packet path notes a VLAN with one
/// compare-and-swap at most, and never allocates.
pub struct SeenVlans {
    slots: [[AtomicU64; VLANS_MAX]; MAX_PROTECTED],
}

impl Default for SeenVlans {
    fn default() -> Self {
        SeenVlans { slots: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))) }
    }
}

impl SeenVlans {
    /// Service `svc` answered a client in `tags`. Relaxed: a hint for ARP,
    /// publishing nothing else.
    pub fn saw(&self, svc: usize, tags: VlanTags) {
        let Some(slots) = self.slots.get(svc) else { return };
        let key = tags.vlan_key();
        for slot in slots {
            match slot.load(Relaxed) {
                v if v == key => return,
                0 => match slot.compare_exchange(0, key, Relaxed, Relaxed) {
                    Ok(_) => return,
                    Err(v) if v == key => return,
                    Err(_) => {}
                },
                _ => {}
            }
        }
    }

    /// Whether service `svc` answers for its probe address in `tags`: a
    /// VLAN it was seen in, or any once its slots are full.
    pub fn answers_in(&self, svc: usize, tags: VlanTags) -> bool {
        let Some(slots) = self.slots.get(svc) else { return false };
        let key = tags.vlan_key();
        let mut full = true;
        for slot in slots {
            match slot.load(Relaxed) {
                v if v == key => return true,
                0 => full = false,
                _ => {}
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(frame_tags: &[(u16, u16)]) -> VlanTags {
        let f = crate::frames::ether_tagged(frame_tags, 0x0800, &[0; 40]);
        VlanTags::of_frame(&f).unwrap().0
    }

    #[test]
    fn a_vlan_is_its_ids_and_tpids_not_its_priority() {
        let seen = SeenVlans::default();
        assert!(!seen.answers_in(0, tags(&[(0x8100, 100)])));
        seen.saw(0, tags(&[(0x8100, 100)]));
        assert!(seen.answers_in(0, tags(&[(0x8100, 0xa000 | 100)])), "another priority");
        assert!(!seen.answers_in(0, tags(&[(0x88a8, 100)])), "another TPID");
        assert!(!seen.answers_in(0, tags(&[])), "untagged is a VLAN of its own");
        assert!(!seen.answers_in(1, tags(&[(0x8100, 100)])), "another service");
        assert!(!seen.answers_in(MAX_PROTECTED, tags(&[(0x8100, 100)])));
    }

    #[test]
    fn past_its_slots_a_service_answers_everywhere() {
        let seen = SeenVlans::default();
        for id in 1..=VLANS_MAX as u16 {
            seen.saw(3, tags(&[(0x8100, id)]));
            seen.saw(3, tags(&[(0x8100, id)]));
        }
        assert!(seen.answers_in(3, tags(&[(0x8100, 999)])));
        assert!(!seen.answers_in(2, tags(&[(0x8100, 999)])));
    }

    #[test]
    fn workers_noting_at_once_take_a_slot_each_vlan() {
        let seen = std::sync::Arc::new(SeenVlans::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    for id in 0..8u16 {
                        seen.saw(0, tags(&[(0x8100, (id + t) % 8 + 1)]));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        for id in 1..=8 {
            assert!(seen.answers_in(0, tags(&[(0x8100, id)])));
        }
        assert!(!seen.answers_in(0, tags(&[(0x8100, 9)])), "8 slots of 16 taken, once each");
    }
}
