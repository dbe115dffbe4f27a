//! Where modules hand the changes of their portions. Each change is one delta
//! {connection id, module, version, bytes} written into the worker's
//! shared-memory ring (`RingSink`), which checkpointd drains into its store; a
//! starting dataplane rebuilds its tables from that store (`restore`).

mod emit;
pub mod restore;

pub use emit::{worth_storing, Checkpointer};

use crate::conn::ConnId;
use crate::modules::Module;

/// Room every portion encoding fits in: the ring slot's payload area.
pub const PORTION_BUF: usize = shm_layout::DELTA_PAYLOAD_MAX;

/// The sink had no room: the caller marks the portion dirty and a background
/// sweep writes it again later. The packet path never waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkFull;

/// Which portion a delta carries: the connection, the module, and the
/// version that orders the portion's deltas (the TSC, monotonic on one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaHead {
    pub id: ConnId,
    pub module: Module,
    pub version: u64,
}

pub trait CheckpointSink {
    /// False when deltas go nowhere: the firewall then skips encoding them.
    const ENABLED: bool = true;
    /// The portion `at` names changed; `payload` is its encoding.
    fn portion(&mut self, at: DeltaHead, payload: &[u8]) -> Result<(), SinkFull>;
    /// As `portion`, with the payload written by `encode` (given a buffer of
    /// at least [`PORTION_BUF`] bytes, returns the length). A sink that can
    /// take the bytes in place (the ring) saves a copy per delta.
    #[inline]
    fn portion_with(
        &mut self,
        at: DeltaHead,
        encode: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), SinkFull> {
        let mut buf = [0u8; PORTION_BUF];
        let len = encode(&mut buf).min(PORTION_BUF);
        self.portion(at, &buf[..len])
    }
    /// As `portion`, with the payload as little-endian words (its first `len`
    /// bytes), built in registers: a sink that stores whole words (the ring)
    /// checksums them as they are, with nothing to read back.
    #[inline]
    fn portion_words<const N: usize>(
        &mut self,
        at: DeltaHead,
        words: &[u64; N],
        len: usize,
    ) -> Result<(), SinkFull> {
        let mut buf = [0u8; PORTION_BUF];
        for (c, w) in buf.chunks_exact_mut(8).zip(words) {
            c.copy_from_slice(&w.to_le_bytes());
        }
        self.portion(at, &buf[..len.min(PORTION_BUF)])
    }
    /// The connection ended (closed or expired): its portions can go.
    fn deleted(&mut self, id: ConnId, version: u64) -> Result<(), SinkFull>;
    /// Every connection this firewall holds was written again after
    /// `version`: whatever of its connections the store holds unwritten since
    /// is gone (its delete was lost) and can go.
    fn swept(&mut self, _version: u64) -> Result<(), SinkFull> {
        Ok(())
    }
    /// Makes what was written visible to checkpointd. The worker calls it
    /// before it transmits a burst, so no packet leaves before the state it
    /// created is in the ring.
    fn publish(&mut self) {}
    /// Whether `n` more deltas would fit now.
    fn has_room(&mut self, _n: u32) -> bool {
        true
    }
    /// Whether checkpointd asked for every connection again (it lost its
    /// store) since the last call.
    fn take_resync(&mut self) -> bool {
        false
    }
    /// A record of protected connection `id` (module PROTECT). A `Log` is
    /// written whole or not at all: the caller checks `has_room` for
    /// [`log_slots`] of its bytes first.
    fn protect(&mut self, _id: u64, _rec: ProtectRecord<'_>) -> Result<(), SinkFull> {
        Ok(())
    }
    /// Slots free now (a bound for writing a long log in pieces).
    fn free_slots(&mut self) -> u32 {
        u32::MAX
    }
    /// Whether checkpointd lost what it held of protected connections (it
    /// restarted: they live in its memory) since the last call.
    fn take_protect_resync(&mut self) -> bool {
        false
    }
    /// Where the next record goes: a position in the worker's ring.
    fn position(&self) -> u64 {
        0
    }
    /// Who the records go to, as this producer last took note (at
    /// `take_protect_resync`): a start of checkpointd and a resync of the
    /// ring. A committed position is said by one of them, and holds only
    /// for the records written to it.
    fn drainer(&self) -> u64 {
        0
    }
    /// The position below which the remote store holds every protected
    /// record, as checkpointd last said (output commit at the remote
    /// level; u64::MAX where there is nothing to wait for), and the
    /// drainer that says it (see `drainer`).
    fn remote_committed(&self) -> (u64, u64) {
        (u64::MAX, self.drainer())
    }
}

/// What a protected connection writes to checkpointd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectRecord<'a> {
    /// Its snapshot, ordered by `version` (the TSC).
    Snapshot { version: u64, bytes: &'a [u8] },
    /// Client bytes at this offset of its stream.
    Log { offset: u64, bytes: &'a [u8] },
    /// Its log was truncated: bytes before this stream offset can go.
    Trim { base: u64 },
    /// Its protection ended: forget it.
    End { version: u64 },
}

/// Ring slots a `Log` of `len` bytes takes at most (`has_room` counts
/// slots; every other record takes one), and the most bytes a `Log` may
/// carry in a number of them.
pub use shm_layout::{log_bytes_within, log_slots};

/// `checkpoint.enabled = false`: changes go nowhere (they are still counted).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCheckpoint;

impl CheckpointSink for NoCheckpoint {
    const ENABLED: bool = false;
    #[inline]
    fn portion(&mut self, _: DeltaHead, _: &[u8]) -> Result<(), SinkFull> {
        Ok(())
    }
    #[inline]
    fn portion_with(
        &mut self,
        _: DeltaHead,
        _: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), SinkFull> {
        Ok(())
    }
    #[inline]
    fn portion_words<const N: usize>(
        &mut self,
        _: DeltaHead,
        _: &[u64; N],
        _: usize,
    ) -> Result<(), SinkFull> {
        Ok(())
    }
    #[inline]
    fn deleted(&mut self, _: ConnId, _: u64) -> Result<(), SinkFull> {
        Ok(())
    }
}

/// A sink that keeps every delta in memory, for tests: the newest payload
/// of each (connection, module), like checkpointd's store, with a room limit.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub store: std::collections::BTreeMap<(u64, u8), (u64, Vec<u8>)>,
    pub deletes: u64,
    /// Deletes ignored: the record was written after them.
    pub stale_deletes: u64,
    pub sweeps: u64,
    /// Deltas accepted before the sink reports full (None: unlimited).
    pub room: Option<u32>,
    pub resync: bool,
    /// Protected connections: snapshot, log, and the log's stream offset,
    /// as checkpointd keeps them.
    pub protected: std::collections::BTreeMap<u64, (Vec<u8>, Vec<u8>, u64)>,
    pub protect_resync: bool,
    /// Records written so far (the ring position), and where the remote
    /// store is said to hold them up to (None: everything).
    pub written: u64,
    pub remote_committed: Option<u64>,
    pub drainer: u64,
}

impl MemorySink {
    /// One delta's room, or full.
    fn take_room(&mut self) -> Result<(), SinkFull> {
        match &mut self.room {
            Some(0) => return Err(SinkFull),
            Some(r) => *r -= 1,
            None => {}
        }
        self.written += 1;
        Ok(())
    }
}

impl CheckpointSink for MemorySink {
    fn portion(&mut self, at: DeltaHead, payload: &[u8]) -> Result<(), SinkFull> {
        self.take_room()?;
        self.store.insert((at.id.0, at.module as u8), (at.version, payload.to_vec()));
        Ok(())
    }
    fn deleted(&mut self, id: ConnId, version: u64) -> Result<(), SinkFull> {
        self.take_room()?;
        // As checkpointd's store: a record written after the delete is a
        // newer connection's and stays.
        if self.store.iter().any(|(k, (v, _))| k.0 == id.0 && *v > version) {
            self.stale_deletes += 1;
            return Ok(());
        }
        self.store.retain(|k, _| k.0 != id.0);
        self.deletes += 1;
        Ok(())
    }
    fn swept(&mut self, version: u64) -> Result<(), SinkFull> {
        self.take_room()?;
        let mut newest = std::collections::BTreeMap::<u64, u64>::new();
        for ((id, _), (v, _)) in &self.store {
            let n = newest.entry(*id).or_default();
            *n = (*n).max(*v);
        }
        self.store.retain(|(id, _), _| newest[id] >= version);
        self.sweeps += 1;
        Ok(())
    }
    fn has_room(&mut self, n: u32) -> bool {
        self.room.is_none_or(|r| r >= n)
    }
    fn take_resync(&mut self) -> bool {
        std::mem::take(&mut self.resync)
    }
    fn protect(&mut self, id: u64, rec: ProtectRecord<'_>) -> Result<(), SinkFull> {
        match rec {
            ProtectRecord::Log { offset, bytes } => {
                let slots = log_slots(bytes.len());
                if !self.has_room(slots) {
                    return Err(SinkFull);
                }
                for _ in 0..slots {
                    self.take_room()?;
                }
                let (_, log, base) = self.protected.entry(id).or_default();
                assert_eq!(offset, *base + log.len() as u64, "a log record out of order");
                log.extend_from_slice(bytes);
            }
            ProtectRecord::Trim { base } => {
                self.take_room()?;
                let (_, log, held) = self.protected.entry(id).or_default();
                let drop = usize::try_from(base.saturating_sub(*held)).unwrap_or(usize::MAX);
                log.drain(..drop.min(log.len()));
                *held = base;
            }
            ProtectRecord::Snapshot { bytes, .. } => {
                self.take_room()?;
                self.protected.entry(id).or_default().0 = bytes.to_vec();
            }
            ProtectRecord::End { .. } => {
                self.take_room()?;
                self.protected.remove(&id);
            }
        }
        Ok(())
    }
    fn take_protect_resync(&mut self) -> bool {
        std::mem::take(&mut self.protect_resync)
    }
    fn free_slots(&mut self) -> u32 {
        self.room.unwrap_or(u32::MAX)
    }
    fn position(&self) -> u64 {
        self.written
    }
    fn drainer(&self) -> u64 {
        self.drainer
    }
    fn remote_committed(&self) -> (u64, u64) {
        (self.remote_committed.unwrap_or(u64::MAX), self.drainer)
    }
}
