//! `Listener`: bind, accept, and run many handshakes at once.
//!
//! Accepted sockets are not handed out until their handshake passes. The
//! handshakes run non-blocking on one mio poll, driven by whichever thread is
//! inside `accept()`, so a client that is silent, slow or hostile holds up
//! only its own attempt: the others keep moving and `accept()` returns the
//! first that finishes.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::Socket;

use crate::address::{Address, Family, ToAddress};
use crate::connection::{Authenticated, Connection, DEFAULT_MAX_MESSAGE, Trust, Unverified};
use crate::error::{AuthError, Error, Result};
use crate::handshake::HandshakeOptions;
use crate::handshake::READ_AHEAD;
use crate::key::AuthKey;
use crate::proto::auth::{Handshake, Role, Status};
use crate::proto::codec::Codec;
use crate::socket::{self, BindOptions, unix_path::SocketFile};
use crate::sys;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_PENDING: usize = 2;

/// The default `listen(2)` backlog. CPython's default of 1 refuses clients
/// under any burst; the kernel caps this at `net.core.somaxconn`.
pub const DEFAULT_BACKLOG: i32 = 1024;
/// The default cap on handshakes in progress at once.
pub const DEFAULT_MAX_PENDING: usize = 256;

/// A handshake that failed or was abandoned, as reported to
/// [`ListenerOptions::on_handshake_failure`].
#[derive(Debug)]
#[non_exhaustive]
pub struct HandshakeFailure {
    /// Where the client connected from, when its socket has an address.
    pub peer: Option<Address>,
    /// What went wrong: [`Error::Auth`] for the handshake itself,
    /// [`Error::Io`] when the accepted socket could not be set up.
    pub error: Error,
}

/// Counters of a listener's work since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Connections handed out by `accept()`.
    pub accepted: u64,
    /// Handshakes that failed, timed out or were abandoned.
    pub failed_handshakes: u64,
}

type FailureHook = Arc<dyn Fn(&HandshakeFailure) + Send + Sync>;

/// Options for binding a [`Listener`]: a builder.
///
/// ```no_run
/// use std::time::Duration;
/// let listener = mpconn::ListenerOptions::new()
///     .handshake_timeout(Duration::from_secs(2))
///     .backlog(4096)
///     .bind("127.0.0.1:0", b"a key of at least sixteen bytes")?;
/// # Ok::<(), mpconn::Error>(())
/// ```
#[derive(Clone)]
pub struct ListenerOptions {
    handshake: HandshakeOptions,
    backlog: i32,
    max_pending: usize,
    accept_timeout: Option<Duration>,
    max_message: u64,
    reclaim_stale_socket: bool,
    on_failure: Option<FailureHook>,
    codec: Codec,
}

impl fmt::Debug for ListenerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerOptions")
            .field("handshake", &self.handshake)
            .field("backlog", &self.backlog)
            .field("max_pending", &self.max_pending)
            .field("accept_timeout", &self.accept_timeout)
            .field("max_message", &self.max_message)
            .field("reclaim_stale_socket", &self.reclaim_stale_socket)
            .field("on_failure", &self.on_failure.is_some())
            .field("codec", &self.codec)
            .finish()
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            handshake: HandshakeOptions::default(),
            backlog: DEFAULT_BACKLOG,
            max_pending: DEFAULT_MAX_PENDING,
            accept_timeout: None,
            max_message: DEFAULT_MAX_MESSAGE,
            reclaim_stale_socket: false,
            on_failure: None,
            codec: Codec::default(),
        }
    }
}

impl ListenerOptions {
    /// The defaults: sha256, 5 s handshakes, backlog 1024, 256 pending handshakes.
    pub fn new() -> Self {
        Self::default()
    }

    crate::handshake::handshake_builder_methods!();

    /// The `listen(2)` backlog (default [`DEFAULT_BACKLOG`]).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog.max(1);
        self
    }

    /// How many handshakes may be in progress at once (default
    /// [`DEFAULT_MAX_PENDING`]); further clients wait in the backlog.
    pub fn max_pending_handshakes(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// How long `accept()` waits before [`Error::Timeout`] (default: forever).
    pub fn accept_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.accept_timeout = timeout;
        self
    }

    /// The message-size limit of accepted connections.
    pub fn max_message_size(mut self, max: u64) -> Self {
        self.max_message = max;
        self
    }

    /// The codec of accepted connections' typed messages (default bincode;
    /// `Codec::Pickle` for Python clients, with the `pickle` feature).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Replace a stale socket file (one nothing listens on) at the path
    /// instead of failing (default: fail).
    pub fn reclaim_stale_socket(mut self, reclaim: bool) -> Self {
        self.reclaim_stale_socket = reclaim;
        self
    }

    /// Called for every client whose handshake fails or is abandoned. Such
    /// clients never surface as errors of `accept()`. The hook runs on the
    /// thread inside `accept()`, after the listener's lock is released, so it
    /// may call the listener's methods.
    pub fn on_handshake_failure(
        mut self,
        hook: impl Fn(&HandshakeFailure) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Binds an authenticated listener.
    ///
    /// # Errors
    /// [`Error::Address`] for a malformed, unsupported, too long, stale or
    /// busy address; [`Error::Auth`] for a key shorter than 16 bytes;
    /// [`Error::Io`] when the socket cannot be bound.
    pub fn bind(self, address: impl ToAddress, authkey: &[u8]) -> Result<Listener> {
        let key = AuthKey::new(authkey);
        key.check_len(self.handshake.allow_short_key)?;
        Listener::open(self, address.to_address()?, Some(key))
    }

    /// Binds a listener that runs no handshake. What it accepts is a
    /// [`Connection<Unverified>`]: bytes only, until authenticated.
    ///
    /// # Errors
    /// As [`bind`](Self::bind), without the key checks.
    pub fn bind_unauthenticated(self, address: impl ToAddress) -> Result<Listener<Unverified>> {
        Listener::open(self, address.to_address()?, None)
    }
}

/// A bound socket that accepts connections: CPython's `Listener`.
///
/// `Listener` (that is, `Listener<Authenticated>`) runs the handshake on every
/// client and hands out only those that hold the key;
/// `Listener<Unverified>` hands out every client, untrusted.
///
/// It is `Sync`: one thread may block in [`accept`](Self::accept) while
/// another calls [`close`](Self::close) to wake it.
///
/// Handshakes progress while a thread is inside `accept()` (or
/// [`try_accept`](Self::try_accept)), as in CPython, but all of them at once:
/// `accept()` returns the first client that completes, whatever the others
/// are doing. A client's handshake deadline starts when it is accepted from
/// the backlog.
pub struct Listener<T: Trust = Authenticated> {
    engine: Mutex<Engine>,
    poll_fd: std::os::fd::RawFd,
    shared: Arc<Shared>,
    address: Address,
    _file: Option<SocketFile>,
    _trust: PhantomData<fn() -> T>,
}

struct Shared {
    closed: AtomicBool,
    waker: Waker,
    accepted: AtomicU64,
    failed: AtomicU64,
}

impl<T: Trust> fmt::Debug for Listener<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("trust", &std::any::type_name::<T>())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Listener<Authenticated> {
    /// Binds an authenticated listener with default options. Clients must
    /// hold `authkey` (at least 16 bytes).
    ///
    /// # Errors
    /// As [`ListenerOptions::bind`].
    pub fn bind(address: impl ToAddress, authkey: &[u8]) -> Result<Listener> {
        ListenerOptions::new().bind(address, authkey)
    }

    /// A builder for the other options.
    pub fn builder() -> ListenerOptions {
        ListenerOptions::new()
    }
}

impl Listener<Unverified> {
    /// Binds a listener that runs no handshake, with default options.
    ///
    /// # Errors
    /// As [`ListenerOptions::bind`].
    pub fn bind_unauthenticated(address: impl ToAddress) -> Result<Listener<Unverified>> {
        ListenerOptions::new().bind_unauthenticated(address)
    }
}

impl<T: Trust> Listener<T> {
    fn open(opts: ListenerOptions, address: Address, key: Option<AuthKey>) -> Result<Self> {
        let bound = socket::bind(
            &address,
            BindOptions {
                backlog: opts.backlog,
                reclaim_stale_socket: opts.reclaim_stale_socket,
            },
        )?;
        bound.socket.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        poll.registry().register(
            &mut SourceFd(&bound.socket.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            waker,
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let poll_fd = poll.as_raw_fd();
        let engine = Engine {
            poll,
            events: Events::with_capacity(256),
            socket: bound.socket,
            key,
            opts,
            pending: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            last_accepted: None,
            shared: shared.clone(),
            backoff: Backoff::default(),
            tcp: bound.address.family() == Family::Tcp,
            backlog: true,
            failures: Vec::new(),
        };
        Ok(Listener {
            engine: Mutex::new(engine),
            poll_fd,
            shared,
            address: bound.address,
            _file: bound.cleanup,
            _trust: PhantomData,
        })
    }

    /// Waits for the next client that passes the handshake (any client, for
    /// an unauthenticated listener), up to the accept timeout if one was set.
    ///
    /// Clients that fail or abandon their handshake do not end this call:
    /// they are counted in [`stats`](Self::stats) and reported to the
    /// failure hook, and the wait goes on.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close), [`Error::Timeout`]
    /// when the accept timeout passes, [`Error::Io`] when the listening
    /// socket fails. Out of descriptors (`EMFILE`) is reported once; the
    /// listener stays usable, keeps the client in the backlog, and the next
    /// call retries after a pause that grows from 10 ms to 1 s while the
    /// shortage lasts, so a server loop that logs and goes on does not spin.
    pub fn accept(&self) -> Result<Connection<T>> {
        let timeout = self.lock().opts.accept_timeout;
        self.accept_deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Like [`accept`](Self::accept) with its own timeout.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection<T>> {
        self.accept_deadline(Instant::now().checked_add(timeout))
    }

    fn accept_deadline(&self, deadline: Option<Instant>) -> Result<Connection<T>> {
        let mut engine = self.lock();
        let result = engine.accept(deadline).map(|accepted| {
            let mut conn = Connection::with_early_bytes(
                accepted.stream,
                &accepted.early,
                engine.opts.max_message,
            );
            conn.set_codec(engine.opts.codec);
            conn
        });
        // Failure hooks run after the lock is released, so that a hook may
        // call back into this listener.
        let failures = std::mem::take(&mut engine.failures);
        let hook = engine.opts.on_failure.clone();
        drop(engine);
        if let Some(hook) = hook {
            for failure in &failures {
                hook(failure);
            }
        }
        result
    }

    /// Moves pending handshakes forward without blocking and returns a
    /// connection if one has completed. Use it after [`wait`](crate::wait)
    /// reports the listener ready: readiness means work to do (a new client,
    /// a handshake message), not necessarily a finished handshake.
    ///
    /// # Errors
    /// As [`accept`](Self::accept), without the timeout.
    pub fn try_accept(&self) -> Result<Option<Connection<T>>> {
        match self.accept_deadline(Some(Instant::now())) {
            Ok(conn) => Ok(Some(conn)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a completed connection is waiting, without blocking on a
    /// thread that is inside `accept()`.
    pub(crate) fn has_ready(&self) -> bool {
        self.engine.try_lock().is_ok_and(|e| !e.ready.is_empty())
    }

    /// The descriptor of the listener's poll: readable when a client
    /// arrives or a handshake can move.
    pub(crate) fn poll_fd(&self) -> std::os::fd::RawFd {
        self.poll_fd
    }

    /// An iterator over accepted connections; it ends when the listener is closed.
    pub fn incoming(&self) -> Incoming<'_, T> {
        Incoming { listener: self }
    }

    /// The bound address, with the real port after binding port 0.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the last accepted peer, when it has one (TCP peers do;
    /// Unix-socket clients are usually unnamed).
    pub fn last_accepted(&self) -> Option<Address> {
        self.lock().last_accepted.clone()
    }

    /// Counters of accepted connections and failed handshakes.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            failed_handshakes: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting: a thread blocked in `accept()` wakes with
    /// [`Error::Closed`], and so does every later call. Pending handshakes
    /// are dropped. The socket and its file go when the listener is dropped.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // A failed wake-up only means the poll is already gone.
        let _ = self.shared.waker.wake();
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // The engine holds no invariant a panicking thread could break
        // half-way in a way that matters to the next caller.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(unix)]
impl<T: Trust> std::os::fd::AsRawFd for Listener<T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.lock().socket.as_raw_fd()
    }
}

/// Iterator returned by [`Listener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a, T: Trust> {
    listener: &'a Listener<T>,
}

impl<T: Trust> Iterator for Incoming<'_, T> {
    type Item = Result<Connection<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.listener.accept() {
            Err(Error::Closed) => None,
            other => Some(other),
        }
    }
}

/// One client in the middle of its handshake.
struct Pending {
    socket: Socket,
    handshake: Handshake,
    deadline: Instant,
    peer: Option<Address>,
    /// Bytes read past the handshake's last message: the client's first
    /// messages, handed to the connection.
    early: Vec<u8>,
}

enum Progress {
    Waiting,
    Done,
    Failed(AuthError),
}

/// A client that passed its handshake, waiting for `accept()`.
struct Accepted {
    stream: sys::Stream,
    peer: Option<Address>,
    early: Vec<u8>,
}

/// The accept loop's state, behind the listener's mutex.
struct Engine {
    poll: Poll,
    events: Events,
    socket: Socket,
    key: Option<AuthKey>,
    opts: ListenerOptions,
    /// Slot i holds the client registered with token FIRST_PENDING + i.
    pending: Vec<Option<Pending>>,
    free: Vec<usize>,
    ready: VecDeque<Accepted>,
    last_accepted: Option<Address>,
    shared: Arc<Shared>,
    backoff: Backoff,
    /// A TCP listener: accepted sockets get TCP_NODELAY.
    tcp: bool,
    /// Clients may be waiting in the backlog: set by the poller's edge,
    /// cleared when accept(2) runs dry.
    backlog: bool,
    /// Failures waiting for the hook, which runs outside the lock.
    failures: Vec<HandshakeFailure>,
}

/// The pause before accepting again after the system ran out of resources.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    step: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn fail(&mut self) {
        self.step = (self.step * 2).clamp(Self::FIRST, Self::MAX);
        self.until = Instant::now().checked_add(self.step);
    }

    fn reset(&mut self) {
        self.until = None;
        self.step = Duration::ZERO;
    }
}

impl Engine {
    /// Runs the handshakes until one completes or `deadline` passes. The
    /// poll runs at least once, so a deadline of now makes this a
    /// non-blocking step.
    fn accept(&mut self, deadline: Option<Instant>) -> Result<Accepted> {
        let mut polled = false;
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                self.drop_all_pending();
                return Err(Error::Closed);
            }
            if let Some(accepted) = self.ready.pop_front() {
                self.last_accepted = accepted.peer.clone();
                self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                return Ok(accepted);
            }
            self.accept_new()?;
            if !self.ready.is_empty() {
                continue;
            }
            let now = Instant::now();
            self.expire(now);
            if polled && deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            let wake_at = self
                .pending_deadline()
                .into_iter()
                .chain(deadline)
                .chain(self.backoff.until)
                .min();
            let timeout = wake_at.map(|t| t.saturating_duration_since(now));
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            polled = true;
            // Borrow the events apart from self while the handshakes advance.
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.backlog = true,
                    WAKER => {}
                    Token(t) => self.advance(t - FIRST_PENDING),
                }
            }
            self.events = events;
        }
    }

    /// Accepts every waiting client, up to the pending cap.
    fn accept_new(&mut self) -> Result<()> {
        if !self.backlog || self.backoff.until.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        while self.pending.len() - self.free.len() < self.opts.max_pending {
            let (socket, peer) = match sys::accept(&self.socket, self.key.is_some()) {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog = false;
                    return Ok(());
                }
                Err(e) if is_transient_accept_error(&e) => continue,
                // Out of descriptors or memory: the client stays in the
                // backlog; report it once and retry after a growing pause
                // instead of spinning, while pending handshakes go on.
                Err(e) => {
                    self.backoff.fail();
                    return Err(e.into());
                }
            };
            self.backoff.reset();
            let peer = socket::peer_address(&peer);
            // One writev per message: Nagle could only add latency.
            if self.tcp
                && let Err(e) = socket.set_tcp_nodelay(true)
            {
                self.report(peer, e.into());
                continue;
            }
            let Some(key) = &self.key else {
                self.promote(socket, peer, Vec::new());
                continue;
            };
            let handshake = self.opts.handshake.start(Role::Server, key)?;
            let slot = match self.free.pop() {
                Some(slot) => slot,
                None => {
                    self.pending.push(None);
                    self.pending.len() - 1
                }
            };
            let token = Token(FIRST_PENDING + slot);
            self.poll.registry().register(
                &mut SourceFd(&socket.as_raw_fd()),
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.pending[slot] = Some(Pending {
                socket,
                handshake,
                deadline: Instant::now() + self.opts.handshake.timeout,
                peer,
                early: Vec::new(),
            });
            self.advance(slot);
        }
        Ok(())
    }

    /// Moves one handshake as far as its socket allows.
    fn advance(&mut self, slot: usize) {
        let Some(p) = self.pending.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match drive_nonblocking(p) {
            Progress::Waiting => {}
            Progress::Done => {
                if let Some(p) = self.remove(slot) {
                    match sys::set_nonblocking(&p.socket, false) {
                        Ok(()) => self.promote(p.socket, p.peer, p.early),
                        Err(e) => self.report(p.peer, e.into()),
                    }
                }
            }
            Progress::Failed(e) => {
                if let Some(p) = self.remove(slot) {
                    self.report(p.peer, Error::Auth(e));
                }
            }
        }
    }

    fn promote(&mut self, socket: Socket, peer: Option<Address>, early: Vec<u8>) {
        match sys::Stream::from_socket(socket) {
            Ok(stream) => self.ready.push_back(Accepted {
                stream,
                peer,
                early,
            }),
            Err(e) => self.report(peer, e.into()),
        }
    }

    fn remove(&mut self, slot: usize) -> Option<Pending> {
        let p = self.pending.get_mut(slot)?.take()?;
        // Deregistering a socket we are about to close or hand out cannot
        // fail in a way that matters.
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&p.socket.as_raw_fd()));
        self.free.push(slot);
        Some(p)
    }

    fn pending_deadline(&self) -> Option<Instant> {
        self.pending.iter().flatten().map(|p| p.deadline).min()
    }

    /// Fails every handshake whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        for slot in 0..self.pending.len() {
            let late = self.pending[slot]
                .as_ref()
                .is_some_and(|p| p.deadline <= now);
            if late && let Some(p) = self.remove(slot) {
                self.report(p.peer, Error::Auth(AuthError::TimedOut));
            }
        }
    }

    fn drop_all_pending(&mut self) {
        for slot in 0..self.pending.len() {
            self.remove(slot);
        }
        self.ready.clear();
    }

    fn report(&mut self, peer: Option<Address>, error: Error) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        if self.opts.on_failure.is_some() {
            self.failures.push(HandshakeFailure { peer, error });
        }
    }
}

/// Reads what the machine wants until the socket runs dry, then writes what
/// it has to say in one go: a client that pipelined its challenge behind its
/// answer gets `#WELCOME#` and our answer in a single write, one wake-up.
fn drive_nonblocking(p: &mut Pending) -> Progress {
    let mut buf = [0u8; READ_AHEAD];
    loop {
        let mut drained = false;
        while matches!(p.handshake.status(), Status::InProgress) && p.handshake.wants() > 0 {
            match io::Read::read(&mut &p.socket, &mut buf) {
                Ok(0) => p.handshake.peer_closed(),
                Ok(n) => {
                    let used = p.handshake.feed(&buf[..n]);
                    p.early.extend_from_slice(&buf[used..n]);
                    // A short read emptied the socket. Linux's epoll reports
                    // every later arrival as a new edge, so the read that
                    // would only say EAGAIN can be skipped.
                    if n < buf.len() && cfg!(any(target_os = "linux", target_os = "android")) {
                        drained = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => p.handshake.peer_closed(),
            }
        }
        while !p.handshake.output().is_empty() {
            match sys_send(&p.socket, p.handshake.output()) {
                Ok(n) => p.handshake.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    return match p.handshake.status() {
                        Status::Failed(e) => Progress::Failed(e.clone()),
                        _ => Progress::Failed(AuthError::PeerClosed),
                    };
                }
            }
        }
        match p.handshake.status() {
            Status::Done => return Progress::Done,
            Status::Failed(e) => return Progress::Failed(e.clone()),
            Status::InProgress if drained => return Progress::Waiting,
            Status::InProgress => {}
        }
    }
}

fn sys_send(socket: &Socket, bytes: &[u8]) -> io::Result<usize> {
    socket.send_with_flags(bytes, sys::SEND_FLAGS)
}

/// Errors of `accept(2)` that concern only the client that left.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
