//! `SealedReader`: the messages of an encrypted connection, opened from
//! the records its frames carry (see `proto::noise`).
//!
//! A receive that stops half-way (a timeout, a dropped async receive)
//! keeps everything: the frame reader its partial record, and this reader
//! the records already opened, so the next receive goes on with the same
//! message. A record that does not open breaks the reader for good, and
//! the stream is ended so that the peer learns of it too.

use std::time::Instant;

use super::{ByteStream, FrameReader};
use crate::error::{Error, ProtocolError, Result};
use crate::proto::noise::{MAX_RECORD, Opened, Opener};

/// A message buffer larger than this is freed once its message is taken.
const KEEP: usize = 64 * 1024;

/// Reads and opens the records of an encrypted connection.
#[derive(Debug)]
pub(crate) struct SealedReader {
    frames: FrameReader,
    opener: Opener,
    /// The message being assembled: the bytes of its records opened so far.
    message: Vec<u8>,
    /// Its length, once its first record is open.
    expected: Option<u64>,
    /// The longest message taken.
    max_message: u64,
    /// Why no more messages can be read, once that is so.
    broken: Option<ProtocolError>,
    /// The record being read, whole: a reused buffer of a record's
    /// largest size, while the connection is busy.
    record: Vec<u8>,
}

impl SealedReader {
    /// A reader that goes on from `frames` (which may hold the first
    /// records already), opening with `opener`.
    pub(crate) fn new(mut frames: FrameReader, opener: Opener) -> Self {
        let max_message = frames.max_message();
        frames.set_max_message(MAX_RECORD as u64);
        SealedReader {
            frames,
            opener,
            message: Vec::new(),
            expected: None,
            max_message,
            broken: None,
            record: Vec::new(),
        }
    }

    /// A reader that reads nothing: every receive fails.
    pub(crate) fn broken(opener: Opener) -> Self {
        SealedReader {
            broken: Some(ProtocolError::Desynchronized),
            ..SealedReader::new(FrameReader::new(0), opener)
        }
    }

    pub(crate) fn set_max_message(&mut self, max: u64) {
        self.max_message = max;
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.max_message
    }

    pub(crate) fn has_buffered(&self) -> bool {
        self.frames.has_buffered() || self.expected.is_some()
    }

    #[cfg_attr(
        not(any(feature = "tokio", feature = "async-io")),
        allow(dead_code, reason = "only the async connections ask first")
    )]
    pub(crate) fn needs_bytes(&self) -> bool {
        self.broken.is_none() && self.frames.needs_bytes()
    }

    /// Opens records until a whole message is assembled in `message`.
    fn assemble<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if let Some(e) = &self.broken {
            return Err(Error::Protocol(e.clone()));
        }
        loop {
            if let Some(len) = self.expected {
                if self.message.len() as u64 == len {
                    return Ok(());
                }
                if self.message.len() as u64 > len {
                    return Err(self.break_off(stream, ProtocolError::BadRecord));
                }
            }
            let first = self.expected.is_none();
            if self.record.len() < MAX_RECORD {
                self.record.resize(MAX_RECORD, 0);
            }
            // Into the reused record buffer: a record as large as the frame
            // reader's buffer seldom lies in it whole, and the reader would
            // allocate for each.
            let opened = match self.frames.read_into(stream, deadline, &mut self.record) {
                Ok(n) => {
                    let record = &self.record[..n];
                    self.opener
                        .open(record, first, self.max_message, &mut self.message)
                }
                Err(Error::Eof) if !first => {
                    let received = self.message.len() as u64;
                    let expected = self.expected.unwrap_or(received);
                    self.reset();
                    return Err(Error::Truncated { expected, received });
                }
                Err(e @ Error::Protocol(_)) | Err(e @ Error::MessageTooLarge { .. }) => {
                    // The frames themselves were broken (a header altered
                    // past the record limit): no record can be found any
                    // more, and the connection ends as for a record that
                    // fails to open.
                    self.break_off(stream, ProtocolError::Desynchronized);
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match opened {
                Ok(Opened::First(len)) => self.expected = Some(len),
                Ok(Opened::More) => {}
                Err(Error::Protocol(e)) => return Err(self.break_off(stream, e)),
                Err(e) => {
                    // A message past the limit: its records cannot be
                    // skipped without opening them all, so the stream ends.
                    self.break_off(stream, ProtocolError::Desynchronized);
                    return Err(e);
                }
            }
        }
    }

    /// Breaks the reader for good and ends the stream.
    fn break_off<S: ByteStream + ?Sized>(&mut self, stream: &S, e: ProtocolError) -> Error {
        self.broken = Some(e.clone());
        self.message = Vec::new();
        self.expected = None;
        stream.end();
        Error::Protocol(e)
    }

    fn reset(&mut self) {
        self.expected = None;
        if self.message.capacity() > KEEP {
            self.message = Vec::new();
        } else {
            self.message.clear();
        }
    }

    pub(crate) fn read_with<S: ByteStream + ?Sized, R>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.assemble(stream, deadline)?;
        let r = f(&self.message);
        self.reset();
        Ok(r)
    }

    pub(crate) fn read_owned<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>> {
        self.assemble(stream, deadline)?;
        self.expected = None;
        Ok(std::mem::take(&mut self.message))
    }

    pub(crate) fn read_into<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        out: &mut [u8],
    ) -> Result<usize> {
        self.assemble(stream, deadline)?;
        let len = self.message.len();
        if len > out.len() {
            self.expected = None;
            return Err(Error::BufferTooShort(std::mem::take(&mut self.message)));
        }
        out[..len].copy_from_slice(&self.message);
        self.reset();
        Ok(len)
    }

    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async connections look ahead")
    )]
    pub(crate) fn read_ahead<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        if self.broken.is_some() {
            return Ok(true);
        }
        self.frames.read_ahead(stream, deadline)
    }

    pub(crate) fn release_if_idle(&mut self) {
        if self.expected.is_none() {
            self.message = Vec::new();
        }
        self.record = Vec::new();
        self.frames.release_if_idle();
    }
}
