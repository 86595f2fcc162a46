//! The sending and receiving machinery shared by `Connection` and its halves.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::handshake::{Exchange, HANDSHAKE_MESSAGE_LIMIT, Proof};
use crate::proto::codec::{self, Codec};
use crate::proto::noise::Sealer;
use crate::sys::Interest;
use crate::transport::{ByteStream, Endpoint, MessageReader, Outbox, send_message, write_all};

/// Typed-send scratch buffers larger than this are freed after use.
const SCRATCH_KEEP: usize = 64 * 1024;
/// A batch is written out once this many bytes are queued.
pub(crate) const BATCH_FLUSH: usize = 64 * 1024;

/// Sends messages on an endpoint.
#[derive(Debug)]
pub(crate) struct Sender {
    endpoint: Arc<Endpoint>,
    /// Typed sends encode here.
    scratch: Vec<u8>,
    /// Messages queued by a [`Batch`](super::Batch).
    queued: Outbox,
    pub(crate) codec: Codec,
    /// The encrypted mode's sending keys, and the records of a message
    /// being sent (or of a batch's messages, when one is queued).
    sealed: Option<Box<Sealed>>,
}

/// An encrypted connection's sending side.
#[derive(Debug)]
struct Sealed {
    sealer: Sealer,
    /// Records sealed and not yet written.
    wire: Vec<u8>,
}

impl Sender {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        Sender {
            endpoint,
            scratch: Vec::new(),
            queued: Outbox::default(),
            codec: Codec::default(),
            sealed: None,
        }
    }

    /// From here on, every message leaves sealed with `sealer`.
    pub(crate) fn seal(&mut self, sealer: Sealer) {
        self.sealed = Some(Box::new(Sealed {
            sealer,
            wire: Vec::new(),
        }));
    }

    #[cfg(unix)]
    pub(crate) fn is_encrypted(&self) -> bool {
        self.sealed.is_some()
    }

    /// The encrypted mode's sealer, to carry over to an async sender.
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async connections take senders over")
    )]
    pub(crate) fn take_sealer(&mut self) -> Option<Sealer> {
        self.sealed.take().map(|s| s.sealer)
    }

    /// Sends `message` sealed: its records, framed, in one write where the
    /// stream takes it.
    fn send_sealed(&mut self, message: &[u8]) -> Result<()> {
        let Some(sealed) = self.sealed.as_mut() else {
            return send_message(&*self.endpoint, message, None);
        };
        sealed.wire.clear();
        let endpoint = &*self.endpoint;
        // Record by record: the peer opens the first while we seal the next.
        let sent = sealed
            .sealer
            .seal_in_parts(message, &mut sealed.wire, |wire| {
                let written = write_all(endpoint, wire, None);
                wire.clear();
                written
            });
        if sealed.wire.capacity() > SCRATCH_KEEP {
            sealed.wire = Vec::new();
        }
        sent
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn weak(&self) -> Weak<Endpoint> {
        Arc::downgrade(&self.endpoint)
    }

    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(
            dead_code,
            reason = "only the async connections take connections apart"
        )
    )]
    pub(crate) fn endpoint_arc(&self) -> Arc<Endpoint> {
        self.endpoint.clone()
    }

    /// A receiver on the same endpoint.
    pub(crate) fn new_receiver(&self, max_message: u64) -> Receiver {
        Receiver::new(self.endpoint.clone(), max_message)
    }

    pub(crate) fn same_endpoint(&self, rx: &Receiver) -> bool {
        Arc::ptr_eq(&self.endpoint, &rx.endpoint)
    }

    /// The endpoint, when this sender holds the last reference to it.
    pub(crate) fn into_endpoint(self) -> std::result::Result<Endpoint, Sender> {
        let Sender {
            endpoint,
            scratch,
            queued,
            codec,
            sealed,
        } = self;
        Arc::try_unwrap(endpoint).map_err(|endpoint| Sender {
            endpoint,
            scratch,
            queued,
            codec,
            sealed,
        })
    }

    pub(crate) fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.scratch.clear();
        codec::encode_with(self.codec, value, &mut self.scratch)?;
        self.send_scratch()
    }

    pub(crate) fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.send_sealed(buf)
    }

    #[cfg(feature = "pickle")]
    pub(crate) fn send_pickle_value(&mut self, value: &crate::proto::pickle::Value) -> Result<()> {
        self.scratch.clear();
        crate::proto::pickle::encode_value(value, &mut self.scratch)?;
        self.send_scratch()
    }

    /// Sends what was encoded into `scratch` as one message.
    fn send_scratch(&mut self) -> Result<()> {
        let scratch = std::mem::take(&mut self.scratch);
        let sent = self.send_sealed(&scratch);
        self.scratch = scratch;
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        sent
    }

    pub(crate) fn shrink(&mut self) {
        self.scratch = Vec::new();
        self.queued.release_above(0);
        if let Some(sealed) = self.sealed.as_mut() {
            sealed.wire = Vec::new();
        }
    }

    /// Queues one message; sends the queue once it passes `BATCH_FLUSH`.
    /// A large payload leaves at once, behind the queue (in one vectored
    /// write on a byte stream).
    pub(crate) fn queue_bytes(&mut self, buf: &[u8]) -> Result<()> {
        if let Some(sealed) = self.sealed.as_mut() {
            self.queued.push_sealed(&mut sealed.sealer, buf)?;
            return self.flush_if_full();
        }
        if buf.len() >= BATCH_FLUSH {
            return self.queued.send(&*self.endpoint, Some(buf), None);
        }
        self.queued.push(buf);
        self.flush_if_full()
    }

    /// Queues one typed value.
    pub(crate) fn queue<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        let codec = self.codec;
        if self.sealed.is_some() {
            self.scratch.clear();
            codec::encode_with(codec, value, &mut self.scratch)?;
            let scratch = std::mem::take(&mut self.scratch);
            let queued = self.queue_bytes(&scratch);
            self.scratch = scratch;
            return queued;
        }
        self.queued
            .push_encoded(|buf| codec::encode_with(codec, value, buf))?;
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<()> {
        match self.queued.len() >= BATCH_FLUSH {
            true => self.flush(),
            false => Ok(()),
        }
    }

    /// Sends every queued message.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let sent = self.queued.send(&*self.endpoint, None, None);
        self.queued.release_above(4 * BATCH_FLUSH);
        sent
    }

    pub(crate) fn queued_len(&self) -> usize {
        self.queued.len()
    }
}

/// Receives messages from an endpoint.
#[derive(Debug)]
pub(crate) struct Receiver {
    endpoint: Arc<Endpoint>,
    reader: MessageReader,
    pub(crate) codec: Codec,
}

impl Receiver {
    pub(crate) fn new(endpoint: Arc<Endpoint>, max_message: u64) -> Self {
        Receiver {
            reader: MessageReader::new(&*endpoint, max_message),
            endpoint,
            codec: Codec::default(),
        }
    }

    /// A receiver that goes on with `reader`, which has already read from
    /// the endpoint's stream (a listener's handshake, say).
    pub(crate) fn with_reader(
        endpoint: Arc<Endpoint>,
        reader: MessageReader,
        max_message: u64,
    ) -> Self {
        let mut rx = Receiver {
            endpoint,
            reader,
            codec: Codec::default(),
        };
        rx.set_max_message(max_message);
        rx
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn weak(&self) -> Weak<Endpoint> {
        Arc::downgrade(&self.endpoint)
    }

    /// The reader, with whatever it read ahead, and the codec.
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async connections take readers over")
    )]
    pub(crate) fn into_reader(self) -> (MessageReader, Codec) {
        (self.reader, self.codec)
    }

    /// Runs a handshake over this receiver's stream and reader, with the
    /// handshake's message limit; the connection's limit returns after.
    /// What the peer sent behind the handshake stays in the reader.
    pub(crate) fn handshake(&mut self, exchange: &mut Exchange) -> Result<Proof> {
        let max = self.max_message();
        self.set_max_message(HANDSHAKE_MESSAGE_LIMIT);
        let result = exchange.drive_blocking(&*self.endpoint, &mut self.reader);
        self.set_max_message(max);
        result
    }

    pub(crate) fn has_buffered(&self) -> bool {
        self.reader.has_buffered()
    }

    /// From here on, every message arrives sealed and `opener` opens it.
    pub(crate) fn seal(&mut self, opener: crate::proto::noise::Opener) {
        self.reader.seal(opener);
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.reader.max_message()
    }

    pub(crate) fn set_max_message(&mut self, max: u64) {
        self.reader.set_max_message(max);
    }

    pub(crate) fn recv<V: DeserializeOwned>(&mut self, deadline: Option<Instant>) -> Result<V> {
        let codec = self.codec;
        Ok(self.reader.read_with(&*self.endpoint, deadline, |bytes| {
            codec::decode_with(codec, bytes)
        })??)
    }

    #[cfg(feature = "pickle")]
    pub(crate) fn recv_pickle_value(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<crate::proto::pickle::Value> {
        Ok(self.reader.read_with(
            &*self.endpoint,
            deadline,
            crate::proto::pickle::decode_value,
        )??)
    }

    pub(crate) fn recv_bytes(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>> {
        self.reader.read_owned(&*self.endpoint, deadline)
    }

    pub(crate) fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        if offset > buf.len() {
            return Err(Error::OffsetOutOfRange {
                offset,
                len: buf.len(),
            });
        }
        self.reader
            .read_into(&*self.endpoint, None, &mut buf[offset..])
    }

    pub(crate) fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if self.endpoint.is_closed() {
            return Err(Error::Closed);
        }
        if self.reader.has_buffered() {
            return Ok(true);
        }
        // A timeout too large for the clock waits forever, like `None`.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Ok(self.endpoint.wait(Interest::Readable, deadline)?)
    }

    pub(crate) fn shrink(&mut self) {
        self.reader.release_if_idle();
    }

    /// The byte that carries descriptors, and them.
    #[cfg(unix)]
    pub(crate) fn recv_passed(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(u8, crate::sys::Passed)> {
        self.reader.read_passed(&*self.endpoint, deadline)
    }

    /// What the reader holds unread, for another owner of the stream.
    #[cfg(unix)]
    pub(crate) fn take_unread(&mut self) -> Result<crate::transport::Unread> {
        self.reader.take_unread()
    }
}
