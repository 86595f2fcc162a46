//! The protocol without I/O: frame headers, the handshake machine, the codec.
//!
//! Nothing here touches a socket or names a platform, so everything is unit
//! tested and fuzzed on plain bytes. The transports and the listener drive
//! these pieces.

pub mod auth;
pub mod codec;
pub mod frame;
pub(crate) mod guard;
pub(crate) mod noise;
// Only Windows passes handles; the format is unit-tested everywhere.
#[cfg_attr(not(windows), allow(dead_code))]
pub mod handle;
#[cfg(feature = "pickle")]
pub mod pickle;
