//! The two directions of a connection as types of their own: `SendHalf`
//! and `RecvHalf`, each with the whole API of its direction (a `Connection`
//! is built from one of each and forwards to them), and the handle that
//! closes a connection from another thread.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Weak;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Authenticated, Connection, Receiver, Sender, Trust, deadline_after};
use crate::error::Result;
use crate::proto::codec::Codec;
use crate::transport::Endpoint;

/// The sending direction of a connection: from [`Connection::split`], or
/// the writing end of [`pipe_simplex`](crate::pipe_simplex).
pub struct SendHalf<T: Trust = Authenticated> {
    pub(super) tx: Sender,
    _trust: PhantomData<fn() -> T>,
}

/// The receiving direction of a connection: from [`Connection::split`], or
/// the reading end of [`pipe_simplex`](crate::pipe_simplex). Typed `recv`
/// exists only when authenticated, as on `Connection`.
pub struct RecvHalf<T: Trust = Authenticated> {
    pub(super) rx: Receiver,
    _trust: PhantomData<fn() -> T>,
}

impl<T: Trust> fmt::Debug for SendHalf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendHalf")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", self.tx.endpoint().stream())
            .finish()
    }
}

impl<T: Trust> fmt::Debug for RecvHalf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHalf")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", self.rx.endpoint().stream())
            .finish()
    }
}

impl<T: Trust> SendHalf<T> {
    pub(super) fn new(tx: Sender) -> Self {
        SendHalf {
            tx,
            _trust: PhantomData,
        }
    }

    /// Changes the trust marker.
    pub(super) fn retag<U: Trust>(self) -> SendHalf<U> {
        SendHalf::new(self.tx)
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.tx.endpoint()
    }

    /// Sends a typed value, encoded with the connection's codec (bincode by
    /// default).
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) if the value cannot be encoded
    /// (nothing is sent then), [`Error::Closed`](crate::Error::Closed) after a
    /// [`CloseHandle`] closed it, [`Error::Io`](crate::Error::Io) if the peer
    /// has gone.
    pub fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.tx.send(value)
    }

    /// Sends a dynamic value as a pickle (feature `pickle`), whatever the
    /// connection's codec: for shapes with no fixed Rust type, and for
    /// integers beyond 64 bits (`pickle::Value::Int` holds a big integer).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[cfg(feature = "pickle")]
    pub fn send_pickle_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        self.tx.send_pickle_value(value)
    }

    /// Sends `buf` as one message. An empty `buf` is a legal, empty message.
    ///
    /// # Errors
    /// As [`send`](Self::send), without the codec error.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.tx.send_bytes(buf)
    }

    /// A corked writer that sends many messages in one system call; see
    /// [`Batch`](super::Batch).
    pub fn batch(&mut self) -> super::Batch<'_> {
        super::Batch::new(&mut self.tx)
    }

    /// How typed values are encoded: [`Codec::Bincode`] by default, or
    /// `Codec::Pickle` (feature `pickle`) for a Python peer.
    pub fn codec(&self) -> Codec {
        self.tx.codec
    }

    /// Switches the codec of typed sends, from the next message on.
    pub fn set_codec(&mut self, codec: Codec) {
        self.tx.codec = codec;
    }

    /// A handle that closes the whole connection from any thread.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle::new(self.tx.weak())
    }

    /// Frees the encoding scratch space if nothing is waiting in it.
    pub fn shrink_buffers(&mut self) {
        self.tx.shrink();
    }

    /// Puts the halves of one connection back together.
    ///
    /// # Errors
    /// Gives both halves back when they come from different connections.
    #[allow(clippy::type_complexity)]
    pub fn reunite(
        self,
        rx: RecvHalf<T>,
    ) -> std::result::Result<Connection<T>, Box<(Self, RecvHalf<T>)>> {
        if !self.tx.same_endpoint(&rx.rx) {
            return Err(Box::new((self, rx)));
        }
        Ok(Connection::from_halves(self, rx))
    }
}

impl<T: Trust> RecvHalf<T> {
    pub(super) fn new(rx: Receiver) -> Self {
        RecvHalf {
            rx,
            _trust: PhantomData,
        }
    }

    /// Changes the trust marker, keeping everything read so far.
    pub(super) fn retag<U: Trust>(self) -> RecvHalf<U> {
        RecvHalf::new(self.rx)
    }

    pub(crate) fn receiver(&mut self) -> &mut Receiver {
        &mut self.rx
    }

    pub(crate) fn receiver_ref(&self) -> &Receiver {
        &self.rx
    }

    /// Receives one message as bytes, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Eof`](crate::Error::Eof) when the peer closed cleanly,
    /// [`Error::Truncated`](crate::Error::Truncated) when it vanished inside a
    /// message, [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) for a
    /// frame over the limit, [`Error::Closed`](crate::Error::Closed) after a
    /// [`CloseHandle`] closed it.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.rx.recv_bytes(None)
    }

    /// Like [`recv_bytes`](Self::recv_bytes), but gives up with
    /// [`Error::Timeout`](crate::Error::Timeout) after `timeout`. A timeout
    /// loses nothing: the next receive continues the same message.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), plus the timeout.
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.rx.recv_bytes(deadline_after(timeout))
    }

    /// Receives one message into `buf` and returns its length. The bytes of
    /// `buf` past the message are left untouched.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`](crate::Error::BufferTooShort) carrying the
    /// whole message when it does not fit; the connection is then ready for
    /// the next message. Otherwise as [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv_bytes_into_at(buf, 0)
    }

    /// Receives one message into `buf[offset..]` and returns its length.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange) when
    /// `offset > buf.len()` (nothing is received then); otherwise as
    /// [`recv_bytes_into`](Self::recv_bytes_into).
    pub fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        self.rx.recv_bytes_into_at(buf, offset)
    }

    /// Whether a message (or the end of stream) can be read within `timeout`:
    /// `Some(Duration::ZERO)` only looks, `None` waits as long as it takes.
    /// Data already buffered inside the connection counts.
    ///
    /// As in CPython, `true` means that the first bytes of a message are here;
    /// a large message may still be arriving.
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed) after a [`CloseHandle`] closed
    /// it; [`Error::Io`](crate::Error::Io) if the readiness check fails.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.rx.poll(timeout)
    }

    /// How typed values are decoded: [`Codec::Bincode`] by default, or
    /// `Codec::Pickle` (feature `pickle`) for a Python peer.
    pub fn codec(&self) -> Codec {
        self.rx.codec
    }

    /// Switches the codec of typed receives, from the next message on.
    pub fn set_codec(&mut self, codec: Codec) {
        self.rx.codec = codec;
    }

    /// The largest incoming message this end accepts.
    pub fn max_message_size(&self) -> u64 {
        self.rx.max_message()
    }

    /// Sets the largest incoming message this end accepts. Larger frames
    /// are refused with [`Error::MessageTooLarge`](crate::Error::MessageTooLarge)
    /// from their header.
    pub fn set_max_message_size(&mut self, max: u64) {
        self.rx.set_max_message(max);
    }

    /// A handle that closes the whole connection from any thread.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle::new(self.rx.weak())
    }

    /// Frees the read buffer if nothing is waiting in it.
    pub fn shrink_buffers(&mut self) {
        self.rx.shrink();
    }
}

impl RecvHalf<Authenticated> {
    /// Receives one typed value, decoded with the connection's codec.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when the message is not a valid
    /// encoding of `V` or has bytes left over; the message is consumed and the
    /// next one is unaffected. Otherwise as [`recv_bytes`](Self::recv_bytes).
    pub fn recv<V: DeserializeOwned>(&mut self) -> Result<V> {
        self.rx.recv(None)
    }

    /// Like [`recv`](Self::recv), but gives up with
    /// [`Error::Timeout`](crate::Error::Timeout) after `timeout`, losing nothing.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), plus the timeout.
    pub fn recv_timeout<V: DeserializeOwned>(&mut self, timeout: Duration) -> Result<V> {
        self.rx.recv(deadline_after(timeout))
    }

    /// Receives one pickle of any shape as a dynamic value (feature
    /// `pickle`), whatever the connection's codec: for Python values with no
    /// fixed Rust type, and for integers beyond 64 bits, which only this
    /// path can carry. The same refusals apply as for
    /// [`Codec::Pickle`](crate::Codec).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "pickle")]
    pub fn recv_pickle_value(&mut self) -> Result<crate::pickle::Value> {
        self.rx.recv_pickle_value(None)
    }
}

/// Closes a connection from any thread (CPython cannot do this).
///
/// A thread blocked in a receive or send on the connection wakes with
/// [`Error::Closed`](crate::Error::Closed), and so does every later call. The handle keeps nothing
/// alive: once the connection is dropped, closing is a no-op.
///
/// **Other holders**: on a socket, closing shuts the socket down
/// (`shutdown(SHUT_RDWR)`, `SD_BOTH` on Windows), which is what wakes the
/// blocked thread. The shutdown acts on the socket itself, not on this
/// process's descriptor: a child process holding a copy of the same
/// socket loses the connection too, and the peer sees end of stream at
/// once. To let go of this process's copy only, drop the connection (or
/// call [`Connection::close`]). On a Windows named pipe, closing cancels
/// this process's I/O on the pipe and leaves other holders alone. On a
/// Windows anonymous or byte-mode pipe, closing marks the connection
/// closed: a receive, `poll` or `wait()` looking at the pipe sees the mark
/// within a millisecond and ends (`Closed`, or ready for `poll`), and a
/// send in flight on an overlapped handle is cancelled; a send blocked on
/// a full synchronous pipe stays blocked until the reader takes the bytes
/// or goes (only `CancelSynchronousIo` on its thread could wake it). Other
/// holders are left alone. A Unix
/// pipe end (not a socket) has no shutdown:
/// the handle marks the connection closed, so every later call fails with
/// `Closed`, but a thread already blocked on a pipe end stays blocked until
/// data or end of stream arrives.
#[derive(Debug, Clone)]
pub struct CloseHandle {
    endpoint: Weak<Endpoint>,
}

impl CloseHandle {
    pub(super) fn new(endpoint: Weak<Endpoint>) -> Self {
        CloseHandle { endpoint }
    }

    /// Closes the connection; see the type's documentation.
    pub fn close(&self) {
        if let Some(endpoint) = self.endpoint.upgrade() {
            endpoint.close();
        }
    }

    /// Whether the connection still exists and has not been closed.
    pub fn is_open(&self) -> bool {
        self.endpoint
            .upgrade()
            .is_some_and(|e| !crate::transport::ByteStream::is_closed(&*e))
    }
}
