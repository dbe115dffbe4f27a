//! Protected servers (issue 21): a TCP server behind the firewall may crash
//! and restart, and its clients must not notice. Built so far, none of it
//! wired into the dataplane yet: the client's log and the digest of what it
//! acknowledged (`log`), the replay that brings a restarted server to where
//! the old one was (`replay`, sending frames `segment` writes), and the
//! rewrite that then carries the client's connection onto it (`splice`).
pub mod conn;
pub mod log;
pub mod probe;
pub mod replay;
pub mod segment;
pub mod splice;

pub use conn::{
    view, Action, Ended, ProtectDrop, ProtectPolicy, Protected, SnapshotError, SnapshotView,
    Toward, DOWN_FOR, SNAPSHOT_BYTES,
};
pub use log::{Acked, AckedDigest, Checked, ClientLog, LogMemory, Logged};
pub use probe::{Judged, ProbeConfig, ProbeEvent, Prober, Verdict, Via};
pub use replay::{Rebuild, Replay, ReplayError};
pub use segment::{Endpoints, Segment, SynOptions, VlanTags};
pub use splice::{ServerSide, Splice, SpliceError};
