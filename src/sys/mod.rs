//! The only home of raw OS calls and `unsafe`.
//!
//! Each platform module provides the same names with the same signatures, so
//! the portable layers above carry few `cfg`s:
//!
//! - `Stream`: a connected stream (a socket or any other descriptor on
//!   Unix; a socket, a named pipe or a plain byte handle on Windows) with
//!   `pair() -> io::Result<(Stream, Stream)>`
//!   and `pair_simplex()` (not inherited by children), `from_socket`,
//!   the byte-stream calls of a socket: `read(&self, &mut [u8])`,
//!   `read_spare(&self, &mut Vec<u8>, max)` (read into spare capacity without
//!   zeroing it), `write_vectored(&self, &[IoSlice])` (never raises SIGPIPE),
//!   `try_write_vectored` (never blocks on a socket either);
//!   `wait(&self, Interest, Option<Instant>) -> io::Result<bool>` (readiness
//!   with a deadline, `false` on timeout, EINTR retried with the time that
//!   is left), `shutdown(&self, Shutdown)`, `quick_ack(&self)`, and
//!   `has_buffered(&self)` (a message read from the OS and kept inside:
//!   only a Windows pipe's readiness probe ever keeps one, an empty one).
//! - `WaitSource<'a>`, made by `WaitSource::stream(&Stream)`, and
//!   `wait_readable(&[WaitSource], &mut [bool], deadline)`: readiness of
//!   many objects at once (a descriptor each on Unix; a stream or an event
//!   on Windows).
//! - `connect_nonblocking(&Socket, &SockAddr, deadline)`.
//! - `peer_credentials(&Stream) -> io::Result<PeerIds>`: who is at the
//!   other end of a Unix-domain socket (pid, uid, gid) or a named pipe
//!   (pid, and whether it runs as our user); `Unsupported` for TCP.
//!   `PEER_UIDS` tells whether the platform has numeric user ids.
//!
//! Unix adds what its mio listener engine needs (`accept`,
//! `set_nonblocking`, `SEND_FLAGS`, `WaitSource::fd`, `Stream::from_fd`).
//! Windows adds named pipes, which move whole messages and no bytes:
//! `Stream::as_pipe` gives the `Pipe` of a pipe stream, with
//! `recv_message(&self, &mut Vec<u8>, limit, deadline) -> io::Result<PipeRecv>`
//! (one whole message into the buffer; one above `limit` is refused unread,
//! `PipeRecv::TooLarge(len)`; `Eof`; `TimedOut`) and
//! `send_message(&self, &[IoSlice])` (one pipe message), while the
//! byte-stream calls of a pipe stream fail with `Unsupported`. `sys` knows
//! nothing of frame headers: the transport above frames messages on
//! sockets and sends them bare on pipes. `Stream::from_handle` adopts any
//! handle as what it is: an anonymous or byte-mode pipe end, or a disk
//! file, is a byte stream like a socket (`Stream::Plain`, `plain.rs`),
//! whose readiness is looked at with `PeekNamedPipe` when nothing can
//! signal it. Windows also adds what its thread
//! engine needs: `create_pipe_instance`, `connect_pipe`, `Event`,
//! `wait_any`, and `select_accept`/`clear_select` for TCP listening sockets.
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

/// What the operating system says about a connection's peer: the process
/// that connected (or made the pair), as it was when it did. A field the
/// platform does not report is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIds {
    /// The peer's process id.
    pub pid: Option<u32>,
    /// The peer's effective user id (Unix).
    pub uid: Option<u32>,
    /// The peer's effective group id (Unix).
    pub gid: Option<u32>,
    /// Whether the peer runs as this process's user: its uid is our
    /// effective uid (Unix), or its process token's user is ours (Windows;
    /// `None` when the peer's process could not be asked).
    pub same_user: Option<bool>,
}
