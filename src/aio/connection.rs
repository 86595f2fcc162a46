//! The async `Connection`: a [`SendHalf`] and a [`RecvHalf`] over one
//! registered stream, with the trust typestate of the blocking type.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Polled, RecvHalf, Runtime, SendHalf, Timer};
use crate::connection::{Authenticated, Parts, Trust, Unverified};
use crate::error::{Error, Result};
use crate::handshake::{Exchange, HANDSHAKE_MESSAGE_LIMIT, HandshakeOptions, Proof, Step};
use crate::key::AuthKey;
use crate::proto::auth::Role;
use crate::proto::codec::Codec;
use crate::sys::{self, Interest};
use crate::transport::MessageReader;

/// An async message-oriented connection: the async form of
/// [`crate::Connection`], on the runtime `R` ([`mpconn::tokio::Connection`]
/// and `mpconn::async_io::Connection` on Unix name it for theirs).
///
/// The messages, the framing, the codecs and the trust marker are those of
/// the blocking type, and so is the peer: a CPython process, a blocking
/// mpconn connection, or another async one. Only
/// `Connection<R, Authenticated>` decodes typed values:
///
/// ```compile_fail,E0599
/// # #[cfg(feature = "tokio")]
/// # async fn f(mut conn: mpconn::tokio::Connection<mpconn::Unverified>) {
/// let value: u32 = conn.recv().await.unwrap();
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # compile_error!("E0599 stands in for the feature");
/// ```
///
/// nor does the receiving half of its split:
///
/// ```compile_fail,E0599
/// # #[cfg(feature = "tokio")]
/// # async fn f(conn: mpconn::tokio::Connection<mpconn::Unverified>) {
/// let (_tx, mut rx) = conn.split();
/// let value: u32 = rx.recv().await.unwrap();
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # compile_error!("E0599 stands in for the feature");
/// ```
///
/// Bytes are fine, and so is an upgrade by handshake:
///
/// ```no_run
/// # #[cfg(feature = "tokio")]
/// # async fn f(mut conn: mpconn::tokio::Connection<mpconn::Unverified>) -> mpconn::Result<()> {
/// let raw: Vec<u8> = conn.recv_bytes().await?;
/// let mut conn = conn.authenticate_as_client(b"a key of sixteen bytes+").await?;
/// let value: u32 = conn.recv().await?;
/// # Ok(()) }
/// ```
///
/// **Cancellation.** Receives are cancellation safe: a receive dropped by
/// `select!` or a timeout loses nothing, and the next receive returns the
/// same message whole. A send dropped after its first byte went out is
/// finished by the next send or [`flush`](Self::flush) (see [`SendHalf`]).
/// On a Windows named pipe a message is committed whole or not at all, and
/// one whose send was dropped in flight finishes by itself (see
/// [`aio`](crate::aio)).
///
/// [`mpconn::tokio::Connection`]: crate::tokio::Connection
pub struct Connection<R: Runtime, T: Trust = Authenticated> {
    tx: SendHalf<R, T>,
    rx: RecvHalf<R, T>,
}

impl<R: Runtime, T: Trust> fmt::Debug for Connection<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("trust", &std::any::type_name::<T>())
            .field("stream", R::get::<crate::sys::Stream>(&self.rx.io))
            .finish()
    }
}

impl<R: Runtime, T: Trust> Connection<R, T> {
    /// Moves a blocking connection onto the runtime, keeping everything it
    /// had read and not yet received, and its trust: a connection accepted
    /// by a blocking [`Listener`](crate::Listener), say. Its descriptor
    /// becomes non-blocking (for every process holding a copy of it; on
    /// Windows a socket does, a named pipe is left as it is).
    ///
    /// # Errors
    /// [`Error::Io`] when the descriptor cannot be registered with the
    /// runtime's reactor, or when a [`CloseHandle`](crate::CloseHandle)
    /// holds the connection at that moment; the connection is lost then.
    /// On Windows, an anonymous pipe, a byte-mode pipe or a file (nothing
    /// signals when they are ready) fails with `ErrorKind::Unsupported`.
    pub fn from_blocking(conn: crate::Connection<T>) -> Result<Self> {
        let parts = conn.into_parts().map_err(|(e, _)| e)?;
        let io = Arc::new(super::register::<R>(parts.stream)?);
        let mut tx = SendHalf::new(io.clone(), parts.send_codec);
        if let Some(sealer) = parts.sealer {
            tx.seal(sealer);
        }
        Ok(Connection {
            tx,
            rx: RecvHalf::new(io, parts.reader, parts.recv_codec),
        })
    }

    /// Makes a blocking connection of this one again, keeping everything
    /// read and not yet received; the rest of a message whose send was
    /// dropped half-way is written first. Its descriptor becomes blocking
    /// again.
    ///
    /// # Errors
    /// [`Error::Io`] when that rest cannot be written, or the runtime
    /// cannot let go of the descriptor; the connection is lost then.
    pub async fn into_blocking(mut self) -> Result<crate::Connection<T>> {
        self.tx.flush().await?;
        let Connection { mut tx, rx } = self;
        let send_codec = tx.codec();
        let sealer = tx.take_sealer();
        let RecvHalf {
            io,
            reader,
            codec: recv_codec,
            ..
        } = rx;
        drop(tx);
        // With both halves gone, this is the only holder of the registration.
        let io = Arc::try_unwrap(io)
            .map_err(|_| Error::Io(std::io::Error::other("the stream is still shared")))?;
        let stream = super::deregister::<R>(io)?;
        Ok(crate::Connection::from_parts(Parts {
            stream,
            reader,
            send_codec,
            recv_codec,
            sealer,
        }))
    }
}

impl<R: Runtime, T: Trust> Connection<R, T> {
    fn retag<U: Trust>(self) -> Connection<R, U> {
        Connection {
            tx: self.tx.retag(),
            rx: self.rx.retag(),
        }
    }

    /// Sends a typed value: [`SendHalf::send`].
    ///
    /// # Errors
    /// As [`SendHalf::send`].
    pub async fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.tx.send(value).await
    }

    /// Sends a dynamic value as a pickle (feature `pickle`):
    /// [`SendHalf::send_pickle_value`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[cfg(feature = "pickle")]
    pub async fn send_pickle_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        self.tx.send_pickle_value(value).await
    }

    /// Sends `buf` as one message: [`SendHalf::send_bytes`].
    ///
    /// # Errors
    /// As [`SendHalf::send_bytes`].
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.tx.send_bytes(buf).await
    }

    /// [`SendHalf::send_bytes_timeout`].
    ///
    /// # Errors
    /// As [`SendHalf::send_bytes_timeout`].
    pub async fn send_bytes_timeout(&mut self, buf: &[u8], timeout: Duration) -> Result<()> {
        self.tx.send_bytes_timeout(buf, timeout).await
    }

    /// Writes out the rest of a message whose send was dropped half-way:
    /// [`SendHalf::flush`].
    ///
    /// # Errors
    /// As [`SendHalf::flush`].
    pub async fn flush(&mut self) -> Result<()> {
        self.tx.flush().await
    }

    /// Receives one message as bytes: [`RecvHalf::recv_bytes`].
    /// Cancellation safe.
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes`].
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.rx.recv_bytes().await
    }

    /// [`RecvHalf::recv_bytes_timeout`]: a timeout loses nothing.
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes_timeout`].
    pub async fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.rx.recv_bytes_timeout(timeout).await
    }

    /// Receives one message into `buf`: [`RecvHalf::recv_bytes_into`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes_into`].
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv_bytes_into(buf).await
    }

    /// Receives one message into `buf[offset..]`:
    /// [`RecvHalf::recv_bytes_into_at`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_bytes_into_at`].
    pub async fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        self.rx.recv_bytes_into_at(buf, offset).await
    }

    /// Whether a message (or the end of stream) can be read within
    /// `timeout`: [`RecvHalf::poll`].
    ///
    /// # Errors
    /// As [`RecvHalf::poll`].
    pub async fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.rx.poll(timeout).await
    }

    /// How typed values are encoded and decoded.
    pub fn codec(&self) -> Codec {
        self.tx.codec()
    }

    /// Switches the codec of typed sends and receives, from the next
    /// message on.
    pub fn set_codec(&mut self, codec: Codec) {
        self.tx.set_codec(codec);
        self.rx.set_codec(codec);
    }

    /// The largest incoming message this connection accepts.
    pub fn max_message_size(&self) -> u64 {
        self.rx.max_message_size()
    }

    /// Sets the largest incoming message this connection accepts.
    pub fn set_max_message_size(&mut self, max: u64) {
        self.rx.set_max_message_size(max);
    }

    /// The address of the peer, as the operating system reports it (see
    /// [`crate::Connection::peer_address`]).
    pub fn peer_address(&self) -> Option<crate::Address> {
        crate::socket::peer_address(&R::get(&self.rx.io).peer_addr()?)
    }

    /// Who is at the other end of a Unix-domain socket: see
    /// [`crate::Connection::peer_credentials`].
    ///
    /// # Errors
    /// As [`crate::Connection::peer_credentials`].
    pub fn peer_credentials(&self) -> Result<crate::PeerCredentials> {
        crate::PeerCredentials::of(R::get::<crate::sys::Stream>(&self.rx.io))
    }

    /// Splits the connection into a sending half and a receiving half, for
    /// two tasks. The trust marker carries over.
    pub fn split(self) -> (SendHalf<R, T>, RecvHalf<R, T>) {
        (self.tx, self.rx)
    }

    /// Puts the halves of one connection back together.
    ///
    /// # Errors
    /// Gives both halves back when they come from different connections.
    #[allow(clippy::type_complexity)]
    pub fn reunite(
        tx: SendHalf<R, T>,
        rx: RecvHalf<R, T>,
    ) -> std::result::Result<Self, Box<(SendHalf<R, T>, RecvHalf<R, T>)>> {
        if !Arc::ptr_eq(&tx.io, &rx.io) {
            return Err(Box::new((tx, rx)));
        }
        Ok(Connection { tx, rx })
    }

    /// Frees the read buffer and the encoding scratch space if nothing is
    /// waiting in them.
    pub fn shrink_buffers(&mut self) {
        self.tx.shrink_buffers();
        self.rx.shrink_buffers();
    }
}

impl<R: Runtime> Connection<R, Authenticated> {
    /// Receives one typed value: [`RecvHalf::recv`]. Cancellation safe.
    ///
    /// # Errors
    /// As [`RecvHalf::recv`].
    pub async fn recv<V: DeserializeOwned>(&mut self) -> Result<V> {
        self.rx.recv().await
    }

    /// [`RecvHalf::recv_timeout`]: a timeout loses nothing.
    ///
    /// # Errors
    /// As [`RecvHalf::recv_timeout`].
    pub async fn recv_timeout<V: DeserializeOwned>(&mut self, timeout: Duration) -> Result<V> {
        self.rx.recv_timeout(timeout).await
    }

    /// Receives one pickle as a dynamic value (feature `pickle`):
    /// [`RecvHalf::recv_pickle_value`].
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "pickle")]
    pub async fn recv_pickle_value(&mut self) -> Result<crate::pickle::Value> {
        self.rx.recv_pickle_value().await
    }
}

impl<R: Runtime> Connection<R, Unverified> {
    /// A connection over a stream nobody vouches for.
    pub(super) fn from_io(io: R::Io<sys::Stream>, max_message: u64, codec: Codec) -> Self {
        let io = Arc::new(io);
        let reader = MessageReader::new(R::get(&io), max_message);
        Connection {
            tx: SendHalf::new(io.clone(), codec),
            rx: RecvHalf::new(io, reader, codec),
        }
    }

    /// Trusts the peer without any proof: see
    /// [`crate::Connection::dangerous_trust_without_authentication`].
    pub fn dangerous_trust_without_authentication(self) -> Connection<R, Authenticated> {
        self.retag()
    }

    /// Runs the handshake as the listener's side with default options:
    /// [`crate::Connection::authenticate_as_server`], without blocking.
    ///
    /// # Errors
    /// As [`crate::Connection::authenticate_as_server_with`].
    pub async fn authenticate_as_server(self, authkey: &[u8]) -> Result<Connection<R>> {
        self.authenticate_as_server_with(authkey, &HandshakeOptions::default())
            .await
    }

    /// Runs the handshake as the client's side with default options:
    /// [`crate::Connection::authenticate_as_client`], without blocking.
    ///
    /// # Errors
    /// As [`crate::Connection::authenticate_as_client_with`].
    pub async fn authenticate_as_client(self, authkey: &[u8]) -> Result<Connection<R>> {
        self.authenticate_as_client_with(authkey, &HandshakeOptions::default())
            .await
    }

    /// [`crate::Connection::authenticate_as_server_with`], without blocking.
    ///
    /// # Errors
    /// As [`crate::Connection::authenticate_as_server_with`].
    pub async fn authenticate_as_server_with(
        self,
        authkey: &[u8],
        options: &HandshakeOptions,
    ) -> Result<Connection<R>> {
        self.authenticate(options, Role::Server, &AuthKey::new(authkey))
            .await
    }

    /// [`crate::Connection::authenticate_as_client_with`], without blocking.
    ///
    /// # Errors
    /// As [`crate::Connection::authenticate_as_client_with`].
    pub async fn authenticate_as_client_with(
        self,
        authkey: &[u8],
        options: &HandshakeOptions,
    ) -> Result<Connection<R>> {
        self.authenticate(options, Role::Client, &AuthKey::new(authkey))
            .await
    }

    /// Runs a whole handshake in `role`, reading through the connection's
    /// own reader, so that what the peer sent behind it stays to be received.
    /// The future is not meant to be resumed after a drop: dropping it
    /// drops the connection.
    pub(super) async fn authenticate(
        mut self,
        options: &HandshakeOptions,
        role: Role,
        key: &AuthKey,
    ) -> Result<Connection<R>> {
        let mut exchange = Exchange::new(options.start(role, key, Instant::now())?);
        let max = self.rx.max_message_size();
        self.rx.set_max_message_size(HANDSHAKE_MESSAGE_LIMIT);
        let proof = drive::<R>(&self.rx.io, &mut self.rx.reader, &mut exchange).await;
        self.rx.set_max_message_size(max);
        let proof: Proof = proof?;
        if let Some(session) = proof.into_session() {
            let (sealer, opener) = session.split();
            self.tx.seal(sealer);
            self.rx.reader.seal(opener);
        }
        Ok(self.retag())
    }
}

/// Runs a handshake to its end over a registered stream: the blocking
/// driver's loop, with the runtime's readiness and timer in place of
/// `poll(2)`.
async fn drive<R: Runtime>(
    io: &R::Io<sys::Stream>,
    reader: &mut MessageReader,
    exchange: &mut Exchange,
) -> Result<Proof> {
    let mut timer = Timer::<R>::default();
    std::future::poll_fn(|cx| {
        loop {
            {
                let polled = Polled::<R>::new(io, cx);
                let interest = match exchange.step(&polled, reader) {
                    Step::Done(proof) => return std::task::Poll::Ready(Ok(proof)),
                    Step::Failed(e) => return std::task::Poll::Ready(Err(Error::Auth(e))),
                    Step::Wait(interest) => interest,
                };
                // See `Exchange::drive_blocking`: our pipelined challenge
                // makes a CPython server write twice; ask TCP not to delay
                // our ACK.
                if interest == Interest::Readable && exchange.handshake().awaiting_verdict() {
                    polled.stream().quick_ack();
                }
            }
            match timer.poll_at(cx, exchange.handshake().poll_timeout()) {
                std::task::Poll::Ready(()) => exchange.handle_timeout(Instant::now()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    })
    .await
}

#[cfg(unix)]
impl<R: Runtime, T: Trust> std::os::fd::AsRawFd for Connection<R, T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        R::get(&self.rx.io).as_raw_fd()
    }
}

#[cfg(unix)]
impl<R: Runtime, T: Trust> std::os::fd::AsFd for Connection<R, T> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        R::get(&self.rx.io).as_fd()
    }
}

/// The pipe handle, or the socket as a handle, as for the blocking
/// [`crate::Connection`].
#[cfg(windows)]
impl<R: Runtime, T: Trust> std::os::windows::io::AsRawHandle for Connection<R, T> {
    fn as_raw_handle(&self) -> std::os::windows::io::RawHandle {
        R::get::<sys::Stream>(&self.rx.io).as_raw_handle()
    }
}
