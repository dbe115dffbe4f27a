//! Where modules hand the changes of their portions. In this stage the sink
//! only counts; the checkpointing stage writes the same calls into the
//! worker's shared-memory delta ring.

use crate::conn::ConnId;
use crate::modules::{Conn, Module};
use crate::stats::FwCounters;
use std::sync::Arc;

pub trait CheckpointSink {
    /// `module`'s portion of `conn` changed in a way a checkpoint must capture.
    fn portion_changed(&mut self, conn: &Conn, module: Module);
    /// The connection ended (closed or expired): its portions can go.
    fn deleted(&mut self, id: ConnId);
}

/// Counts what would be checkpointed, per module.
pub struct CountingSink {
    pub counters: Arc<FwCounters>,
}

impl CheckpointSink for CountingSink {
    #[inline]
    fn portion_changed(&mut self, _conn: &Conn, module: Module) {
        self.counters.ckpt[module as usize].add(1);
    }
    #[inline]
    fn deleted(&mut self, _id: ConnId) {
        self.counters.ckpt_deletes.add(1);
    }
}
