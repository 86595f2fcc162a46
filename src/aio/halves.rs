//! The two directions of an async connection, each with the whole API of
//! its direction, as in the blocking [`crate::SendHalf`] and
//! [`crate::RecvHalf`].

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::send::{self, Carry};
use super::{Polled, Runtime, with_deadline};
use crate::connection::{Authenticated, Trust};
use crate::error::{Error, Result};
use crate::proto::codec::{self, Codec};
use crate::sys::{self, Interest};
use crate::transport::MessageReader;

/// Typed-send scratch buffers larger than this are freed after use.
const SCRATCH_KEEP: usize = 64 * 1024;

/// The sending direction of an async connection, from
/// [`Connection::split`](super::Connection::split).
///
/// **Cancellation.** A send whose future is dropped before its first byte
/// went out sent nothing. One dropped after that (by `select!` or a
/// timeout) cannot take its beginning back from the peer: the rest of that
/// message is kept, and the next send or [`flush`](Self::flush) on this
/// half writes it first, so the peer receives the message whole and later
/// messages in order. Nothing is lost and the stream never falls out of
/// step; call `flush` when nothing else is to be sent.
pub struct SendHalf<R: Runtime, T: Trust = Authenticated> {
    pub(super) io: Arc<R::Io<sys::Stream>>,
    carry: Carry,
    scratch: Vec<u8>,
    codec: Codec,
    _trust: PhantomData<fn() -> T>,
}

/// The receiving direction of an async connection, from
/// [`Connection::split`](super::Connection::split). Typed `recv` exists only
/// when authenticated.
///
/// **Cancellation.** Every receive is cancellation safe: what arrived is
/// kept in the connection, not in the future, so a receive dropped by
/// `select!` or a timeout loses nothing, and the next receive returns the
/// same message whole.
pub struct RecvHalf<R: Runtime, T: Trust = Authenticated> {
    pub(super) io: Arc<R::Io<sys::Stream>>,
    pub(super) reader: MessageReader,
    pub(super) codec: Codec,
    _trust: PhantomData<fn() -> T>,
}

impl<R: Runtime, T: Trust> fmt::Debug for SendHalf<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendHalf")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", R::get::<crate::sys::Stream>(&self.io))
            .field("carried", &!self.carry.is_empty())
            .finish()
    }
}

impl<R: Runtime, T: Trust> fmt::Debug for RecvHalf<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHalf")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", R::get::<crate::sys::Stream>(&self.io))
            .finish()
    }
}

impl<R: Runtime, T: Trust> SendHalf<R, T> {
    pub(super) fn new(io: Arc<R::Io<sys::Stream>>, codec: Codec) -> Self {
        SendHalf {
            io,
            carry: Carry::default(),
            scratch: Vec::new(),
            codec,
            _trust: PhantomData,
        }
    }

    pub(super) fn retag<U: Trust>(self) -> SendHalf<R, U> {
        SendHalf {
            io: self.io,
            carry: self.carry,
            scratch: self.scratch,
            codec: self.codec,
            _trust: PhantomData,
        }
    }

    /// Sends a typed value, encoded with the connection's codec (bincode by
    /// default).
    ///
    /// # Errors
    /// [`Error::Codec`] if the value cannot be encoded (nothing is sent
    /// then), [`Error::Io`] if the peer has gone.
    pub async fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.scratch.clear();
        codec::encode_with(self.codec, value, &mut self.scratch)?;
        self.send_scratch().await
    }

    /// Sends a dynamic value as a pickle (feature `pickle`), whatever the
    /// connection's codec.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[cfg(feature = "pickle")]
    pub async fn send_pickle_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        self.scratch.clear();
        crate::proto::pickle::encode_value(value, &mut self.scratch)?;
        self.send_scratch().await
    }

    async fn send_scratch(&mut self) -> Result<()> {
        let sent = send::send_frame::<R>(&self.io, &mut self.carry, &self.scratch).await;
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        sent
    }

    /// Sends `buf` as one message. An empty `buf` is a legal, empty message.
    ///
    /// # Errors
    /// [`Error::Io`] if the peer has gone.
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        send::send_frame::<R>(&self.io, &mut self.carry, buf).await
    }

    /// Like [`send_bytes`](Self::send_bytes), but gives up with
    /// [`Error::Timeout`] after `timeout`; a message begun by then is
    /// finished by the next send or [`flush`](Self::flush) (see the type's
    /// documentation).
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes), plus the timeout.
    pub async fn send_bytes_timeout(&mut self, buf: &[u8], timeout: Duration) -> Result<()> {
        with_deadline::<R, _>(deadline_after(timeout), self.send_bytes(buf)).await
    }

    /// Writes out the rest of a message whose send was dropped half-way,
    /// if any; see the type's documentation. Cancellation safe.
    ///
    /// # Errors
    /// [`Error::Io`] if the peer has gone.
    pub async fn flush(&mut self) -> Result<()> {
        send::flush::<R>(&self.io, &mut self.carry).await
    }

    /// How typed values are encoded.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Switches the codec of typed sends, from the next message on.
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// Frees the encoding scratch space.
    pub fn shrink_buffers(&mut self) {
        self.scratch = Vec::new();
        self.carry.shrink();
    }

    /// From here on, every message leaves sealed with `sealer`.
    pub(super) fn seal(&mut self, sealer: crate::proto::noise::Sealer) {
        self.carry.seal(sealer);
    }

    /// The encrypted mode's sealer, to carry over to a blocking sender.
    pub(super) fn take_sealer(&mut self) -> Option<crate::proto::noise::Sealer> {
        self.carry.take_sealer()
    }
}

impl<R: Runtime, T: Trust> RecvHalf<R, T> {
    pub(super) fn new(io: Arc<R::Io<sys::Stream>>, reader: MessageReader, codec: Codec) -> Self {
        RecvHalf {
            io,
            reader,
            codec,
            _trust: PhantomData,
        }
    }

    pub(super) fn retag<U: Trust>(self) -> RecvHalf<R, U> {
        RecvHalf::new(self.io, self.reader, self.codec)
    }

    /// Runs a read of the transport until it completes: `f` is called on
    /// every wake-up with the reader and the stream for this poll, and the
    /// reader keeps whatever it read in between.
    async fn read<V>(
        &mut self,
        mut f: impl FnMut(&mut MessageReader, &Polled<'_, '_, R>, Option<Instant>) -> Result<V>,
    ) -> Result<V> {
        let (io, reader) = (&*self.io, &mut self.reader);
        // A deadline makes the transport stop, not wait, when the stream is
        // not ready; the instant itself is never looked at (see
        // `Polled::wait`), so any will do, and the clock is not read.
        static STOP: OnceLock<Instant> = OnceLock::new();
        let stop = Some(*STOP.get_or_init(Instant::now));
        poll_fn(|cx| {
            if reader.needs_bytes() {
                // Not readable: nothing to do in the reader until it is.
                std::task::ready!(R::poll_ready(io, cx, Interest::Readable))?;
            }
            let polled = Polled::<R>::new(io, cx);
            let result = f(reader, &polled, stop);
            polled.finish(result)
        })
        .await
    }

    /// Receives one message as bytes. Cancellation safe.
    ///
    /// # Errors
    /// [`Error::Eof`] when the peer closed cleanly, [`Error::Truncated`]
    /// when it vanished inside a message, [`Error::MessageTooLarge`] for a
    /// frame over the limit.
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.read(|r, s, d| r.read_owned(s, d)).await
    }

    /// Like [`recv_bytes`](Self::recv_bytes), but gives up with
    /// [`Error::Timeout`] after `timeout`, losing nothing.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), plus the timeout.
    pub async fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        with_deadline::<R, _>(deadline_after(timeout), self.recv_bytes()).await
    }

    /// Receives one message into `buf` and returns its length. The bytes of
    /// `buf` past the message are left untouched. Cancellation safe: `buf`
    /// is written only once the whole message is here.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] carrying the whole message when it does
    /// not fit; the connection is then ready for the next message.
    /// Otherwise as [`recv_bytes`](Self::recv_bytes).
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_bytes_into_at(buf, 0).await
    }

    /// Receives one message into `buf[offset..]` and returns its length.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] when `offset > buf.len()` (nothing is
    /// received then); otherwise as [`recv_bytes_into`](Self::recv_bytes_into).
    pub async fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        if offset > buf.len() {
            return Err(Error::OffsetOutOfRange {
                offset,
                len: buf.len(),
            });
        }
        let out = &mut buf[offset..];
        // The message is kept by the reader until it is whole, and copied
        // out then: a future dropped half-way leaves it with the reader.
        self.read(|r, s, d| {
            r.read_with(s, d, |message| match out.get_mut(..message.len()) {
                Some(dest) => {
                    dest.copy_from_slice(message);
                    Ok(message.len())
                }
                None => Err(Error::BufferTooShort(message.to_vec())),
            })?
        })
        .await
    }

    /// Waits until a message (or the end of stream) can be read, up to
    /// `timeout` (`None`: as long as it takes): `false` when the timeout
    /// passed first. Bytes it reads stay with the connection.
    /// Cancellation safe.
    ///
    /// # Errors
    /// [`Error::Io`] if the stream fails.
    pub async fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let ready = self.read(|r, s, d| r.read_ahead(s, d));
        match with_deadline::<R, _>(timeout.and_then(deadline_after), ready).await {
            Err(Error::Timeout) => Ok(false),
            other => other,
        }
    }

    /// How typed values are decoded.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Switches the codec of typed receives, from the next message on.
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// The largest incoming message this end accepts.
    pub fn max_message_size(&self) -> u64 {
        self.reader.max_message()
    }

    /// Sets the largest incoming message this end accepts; larger frames
    /// are refused from their header with [`Error::MessageTooLarge`].
    pub fn set_max_message_size(&mut self, max: u64) {
        self.reader.set_max_message(max);
    }

    /// Frees the read buffer if nothing is waiting in it.
    pub fn shrink_buffers(&mut self) {
        self.reader.release_if_idle();
    }
}

impl<R: Runtime> RecvHalf<R, Authenticated> {
    /// Receives one typed value, decoded with the connection's codec.
    /// Cancellation safe.
    ///
    /// # Errors
    /// [`Error::Codec`] when the message is not a valid encoding of `V`;
    /// the message is consumed and the next one is unaffected. Otherwise as
    /// [`recv_bytes`](Self::recv_bytes).
    pub async fn recv<V: DeserializeOwned>(&mut self) -> Result<V> {
        let codec = self.codec;
        self.read(|r, s, d| Ok(r.read_with(s, d, |b| codec::decode_with(codec, b))??))
            .await
    }

    /// Like [`recv`](Self::recv), but gives up with [`Error::Timeout`]
    /// after `timeout`, losing nothing.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), plus the timeout.
    pub async fn recv_timeout<V: DeserializeOwned>(&mut self, timeout: Duration) -> Result<V> {
        with_deadline::<R, _>(deadline_after(timeout), self.recv()).await
    }

    /// Receives one pickle of any shape as a dynamic value (feature
    /// `pickle`). Cancellation safe.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "pickle")]
    pub async fn recv_pickle_value(&mut self) -> Result<crate::pickle::Value> {
        self.read(|r, s, d| Ok(r.read_with(s, d, crate::proto::pickle::decode_value)??))
            .await
    }
}

/// `now + timeout`; `None` (no deadline) past what an `Instant` holds.
pub(super) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
