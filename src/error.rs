//! The crate's one error type and its detail enums.

use std::fmt;
use std::io;

/// Everything that can go wrong on a [`Connection`](crate::Connection),
/// [`Listener`](crate::Listener) or [`Client`](crate::Client).
///
/// Messages are lowercase and never contain key material. Convert to
/// [`io::Error`] with `?` or `From` where an `io::Result` is wanted.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed the connection cleanly at a message boundary
    /// (Python's `EOFError`).
    Eof,
    /// The peer vanished inside a frame: a header or payload was cut short.
    Truncated {
        /// Bytes the frame needed (header or payload).
        expected: u64,
        /// Bytes that arrived before the end of stream.
        received: u64,
    },
    /// The message did not fit the caller's buffer. It carries the complete
    /// message; the connection is ready for the next one.
    BufferTooShort(Vec<u8>),
    /// A frame header announced more than this connection accepts. The frame
    /// is refused from its header alone, before any allocation; the stream
    /// cannot be resynchronised afterwards.
    MessageTooLarge {
        /// Length the header announced.
        len: u64,
        /// The connection's limit.
        max: u64,
    },
    /// The peer broke the framing rules.
    Protocol(ProtocolError),
    /// A typed message could not be encoded or decoded. The message was
    /// consumed whole; the next one is unaffected.
    Codec(CodecError),
    /// The authentication handshake failed.
    Auth(AuthError),
    /// An address could not be parsed or used.
    Address(AddressError),
    /// The operation did not finish before its deadline. A receive that times
    /// out keeps what arrived; the next receive continues the same message.
    Timeout,
    /// This end was closed (by [`Listener::close`](crate::Listener::close) or
    /// a shutdown from another thread).
    Closed,
    /// `recv_bytes_into_at` was given an offset past the end of its buffer.
    OffsetOutOfRange {
        /// The offset asked for.
        offset: usize,
        /// The buffer's length.
        len: usize,
    },
    /// Descriptors could not be sent or received (Unix sockets).
    Descriptors(DescriptorError),
    /// An operating system error.
    Io(io::Error),
}

/// Why descriptors could not be sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The next byte of the stream carries no descriptors: the peer sent a
    /// message where descriptors were expected. Nothing was consumed; the
    /// message can still be received.
    NotPassed,
    /// A message was half received when its receive timed out; receive the
    /// rest of it first.
    MessageUnderWay,
    /// The byte that carried the descriptors announced another count
    /// (modulo 256, as CPython sends it). The descriptors were closed.
    CountMismatch {
        /// The count the byte announced.
        announced: u8,
        /// The descriptors that arrived.
        received: usize,
    },
    /// The operating system could not deliver every descriptor (this
    /// process ran out of descriptors, or the peer sent more than one
    /// message carries). The ones that arrived were closed, and the ones
    /// that did not were closed by the kernel: nothing leaks.
    Truncated,
    /// A send of no descriptors, or of more than one message carries.
    Count {
        /// The descriptors the send was given.
        count: usize,
        /// The most one message carries (`MAX_FDS` on Unix).
        max: usize,
    },
    /// This connection cannot carry descriptors: only a Unix-domain socket
    /// can (not TCP, not a pipe), on Linux and Android (the platforms where
    /// descriptor passing is built and tested).
    Unsupported,
    /// An encrypted connection carries no descriptors, and cannot be
    /// handed to another process (its keys would have to go along).
    Encrypted,
}

/// How the peer broke the framing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A 4-byte header held a negative length other than -1.
    NegativeLength(i32),
    /// An 8-byte extended length above `i64::MAX` (CPython reads it as an
    /// unsigned `!Q`; no payload is that large, so only a hostile or broken
    /// peer sends one), or one this platform's `usize` cannot hold.
    BadExtendedLength(u64),
    /// An earlier framing error left the stream at an unknown position; no
    /// further message can be read from it.
    Desynchronized,
    /// An encrypted connection's record did not open: it was altered on the
    /// wire, or it is not the next record the peer sealed (one dropped,
    /// replayed, reordered or injected). Nothing of it was delivered, and
    /// the connection is closed.
    Tampered,
    /// An encrypted connection's record opened but broke the record rules
    /// (a message longer than its first record said): the peer holds the
    /// key but is not a well-behaved mpconn end. The connection is closed.
    BadRecord,
    /// An encrypted connection sealed or opened 2^64 - 1 records, and its
    /// nonces would repeat; the connection cannot go on.
    NoncesExhausted,
}

/// Why a typed message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    Encode(String),
    /// The bytes are not a valid encoding of the requested type.
    Decode(String),
    /// A value was decoded but bytes were left over after it.
    TrailingBytes {
        /// Bytes the value used.
        used: usize,
        /// Bytes in the message.
        len: usize,
    },
}

/// Why an authentication handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The peer's answer to our challenge was wrong: it does not hold our key.
    WrongDigest,
    /// The peer rejected our answer (`#FAILURE#` or any other verdict): we do
    /// not hold its key.
    Rejected,
    /// The peer uses legacy HMAC-MD5 authentication (Python 3.11 and older).
    /// It is refused unless enabled with `allow_legacy_md5(true)`.
    LegacyRefused,
    /// The peer asked for a digest this side does not allow.
    DigestRefused(String),
    /// A handshake message was malformed.
    Malformed(&'static str),
    /// A handshake message announced more than the 256 bytes the protocol allows.
    MessageTooLarge(u64),
    /// The handshake did not finish before its deadline.
    TimedOut,
    /// A client waited for the listener's challenge (the peer's first
    /// message) longer than its `challenge_timeout` allows: the listener has
    /// not begun the handshake, or never will (one that runs no handshake).
    NoChallenge,
    /// The peer refused to answer our challenge (it sent mpconn's fixed
    /// unverifiable answer): it does not allow the digest we asked for, or
    /// it refused its own key. Its side of the connection says which.
    ChallengeRefused,
    /// The peer closed the connection during the handshake.
    PeerClosed,
    /// The peer's challenge was made by an mpconn end of our own role with
    /// our key: another client's challenge, reflected to us by a peer that
    /// wants us to answer it in that client's place. We do not answer.
    Reflected,
    /// The listener's pending handshakes were all in progress while more
    /// clients waited, and this one, which had not answered within the grace
    /// period, was dropped to make room (see SECURITY.md).
    Evicted,
    /// The key is shorter than 16 bytes and short keys were not allowed.
    KeyTooShort(usize),
    /// The operating system's random source failed.
    Random,
    /// The listener's [`PeerUser`](crate::PeerUser) policy refused the
    /// peer, by the credentials shown, before any handshake work.
    PeerRefused(crate::PeerCredentials),
    /// The peer requires the encrypted mode, which this side does not use:
    /// set `encrypted(true)` on [`ListenerOptions`](crate::ListenerOptions),
    /// [`ClientOptions`](crate::ClientOptions) or
    /// [`HandshakeOptions`](crate::HandshakeOptions), as the peer does.
    EncryptionRequired,
    /// This side requires the encrypted mode (`encrypted(true)`) and the
    /// peer does not offer it: it is CPython, an mpconn end without
    /// `encrypted(true)`, or one that holds a different key.
    NotEncrypted,
    /// The encrypted mode's key exchange failed: its messages were altered
    /// or relayed from another connection, or the peer does not hold the key.
    KeyExchange,
    /// The encrypted mode was asked for on a stream that does not have it:
    /// it runs over TCP and Unix sockets, not Windows named pipes.
    EncryptionUnsupported,
}

/// Why an address could not be parsed or used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// The text is not an address in any accepted spelling.
    Invalid(String),
    /// The address family is not available on this platform.
    Unsupported(&'static str),
    /// A Unix socket path longer than the platform's `sun_path` holds.
    PathTooLong {
        /// The path's length in bytes.
        len: usize,
        /// The most the platform allows.
        max: usize,
    },
    /// A host name resolved to no address.
    Unresolved(String),
    /// A socket file exists at the path but nothing listens on it.
    StaleSocket(String),
    /// Another listener is serving the path.
    InUse(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eof => f.write_str("end of stream: the peer closed the connection"),
            Error::Truncated { expected, received } => write!(
                f,
                "truncated message: the peer closed the connection after {received} of {expected} bytes"
            ),
            Error::BufferTooShort(msg) => {
                write!(f, "buffer too short for a message of {} bytes", msg.len())
            }
            Error::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max} bytes")
            }
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Codec(e) => write!(f, "codec error: {e}"),
            Error::Auth(e) => write!(f, "authentication failed: {e}"),
            Error::Address(e) => write!(f, "address error: {e}"),
            Error::Timeout => f.write_str("operation timed out"),
            Error::Closed => f.write_str("closed by this process"),
            Error::OffsetOutOfRange { offset, len } => {
                write!(f, "offset {offset} is beyond the buffer's {len} bytes")
            }
            Error::Descriptors(e) => write!(f, "descriptor passing: {e}"),
            Error::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescriptorError::NotPassed => {
                f.write_str("the next message carries no descriptors (nothing was consumed)")
            }
            DescriptorError::MessageUnderWay => {
                f.write_str("a message is half received; receive it before descriptors")
            }
            DescriptorError::CountMismatch {
                announced,
                received,
            } => write!(
                f,
                "{received} descriptors arrived where {announced} (modulo 256) were announced; all were closed"
            ),
            DescriptorError::Truncated => f.write_str(
                "the operating system cut the descriptors short (out of descriptors?); all were closed",
            ),
            DescriptorError::Count { count, max } => {
                write!(f, "a message carries 1 to {max} descriptors, not {count}")
            }
            DescriptorError::Unsupported => {
                f.write_str("descriptors travel only over a Unix-domain socket, on linux and android")
            }
            DescriptorError::Encrypted => f.write_str(
                "an encrypted connection carries no descriptors and cannot be handed to another process",
            ),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::NegativeLength(n) => write!(f, "negative message length {n}"),
            ProtocolError::BadExtendedLength(n) if *n > i64::MAX as u64 => {
                write!(
                    f,
                    "extended message length {n} is too large (beyond i64::MAX)"
                )
            }
            ProtocolError::BadExtendedLength(n) => {
                write!(
                    f,
                    "extended message length {n} is too large for this platform"
                )
            }
            ProtocolError::Desynchronized => {
                f.write_str("an earlier framing error left the stream unusable")
            }
            ProtocolError::Tampered => f.write_str(
                "an encrypted record failed to authenticate (altered, dropped, replayed, reordered or injected on the wire); connection closed",
            ),
            ProtocolError::BadRecord => f.write_str(
                "an encrypted record broke the record rules (the peer holds the key but misbehaves); connection closed",
            ),
            ProtocolError::NoncesExhausted => {
                f.write_str("the encrypted connection used up its nonces")
            }
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Encode(e) => write!(f, "cannot encode value: {e}"),
            CodecError::Decode(e) => write!(f, "cannot decode message: {e}"),
            CodecError::TrailingBytes { used, len } => write!(
                f,
                "{} trailing bytes after a value of {used} bytes",
                len - used
            ),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::WrongDigest => f.write_str("the peer's digest was wrong (it does not hold the key)"),
            AuthError::Rejected => f.write_str("the peer rejected our digest (we do not hold its key)"),
            AuthError::LegacyRefused => f.write_str(
                "the peer uses legacy HMAC-MD5 authentication (python <= 3.11); enable it with allow_legacy_md5(true)",
            ),
            AuthError::DigestRefused(name) => write!(f, "digest {name:?} is not allowed"),
            AuthError::Malformed(what) => write!(f, "malformed handshake message: {what}"),
            AuthError::MessageTooLarge(n) => {
                write!(f, "handshake message of {n} bytes exceeds 256 bytes")
            }
            AuthError::TimedOut => f.write_str("the handshake did not finish before its deadline"),
            AuthError::NoChallenge => f.write_str(
                "the peer sent no challenge within the challenge timeout (a listener that has not begun the handshake, or runs none)",
            ),
            AuthError::ChallengeRefused => f.write_str(
                "the peer refused to answer our challenge (a digest it does not allow, or a key it refuses)",
            ),
            AuthError::PeerClosed => f.write_str("the peer closed the connection during the handshake"),
            AuthError::Reflected => f.write_str(
                "the peer sent a challenge made by another mpconn end of our role (a reflection attempt); not answered",
            ),
            AuthError::Evicted => f.write_str(
                "the client had not answered when the listener needed its slot for another client",
            ),
            AuthError::KeyTooShort(n) => write!(
                f,
                "key of {n} bytes is shorter than 16; use allow_short_key(true) to accept it"
            ),
            AuthError::Random => f.write_str("the operating system's random source failed"),
            AuthError::PeerRefused(creds) => write!(
                f,
                "the peer ({creds}) is not a user this listener admits; refused before the handshake"
            ),
            AuthError::EncryptionRequired => f.write_str(
                "the peer requires the encrypted mode; set encrypted(true) on ListenerOptions, ClientOptions or HandshakeOptions",
            ),
            AuthError::NotEncrypted => f.write_str(
                "encrypted(true) is set and the peer does not offer the encrypted mode (CPython, mpconn without encrypted(true), or a different key)",
            ),
            AuthError::EncryptionUnsupported => f.write_str(
                "the encrypted mode runs over TCP and Unix sockets, not Windows named pipes",
            ),
            AuthError::KeyExchange => f.write_str(
                "the encrypted mode's key exchange failed (messages altered or relayed, or the peer does not hold the key)",
            ),
        }
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Invalid(s) => write!(f, "invalid address {s:?}"),
            AddressError::Unsupported(what) => write!(f, "{what} addresses are not supported here"),
            AddressError::PathTooLong { len, max } => {
                write!(
                    f,
                    "socket path of {len} bytes is longer than the {max} allowed"
                )
            }
            AddressError::Unresolved(host) => write!(f, "{host:?} resolved to no address"),
            AddressError::StaleSocket(path) => write!(
                f,
                "{path} is a stale socket file with no listener; enable reclaim_stale_socket(true) to replace it"
            ),
            AddressError::InUse(path) => write!(f, "another listener is serving {path}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Codec(e) => Some(e),
            Error::Auth(e) => Some(e),
            Error::Address(e) => Some(e),
            Error::Descriptors(e) => Some(e),
            _ => None,
        }
    }
}

impl std::error::Error for ProtocolError {}
impl std::error::Error for CodecError {}
impl std::error::Error for AuthError {}
impl std::error::Error for AddressError {}
impl std::error::Error for DescriptorError {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => Error::Timeout,
            _ => Error::Io(e),
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Codec(e)
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        Error::Auth(e)
    }
}

impl From<AddressError> for Error {
    fn from(e: AddressError) -> Self {
        Error::Address(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io(inner) => return io::Error::new(inner.kind(), e),
            Error::Eof | Error::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            Error::Timeout => io::ErrorKind::TimedOut,
            Error::Closed => io::ErrorKind::NotConnected,
            Error::Auth(_) => io::ErrorKind::PermissionDenied,
            Error::OffsetOutOfRange { .. } | Error::Address(_) => io::ErrorKind::InvalidInput,
            Error::Descriptors(DescriptorError::Unsupported) => io::ErrorKind::Unsupported,
            Error::Descriptors(DescriptorError::Count { .. }) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
