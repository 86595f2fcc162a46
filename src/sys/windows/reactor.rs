//! Registration with tokio's reactor on Windows, which has no `AsyncFd`.
//!
//! A TCP socket is handed over to tokio: a `tokio::net::TcpStream` owns it
//! and watches its readiness, and the connection's reads and writes run
//! inside its `try_io` on a view of the same socket, a `Stream` that
//! borrows the handle and never closes it. A named pipe is not registered
//! at all: its non-blocking calls (`pipe/nonblocking.rs`) wake the task
//! themselves. A plain handle has nothing that could say when it is ready.

use std::io;
use std::mem::ManuallyDrop;
use std::os::windows::io::{AsRawSocket, FromRawSocket};

use socket2::Socket;

use super::Stream;

/// A stream as tokio holds it.
#[derive(Debug)]
pub struct Registered(Kind);

#[derive(Debug)]
enum Kind {
    /// The socket belongs to `tcp`; `view` only borrows its handle.
    Socket {
        tcp: tokio::net::TcpStream,
        view: ManuallyDrop<Stream>,
    },
    /// A named pipe, as it is.
    Pipe(Stream),
}

/// Registers a non-blocking `stream` with the current tokio runtime's
/// reactor. A plain handle fails with `Unsupported`, and is closed.
pub fn tokio_register(stream: Stream) -> io::Result<Registered> {
    match stream {
        Stream::Socket(socket) => {
            let tcp = tokio::net::TcpStream::from_std(socket.into())?;
            // SAFETY: the handle is `tcp`'s socket, open for as long as `tcp`
            // lives. The view lives beside `tcp` in the same value and is
            // lent out only as a borrow of that value; being ManuallyDrop,
            // it is never dropped, so it never closes the handle.
            let view = unsafe { Socket::from_raw_socket(tcp.as_raw_socket()) };
            Ok(Registered(Kind::Socket {
                tcp,
                view: ManuallyDrop::new(Stream::Socket(view)),
            }))
        }
        Stream::Pipe(_) => Ok(Registered(Kind::Pipe(stream))),
        Stream::Plain(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an anonymous pipe, a byte-mode pipe or a file cannot be async: \
             nothing signals when it is ready",
        )),
    }
}

impl Registered {
    /// The stream.
    pub fn get(&self) -> &Stream {
        match &self.0 {
            Kind::Socket { view, .. } => view,
            Kind::Pipe(stream) => stream,
        }
    }

    /// The tokio socket that watches a TCP stream's readiness.
    pub fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        match &self.0 {
            Kind::Socket { tcp, .. } => Some(tcp),
            Kind::Pipe(_) => None,
        }
    }

    /// Deregisters the stream and gives it back, still non-blocking.
    pub fn into_inner(self) -> io::Result<Stream> {
        match self.0 {
            // The view goes without being dropped: the socket is the one
            // that comes back.
            Kind::Socket { tcp, view: _ } => Ok(Stream::Socket(tcp.into_std()?.into())),
            Kind::Pipe(stream) => Ok(stream),
        }
    }
}
