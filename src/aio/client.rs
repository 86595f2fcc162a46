//! The async `Client`: connect without blocking, then the handshake.

use std::future::poll_fn;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::{Connection, Runtime, with_deadline};
use crate::address::{Address, ToAddress};
use crate::client::ClientOptions;
use crate::connection::Unverified;
use crate::error::{AddressError, Error, Result};
use crate::key::AuthKey;
use crate::proto::auth::Role;
use crate::sys::{self, Interest};

/// Connects to a listener, an mpconn one or CPython's, without blocking:
/// the async form of [`crate::Client`], on the runtime `R`
/// ([`mpconn::tokio::Client`](crate::tokio::Client),
/// `mpconn::async_io::Client` on Unix). The options are
/// the blocking client's [`ClientOptions`], deadlines included; they are
/// kept with the runtime's timers.
///
/// Host names are resolved with the system's resolver on the runtime's
/// blocking threads (tokio's blocking pool, or the `blocking` crate's pool
/// that smol uses), not on the task's thread.
#[derive(Debug)]
pub struct Client<R: Runtime> {
    _runtime: PhantomData<R>,
}

impl<R: Runtime> Client<R> {
    /// Connects and runs the handshake with default options.
    ///
    /// # Errors
    /// As [`ClientOptions::connect`].
    pub async fn connect(address: impl ToAddress, authkey: &[u8]) -> Result<Connection<R>> {
        Self::connect_with(&ClientOptions::new(), address, authkey).await
    }

    /// Connects and runs the handshake with `options`.
    ///
    /// # Errors
    /// As [`ClientOptions::connect`].
    pub async fn connect_with(
        options: &ClientOptions,
        address: impl ToAddress,
        authkey: &[u8],
    ) -> Result<Connection<R>> {
        let key = AuthKey::new(authkey);
        key.check_len(options.handshake.allow_short_key)?;
        let conn = Self::connect_unauthenticated_with(options, address).await?;
        conn.authenticate(&options.handshake, Role::Client, &key)
            .await
    }

    /// Connects without a handshake: bytes only, until authenticated.
    ///
    /// # Errors
    /// As [`ClientOptions::connect_unauthenticated`].
    pub async fn connect_unauthenticated(
        address: impl ToAddress,
    ) -> Result<Connection<R, Unverified>> {
        Self::connect_unauthenticated_with(&ClientOptions::new(), address).await
    }

    /// Connects without a handshake, with `options` (the connect timeout,
    /// the message limit and the codec apply).
    ///
    /// # Errors
    /// As [`ClientOptions::connect_unauthenticated`].
    pub async fn connect_unauthenticated_with(
        options: &ClientOptions,
        address: impl ToAddress,
    ) -> Result<Connection<R, Unverified>> {
        let address = address.to_address()?;
        let deadline = options
            .connect_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let io = with_deadline::<R, _>(deadline, connect::<R>(&address)).await?;
        Ok(Connection::from_io(io, options.max_message, options.codec))
    }
}

/// Connects to the first of `address`'s socket addresses that takes it
/// (on Windows, or to the named pipe it names).
async fn connect<R: Runtime>(address: &Address) -> Result<R::Io<sys::Stream>> {
    #[cfg(windows)]
    if let Address::Pipe(name) = address {
        return connect_pipe::<R>(name).await;
    }
    let targets = match address {
        Address::TcpHost { host, port } => {
            let resolved = R::resolve(host.clone(), *port).await?;
            if resolved.is_empty() {
                return Err(AddressError::Unresolved(host.clone()).into());
            }
            resolved.into_iter().map(SockAddr::from).collect()
        }
        _ => crate::socket::targets(address)?,
    };
    let mut last = None;
    for target in targets {
        match connect_one::<R>(&target).await {
            Ok(io) => return Ok(io),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| AddressError::Unresolved(address.to_string()).into()))
}

/// The pause before trying again a Unix socket whose backlog was full (or
/// a named pipe whose instances were all busy), doubling up to the last.
const BACKLOG_RETRY: [Duration; 2] = [Duration::from_millis(1), Duration::from_millis(50)];

async fn connect_one<R: Runtime>(target: &SockAddr) -> Result<R::Io<sys::Stream>> {
    let domain = target.domain();
    let mut pause = BACKLOG_RETRY[0];
    let socket = loop {
        let socket = Socket::new(domain, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        match socket.connect(target) {
            Ok(()) => break socket,
            #[cfg(unix)]
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => break socket,
            // Windows says WSAEWOULDBLOCK for a connect under way.
            #[cfg(windows)]
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break socket,
            // A Unix socket whose listener's backlog is full refuses at once
            // (EAGAIN) where a blocking connect would wait: wait here too.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && domain == Domain::UNIX => {
                if let Some(at) = Instant::now().checked_add(pause) {
                    R::sleep_until(at).await;
                }
                pause = (pause * 2).min(BACKLOG_RETRY[1]);
            }
            Err(e) => return Err(Error::Io(e)),
        }
    };
    if domain != Domain::UNIX {
        // One writev per message: Nagle could only add latency.
        socket.set_tcp_nodelay(true)?;
    }
    let io = R::register(sys::Stream::from_socket(socket)?)?;
    poll_fn(|cx| R::poll_io(&io, cx, Interest::Writable, connected)).await?;
    Ok(io)
}

/// Opens the client end of the named pipe `name`, waiting on the runtime's
/// timer while all of its instances are busy, as the blocking client waits
/// in `WaitNamedPipe`.
#[cfg(windows)]
async fn connect_pipe<R: Runtime>(name: &str) -> Result<R::Io<sys::Stream>> {
    let mut pause = BACKLOG_RETRY[0];
    loop {
        // A deadline that has passed: one try, no wait.
        match sys::connect_pipe(name, Some(Instant::now())) {
            Ok(stream) => return super::register::<R>(stream),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => return Err(Error::Io(e)),
        }
        if let Some(at) = Instant::now().checked_add(pause) {
            R::sleep_until(at).await;
        }
        pause = (pause * 2).min(BACKLOG_RETRY[1]);
    }
}

/// Whether a non-blocking connect has finished: its error, or
/// `WouldBlock` while it is still under way.
fn connected(stream: &sys::Stream) -> io::Result<()> {
    #[cfg(unix)]
    let socket = stream.socket();
    #[cfg(windows)]
    let Some(socket) = stream.as_socket() else {
        return Ok(());
    };
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e),
    }
}
