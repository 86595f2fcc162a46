//! `pipe()` and `pipe_simplex()`: connected pairs inside one process tree.

use crate::connection::{Connection, RecvHalf, SendHalf, simplex_pipe_ends};
use crate::error::Result;
use crate::sys;

/// A connected pair of duplex connections, like Python's `Pipe()`.
///
/// On Unix this is a socketpair; both descriptors are close-on-exec, so a
/// child process inherits neither unless you hand it over on purpose. On
/// Windows it is a message-mode named pipe with a random 128-bit name and
/// an owner-only DACL, as CPython makes it; neither handle is inheritable.
/// Both ends are trusted: nothing but this process could have created them.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when the system is out of descriptors.
pub fn pipe() -> Result<(Connection, Connection)> {
    let (a, b) = sys::Stream::pair()?;
    Ok((
        Connection::from_stream(a).into_pipe_end(),
        Connection::from_stream(b).into_pipe_end(),
    ))
}

/// A one-way pair, returned as `(receiver, sender)` like Python's
/// `Pipe(duplex=False)`. On Windows the pipe itself is one-way (inbound to
/// the receiver), as CPython creates it.
///
/// The direction is in the types: the receiver is a [`RecvHalf`], which has
/// no send method, and the sender a [`SendHalf`], which has no receive
/// method.
///
/// ```compile_fail,E0599
/// let (mut rx, _tx) = mpconn::pipe_simplex()?;
/// rx.send_bytes(b"the wrong way")?;
/// # Ok::<(), mpconn::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when the system is out of descriptors.
pub fn pipe_simplex() -> Result<(RecvHalf, SendHalf)> {
    let (r, w) = sys::Stream::pair_simplex()?;
    Ok(simplex_pipe_ends(r, w))
}
