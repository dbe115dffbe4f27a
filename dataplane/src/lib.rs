//! Lazarus dataplane: runs the firewall of `lazarus-core` on DPDK ports, one
//! poll-mode worker per lcore, and writes its checkpoint deltas into
//! checkpointd's shared-memory rings (see ../shared/DESIGN.md).
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod dpdk;
pub mod shared;
pub mod stats;
pub mod supervisor;
pub mod telemetry;
pub mod worker;
