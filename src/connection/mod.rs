//! `Connection`: the message API over any transport, and the trust typestate.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::handshake::Proof;
use crate::proto::codec::Codec;
use crate::sys;
use crate::transport::{Endpoint, MessageReader};

mod batch;
mod credentials;
#[cfg(unix)]
mod fds;
mod halves;
#[cfg(windows)]
mod handles;
mod io;
mod upgrade;

pub use batch::Batch;
#[cfg(unix)]
pub use fds::MAX_FDS;
pub use halves::{CloseHandle, RecvHalf, SendHalf};
pub(crate) use io::{Receiver, Sender};

/// The default limit on one incoming message: 64 MiB.
///
/// CPython has no limit short of 2^63 bytes. A frame over the limit is refused
/// from its header alone; raise it with
/// [`Connection::set_max_message_size`] for larger payloads.
pub const DEFAULT_MAX_MESSAGE: u64 = 64 * 1024 * 1024;

mod sealed {
    pub trait Sealed {}
}

/// Whether a connection's peer has been authenticated: [`Authenticated`] or
/// [`Unverified`]. Sealed: no other states exist.
pub trait Trust: sealed::Sealed + 'static {
    /// Turns a new, unverified connection into one of this state, given
    /// what its listener knows: `Some` proof of a finished handshake for an
    /// authenticated listener, `None` for one that runs no handshake.
    /// `None` when the state needs a proof that is missing.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn admit(conn: Connection<Unverified>, proof: Option<Proof>) -> Option<Connection<Self>>
    where
        Self: Sized;
}

/// The peer proved it holds the key (or the connection is one end of a
/// [`pipe()`](crate::pipe)). Typed [`recv`](Connection::recv) is available.
#[derive(Debug)]
pub enum Authenticated {}

/// Nobody checked who the peer is. Such a connection sends and receives bytes
/// and sends typed values, but it has **no typed `recv`**: decoding data from
/// an unknown peer does not compile.
///
/// ```compile_fail,E0599
/// # fn f(mut conn: mpconn::Connection<mpconn::Unverified>) {
/// let value: u32 = conn.recv().unwrap();
/// # }
/// ```
///
/// The same holds for the receiving half of a split:
///
/// ```compile_fail,E0599
/// # fn f(conn: mpconn::Connection<mpconn::Unverified>) {
/// let (_tx, mut rx) = conn.split();
/// let value: u32 = rx.recv().unwrap();
/// # }
/// ```
///
/// Bytes are fine, and so is an upgrade by handshake:
///
/// ```no_run
/// # fn f(mut conn: mpconn::Connection<mpconn::Unverified>) -> mpconn::Result<()> {
/// let raw: Vec<u8> = conn.recv_bytes()?;
/// let mut conn = conn.authenticate_as_client(b"a key of sixteen bytes+")?;
/// let value: u32 = conn.recv()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum Unverified {}

impl sealed::Sealed for Authenticated {}
impl sealed::Sealed for Unverified {}

impl Trust for Authenticated {
    #[allow(private_interfaces)]
    fn admit(conn: Connection<Unverified>, proof: Option<Proof>) -> Option<Connection<Self>> {
        Some(conn.prove(proof?))
    }
}

impl Trust for Unverified {
    #[allow(private_interfaces)]
    fn admit(conn: Connection<Unverified>, _proof: Option<Proof>) -> Option<Connection<Self>> {
        Some(conn)
    }
}

/// A message-oriented connection: Python's `multiprocessing.connection.Connection`.
///
/// Messages are framed exactly as CPython frames them, so the peer may be a
/// Python process. `T` records whether the peer was authenticated; only
/// `Connection<Authenticated>` (the default) can decode typed values.
///
/// A connection is its two directions, a [`SendHalf`] and a [`RecvHalf`]:
/// each method here is the half's own, and [`split`](Self::split) hands
/// them to two threads.
pub struct Connection<T: Trust = Authenticated> {
    tx: SendHalf<T>,
    rx: RecvHalf<T>,
}

impl<T: Trust> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", self.endpoint().stream())
            .finish()
    }
}

impl Connection<Unverified> {
    /// A connection over `stream`. Whoever is at the other end is unknown:
    /// every constructor yields `Unverified`.
    pub(crate) fn from_stream(stream: sys::Stream) -> Self {
        let endpoint = Arc::new(Endpoint::new(stream));
        Connection {
            rx: RecvHalf::new(Receiver::new(endpoint.clone(), DEFAULT_MAX_MESSAGE)),
            tx: SendHalf::new(Sender::new(endpoint)),
        }
    }

    /// A connection that goes on with `reader`, which has already read from
    /// `stream` (a listener's handshake): what it holds is read first.
    pub(crate) fn with_reader(
        stream: sys::Stream,
        reader: MessageReader,
        max_message: u64,
    ) -> Self {
        let endpoint = Arc::new(Endpoint::new(stream));
        Connection {
            rx: RecvHalf::new(Receiver::with_reader(endpoint.clone(), reader, max_message)),
            tx: SendHalf::new(Sender::new(endpoint)),
        }
    }

    /// The connection a finished handshake vouches for.
    /// In the encrypted mode, the proof's keys seal and open every message
    /// from here on.
    pub(crate) fn prove(mut self, proof: Proof) -> Connection<Authenticated> {
        if let Some(session) = proof.into_session() {
            let (sealer, opener) = session.split();
            self.tx.tx.seal(sealer);
            self.rx.rx.seal(opener);
        }
        self.retag()
    }

    /// One end of a `pipe()`: its peer is the other end, made by this
    /// process, so it needs no proof.
    pub(crate) fn into_pipe_end(self) -> Connection<Authenticated> {
        self.retag()
    }
}

/// The two ends of a simplex `pipe_simplex()`, which need no proof either.
pub(crate) fn simplex_pipe_ends(
    reader: sys::Stream,
    writer: sys::Stream,
) -> (RecvHalf<Authenticated>, SendHalf<Authenticated>) {
    let rx = Receiver::new(Arc::new(Endpoint::new(reader)), DEFAULT_MAX_MESSAGE);
    let tx = Sender::new(Arc::new(Endpoint::new(writer)));
    (RecvHalf::new(rx), SendHalf::new(tx))
}

impl<T: Trust> Connection<T> {
    /// Changes the trust marker, keeping everything read so far.
    fn retag<U: Trust>(self) -> Connection<U> {
        Connection {
            tx: self.tx.retag(),
            rx: self.rx.retag(),
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.tx.endpoint()
    }

    pub(crate) fn receiver(&mut self) -> &mut Receiver {
        self.rx.receiver()
    }

    pub(crate) fn receiver_ref(&self) -> &Receiver {
        self.rx.receiver_ref()
    }

    /// Sends a typed value: [`SendHalf::send`].
    ///
    /// # Errors
    /// As [`SendHalf::send`].
    pub fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.tx.send(value)
    }

    /// Sends a dynamic value as a pickle (feature `pickle`):
    /// [`SendHalf::send_pickle_value`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[cfg(feature = "pickle")]
    pub fn send_pickle_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        self.tx.send_pickle_value(value)
    }

    /// Sends `buf` as one message: [`SendHalf::send_bytes`].
    ///
    /// # Errors
    /// As [`send`](Self::send), without the codec error.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.tx.send_bytes(buf)
    }

    /// A corked writer that sends many messages in one system call; see [`Batch`].
    pub fn batch(&mut self) -> Batch<'_> {
        self.tx.batch()
    }

    /// Receives one message as bytes: [`RecvHalf::recv_bytes`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes`].
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.rx.recv_bytes()
    }

    /// [`RecvHalf::recv_bytes_timeout`]: a timeout loses nothing.
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes_timeout`].
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.rx.recv_bytes_timeout(timeout)
    }

    /// Receives one message into `buf`: [`RecvHalf::recv_bytes_into`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes_into`].
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv_bytes_into(buf)
    }

    /// Receives one message into `buf[offset..]`:
    /// [`RecvHalf::recv_bytes_into_at`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes_into_at`].
    pub fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        self.rx.recv_bytes_into_at(buf, offset)
    }

    /// Whether a message (or the end of stream) can be read within
    /// `timeout`: [`RecvHalf::poll`].
    ///
    /// # Errors
    /// As [`RecvHalf::poll`].
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.rx.poll(timeout)
    }

    /// How typed values are encoded: [`Codec::Bincode`] by default, or
    /// `Codec::Pickle` (feature `pickle`) to exchange typed values with a
    /// Python peer's `Connection.send()` and `recv()`.
    pub fn codec(&self) -> Codec {
        self.tx.codec()
    }

    /// Switches the codec of typed sends and receives, from the next message on.
    pub fn set_codec(&mut self, codec: Codec) {
        self.tx.set_codec(codec);
        self.rx.set_codec(codec);
    }

    /// The largest incoming message this connection accepts.
    pub fn max_message_size(&self) -> u64 {
        self.rx.max_message_size()
    }

    /// Sets the largest incoming message this connection accepts:
    /// [`RecvHalf::set_max_message_size`].
    pub fn set_max_message_size(&mut self, max: u64) {
        self.rx.set_max_message_size(max);
    }

    /// The address of the peer, as the operating system reports it: the
    /// IP address and port of a TCP peer, the path of a Unix-socket peer
    /// that bound one (clients usually do not), `None` for unnamed sockets,
    /// `pipe()` pairs and named pipes. Unlike
    /// [`Listener::last_accepted`](crate::Listener::last_accepted), it
    /// belongs to this connection, whichever thread accepted it.
    pub fn peer_address(&self) -> Option<crate::Address> {
        crate::socket::peer_address(&self.endpoint().stream().peer_addr()?)
    }

    /// A handle that closes this connection from any thread, waking a
    /// blocked receive (or send) with [`Error::Closed`](crate::Error::Closed).
    pub fn close_handle(&self) -> CloseHandle {
        self.tx.close_handle()
    }

    /// Splits the connection into a sending half and a receiving half that
    /// two threads can use at once. Each half has its own `&mut self`, so two
    /// threads can never interleave the bytes of two frames. The trust marker
    /// carries over: the receiving half of an unverified connection has no
    /// typed `recv` either.
    pub fn split(self) -> (SendHalf<T>, RecvHalf<T>) {
        (self.tx, self.rx)
    }

    pub(crate) fn from_halves(tx: SendHalf<T>, rx: RecvHalf<T>) -> Self {
        Connection { tx, rx }
    }

    /// Closes this process's descriptor of the connection, as CPython's
    /// `Connection.close()` does; dropping it does the same, and `close`
    /// exists to make the intent visible. Another process holding a copy
    /// of the descriptor (a child it was passed to) keeps the connection
    /// working, and the peer sees end of stream once the last copy is
    /// closed. To wake a thread of this process blocked on the connection,
    /// use a [`CloseHandle`], which ends the connection for every holder.
    ///
    /// # Errors
    /// None today: closing a descriptor cannot fail in a way a caller could
    /// act on. The `Result` leaves room for transports that flush on close.
    pub fn close(self) -> Result<()> {
        drop(self);
        Ok(())
    }

    /// Frees the read buffer and the encoding scratch space if nothing is
    /// waiting in them: an idle connection then holds no buffer memory.
    pub fn shrink_buffers(&mut self) {
        self.rx.shrink_buffers();
        self.tx.shrink_buffers();
    }
}

impl Connection<Authenticated> {
    /// Receives one typed value: [`RecvHalf::recv`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv`].
    pub fn recv<V: DeserializeOwned>(&mut self) -> Result<V> {
        self.rx.recv()
    }

    /// Receives one pickle of any shape as a dynamic value (feature
    /// `pickle`): [`RecvHalf::recv_pickle_value`].
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "pickle")]
    pub fn recv_pickle_value(&mut self) -> Result<crate::pickle::Value> {
        self.rx.recv_pickle_value()
    }

    /// [`RecvHalf::recv_timeout`]: a timeout loses nothing.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), plus the timeout.
    pub fn recv_timeout<V: DeserializeOwned>(&mut self, timeout: Duration) -> Result<V> {
        self.rx.recv_timeout(timeout)
    }
}

impl Connection<Unverified> {
    /// Trusts the peer without any proof. Only for peers on a channel you
    /// control completely (a socket you created and handed to a child, say):
    /// anyone who can reach the address can send values for your decoder.
    pub fn dangerous_trust_without_authentication(self) -> Connection<Authenticated> {
        self.retag()
    }

    /// Runs the handshake as the listener's side (deliver a challenge, then
    /// answer one) with default options: CPython's `deliver_challenge` then
    /// `answer_challenge`. [`authenticate_as_server_with`](Self::authenticate_as_server_with)
    /// takes options (legacy MD5 for Python 3.8 to 3.11, deadlines, ...).
    ///
    /// # Errors
    /// As [`authenticate_as_server_with`](Self::authenticate_as_server_with).
    pub fn authenticate_as_server(self, authkey: &[u8]) -> Result<Connection<Authenticated>> {
        self.authenticate_as_server_with(authkey, &crate::HandshakeOptions::default())
    }

    /// Runs the handshake as the client's side (answer a challenge, then
    /// deliver one) with default options: CPython's `answer_challenge` then
    /// `deliver_challenge`. [`authenticate_as_client_with`](Self::authenticate_as_client_with)
    /// takes options.
    ///
    /// # Errors
    /// As [`authenticate_as_client_with`](Self::authenticate_as_client_with).
    pub fn authenticate_as_client(self, authkey: &[u8]) -> Result<Connection<Authenticated>> {
        self.authenticate_as_client_with(authkey, &crate::HandshakeOptions::default())
    }
}

pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T: Trust> Connection<T> {
    /// Takes the stream out, for another owner. Fails, with the connection
    /// back whole, when bytes already read would be lost, or when a close
    /// handle holds the endpoint at that moment.
    // The error is the TryFrom conversions' own: the connection comes back
    // whole, by value, as std's conversions do.
    #[allow(clippy::result_large_err)]
    fn into_stream(self) -> std::result::Result<sys::Stream, (crate::Error, Self)> {
        let read_ahead =
            self.receiver_ref().has_buffered() || self.endpoint().stream().has_buffered();
        if read_ahead {
            let e = std::io::Error::other("bytes already read would be lost");
            return Err((crate::Error::Io(e), self));
        }
        let Connection { tx, rx } = self;
        let (max, codec) = (rx.max_message_size(), rx.codec());
        drop(rx);
        match tx.tx.into_endpoint() {
            Ok(endpoint) => Ok(endpoint.into_stream()),
            Err(sender) => {
                let mut rx = RecvHalf::new(sender.new_receiver(max));
                rx.set_codec(codec);
                let e = std::io::Error::other("a close handle is closing the connection");
                Err((
                    crate::Error::Io(e),
                    Connection::from_halves(SendHalf::new(sender), rx),
                ))
            }
        }
    }
}

/// A connection taken apart, to move between the blocking and the async
/// types: its stream, what its reader read ahead, and its settings.
#[cfg_attr(
    not(any(feature = "tokio", all(unix, feature = "async-io"))),
    allow(
        dead_code,
        reason = "only the async connections take connections apart"
    )
)]
pub(crate) struct Parts {
    pub(crate) stream: sys::Stream,
    pub(crate) reader: MessageReader,
    pub(crate) send_codec: Codec,
    pub(crate) recv_codec: Codec,
    /// The encrypted mode's sending keys (the reader has its own).
    pub(crate) sealer: Option<crate::proto::noise::Sealer>,
}

#[cfg_attr(
    not(any(feature = "tokio", all(unix, feature = "async-io"))),
    allow(
        dead_code,
        reason = "only the async connections take connections apart"
    )
)]
impl<T: Trust> Connection<T> {
    /// Takes the connection apart, keeping what was read ahead. Fails, with
    /// the connection back whole, when a close handle holds the endpoint
    /// at that moment. An empty message that a Windows pipe's readiness
    /// probe took stays inside the pipe, which goes along whole.
    #[allow(clippy::result_large_err)]
    pub(crate) fn into_parts(self) -> std::result::Result<Parts, (crate::Error, Self)> {
        let Connection { mut tx, rx } = self;
        let send_codec = tx.codec();
        let max = rx.max_message_size();
        let (reader, recv_codec) = rx.rx.into_reader();
        let sealer = tx.tx.take_sealer();
        match tx.tx.into_endpoint() {
            Ok(endpoint) => Ok(Parts {
                stream: endpoint.into_stream(),
                reader,
                send_codec,
                recv_codec,
                sealer,
            }),
            Err(mut sender) => {
                if let Some(sealer) = sealer {
                    sender.seal(sealer);
                }
                let endpoint = sender.endpoint_arc();
                let mut rx = RecvHalf::new(Receiver::with_reader(endpoint, reader, max));
                rx.set_codec(recv_codec);
                let e = std::io::Error::other("a close handle is closing the connection");
                Err((
                    crate::Error::Io(e),
                    Connection::from_halves(SendHalf::new(sender), rx),
                ))
            }
        }
    }

    /// Puts a connection together from parts that a connection of the same
    /// trust was taken apart into (an async one, say): the trust goes with
    /// the parts, and nothing here creates it.
    pub(crate) fn from_parts(parts: Parts) -> Connection<T> {
        let max = parts.reader.max_message();
        let endpoint = Arc::new(Endpoint::new(parts.stream));
        let mut conn = Connection::<Unverified> {
            rx: RecvHalf::new(Receiver::with_reader(endpoint.clone(), parts.reader, max)),
            tx: SendHalf::new(Sender::new(endpoint)),
        };
        conn.tx.set_codec(parts.send_codec);
        conn.rx.set_codec(parts.recv_codec);
        if let Some(sealer) = parts.sealer {
            conn.tx.tx.seal(sealer);
        }
        conn.retag()
    }
}

#[cfg(unix)]
mod unix {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

    use super::{Connection, RecvHalf, SendHalf, Trust, Unverified};
    use crate::error::Error;
    use crate::sys;

    impl<T: Trust> AsFd for Connection<T> {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.endpoint().stream().as_fd()
        }
    }

    impl<T: Trust> AsRawFd for Connection<T> {
        fn as_raw_fd(&self) -> RawFd {
            self.endpoint().stream().as_raw_fd()
        }
    }

    impl<T: Trust> AsFd for SendHalf<T> {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.endpoint().stream().as_fd()
        }
    }

    impl<T: Trust> AsRawFd for SendHalf<T> {
        fn as_raw_fd(&self) -> RawFd {
            self.endpoint().stream().as_raw_fd()
        }
    }

    impl<T: Trust> AsFd for RecvHalf<T> {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.receiver_ref().endpoint().stream().as_fd()
        }
    }

    impl<T: Trust> AsRawFd for RecvHalf<T> {
        fn as_raw_fd(&self) -> RawFd {
            self.receiver_ref().endpoint().stream().as_raw_fd()
        }
    }

    /// Adopts a connected stream socket, a pipe end inherited from a parent
    /// process, say. Nobody vouches for its peer, so it starts
    /// [`Unverified`]; authenticate it, or trust it explicitly.
    impl From<OwnedFd> for Connection<Unverified> {
        fn from(fd: OwnedFd) -> Self {
            Connection::from_stream(sys::Stream::from_fd(fd))
        }
    }

    /// Gives up the descriptor, to hand it to a child process for example.
    ///
    /// Fails with the connection back when it has read ahead bytes that the
    /// descriptor would lose, or when a [`CloseHandle`](super::CloseHandle)
    /// is closing it at that moment.
    impl<T: Trust> TryFrom<Connection<T>> for OwnedFd {
        type Error = (Error, Connection<T>);

        fn try_from(conn: Connection<T>) -> std::result::Result<OwnedFd, Self::Error> {
            conn.into_stream().map(OwnedFd::from)
        }
    }
}

#[cfg(windows)]
mod windows {
    use std::os::windows::io::{
        AsRawHandle, AsRawSocket, AsSocket, BorrowedHandle, BorrowedSocket, OwnedHandle,
        OwnedSocket, RawHandle, RawSocket,
    };

    use super::{Connection, RecvHalf, SendHalf, Trust, Unverified};
    use crate::error::Error;
    use crate::sys;

    impl<T: Trust> AsRawHandle for SendHalf<T> {
        fn as_raw_handle(&self) -> RawHandle {
            self.endpoint().stream().as_raw_handle()
        }
    }

    impl<T: Trust> AsRawHandle for RecvHalf<T> {
        fn as_raw_handle(&self) -> RawHandle {
            self.receiver_ref().endpoint().stream().as_raw_handle()
        }
    }

    impl<T: Trust> SendHalf<T> {
        /// The handle of a pipe end (named or anonymous) or file, borrowed;
        /// `None` for TCP.
        pub fn as_pipe_handle(&self) -> Option<BorrowedHandle<'_>> {
            self.endpoint().stream().as_pipe_handle()
        }
    }

    impl<T: Trust> RecvHalf<T> {
        /// The handle of a pipe end (named or anonymous) or file, borrowed;
        /// `None` for TCP.
        pub fn as_pipe_handle(&self) -> Option<BorrowedHandle<'_>> {
            self.receiver_ref().endpoint().stream().as_pipe_handle()
        }
    }

    /// The pipe handle of a named-pipe connection, or the socket of a TCP
    /// connection as a handle: what CPython's `Connection.fileno()` gives.
    impl<T: Trust> AsRawHandle for Connection<T> {
        fn as_raw_handle(&self) -> RawHandle {
            self.endpoint().stream().as_raw_handle()
        }
    }

    /// Adopts a handle, inherited from a parent process for example, as
    /// what it turns out to be:
    ///
    /// - a **message-mode named pipe** opened for overlapped I/O, as mpconn
    ///   and CPython open them: one pipe message per message, no header;
    /// - a **byte-mode pipe end**: an anonymous pipe (`CreatePipe`,
    ///   synchronous) or a byte-mode named pipe (synchronous or overlapped,
    ///   Rust's `ChildStdout` for one): framed as on a socket, with
    ///   CPython's headers;
    /// - a **disk file** opened for synchronous I/O: framed likewise, its
    ///   end being the end of stream;
    /// - a **socket**: as with `From<OwnedSocket>`.
    ///
    /// The kind comes from `GetFileType`, `GetNamedPipeInfo` (message or
    /// byte pipe) and `NtQueryInformationFile(FileModeInformation)`
    /// (overlapped or not). A write-only pipe end opened without
    /// `FILE_READ_ATTRIBUTES` hides its type; it is taken for a message
    /// pipe (the writing end of CPython's `Pipe(duplex=False)` is one;
    /// `CreatePipe`'s writing end has the right and is recognised). Any
    /// other handle (a console, a message pipe opened for synchronous I/O,
    /// a file opened for overlapped I/O) makes a connection whose every
    /// call fails with an [`Error::Io`] of kind `Unsupported` that says why.
    ///
    /// **A synchronous pipe** has no overlapped I/O, so nothing signals
    /// that bytes came: a receive, [`poll`](Connection::poll) and
    /// [`wait()`](crate::wait) look at it with `PeekNamedPipe`, pausing
    /// from 50 µs up to a millisecond in between, and so learn of bytes or
    /// the end at most about a millisecond late. A read takes only the
    /// bytes that are there, so a receive with a timeout never blocks past
    /// it. Sends block until the pipe has taken the bytes (a send's
    /// deadline cannot be kept there). A [`CloseHandle`](super::CloseHandle)
    /// wakes a receive, `poll` or `wait()` within that pause, and on an
    /// overlapped handle cancels a send in flight; a send blocked on a full
    /// synchronous pipe stays blocked until the reader takes the bytes or
    /// goes away (only `CancelSynchronousIo` on its thread could wake it).
    /// Other holders of the pipe are not affected.
    ///
    /// Nobody vouches for the peer, so the connection starts
    /// [`Unverified`]; authenticate it, or trust it explicitly.
    impl From<OwnedHandle> for Connection<Unverified> {
        fn from(handle: OwnedHandle) -> Self {
            Connection::from_stream(sys::Stream::from_handle(handle))
        }
    }

    /// Adopts a connected TCP socket.
    impl From<OwnedSocket> for Connection<Unverified> {
        fn from(socket: OwnedSocket) -> Self {
            Connection::from_stream(sys::Stream::Socket(socket.into()))
        }
    }

    /// Gives up the pipe (or file) handle, to hand it to a child process
    /// for example.
    ///
    /// Fails with the connection back for a TCP connection, when it has read
    /// ahead bytes that the handle would lose, or when a
    /// [`CloseHandle`](super::CloseHandle) is closing it at that moment.
    impl<T: Trust> TryFrom<Connection<T>> for OwnedHandle {
        type Error = (Error, Connection<T>);

        fn try_from(conn: Connection<T>) -> std::result::Result<OwnedHandle, Self::Error> {
            if conn.as_pipe_handle().is_none() {
                let e = std::io::Error::other("a TCP connection has a socket, not a handle");
                return Err((Error::Io(e), conn));
            }
            match conn.into_stream()? {
                sys::Stream::Pipe(pipe) => Ok(pipe.into()),
                sys::Stream::Plain(plain) => Ok(plain.into()),
                sys::Stream::Socket(_) => unreachable!("checked to be a pipe above"),
            }
        }
    }

    /// Gives up the socket of a TCP connection; fails with the connection
    /// back for a named pipe, and as the handle conversion does.
    impl<T: Trust> TryFrom<Connection<T>> for OwnedSocket {
        type Error = (Error, Connection<T>);

        fn try_from(conn: Connection<T>) -> std::result::Result<OwnedSocket, Self::Error> {
            if conn.as_socket().is_none() {
                let e = std::io::Error::other("a named-pipe connection has a handle, not a socket");
                return Err((Error::Io(e), conn));
            }
            match conn.into_stream()? {
                sys::Stream::Socket(socket) => Ok(socket.into()),
                sys::Stream::Pipe(_) | sys::Stream::Plain(_) => {
                    unreachable!("checked to be a socket above")
                }
            }
        }
    }

    impl<T: Trust> Connection<T> {
        /// The socket of a TCP connection; `None` for a named pipe.
        pub fn as_raw_socket(&self) -> Option<RawSocket> {
            self.as_socket().map(|s| s.as_raw_socket())
        }

        /// The socket of a TCP connection, borrowed; `None` for a named pipe.
        pub fn as_socket(&self) -> Option<BorrowedSocket<'_>> {
            self.endpoint()
                .stream()
                .as_socket()
                .map(AsSocket::as_socket)
        }

        /// The handle of a pipe (named or anonymous) or file connection,
        /// borrowed; `None` for TCP.
        pub fn as_pipe_handle(&self) -> Option<BorrowedHandle<'_>> {
            self.endpoint().stream().as_pipe_handle()
        }
    }
}
