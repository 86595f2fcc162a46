//! The sending and receiving machinery shared by `Connection` and its halves.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::proto::codec;
use crate::proto::frame::{self, MAX_HEADER};
use crate::sys::Interest;
use crate::transport::{ByteStream, Endpoint, FrameReader, write_all, write_frame};

/// Typed-send scratch buffers larger than this are freed after use.
const SCRATCH_KEEP: usize = 64 * 1024;

/// The receiving side, or `NotReadable` on a send-only end.
pub(crate) fn readable<R>(rx: Option<R>) -> Result<R> {
    rx.ok_or(Error::NotReadable)
}

/// Sends frames on an endpoint.
#[derive(Debug)]
pub(crate) struct Sender {
    endpoint: Arc<Endpoint>,
    /// `false` on the receiving end of a simplex pipe.
    enabled: bool,
    /// Typed sends encode here, behind room for the frame header.
    scratch: Vec<u8>,
}

impl Sender {
    pub(crate) fn new(endpoint: Arc<Endpoint>, enabled: bool) -> Self {
        Sender {
            endpoint,
            enabled,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn weak(&self) -> Weak<Endpoint> {
        Arc::downgrade(&self.endpoint)
    }

    pub(crate) fn same_endpoint(&self, rx: &Receiver) -> bool {
        Arc::ptr_eq(&self.endpoint, &rx.endpoint)
    }

    /// The endpoint, when this sender holds the last reference to it.
    pub(crate) fn into_endpoint(self) -> std::result::Result<Endpoint, Sender> {
        let Sender {
            endpoint,
            enabled,
            scratch,
        } = self;
        Arc::try_unwrap(endpoint).map_err(|endpoint| Sender {
            endpoint,
            enabled,
            scratch,
        })
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn check(&self) -> Result<()> {
        match self.enabled {
            true => Ok(()),
            false => Err(Error::NotWritable),
        }
    }

    pub(crate) fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.check()?;
        self.scratch.clear();
        self.scratch.resize(MAX_HEADER, 0);
        codec::encode(value, &mut self.scratch)?;
        let len = (self.scratch.len() - MAX_HEADER) as u64;
        let mut header = [0; MAX_HEADER];
        let n = frame::encode_header(len, &mut header);
        self.scratch[MAX_HEADER - n..MAX_HEADER].copy_from_slice(&header[MAX_HEADER - n..]);
        let sent = write_all(&*self.endpoint, &self.scratch[MAX_HEADER - n..], None);
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        sent
    }

    pub(crate) fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check()?;
        write_frame(&*self.endpoint, buf, None)
    }

    pub(crate) fn shrink(&mut self) {
        self.scratch = Vec::new();
    }
}

/// Receives frames from an endpoint.
#[derive(Debug)]
pub(crate) struct Receiver {
    endpoint: Arc<Endpoint>,
    reader: FrameReader,
}

impl Receiver {
    pub(crate) fn new(endpoint: Arc<Endpoint>, max_message: u64) -> Self {
        Receiver {
            endpoint,
            reader: FrameReader::new(max_message),
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn weak(&self) -> Weak<Endpoint> {
        Arc::downgrade(&self.endpoint)
    }

    pub(crate) fn reader_mut(&mut self) -> &mut FrameReader {
        &mut self.reader
    }

    pub(crate) fn has_buffered(&self) -> bool {
        self.reader.has_buffered()
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.reader.max_message()
    }

    pub(crate) fn set_max_message(&mut self, max: u64) {
        self.reader.set_max_message(max);
    }

    pub(crate) fn recv<V: DeserializeOwned>(&mut self, deadline: Option<Instant>) -> Result<V> {
        Ok(self
            .reader
            .read_with(&*self.endpoint, deadline, codec::decode)??)
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
}
