//! The only home of raw OS calls and `unsafe`.
//!
//! Each platform module provides the same names with the same signatures, so
//! the portable layers above carry no `cfg`:
//!
//! - `Stream`: a connected byte stream (a socket on Unix) with
//!   `pair() -> io::Result<(Stream, Stream)>` (close-on-exec),
//!   `from_socket`, `from_fd`, `read(&self, &mut [u8])`,
//!   `read_spare(&self, &mut Vec<u8>, max)` (read into spare capacity without
//!   zeroing it), `write_vectored(&self, &[IoSlice])` (never raises SIGPIPE),
//!   `try_write_vectored` (never blocks either),
//!   `wait(&self, Interest, Option<Instant>) -> io::Result<bool>` (readiness
//!   with a deadline, `false` on timeout, EINTR retried with the time that
//!   is left), `shutdown(&self, Shutdown)`, `set_nonblocking(&self, bool)`
//!   and `quick_ack(&self)`.
//! - Free functions: `accept(&Socket, nonblocking)` (close-on-exec),
//!   `set_nonblocking(&Socket, bool)`, `connect_nonblocking(&Socket, &SockAddr,
//!   deadline)`, `wait_readable(&[fd], &mut [bool], deadline)` (many
//!   descriptors at once) and `SEND_FLAGS`.
//!
//! `unix` is complete; `windows` is under way (issue 4): its named-pipe
//! transport exists, the rest does not, so the crate does not build for
//! Windows yet.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment naming the invariant it
//! relies on.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
mod windows;

/// What a caller waits for in `Stream::wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Bytes (or end of stream) to read.
    Readable,
    /// Room to write.
    Writable,
}
