//! Lazarus dataplane: a DPDK poll-mode bridge that becomes a stateful firewall
//! whose connections survive its own death (see ../shared/DESIGN.md).
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod conn;
pub mod dpdk;
pub mod firewall;
pub mod frames;
pub mod modules;
pub mod parse;
pub mod policy;
pub mod stats;
pub mod telemetry;
pub mod worker;
