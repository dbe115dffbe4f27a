//! The worker's end of its delta ring in checkpointd's shared memory.

use lazarus_core::checkpoint::{CheckpointSink, DeltaHead, SinkFull};
use lazarus_core::conn::ConnId;
use lazarus_core::modules::Module;
use shm_layout::{delta_kind, DeltaProducer};

/// Writes deltas into one worker's ring; never blocks, never waits on
/// checkpointd. The ring segment is mapped for the life of the process.
pub struct RingSink {
    producer: DeltaProducer<'static>,
    resync_epoch: u64,
}

impl RingSink {
    pub fn new(producer: DeltaProducer<'static>) -> Self {
        // Resyncs requested before this process started are answered by the
        // restore itself, which starts from the store checkpointd has now.
        let resync_epoch = producer.resync_epoch();
        RingSink { producer, resync_epoch }
    }
}

impl CheckpointSink for RingSink {
    #[inline]
    fn portion(&mut self, at: DeltaHead, payload: &[u8]) -> Result<(), SinkFull> {
        let (id, module) = (at.id.0, at.module as u8);
        self.producer
            .try_push(id, module, delta_kind::PORTION, at.version, payload)
            .map_err(|_| SinkFull)
    }
    #[inline]
    fn portion_with(
        &mut self,
        at: DeltaHead,
        encode: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), SinkFull> {
        let (id, module) = (at.id.0, at.module as u8);
        self.producer
            .try_push_with(id, module, delta_kind::PORTION, at.version, encode)
            .map_err(|_| SinkFull)
    }
    #[inline]
    fn portion_words<const N: usize>(
        &mut self,
        at: DeltaHead,
        words: &[u64; N],
        len: usize,
    ) -> Result<(), SinkFull> {
        let (id, module) = (at.id.0, at.module as u8);
        self.producer
            .try_push_words(id, module, delta_kind::PORTION, at.version, words, len)
            .map_err(|_| SinkFull)
    }
    #[inline]
    fn deleted(&mut self, id: ConnId, version: u64) -> Result<(), SinkFull> {
        self.producer
            .try_push(id.0, Module::Ip as u8, delta_kind::DELETE, version, &[])
            .map_err(|_| SinkFull)
    }
    fn swept(&mut self, version: u64) -> Result<(), SinkFull> {
        self.producer.try_push(0, 0, delta_kind::SWEEP, version, &[]).map_err(|_| SinkFull)
    }
    #[inline]
    fn publish(&mut self) {
        if self.producer.pending() != 0 {
            self.producer.publish();
        }
    }
    #[inline]
    fn has_room(&mut self, n: u32) -> bool {
        self.producer.free_slots() >= n
    }
    #[inline]
    fn take_resync(&mut self) -> bool {
        let e = self.producer.resync_epoch();
        if e != self.resync_epoch {
            self.resync_epoch = e;
            return true;
        }
        false
    }
}
