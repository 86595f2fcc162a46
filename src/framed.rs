//! CPython's framing as a `tokio_util` codec, for callers who want `Framed`
//! streams and sinks over a byte stream of their own.
//!
//! The header logic is `proto::frame`'s; this file only decides when to
//! parse, how much room to reserve, and what a failure leaves behind.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::connection::DEFAULT_MAX_MESSAGE;
use crate::error::{Error, ProtocolError};
use crate::proto::frame::{self, MAX_HEADER};

/// How far beyond the bytes already buffered the decoder reserves room for a
/// payload. A header's length is the peer's claim, not a fact: reserving it
/// whole would let one 12-byte header allocate up to the limit before a
/// single payload byte arrives. Growing by at most this much past what has
/// arrived (with `BytesMut`'s doubling on top) keeps memory in proportion to
/// what the peer has actually sent, at the price of a few reallocations for
/// large messages.
const RESERVE_AHEAD: usize = 64 * 1024;

/// A [`Decoder`] and [`Encoder`] for the framing of Python's
/// `multiprocessing.connection` on byte streams (feature `tokio`).
///
/// Each message travels as a 4-byte big-endian signed length and the
/// payload, or, above `0x7fff_ffff` bytes, as the marker `-1`, an 8-byte
/// length and the payload. With this codec, a
/// [`Framed`](tokio_util::codec::Framed) over any `AsyncRead + AsyncWrite`
/// byte stream (a Unix socket, TCP, a socketpair, an OS pipe) yields each
/// message as a [`BytesMut`] and sends anything that is `AsRef<[u8]>`:
/// `&[u8]`, `Vec<u8>`, [`Bytes`](bytes::Bytes), `&str`. Sends are not
/// limited; only incoming messages are.
///
/// # No handshake, no authentication
///
/// A `Framed` stream runs **no handshake**: whoever is at the other end of
/// the stream is unauthenticated, whatever the codec decodes. The codec
/// therefore hands out raw bytes only. mpconn's promise that typed data is
/// never decoded from an unauthenticated peer holds because nothing here
/// decodes typed data; if you deserialize what a `Framed` stream yields, it
/// is your code doing so, on your judgement of who the peer is.
///
/// To frame a stream whose peer has proven it holds the key, authenticate it
/// first with a [`Listener`](crate::Listener) or [`Client`](crate::Client)
/// and hand the descriptor over (Unix):
///
/// ```
/// # #[cfg(unix)]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::os::fd::OwnedFd;
///
/// use futures_util::{SinkExt, StreamExt};
/// use mpconn::tokio::MessageCodec;
/// use mpconn::{Address, AuthKey, Client, Family, Listener};
/// use tokio_util::codec::Framed;
///
/// // The handshake runs on the blocking API, as usual.
/// let key = AuthKey::generate()?;
/// let listener = Listener::bind(Address::arbitrary(Family::Unix)?, key.as_bytes())?;
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || Client::connect(&address, key.as_bytes()));
/// let server = listener.accept()?; // Connection<Authenticated>
/// let client = client.join().expect("client thread")?;
///
/// // An authenticated connection gives up its socket. This fails, with the
/// // connection back, if it has already read bytes of the peer's next
/// // message: receive that message through the connection first.
/// let to_tokio = |conn| -> std::io::Result<tokio::net::UnixStream> {
///     let fd = OwnedFd::try_from(conn).map_err(|(e, _conn)| std::io::Error::from(e))?;
///     let stream = std::os::unix::net::UnixStream::from(fd);
///     stream.set_nonblocking(true)?;
///     tokio::net::UnixStream::from_std(stream)
/// };
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// runtime.block_on(async {
///     let mut server = Framed::new(to_tokio(server)?, MessageCodec::new());
///     let mut client = Framed::new(to_tokio(client)?, MessageCodec::new());
///     client.send(b"hello".as_slice()).await?;
///     let message = server.next().await.expect("a message")?;
///     assert_eq!(&message[..], b"hello");
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
///
/// Windows named pipes are another matter: CPython sends each message there
/// as one pipe message with no length header, so this codec does not speak
/// to a Python peer over a named pipe (it does over TCP).
///
/// # Errors
///
/// Decoding fails with
/// - [`Error::MessageTooLarge`] when a header announces more than
///   [`max_message_size`](Self::max_message_size) allows (default
///   [`DEFAULT_MAX_MESSAGE`], 64 MiB), decided from the header alone;
/// - [`Error::Protocol`] for a negative length or an extended length above
///   `i64::MAX`;
/// - [`Error::Truncated`] when the stream ends inside a header or payload
///   (an end between messages is simply the end of the stream);
/// - [`Error::Io`] for the stream's own errors (through `Framed`).
///
/// After any framing error the position in the stream is lost, so every
/// later decode fails with
/// [`ProtocolError::Desynchronized`](crate::ProtocolError::Desynchronized)
/// rather than read a length out of payload bytes. Encoding never fails.
#[derive(Debug, Clone)]
pub struct MessageCodec {
    max: u64,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: the next bytes are a header.
    Header,
    /// A header was consumed and announced a payload of this many bytes.
    Payload(usize),
    /// A framing error left the stream at an unknown position.
    Broken,
}

impl MessageCodec {
    /// A codec that accepts messages of up to [`DEFAULT_MAX_MESSAGE`] bytes.
    pub fn new() -> Self {
        MessageCodec {
            max: DEFAULT_MAX_MESSAGE,
            state: State::Header,
        }
    }

    /// Sets the largest incoming message the codec accepts, in bytes.
    ///
    /// A larger one is refused from its header, before any room is reserved
    /// for it. `u64::MAX` lifts the limit, as CPython has none; memory then
    /// still grows only with the bytes that actually arrive.
    #[must_use]
    pub fn max_message_size(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// Changes the limit of a codec in use (through
    /// [`Framed::codec_mut`](tokio_util::codec::Framed::codec_mut), say).
    /// It applies from the next header on: a message whose header was
    /// already accepted is completed.
    pub fn set_max_message_size(&mut self, max: u64) {
        self.max = max;
    }

    /// The largest incoming message the codec accepts, in bytes.
    pub fn max_message(&self) -> u64 {
        self.max
    }

    /// Records that the stream is no longer at a known position, and passes
    /// on the error that says why.
    fn fail(&mut self, e: Error) -> Error {
        self.state = State::Broken;
        e
    }

    /// Consumes the header at the start of `src` when it is complete and
    /// acceptable, and returns the payload length it announced.
    fn take_header(&mut self, src: &mut BytesMut) -> Result<Option<usize>, Error> {
        let header = match frame::parse_header(src) {
            Ok(Some(header)) => header,
            Ok(None) => {
                src.reserve(frame::header_bytes_missing(src));
                return Ok(None);
            }
            Err(e) => return Err(self.fail(e.into())),
        };
        if header.payload_len > self.max {
            return Err(self.fail(Error::MessageTooLarge {
                len: header.payload_len,
                max: self.max,
            }));
        }
        // Only a limit above this platform's address space lets this fail.
        let Ok(len) = usize::try_from(header.payload_len) else {
            let e = ProtocolError::BadExtendedLength(header.payload_len);
            return Err(self.fail(e.into()));
        };
        src.advance(header.header_len);
        Ok(Some(len))
    }
}

impl Default for MessageCodec {
    fn default() -> Self {
        MessageCodec::new()
    }
}

impl Decoder for MessageCodec {
    type Item = BytesMut;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
        let len = match self.state {
            State::Broken => return Err(ProtocolError::Desynchronized.into()),
            State::Payload(len) => len,
            State::Header => match self.take_header(src)? {
                Some(len) => len,
                None => return Ok(None),
            },
        };
        if src.len() < len {
            self.state = State::Payload(len);
            src.reserve((len - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        self.state = State::Header;
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
        if let Some(message) = self.decode(src)? {
            return Ok(Some(message));
        }
        let (expected, received) = match self.state {
            State::Header if src.is_empty() => return Ok(None),
            State::Header => (src.len() + frame::header_bytes_missing(src), src.len()),
            State::Payload(len) => (len, src.len()),
            // decode() has already failed in this state.
            State::Broken => return Err(ProtocolError::Desynchronized.into()),
        };
        Err(self.fail(Error::Truncated {
            expected: expected as u64,
            received: received as u64,
        }))
    }
}

/// Any byte container: the payload is copied into the write buffer in every
/// case, so taking ownership would gain nothing, and a borrowed slice spares
/// the caller an allocation. (tokio_util's `LinesCodec` takes the same shape
/// for strings.)
impl<B: AsRef<[u8]>> Encoder<B> for MessageCodec {
    type Error = Error;

    fn encode(&mut self, item: B, dst: &mut BytesMut) -> Result<(), Error> {
        let payload = item.as_ref();
        dst.reserve(MAX_HEADER + payload.len());
        put_header(payload.len() as u64, dst);
        dst.extend_from_slice(payload);
        Ok(())
    }
}

/// Appends the header announcing a payload of `len` bytes. Apart from
/// `encode` so that the 12-byte form is testable without a 2 GiB payload.
fn put_header(len: u64, dst: &mut BytesMut) {
    let mut header = [0; MAX_HEADER];
    let n = frame::encode_header(len, &mut header);
    dst.extend_from_slice(&header[MAX_HEADER - n..]);
}

#[cfg(test)]
mod tests;
