//! `Connection`: the message API over any transport, and the trust typestate.

use std::fmt;
use std::marker::PhantomData;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::proto::codec;
use crate::proto::frame::{self, MAX_HEADER};
use crate::sys::{self, Interest};
use crate::transport::{FrameReader, write_all, write_frame};

/// The default limit on one incoming message: 64 MiB.
///
/// CPython has no limit short of 2^63 bytes. A frame over the limit is refused
/// from its header alone; raise it with
/// [`Connection::set_max_message_size`] for larger payloads.
pub const DEFAULT_MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// Typed-send scratch buffers larger than this are freed after use.
const SCRATCH_KEEP: usize = 64 * 1024;

mod sealed {
    pub trait Sealed {}
}

/// Whether a connection's peer has been authenticated: [`Authenticated`] or
/// [`Unverified`]. Sealed: no other states exist.
pub trait Trust: sealed::Sealed + 'static {}

/// The peer proved it holds the key (or the connection is one end of a
/// [`pipe()`](crate::pipe)). Typed [`recv`](Connection::recv) is available.
#[derive(Debug)]
pub enum Authenticated {}

/// Nobody checked who the peer is. Such a connection sends and receives bytes
/// and sends typed values, but it has **no typed `recv`**: decoding data from
/// an unknown peer does not compile.
///
/// ```compile_fail,E0599
/// # fn f(mut conn: mpconn::Connection<mpconn::Unverified>) {
/// let value: u32 = conn.recv().unwrap();
/// # }
/// ```
///
/// Bytes are fine, and so is an upgrade by handshake:
///
/// ```no_run
/// # fn f(mut conn: mpconn::Connection<mpconn::Unverified>) -> mpconn::Result<()> {
/// let raw: Vec<u8> = conn.recv_bytes()?;
/// let mut conn = conn.authenticate_as_client(b"a key of sixteen bytes+")?;
/// let value: u32 = conn.recv()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum Unverified {}

impl sealed::Sealed for Authenticated {}
impl sealed::Sealed for Unverified {}
impl Trust for Authenticated {}
impl Trust for Unverified {}

/// A message-oriented connection: Python's `multiprocessing.connection.Connection`.
///
/// Messages are framed exactly as CPython frames them, so the peer may be a
/// Python process. `T` records whether the peer was authenticated; only
/// `Connection<Authenticated>` (the default) can decode typed values.
pub struct Connection<T: Trust = Authenticated> {
    stream: sys::Stream,
    /// `None` on the sending end of a simplex pipe.
    reader: Option<FrameReader>,
    writable: bool,
    /// Typed sends encode here, behind room for the frame header.
    scratch: Vec<u8>,
    _trust: PhantomData<fn() -> T>,
}

impl<T: Trust> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", &self.stream)
            .field("readable", &self.reader.is_some())
            .field("writable", &self.writable)
            .finish()
    }
}

impl<T: Trust> Connection<T> {
    pub(crate) fn from_stream(stream: sys::Stream, readable: bool, writable: bool) -> Self {
        Connection {
            stream,
            reader: readable.then(|| FrameReader::new(DEFAULT_MAX_MESSAGE)),
            writable,
            scratch: Vec::new(),
            _trust: PhantomData,
        }
    }

    /// Changes the trust marker, keeping everything read so far.
    fn retag<U: Trust>(self) -> Connection<U> {
        Connection {
            stream: self.stream,
            reader: self.reader,
            writable: self.writable,
            scratch: self.scratch,
            _trust: PhantomData,
        }
    }

    pub(crate) fn stream(&self) -> &sys::Stream {
        &self.stream
    }

    pub(crate) fn reader_mut(&mut self) -> Result<&mut FrameReader> {
        self.reader.as_mut().ok_or(Error::NotReadable)
    }

    fn parts(&mut self) -> Result<(&sys::Stream, &mut FrameReader)> {
        match self.reader.as_mut() {
            Some(reader) => Ok((&self.stream, reader)),
            None => Err(Error::NotReadable),
        }
    }

    fn check_writable(&self) -> Result<()> {
        match self.writable {
            true => Ok(()),
            false => Err(Error::NotWritable),
        }
    }

    /// Sends a typed value, encoded with bincode.
    ///
    /// # Errors
    /// [`Error::Codec`] if the value cannot be encoded (nothing is sent then),
    /// [`Error::NotWritable`] on the receiving end of a simplex pipe,
    /// [`Error::Io`] if the peer has gone.
    pub fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.check_writable()?;
        self.scratch.clear();
        self.scratch.resize(MAX_HEADER, 0);
        codec::encode(value, &mut self.scratch)?;
        let len = (self.scratch.len() - MAX_HEADER) as u64;
        let mut header = [0; MAX_HEADER];
        let n = frame::encode_header(len, &mut header);
        self.scratch[MAX_HEADER - n..MAX_HEADER].copy_from_slice(&header[MAX_HEADER - n..]);
        let sent = write_all(&self.stream, &self.scratch[MAX_HEADER - n..], None);
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        sent
    }

    /// Sends `buf` as one message. An empty `buf` is a legal, empty message.
    ///
    /// # Errors
    /// [`Error::NotWritable`] on the receiving end of a simplex pipe,
    /// [`Error::Io`] if the peer has gone.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        write_frame(&self.stream, buf, None)
    }

    /// Receives one message as bytes, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Eof`] when the peer closed cleanly, [`Error::Truncated`] when
    /// it vanished inside a message, [`Error::MessageTooLarge`] for a frame over
    /// the limit, [`Error::NotReadable`] on the sending end of a simplex pipe.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        let (stream, reader) = self.parts()?;
        reader.read_owned(stream, None)
    }

    /// Like [`recv_bytes`](Self::recv_bytes), but gives up with
    /// [`Error::Timeout`] after `timeout`. A timeout loses nothing: the next
    /// receive continues the same message.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), plus [`Error::Timeout`].
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = deadline_after(timeout);
        let (stream, reader) = self.parts()?;
        reader.read_owned(stream, deadline)
    }

    /// Receives one message into `buf` and returns its length. The bytes of
    /// `buf` past the message are left untouched.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] carrying the whole message when it does not
    /// fit; the connection is then ready for the next message. Otherwise as
    /// [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_bytes_into_at(buf, 0)
    }

    /// Receives one message into `buf[offset..]` and returns its length.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] when `offset > buf.len()` (nothing is
    /// received then); otherwise as [`recv_bytes_into`](Self::recv_bytes_into).
    pub fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        if offset > buf.len() {
            return Err(Error::OffsetOutOfRange {
                offset,
                len: buf.len(),
            });
        }
        let (stream, reader) = self.parts()?;
        reader.read_into(stream, None, &mut buf[offset..])
    }

    /// Whether a message (or the end of stream) can be read within `timeout`:
    /// `Some(Duration::ZERO)` only looks, `None` waits as long as it takes.
    /// Data already buffered inside the connection counts.
    ///
    /// As in CPython, `true` means that the first bytes of a message are here;
    /// a large message may still be arriving.
    ///
    /// # Errors
    /// [`Error::NotReadable`] on the sending end of a simplex pipe;
    /// [`Error::Io`] if the readiness check fails.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        // A timeout too large for the clock waits forever, like `None`.
        let deadline = timeout.and_then(deadline_after);
        let (stream, reader) = self.parts()?;
        if reader.has_buffered() {
            return Ok(true);
        }
        Ok(stream.wait(Interest::Readable, deadline)?)
    }

    /// The largest incoming message this connection accepts.
    pub fn max_message_size(&self) -> u64 {
        self.reader
            .as_ref()
            .map_or(DEFAULT_MAX_MESSAGE, FrameReader::max_message)
    }

    /// Sets the largest incoming message this connection accepts. Larger
    /// frames are refused with [`Error::MessageTooLarge`] from their header.
    pub fn set_max_message_size(&mut self, max: u64) {
        if let Some(reader) = self.reader.as_mut() {
            reader.set_max_message(max);
        }
    }

    /// Closes the connection. Dropping it does the same; `close` exists to
    /// make the intent visible, like Python's `Connection.close()`.
    ///
    /// # Errors
    /// None today: closing a descriptor cannot fail in a way a caller could act
    /// on. The `Result` leaves room for transports that flush on close.
    pub fn close(self) -> Result<()> {
        // Ignore ENOTCONN: the peer may already be gone.
        let _ = self.stream.shutdown(Shutdown::Both);
        Ok(())
    }

    /// Frees the read buffer if nothing is waiting in it. Connections free it
    /// on their own after large messages; call this before parking many idle
    /// connections to hold their memory to a minimum.
    pub fn shrink_buffers(&mut self) {
        if let Some(reader) = self.reader.as_mut() {
            reader.release_if_idle();
        }
        self.scratch = Vec::new();
    }
}

impl Connection<Authenticated> {
    /// Receives one typed value.
    ///
    /// # Errors
    /// [`Error::Codec`] when the message is not a valid encoding of `V` or has
    /// bytes left over; the message is consumed and the next one is
    /// unaffected. Otherwise as [`recv_bytes`](Self::recv_bytes).
    pub fn recv<V: DeserializeOwned>(&mut self) -> Result<V> {
        let (stream, reader) = self.parts()?;
        Ok(reader.read_with(stream, None, codec::decode)??)
    }

    /// Like [`recv`](Self::recv), but gives up with [`Error::Timeout`] after
    /// `timeout`, losing nothing.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), plus [`Error::Timeout`].
    pub fn recv_timeout<V: DeserializeOwned>(&mut self, timeout: Duration) -> Result<V> {
        let deadline = deadline_after(timeout);
        let (stream, reader) = self.parts()?;
        Ok(reader.read_with(stream, deadline, codec::decode)??)
    }
}

impl Connection<Unverified> {
    /// Trusts the peer without any proof. Only for peers on a network you
    /// control completely (a socket you created and handed to a child, say):
    /// anyone who can reach the address can send values for your decoder.
    pub fn dangerous_trust_without_authentication(self) -> Connection<Authenticated> {
        self.retag()
    }

    /// Runs the handshake as the listener's side (deliver a challenge, then
    /// answer one) with default options.
    ///
    /// # Errors
    /// [`Error::Auth`] when the peer does not hold the key, misbehaves, or the
    /// handshake does not finish within the default deadline.
    pub fn authenticate_as_server(self, authkey: &[u8]) -> Result<Connection<Authenticated>> {
        crate::handshake::HandshakeOptions::default().run_as_server(self, authkey)
    }

    /// Runs the handshake as the client's side (answer a challenge, then
    /// deliver one) with default options.
    ///
    /// # Errors
    /// As [`authenticate_as_server`](Self::authenticate_as_server).
    pub fn authenticate_as_client(self, authkey: &[u8]) -> Result<Connection<Authenticated>> {
        crate::handshake::HandshakeOptions::default().run_as_client(self, authkey)
    }

    pub(crate) fn into_authenticated(self) -> Connection<Authenticated> {
        self.retag()
    }
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(unix)]
mod unix {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

    use super::{Connection, Trust, Unverified};
    use crate::error::Error;
    use crate::sys;

    /// Adopts a connected stream socket, a pipe end inherited from a parent
    /// process, say. Nobody vouches for its peer, so it starts
    /// [`Unverified`]; authenticate it, or trust it explicitly.
    impl From<OwnedFd> for Connection<Unverified> {
        fn from(fd: OwnedFd) -> Self {
            let stream = sys::Stream::from_fd(fd);
            Connection::from_stream(stream, true, true)
        }
    }

    /// Gives up the descriptor, to hand it to a child process for example.
    ///
    /// Fails with the connection back when it has read ahead bytes that
    /// the descriptor would lose.
    impl<T: Trust> TryFrom<Connection<T>> for OwnedFd {
        type Error = (Error, Connection<T>);

        fn try_from(conn: Connection<T>) -> std::result::Result<OwnedFd, Self::Error> {
            if conn.reader.as_ref().is_some_and(|r| r.has_buffered()) {
                return Err((
                    Error::Io(std::io::Error::other("bytes already read would be lost")),
                    conn,
                ));
            }
            Ok(conn.stream.into())
        }
    }

    impl<T: Trust> AsFd for Connection<T> {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.stream.as_fd()
        }
    }

    impl<T: Trust> AsRawFd for Connection<T> {
        fn as_raw_fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
    }
}
