#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Unsafe code is forbidden everywhere but `sys`, the platform module, where
// every block carries a SAFETY comment (clippy::undocumented_unsafe_blocks).
#[forbid(unsafe_code)]
mod address;
#[cfg(any(feature = "tokio", all(unix, feature = "async-io")))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "async-io"))))]
#[forbid(unsafe_code)]
pub mod aio;
#[forbid(unsafe_code)]
mod client;
#[forbid(unsafe_code)]
mod connection;
#[forbid(unsafe_code)]
mod credentials;
#[forbid(unsafe_code)]
mod error;
#[cfg(feature = "tokio")]
#[forbid(unsafe_code)]
mod framed;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[forbid(unsafe_code)]
pub mod fuzzing;
#[forbid(unsafe_code)]
mod handshake;
#[forbid(unsafe_code)]
mod key;
#[forbid(unsafe_code)]
mod listener;
#[forbid(unsafe_code)]
mod pipe;
#[forbid(unsafe_code)]
mod proto;
#[forbid(unsafe_code)]
mod socket;
#[allow(unsafe_code)]
mod sys;
#[forbid(unsafe_code)]
mod transport;
#[forbid(unsafe_code)]
mod wait;

pub use address::{Address, Family, ToAddress};
pub use client::{Client, ClientOptions, DEFAULT_CONNECT_TIMEOUT};
#[cfg(unix)]
pub use connection::MAX_FDS;
pub use connection::{
    Authenticated, Batch, CloseHandle, Connection, DEFAULT_MAX_MESSAGE, RecvHalf, SendHalf, Trust,
    Unverified,
};
pub use credentials::{PeerCredentials, PeerUser};
pub use error::{
    AddressError, AuthError, CodecError, DescriptorError, Error, ProtocolError, Result,
};
pub use handshake::{DEFAULT_FIRST_ANSWER_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, HandshakeOptions};
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
    pub use crate::proto::pickle::Value;
    /// The big integer of [`Value::Int`] (num-bigint's).
    pub use num_bigint::BigInt;
}
pub use wait::{WaitSet, WaitSource, Waitable, wait};

/// Async connections on tokio (feature `tokio`): the types of [`aio`],
/// named for [`Tokio`](tokio::Tokio), and [`MessageCodec`](tokio::MessageCodec),
/// CPython's framing as a `tokio_util` codec. On Unix and on Windows (TCP
/// and named pipes; see [`aio`] for how a pipe waits).
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio {
    pub use crate::framed::MessageCodec;

    pub use crate::aio::tokio_rt::Tokio;

    /// [`aio::Connection`](crate::aio::Connection) on tokio.
    pub type Connection<T = crate::Authenticated> = crate::aio::Connection<Tokio, T>;
    /// [`aio::SendHalf`](crate::aio::SendHalf) on tokio.
    pub type SendHalf<T = crate::Authenticated> = crate::aio::SendHalf<Tokio, T>;
    /// [`aio::RecvHalf`](crate::aio::RecvHalf) on tokio.
    pub type RecvHalf<T = crate::Authenticated> = crate::aio::RecvHalf<Tokio, T>;
    /// [`aio::Listener`](crate::aio::Listener) on tokio.
    pub type Listener<T = crate::Authenticated> = crate::aio::Listener<Tokio, T>;
    /// [`aio::Client`](crate::aio::Client) on tokio.
    pub type Client = crate::aio::Client<Tokio>;
}

/// Async connections on async-io, the reactor of smol and async-std
/// (feature `async-io`): the types of [`aio`], named for
/// [`AsyncIo`](async_io::AsyncIo). Unix only: on Windows the feature adds
/// nothing, and [`tokio`] is the async API.
#[cfg(all(unix, feature = "async-io"))]
#[cfg_attr(docsrs, doc(cfg(feature = "async-io")))]
pub mod async_io {
    pub use crate::aio::async_io_rt::{AsyncIo, Sleep};

    /// [`aio::Connection`](crate::aio::Connection) on async-io.
    pub type Connection<T = crate::Authenticated> = crate::aio::Connection<AsyncIo, T>;
    /// [`aio::SendHalf`](crate::aio::SendHalf) on async-io.
    pub type SendHalf<T = crate::Authenticated> = crate::aio::SendHalf<AsyncIo, T>;
    /// [`aio::RecvHalf`](crate::aio::RecvHalf) on async-io.
    pub type RecvHalf<T = crate::Authenticated> = crate::aio::RecvHalf<AsyncIo, T>;
    /// [`aio::Listener`](crate::aio::Listener) on async-io.
    pub type Listener<T = crate::Authenticated> = crate::aio::Listener<AsyncIo, T>;
    /// [`aio::Client`](crate::aio::Client) on async-io.
    pub type Client = crate::aio::Client<AsyncIo>;
}
