//! The dataplane's side of checkpointing: the delta-ring sink its workers
//! write to, and the start-up handshake with checkpointd.

pub mod attach;
pub mod protected;
pub mod ring;

use lazarus_core::checkpoint::{CheckpointSink, DeltaHead, NoCheckpoint, ProtectRecord, SinkFull};
use lazarus_core::conn::ConnId;
pub use ring::RingSink;

/// A worker's sink, chosen by the config at start.
pub enum WorkerSink {
    Off(NoCheckpoint),
    Ring(RingSink),
}

impl CheckpointSink for WorkerSink {
    #[inline]
    fn portion(&mut self, at: DeltaHead, payload: &[u8]) -> Result<(), SinkFull> {
        match self {
            WorkerSink::Off(s) => s.portion(at, payload),
            WorkerSink::Ring(s) => s.portion(at, payload),
        }
    }
    #[inline]
    fn portion_with(
        &mut self,
        at: DeltaHead,
        encode: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), SinkFull> {
        match self {
            WorkerSink::Off(s) => s.portion_with(at, encode),
            WorkerSink::Ring(s) => s.portion_with(at, encode),
        }
    }
    #[inline]
    fn portion_words<const N: usize>(
        &mut self,
        at: DeltaHead,
        words: &[u64; N],
        len: usize,
    ) -> Result<(), SinkFull> {
        match self {
            WorkerSink::Off(s) => s.portion_words(at, words, len),
            WorkerSink::Ring(s) => s.portion_words(at, words, len),
        }
    }
    #[inline]
    fn deleted(&mut self, id: ConnId, version: u64) -> Result<(), SinkFull> {
        match self {
            WorkerSink::Off(s) => s.deleted(id, version),
            WorkerSink::Ring(s) => s.deleted(id, version),
        }
    }
    fn swept(&mut self, version: u64) -> Result<(), SinkFull> {
        match self {
            WorkerSink::Off(s) => s.swept(version),
            WorkerSink::Ring(s) => s.swept(version),
        }
    }
    #[inline]
    fn publish(&mut self) {
        if let WorkerSink::Ring(s) = self {
            s.publish()
        }
    }
    #[inline]
    fn has_room(&mut self, n: u32) -> bool {
        match self {
            WorkerSink::Off(_) => true,
            WorkerSink::Ring(s) => s.has_room(n),
        }
    }
    #[inline]
    fn take_resync(&mut self) -> bool {
        match self {
            WorkerSink::Off(_) => false,
            WorkerSink::Ring(s) => s.take_resync(),
        }
    }
    #[inline]
    fn protect(&mut self, id: u64, rec: ProtectRecord<'_>) -> Result<(), SinkFull> {
        match self {
            WorkerSink::Off(_) => Ok(()),
            WorkerSink::Ring(s) => s.protect(id, rec),
        }
    }
    fn take_protect_resync(&mut self) -> bool {
        match self {
            WorkerSink::Off(_) => false,
            WorkerSink::Ring(s) => s.take_protect_resync(),
        }
    }
    fn free_slots(&mut self) -> u32 {
        match self {
            WorkerSink::Off(_) => u32::MAX,
            WorkerSink::Ring(s) => s.free_slots(),
        }
    }
    fn position(&self) -> u64 {
        match self {
            WorkerSink::Off(_) => 0,
            WorkerSink::Ring(s) => s.position(),
        }
    }
    fn drainer(&self) -> u64 {
        match self {
            WorkerSink::Off(_) => 0,
            WorkerSink::Ring(s) => s.drainer(),
        }
    }
    fn remote_committed(&self) -> (u64, u64) {
        match self {
            WorkerSink::Off(_) => (u64::MAX, 0),
            WorkerSink::Ring(s) => s.remote_committed(),
        }
    }
}
