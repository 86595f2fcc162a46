#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod address;
mod client;
mod connection;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod key;
mod listener;
mod pipe;
mod proto;
mod socket;
mod sys;
mod transport;
mod wait;

pub use address::{Address, Family, ToAddress};
pub use client::{Client, ClientOptions, DEFAULT_CONNECT_TIMEOUT};
pub use connection::{
    Authenticated, Batch, CloseHandle, Connection, DEFAULT_MAX_MESSAGE, RecvHalf, SendHalf, Trust,
    Unverified,
};
pub use error::{AddressError, AuthError, CodecError, Error, ProtocolError, Result};
pub use handshake::DEFAULT_HANDSHAKE_TIMEOUT;
pub use key::{AuthKey, MIN_KEY_LEN};
pub use listener::{
    DEFAULT_BACKLOG, DEFAULT_MAX_PENDING, HandshakeFailure, Incoming, Listener, ListenerOptions,
    ListenerStats,
};
pub use pipe::{pipe, pipe_simplex};
pub use proto::auth::Digest;
pub use proto::codec::Codec;

/// The pickle codec's dynamic value types (feature `pickle`).
#[cfg(feature = "pickle")]
pub mod pickle {
    pub use crate::proto::pickle::{HashableValue, Value};
}
pub use wait::{WaitSet, Waitable, wait};
