//! Lazarus dataplane: a DPDK poll-mode bridge that becomes a stateful firewall
//! whose connections survive its own death (see ../shared/DESIGN.md).
#![deny(unsafe_code)]

pub mod config;
pub mod dpdk;
pub mod stats;
pub mod worker;
