//! The logic of the Lazarus firewall, free of DPDK: frame parsing, the
//! connection key and table, the protocol modules and the byte form of
//! their portions, policy, the burst pipeline, and the checkpoint sink it
//! reports to. The dataplane crate runs it on DPDK ports; lazarusctl and the
//! fuzz targets use it without DPDK.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod conn;
pub mod firewall;
pub mod frames;
pub mod modules;
pub mod parse;
pub mod placement;
pub mod policy;
pub mod portion;
pub mod ports;
pub mod protect;
pub mod stats;
