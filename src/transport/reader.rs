//! The buffered, resumable frame reader.
//!
//! Small frames are read through a buffer, so one `read` can carry many of
//! them; a payload of 64 KiB or more is read straight into its destination.
//! The buffer starts at 4 KiB, doubles up to 64 KiB while reads fill it (a
//! busy stream), and falls back to 4 KiB after a run of small reads (a quiet
//! one), so an idle connection holds little memory. A header's claim is never
//! allocated up front: an owned payload grows with what has actually arrived.
//! A receive that times out keeps its progress, so the next receive continues
//! the same message.

use std::time::Instant;

use super::{ByteStream, retry};
use crate::error::{Error, ProtocolError, Result};
use crate::proto::frame;
use crate::sys::{self, Interest};

/// The largest read buffer, and the payload size from which reads bypass it.
pub(crate) const READ_BUF: usize = 64 * 1024;
/// The smallest read buffer, where a quiet connection's buffer returns.
pub(crate) const READ_MIN: usize = 4 * 1024;
/// Consecutive reads below `READ_MIN / 2` bytes before the buffer shrinks.
const QUIET_READS: u32 = 16;

/// A frame whose header has been consumed.
#[derive(Debug)]
struct Partial {
    len: usize,
    /// The payload received so far, when a receive stopped half-way.
    data: Vec<u8>,
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Bytes read ahead; `buf[pos..]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    partial: Option<Partial>,
    /// A framing error left the stream at an unknown position.
    broken: bool,
    max_message: u64,
    /// The capacity the next fill uses, between READ_MIN and READ_BUF.
    target: usize,
    /// Small reads in a row, towards shrinking the buffer.
    quiet: u32,
    /// Descriptors that came with the byte at `buf[.0]` (a Unix socket's
    /// `send_fds`), until that byte is taken by `read_passed`; closed as
    /// soon as that byte turns out to lie inside a message.
    passed: Option<Box<(usize, sys::Passed)>>,
}

impl FrameReader {
    pub(crate) fn new(max_message: u64) -> Self {
        FrameReader {
            buf: Vec::new(),
            pos: 0,
            partial: None,
            broken: false,
            max_message,
            target: READ_MIN,
            quiet: 0,
            passed: None,
        }
    }

    /// A reader whose stream begins with `unread`: bytes another reader
    /// took from the same stream and did not consume, with the descriptors
    /// that came with one of them (see `take_unread`).
    #[cfg(unix)]
    pub(crate) fn with_unread(
        unread: Vec<u8>,
        passed: Option<(usize, sys::Passed)>,
        max_message: u64,
    ) -> Self {
        FrameReader {
            passed: passed.filter(|(at, _)| *at < unread.len()).map(Box::new),
            buf: unread,
            ..FrameReader::new(max_message)
        }
    }

    /// Everything read from the stream and not yet received, as the bytes
    /// the stream carried (a message half received gets its header back),
    /// and the descriptors that came with one of those bytes, with its
    /// index: to hand the stream to another owner. Leaves this reader
    /// empty.
    #[cfg(unix)]
    pub(crate) fn take_unread(&mut self) -> (Vec<u8>, Option<(usize, sys::Passed)>) {
        let mut out = Vec::new();
        if let Some(p) = self.partial.take() {
            let mut header = [0; frame::MAX_HEADER];
            let n = frame::encode_header(p.len as u64, &mut header);
            out.extend_from_slice(&header[frame::MAX_HEADER - n..]);
            out.extend_from_slice(&p.data);
        }
        let passed = self.passed.take().filter(|p| p.0 >= self.pos).map(|p| {
            let (at, set) = *p;
            (out.len() + at - self.pos, set)
        });
        out.extend_from_slice(&self.buf[self.pos..]);
        self.buf = Vec::new();
        self.pos = 0;
        (out, passed)
    }

    pub(crate) fn set_max_message(&mut self, max: u64) {
        self.max_message = max;
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.max_message
    }

    /// Whether bytes of a next message are already here, so a poll must not wait.
    pub(crate) fn has_buffered(&self) -> bool {
        self.pos < self.buf.len() || self.partial.as_ref().is_some_and(|p| !p.data.is_empty())
    }

    /// Whether a receive can do nothing until more bytes arrive: nothing
    /// is buffered and no error is waiting to be reported.
    #[cfg_attr(
        not(any(feature = "tokio", feature = "async-io")),
        allow(dead_code, reason = "only the async connections ask first")
    )]
    pub(crate) fn needs_bytes(&self) -> bool {
        !self.has_buffered() && !self.broken
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// When the whole payload of the frame under way (of `len` bytes) is in
    /// the buffer, consumes it and returns where it lies.
    fn take_whole_frame(&mut self, len: usize) -> Option<std::ops::Range<usize>> {
        let fresh = self.partial.as_ref().is_some_and(|p| p.data.is_empty());
        if !fresh || self.buffered().len() < len {
            return None;
        }
        self.partial = None;
        let start = self.pos;
        self.pos += len;
        Some(start..start + len)
    }

    /// Receives one message and hands its payload to `f`, straight from the
    /// read buffer when the whole frame is there.
    pub(crate) fn read_with<S: ByteStream + ?Sized, R>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let len = self.start(stream, deadline)?;
        if let Some(range) = self.take_whole_frame(len) {
            return Ok(f(&self.buf[range]));
        }
        let owned = self.finish_owned(stream, deadline)?;
        Ok(f(&owned))
    }

    /// Receives one message into a new `Vec`.
    pub(crate) fn read_owned<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>> {
        let len = self.start(stream, deadline)?;
        if let Some(range) = self.take_whole_frame(len) {
            return Ok(self.buf[range].to_vec());
        }
        self.finish_owned(stream, deadline)
    }

    /// Receives one message into `out` and returns its length. A message
    /// longer than `out` is returned whole inside [`Error::BufferTooShort`].
    pub(crate) fn read_into<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
        out: &mut [u8],
    ) -> Result<usize> {
        let len = self.start(stream, deadline)?;
        if len > out.len() {
            return Err(Error::BufferTooShort(self.finish_owned(stream, deadline)?));
        }
        let out = &mut out[..len];
        let mut got = 0;
        if let Some(p) = self.partial.as_mut() {
            got = p.data.len();
            out[..got].copy_from_slice(&p.data);
        }
        while got < len {
            let take = (len - got).min(self.buffered().len());
            if take > 0 {
                out[got..got + take].copy_from_slice(&self.buf[self.pos..self.pos + take]);
                self.pos += take;
                got += take;
                continue;
            }
            let direct = len - got >= READ_BUF;
            let step = if direct {
                retry(stream, Interest::Readable, deadline, |s| {
                    s.read(&mut out[got..])
                })
            } else {
                let filled = self.fill(stream, deadline);
                // The buffer was empty: the frame's rest starts at `pos`.
                self.close_passed_before(self.pos.saturating_add(len - got));
                filled
            };
            match step {
                Ok(0) => return Err(self.truncated(len, got)),
                Ok(n) if direct => got += n,
                Ok(_) => {}
                Err(e) => {
                    // Keep what arrived so that the next receive resumes here.
                    if let Some(p) = self.partial.as_mut() {
                        p.data.clear();
                        p.data.extend_from_slice(&out[..got]);
                    }
                    return Err(e);
                }
            }
        }
        self.partial = None;
        Ok(len)
    }

    /// Reads and consumes the next header, unless a frame is already under
    /// way, and returns the payload length. Leaves `partial` set.
    fn start<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        if self.broken {
            return Err(Error::Protocol(ProtocolError::Desynchronized));
        }
        if let Some(p) = &self.partial {
            return Ok(p.len);
        }
        loop {
            match frame::parse_header(self.buffered()) {
                Err(e) => {
                    self.broken = true;
                    return Err(Error::Protocol(e));
                }
                Ok(Some(h)) => {
                    if h.payload_len > self.max_message {
                        self.broken = true;
                        return Err(Error::MessageTooLarge {
                            len: h.payload_len,
                            max: self.max_message,
                        });
                    }
                    self.pos += h.header_len;
                    // max_message is a usize-sized limit, so this cannot truncate.
                    let len = usize::try_from(h.payload_len).map_err(|_| {
                        Error::Protocol(ProtocolError::BadExtendedLength(h.payload_len))
                    })?;
                    self.partial = Some(Partial {
                        len,
                        data: Vec::new(),
                    });
                    self.close_passed_before(self.pos.saturating_add(len));
                    return Ok(len);
                }
                Ok(None) => {
                    // Every byte here belongs to the header being read.
                    self.close_passed_before(self.buf.len());
                    let have = self.buffered().len();
                    if self.fill(stream, deadline)? == 0 {
                        if have == 0 {
                            return Err(Error::Eof);
                        }
                        let expected = (have + frame::header_bytes_missing(self.buffered())) as u64;
                        self.pos = self.buf.len();
                        return Err(Error::Truncated {
                            expected,
                            received: have as u64,
                        });
                    }
                }
            }
        }
    }

    /// Completes the frame under way into an owned `Vec`.
    fn finish_owned<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>> {
        loop {
            let Some(p) = self.partial.as_mut() else {
                return Ok(Vec::new());
            };
            let need = p.len - p.data.len();
            if need == 0 {
                let done = self.partial.take().map(|p| p.data);
                return Ok(done.unwrap_or_default());
            }
            let take = need.min(self.buf.len() - self.pos);
            if take > 0 {
                p.data
                    .extend_from_slice(&self.buf[self.pos..self.pos + take]);
                self.pos += take;
                continue;
            }
            let n = if need >= READ_BUF {
                // Grow with what has arrived, never to the header's claim at once.
                let grow = need.min(p.data.len().max(READ_BUF));
                p.data.reserve_exact(grow);
                let data = &mut p.data;
                retry(stream, Interest::Readable, deadline, |s| {
                    s.read_spare(data, need)
                })?
            } else {
                let n = self.fill(stream, deadline)?;
                // The buffer was empty: the frame's rest starts at `pos`.
                self.close_passed_before(self.pos.saturating_add(need));
                n
            };
            if n == 0 {
                let (len, got) = self
                    .partial
                    .as_ref()
                    .map_or((0, 0), |p| (p.len, p.data.len()));
                return Err(self.truncated(len, got));
            }
        }
    }

    /// Closes descriptors whose byte lies before buffer index `end`: inside
    /// the message being read, where nobody will ask for them. Done as soon
    /// as that is known, so that a peer cannot make a connection hold
    /// descriptors by leaving a header or payload unfinished.
    fn close_passed_before(&mut self, end: usize) {
        if self.passed.as_ref().is_some_and(|p| p.0 < end) {
            self.passed = None;
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` is end of stream.
    fn fill<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        // Descriptors whose byte a message consumed belong to no one: close
        // them. Ones still ahead move with their byte.
        if self.passed.as_ref().is_some_and(|p| p.0 < self.pos) {
            self.passed = None;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.quiet >= QUIET_READS && self.buf.capacity() > READ_MIN {
                self.buf = Vec::new();
                self.target = READ_MIN;
                self.quiet = 0;
            }
        } else if self.pos > 0 && self.buf.capacity() - self.buf.len() < self.target / 4 {
            self.buf.drain(..self.pos);
            if let Some(p) = self.passed.as_mut() {
                p.0 -= self.pos;
            }
            self.pos = 0;
        }
        if self.buf.capacity() < self.target {
            self.buf.reserve_exact(self.target - self.buf.len());
        }
        let room = self.buf.capacity() - self.buf.len();
        let buf = &mut self.buf;
        let mut passed = None;
        let n = retry(stream, Interest::Readable, deadline, |s| {
            s.read_spare_passing(buf, usize::MAX, &mut passed)
        })?;
        if let Some(p) = passed {
            // Linux ends a read right after the byte that carries
            // descriptors. One set waits at a time: an older one is behind
            // a byte that a message header is about to consume anyway
            // (only an empty buffer is filled for `read_passed`).
            self.passed = (n > 0).then(|| Box::new((self.buf.len() - 1, p)));
        }
        if n == room {
            // The stream had more than the buffer held: grow for the next read.
            self.target = (self.target * 2).min(READ_BUF);
            self.quiet = 0;
        } else if n < READ_MIN / 2 {
            self.quiet = self.quiet.saturating_add(1);
        } else {
            self.quiet = 0;
        }
        Ok(n)
    }

    fn truncated(&mut self, len: usize, got: usize) -> Error {
        self.partial = None;
        Error::Truncated {
            expected: len as u64,
            received: got as u64,
        }
    }

    /// Receives the next byte of the stream with the descriptors it
    /// carries (sent by `send_fds`, or CPython's `sendfds`): the byte and
    /// the descriptors, or [`DescriptorError::NotPassed`] when the next byte
    /// carries none (it is left for a message then; nothing is consumed).
    #[cfg(unix)]
    pub(crate) fn read_passed<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<(u8, sys::Passed)> {
        if self.broken {
            return Err(Error::Protocol(ProtocolError::Desynchronized));
        }
        if self.partial.is_some() {
            return Err(Error::Descriptors(
                crate::error::DescriptorError::MessageUnderWay,
            ));
        }
        if self.pos == self.buf.len() && self.fill(stream, deadline)? == 0 {
            return Err(Error::Eof);
        }
        let at = self.pos;
        match self.passed.take() {
            Some(p) if p.0 == at => {
                self.pos += 1;
                Ok((self.buf[at], p.1))
            }
            other => {
                self.passed = other;
                Err(Error::Descriptors(crate::error::DescriptorError::NotPassed))
            }
        }
    }

    /// Reads what the stream has into the buffer, unless bytes of a message
    /// are buffered already: `Ok(true)` once there are bytes to receive or
    /// the stream has ended (a receive then reports it). An async `poll`.
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async connections look ahead")
    )]
    pub(crate) fn read_ahead<S: ByteStream + ?Sized>(
        &mut self,
        stream: &S,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        if !self.has_buffered() && !self.broken {
            self.fill(stream, deadline)?;
        }
        Ok(true)
    }

    /// Frees the read buffer when nothing is left in it, so that an idle
    /// connection holds no buffer memory.
    pub(crate) fn release_if_idle(&mut self) {
        if self.pos == self.buf.len() {
            self.passed = None;
            self.buf = Vec::new();
            self.pos = 0;
            self.target = READ_MIN;
        }
    }
}

#[cfg(test)]
mod tests;
