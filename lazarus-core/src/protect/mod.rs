//! Protected servers (issue 21): a TCP server behind the firewall may crash
//! and restart, and its clients must not notice. What is here so far is the
//! rewrite that carries a client's connection onto the restarted server
//! (`splice`); the log, the output commit, the keep-alive and the replay
//! that lead up to it are not built yet, and nothing calls it.
pub mod splice;

pub use splice::{ServerSide, Splice, SpliceError};
