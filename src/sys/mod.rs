//! The only home of raw OS calls and `unsafe`.
//!
//! Each platform module provides the same names with the same signatures, so
//! the portable layers above carry few `cfg`s:
//!
//! - `Stream`: a connected byte stream (a socket on Unix; a socket or a
//!   named pipe on Windows) with `pair() -> io::Result<(Stream, Stream)>`
//!   and `pair_simplex()` (not inherited by children), `from_socket`,
//!   `read(&self, &mut [u8])`,
//!   `read_spare(&self, &mut Vec<u8>, max)` (read into spare capacity without
//!   zeroing it), `write_vectored(&self, &[IoSlice])` (never raises SIGPIPE),
//!   `try_write_vectored` (never blocks on a socket either),
//!   `wait(&self, Interest, Option<Instant>) -> io::Result<bool>` (readiness
//!   with a deadline, `false` on timeout, EINTR retried with the time that
//!   is left), `shutdown(&self, Shutdown)`, `quick_ack(&self)`,
//!   `set_read_limit(&self, u64)` and `has_buffered(&self)` (both matter
//!   only for pipes, which read whole messages).
//! - `WaitSource<'a>`, made by `WaitSource::stream(&Stream)`, and
//!   `wait_readable(&[WaitSource], &mut [bool], deadline)`: readiness of
//!   many objects at once (a descriptor each on Unix; a stream or an event
//!   on Windows).
//! - `connect_nonblocking(&Socket, &SockAddr, deadline)`.
//!
//! Unix adds what its mio listener engine needs (`accept`,
//! `set_nonblocking`, `SEND_FLAGS`, `WaitSource::fd`, `Stream::from_fd`).
//! Windows adds what its thread engine needs: named pipes
//! (`create_pipe_instance`, `connect_pipe`), `Event`, `wait_any`, and
//! `select_accept`/`clear_select` for TCP listening sockets.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment naming the invariant it
//! relies on.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// What a caller waits for in `Stream::wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Bytes (or end of stream) to read.
    Readable,
    /// Room to write.
    Writable,
}
