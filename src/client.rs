//! `Client`: connect to a listener and prove the key.

use std::time::Duration;

use crate::address::ToAddress;
use crate::connection::{Connection, DEFAULT_MAX_MESSAGE, Unverified};
use crate::error::Result;
use crate::handshake::HandshakeOptions;
use crate::key::AuthKey;
use crate::proto::auth::Role;
use crate::proto::codec::Codec;
use crate::socket;

/// The default limit on establishing a TCP or Unix-socket connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to a [`Listener`](crate::Listener): CPython's `Client`.
///
/// ```no_run
/// let mut conn = mpconn::Client::connect("127.0.0.1:6000", b"a key of sixteen bytes")?;
/// conn.send(&"hello")?;
/// # Ok::<(), mpconn::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Connects and runs the handshake (answer the listener's challenge,
    /// then deliver ours) with default options.
    ///
    /// # Errors
    /// As [`ClientOptions::connect`].
    pub fn connect(address: impl ToAddress, authkey: &[u8]) -> Result<Connection> {
        ClientOptions::new().connect(address, authkey)
    }

    /// Connects without a handshake. The result can send, and receive bytes,
    /// but cannot decode typed values until authenticated.
    ///
    /// # Errors
    /// As [`ClientOptions::connect_unauthenticated`].
    pub fn connect_unauthenticated(address: impl ToAddress) -> Result<Connection<Unverified>> {
        ClientOptions::new().connect_unauthenticated(address)
    }

    /// A builder for the other options.
    pub fn builder() -> ClientOptions {
        ClientOptions::new()
    }
}

/// Options for [`Client`]: a builder.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) handshake: HandshakeOptions,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) max_message: u64,
    pub(crate) codec: Codec,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            handshake: HandshakeOptions::default(),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            max_message: DEFAULT_MAX_MESSAGE,
            codec: Codec::default(),
        }
    }
}

impl ClientOptions {
    /// The defaults: sha256, 10 s to connect, as long as it takes for the
    /// listener to send its challenge (as CPython's client waits), then 5 s
    /// for the rest of the handshake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limit on establishing the connection (default 10 s; `None` waits as
    /// long as the operating system does).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    crate::handshake::handshake_builder_methods!(handshake);

    /// How long to wait, once connected, for the listener to begin the
    /// handshake by sending its challenge (default `None`: as long as it
    /// takes, as CPython's `Client` waits). A sequential listener, CPython's
    /// included, sends it only when its `accept()` takes this connection
    /// from the backlog, which may be long after the connection was made;
    /// [`handshake_timeout`](Self::handshake_timeout) counts from the
    /// challenge, so it does not cut such a wait short. Set this to bound
    /// the wait for a listener that accepted the connection but may never
    /// speak (hung, or running no handshake); past it, `connect` fails with
    /// [`AuthError::NoChallenge`](crate::AuthError::NoChallenge).
    pub fn challenge_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake = self.handshake.challenge_timeout(timeout);
        self
    }

    /// The message-size limit of the connection.
    pub fn max_message_size(mut self, max: u64) -> Self {
        self.max_message = max;
        self
    }

    /// The codec of the connection's typed messages (default bincode;
    /// `Codec::Pickle` for a Python listener, with the `pickle` feature).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Connects and authenticates.
    ///
    /// # Errors
    /// [`Error::Auth`](crate::Error::Auth) when either side lacks the key, the
    /// listener misbehaves, or a deadline passes: the
    /// [`challenge_timeout`](Self::challenge_timeout) when one is set (a
    /// listener that runs no handshake never sends a challenge), or the
    /// [`handshake_timeout`](Self::handshake_timeout) after the challenge;
    /// [`Error::Address`](crate::Error::Address)
    /// for a bad address; [`Error::Io`](crate::Error::Io) or
    /// [`Error::Timeout`](crate::Error::Timeout) when the connection cannot be made.
    pub fn connect(&self, address: impl ToAddress, authkey: &[u8]) -> Result<Connection> {
        let key = AuthKey::new(authkey);
        key.check_len(self.handshake.allow_short_key)?;
        let conn = self.connect_unauthenticated(address)?;
        conn.authenticate(&self.handshake, Role::Client, &key)
    }

    /// Connects without a handshake.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), without the authentication errors.
    pub fn connect_unauthenticated(
        &self,
        address: impl ToAddress,
    ) -> Result<Connection<Unverified>> {
        let stream = socket::connect(&address.to_address()?, self.connect_timeout)?;
        let mut conn = Connection::from_stream(stream);
        conn.set_max_message_size(self.max_message);
        conn.set_codec(self.codec);
        Ok(conn)
    }
}
