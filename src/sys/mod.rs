//! The only home of raw OS calls and `unsafe`.
//!
//! Each platform module provides the same names with the same signatures, so
//! the portable layers above carry no `cfg`:
//!
//! - `Stream`: a connected byte stream (a socket on Unix) with
//!   `pair() -> io::Result<(Stream, Stream)>` (close-on-exec),
//!   `read(&self, &mut [u8])`, `read_spare(&self, &mut Vec<u8>, max)` (read
//!   into spare capacity without zeroing it), `write_vectored(&self, &[IoSlice])`
//!   (never raises SIGPIPE), `wait(&self, Interest, Option<Instant>) -> io::Result<bool>`
//!   (readiness with a deadline, `false` on timeout, EINTR retried with the
//!   time that is left), `shutdown(&self, Shutdown)` and
//!   `set_nonblocking(&self, bool)`.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment naming the invariant it
//! relies on.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

/// What a caller waits for in `Stream::wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Bytes (or end of stream) to read.
    Readable,
    /// Room to write.
    Writable,
}
