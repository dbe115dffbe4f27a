//! The worker's end of its delta ring in checkpointd's shared memory.

use lazarus_core::checkpoint::{log_slots, CheckpointSink, DeltaHead, ProtectRecord, SinkFull};
use lazarus_core::conn::ConnId;
use lazarus_core::modules::Module;
use shm_layout::{delta_kind, module, DeltaProducer, RingsSegment, RECORD_PAYLOAD_MAX};

/// Writes deltas into one worker's ring; never blocks, never waits on
/// checkpointd. The ring segment is mapped for the life of the process.
pub struct RingSink {
    producer: DeltaProducer<'static>,
    resync_epoch: u64,
    /// Its heartbeat says which checkpointd drains the ring: protected
    /// connections live in that one's memory, so a new one must be told
    /// them all again; so must one that lost records (a ring resync).
    rings: &'static RingsSegment,
    drainer: u64,
    protect_epoch: u64,
}

impl RingSink {
    pub fn new(producer: DeltaProducer<'static>, rings: &'static RingsSegment) -> Self {
        // Resyncs requested before this process started are answered by the
        // restore itself, which starts from the store checkpointd has now.
        let resync_epoch = producer.resync_epoch();
        let drainer = rings.heartbeat().incarnation;
        RingSink { producer, resync_epoch, rings, drainer, protect_epoch: resync_epoch }
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
        self.producer.has_room_for(u64::from(n))
    }
    fn protect(&mut self, id: u64, rec: ProtectRecord<'_>) -> Result<(), SinkFull> {
        let p = &mut self.producer;
        let push = |p: &mut DeltaProducer<'_>, kind, version, bytes: &[u8]| {
            p.try_push(id, module::PROTECT, kind, version, bytes).map_err(|_| SinkFull)
        };
        match rec {
            ProtectRecord::Snapshot { version, bytes } => {
                push(p, delta_kind::PORTION, version, bytes)
            }
            ProtectRecord::End { version } => push(p, delta_kind::DELETE, version, &[]),
            ProtectRecord::Trim { base } => push(p, delta_kind::TRIM, base, &[]),
            ProtectRecord::Log { offset, bytes } => {
                if !p.has_room_for(u64::from(log_slots(bytes.len()))) {
                    return Err(SinkFull);
                }
                // Records of up to RECORD_PAYLOAD_MAX bytes, each spanning
                // the slots it needs: a full-sized segment is one record.
                for (i, chunk) in bytes.chunks(RECORD_PAYLOAD_MAX).enumerate() {
                    let at = offset + (i * RECORD_PAYLOAD_MAX) as u64;
                    p.try_push_record(id, module::PROTECT, delta_kind::LOG, at, chunk)
                        .map_err(|_| SinkFull)?;
                }
                Ok(())
            }
        }
    }
    fn free_slots(&mut self) -> u32 {
        self.producer.free_slots()
    }
    fn position(&self) -> u64 {
        self.producer.position()
    }
    fn drainer(&self) -> u64 {
        drainer_of(self.drainer, self.protect_epoch)
    }
    fn remote_committed(&self) -> (u64, u64) {
        let live = drainer_of(self.rings.heartbeat().incarnation, self.producer.resync_epoch());
        (self.producer.remote_committed(), live)
    }
    fn take_protect_resync(&mut self) -> bool {
        let (now, epoch) = (self.rings.heartbeat().incarnation, self.producer.resync_epoch());
        if (now != self.drainer && now != 0) || epoch != self.protect_epoch {
            (self.drainer, self.protect_epoch) = (now, epoch);
            return true;
        }
        false
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

/// Who a ring's records go to: a start of checkpointd (its incarnation)
/// and a resync of the ring (its epoch), in one word.
fn drainer_of(incarnation: u64, resync_epoch: u64) -> u64 {
    incarnation ^ resync_epoch.rotate_left(32)
}
