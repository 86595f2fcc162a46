//! The message transport: whole messages over any stream, so that the
//! layers above (connections, the handshake drivers, the listener engines)
//! see messages and never how a stream delimits them.
//!
//! - [`MessageReader`] reads messages: on a byte stream (a socket) through
//!   the buffered, resumable [`FrameReader`], which parses CPython's 4- or
//!   12-byte frame headers; on a Windows named pipe through the pipe reader
//!   (`pipe.rs`, `cfg(windows)`), one pipe message per message, no header.
//! - [`send_message`] sends one message, and an [`Outbox`] queues many to
//!   leave together (a batch, the handshake's answers): framed, in as few
//!   writes as a byte stream takes; one pipe message each on a pipe.
//!
//! `sys` below moves bytes (sockets) or whole pipe messages and knows
//! nothing of frame headers: framing lives here and in `proto::frame`. The
//! byte-stream side is generic over [`ByteStream`] so that unit tests can
//! drive it with streams that chunk, interrupt and short-write at will; a
//! stream that is a named pipe says so (`ByteStream::pipe`).

use std::io::{self, IoSlice};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::sys::{self, Interest};

mod endpoint;
mod message;
mod outbox;
#[cfg(windows)]
mod pipe;
mod reader;
mod sealed;
mod writer;

pub(crate) use endpoint::Endpoint;
pub(crate) use message::MessageReader;
#[cfg(unix)]
pub(crate) use message::Unread;
pub(crate) use outbox::Outbox;
pub(crate) use reader::FrameReader;
pub(crate) use writer::{send_message, write_all};

/// What the reader and writer need from a connected byte stream.
pub(crate) trait ByteStream {
    /// One read into `buf`; `Ok(0)` is end of stream.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// One read of at most `max` bytes appended to `v`'s reserved capacity.
    fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize>;
    /// As `read_spare`, and descriptors that arrive with the last byte read
    /// (a Unix socket only) go to `passed`.
    fn read_spare_passing(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        passed: &mut Option<sys::Passed>,
    ) -> io::Result<usize> {
        let _ = passed;
        self.read_spare(v, max)
    }
    /// One vectored write.
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// One vectored write that never blocks: `WouldBlock` instead.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored(bufs)
    }
    /// Readiness with a deadline; `false` on timeout.
    fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<bool>;
    /// Whether this process closed the stream (from any thread).
    fn is_closed(&self) -> bool {
        false
    }
    /// Ends the connection for both sides (a shutdown), after a record of
    /// an encrypted connection failed to open. Nothing where the stream
    /// cannot be shut down.
    fn end(&self) {}
    /// Asks for the peer's next segments to be acknowledged at once (TCP on
    /// Linux); nothing elsewhere.
    fn quick_ack(&self) {}
    /// The named pipe, when the stream is one: it moves whole messages, and
    /// the bytes-level calls above do not apply to it.
    #[cfg(windows)]
    fn pipe(&self) -> Option<&sys::Pipe> {
        None
    }
    /// Reads one whole pipe message, as [`sys::Pipe::recv_message`] does;
    /// an async stream reads without waiting, and says `TimedOut` when it
    /// would have to.
    #[cfg(windows)]
    fn recv_message(
        &self,
        out: &mut Vec<u8>,
        limit: u64,
        deadline: Option<Instant>,
    ) -> io::Result<sys::PipeRecv> {
        self.pipe()
            .ok_or_else(not_a_pipe)?
            .recv_message(out, limit, deadline)
    }
    /// Sends one pipe message, as [`sys::Pipe::send_message`] does; an async
    /// stream sends without waiting, and says `WouldBlock` when it would
    /// have to (having sent nothing).
    #[cfg(windows)]
    fn send_message(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        self.pipe().ok_or_else(not_a_pipe)?.send_message(parts)
    }
}

/// What a pipe call on a byte stream gets.
#[cfg(windows)]
pub(crate) fn not_a_pipe() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a pipe message on a byte stream",
    )
}

impl ByteStream for sys::Stream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::Stream::read(self, buf)
    }
    fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        sys::Stream::read_spare(self, v, max)
    }
    fn read_spare_passing(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        passed: &mut Option<sys::Passed>,
    ) -> io::Result<usize> {
        sys::Stream::read_spare_passing(self, v, max, passed)
    }
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::Stream::write_vectored(self, bufs)
    }
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::Stream::try_write_vectored(self, bufs)
    }
    fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
        sys::Stream::wait(self, interest, deadline)
    }
    fn quick_ack(&self) {
        sys::Stream::quick_ack(self)
    }
    #[cfg(windows)]
    fn pipe(&self) -> Option<&sys::Pipe> {
        self.as_pipe()
    }
}

/// Runs one I/O operation until it completes: retries EINTR, waits out
/// `WouldBlock` on non-blocking streams, and when a deadline is set waits for
/// readiness first so that the operation itself cannot block past it. Once
/// the stream is closed by this process, every result is `Error::Closed`.
pub(crate) fn retry<S: ByteStream + ?Sized>(
    stream: &S,
    interest: Interest,
    deadline: Option<Instant>,
    mut op: impl FnMut(&S) -> io::Result<usize>,
) -> Result<usize> {
    loop {
        if deadline.is_some() && !stream.wait(interest, deadline)? {
            return Err(Error::Timeout);
        }
        // A CloseHandle shuts the socket down, so an operation on a closed stream
        // ends in end-of-stream or an error: only then is the flag worth a look.
        let result = op(stream);
        if matches!(result, Ok(0) | Err(_)) && stream.is_closed() {
            return Err(Error::Closed);
        }
        match result {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if deadline.is_none() {
                    stream.wait(interest, None)?;
                }
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fake;
