//! `Listener`: bind, accept, and run many handshakes at once.
//!
//! Accepted clients are not handed out until their handshake passes, and a
//! client that is silent, slow or hostile holds up only its own attempt: the
//! others keep moving and `accept()` returns the first that finishes.
//!
//! On Unix the handshakes run non-blocking on one mio poll, driven by
//! whichever thread is inside `accept()` (`poll.rs`), with the admission
//! policy of SECURITY.md: the backlog is drained eagerly, and when the
//! pending set is full the handshake that has stayed silent longest makes
//! room. On Windows an acceptor thread takes clients and each handshake runs
//! on a thread of its own (`threads.rs`).
//!
//! Locks cover what changes: the options, the address, the descriptor and
//! the counters are read without any lock; the queue of finished
//! connections has a short lock of its own; only the engine that drives the
//! handshakes is held by the thread inside `accept()`, and nothing that
//! merely reads the listener's state waits for it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::address::{Address, ToAddress};
use crate::connection::{Authenticated, Connection, DEFAULT_MAX_MESSAGE, Trust, Unverified};
use crate::credentials::PeerUser;
use crate::error::{Error, Result};
use crate::handshake::{DEFAULT_FIRST_ANSWER_TIMEOUT, HandshakeOptions, Proof};
use crate::key::AuthKey;
use crate::proto::codec::Codec;
use crate::socket::unix_path::SocketFile;
use crate::sys;
use crate::transport::MessageReader;

#[cfg(unix)]
mod poll;
#[cfg(unix)]
use poll::{Engine, Wake};
#[cfg(windows)]
mod threads;
#[cfg(windows)]
use threads::{Engine, Wake};

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
    /// What went wrong: [`Error::Auth`] for the handshake itself (and
    /// [`AuthError::PeerRefused`](crate::AuthError::PeerRefused) for a
    /// client that [`ListenerOptions::peer_user`] refused before it),
    /// [`Error::Io`] when the accepted socket could not be set up or its
    /// peer's credentials could not be read.
    pub error: Error,
}

/// Counters of a listener's work since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Connections handed out by `accept()`.
    pub accepted: u64,
    /// Handshakes that failed, timed out, were abandoned or were evicted.
    pub failed_handshakes: u64,
    /// Of the failed handshakes, those ended early to make room for a new
    /// client while the pending set was full (see SECURITY.md).
    pub evicted_handshakes: u64,
    /// Of the failed handshakes, clients refused by
    /// [`ListenerOptions::peer_user`] before any handshake work: their
    /// credentials named a user the listener does not admit, or could not
    /// be read.
    pub refused_peers: u64,
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
    peer_user: PeerUser,
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
            .field("peer_user", &self.peer_user)
            .finish()
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            handshake: HandshakeOptions::new().first_answer_timeout(DEFAULT_FIRST_ANSWER_TIMEOUT),
            backlog: DEFAULT_BACKLOG,
            max_pending: DEFAULT_MAX_PENDING,
            accept_timeout: None,
            max_message: DEFAULT_MAX_MESSAGE,
            reclaim_stale_socket: false,
            on_failure: None,
            codec: Codec::default(),
            peer_user: PeerUser::Any,
        }
    }
}

impl ListenerOptions {
    /// The defaults: sha256, 1 s for a client's answer to our challenge and
    /// 5 s for the whole handshake, backlog 1024, 256 pending handshakes.
    pub fn new() -> Self {
        Self::default()
    }

    crate::handshake::handshake_builder_methods!(handshake);

    /// How long a client may take to answer the listener's challenge
    /// (default [`DEFAULT_FIRST_ANSWER_TIMEOUT`], 1 s; `Duration::MAX` leaves only the
    /// [`handshake_timeout`](Self::handshake_timeout)). A client that has
    /// said nothing by then is dropped, so a silent connection holds a
    /// pending slot for a second, not for the whole handshake deadline.
    pub fn first_answer_timeout(mut self, timeout: Duration) -> Self {
        self.handshake = self.handshake.first_answer_timeout(timeout);
        self
    }

    /// The `listen(2)` backlog (default [`DEFAULT_BACKLOG`]).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog.max(1);
        self
    }

    /// How many handshakes may be in progress at once (default
    /// [`DEFAULT_MAX_PENDING`]). When they are all in progress and more
    /// clients wait, the client that has been silent longest makes room (on
    /// Unix; on Windows further clients wait in the backlog). SECURITY.md
    /// describes the policy.
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

    /// Which peers to admit by the user they run as (default
    /// [`PeerUser::Any`]): with [`PeerUser::Same`], a client of another
    /// user is closed right after it is accepted, before it is sent a
    /// challenge, and counted in [`ListenerStats::refused_peers`]. For
    /// Unix-socket and named-pipe listeners; see [`PeerUser`] and
    /// SECURITY.md for what it guarantees.
    ///
    /// ```no_run
    /// # #[cfg(unix)] {
    /// use mpconn::{ListenerOptions, PeerUser};
    /// let listener = ListenerOptions::new()
    ///     .peer_user(PeerUser::Same)
    ///     .bind("unix:/run/myapp/socket", b"a key of at least sixteen bytes")?;
    /// # }
    /// # Ok::<(), mpconn::Error>(())
    /// ```
    ///
    /// Binding then fails with [`Error::Io`] of kind `Unsupported` for a
    /// TCP address (TCP peers have no credentials), and for
    /// [`PeerUser::Uids`] on Windows.
    pub fn peer_user(mut self, policy: PeerUser) -> Self {
        self.peer_user = policy;
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
    /// thread inside `accept()` (or `try_accept()`) as the failure happens,
    /// while that call goes on waiting, and after the listener's locks are
    /// released, so it may call the listener's methods.
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

    /// What binding the socket needs of these options.
    fn bind_options(&self) -> crate::socket::BindOptions {
        crate::socket::BindOptions {
            backlog: self.backlog,
            reclaim_stale_socket: self.reclaim_stale_socket,
        }
    }
}

/// A bound socket or named pipe that accepts connections: CPython's
/// `Listener`.
///
/// `Listener` (that is, `Listener<Authenticated>`) runs the handshake on every
/// client and hands out only those that hold the key;
/// `Listener<Unverified>` hands out every client, untrusted.
///
/// It is `Sync`: several threads may accept at once (one drives the
/// handshakes, the others take what it finishes), and any thread may call
/// [`close`](Self::close) to wake them. Reading the listener's state
/// ([`address`](Self::address), [`stats`](Self::stats),
/// [`last_accepted`](Self::last_accepted), its descriptor) and
/// [`try_accept`](Self::try_accept) never wait for a thread inside
/// `accept()`.
///
/// Handshakes progress while a thread is inside `accept()` (or
/// [`try_accept`](Self::try_accept)), as in CPython, but all of them at once:
/// `accept()` returns the first client that completes, whatever the others
/// are doing. A client's handshake deadlines start when it is accepted from
/// the backlog. On Windows the handshakes run on threads of the listener's
/// own, from the moment a client connects, and `accept()` takes the
/// finished ones.
pub struct Listener<T: Trust = Authenticated> {
    /// The engine that drives the handshakes: locked only by the thread
    /// that holds the driver's role (`Shared::driving`), never waited for.
    engine: Mutex<Engine>,
    /// The queue of finished connections, the counters and the wake-up.
    shared: Arc<Shared>,
    opts: ListenerOptions,
    address: Address,
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
    _file: Option<SocketFile>,
    _trust: PhantomData<fn() -> T>,
}

/// What the listener shares with its engine (and, on Windows, its threads).
struct Shared {
    closed: AtomicBool,
    wake: Wake,
    accepted: AtomicU64,
    failed: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    /// The peer of the connection `accept()` handed out last.
    last_accepted: Mutex<Option<Address>>,
    /// Whether a thread is driving the engine; `driver_left` tells the
    /// threads waiting to accept when it stops.
    driving: Mutex<bool>,
    driver_left: Condvar,
}

/// Gives up the driver's role when dropped, even by a panicking hook.
struct DriverGuard<'a>(&'a Shared);

impl Drop for DriverGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.driving) = false;
        self.0.driver_left.notify_all();
    }
}

/// A client that passed its handshake, waiting for `accept()`.
struct Accepted {
    stream: sys::Stream,
    peer: Option<Address>,
    /// What the handshake read through: it may hold the client's first
    /// messages, which the connection reads first.
    reader: MessageReader,
    /// The finished handshake; `None` for a listener that runs none.
    proof: Option<Proof>,
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
        opts.peer_user.check_bind(&address)?;
        let (engine, shared, bound, cleanup) = Engine::open(opts.clone(), &address, key)?;
        Ok(Listener {
            #[cfg(unix)]
            fd: engine.raw_fd(),
            engine: Mutex::new(engine),
            shared,
            opts,
            address: bound,
            _file: cleanup,
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
        let deadline = self.opts.accept_timeout.and_then(deadline_after);
        self.accept_until(deadline, true)
    }

    /// Like [`accept`](Self::accept) with its own timeout (`Duration::MAX`
    /// waits forever).
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection<T>> {
        self.accept_until(deadline_after(timeout), true)
    }

    /// Moves pending handshakes forward without blocking and returns a
    /// connection if one has completed. Use it after [`wait`](crate::wait)
    /// reports the listener ready: readiness means work to do (a new client,
    /// a handshake message), not necessarily a finished handshake. While
    /// another thread is inside `accept()`, that thread moves the
    /// handshakes, and this call only takes a connection it has finished.
    ///
    /// # Errors
    /// As [`accept`](Self::accept), without the timeout.
    pub fn try_accept(&self) -> Result<Option<Connection<T>>> {
        match self.accept_until(Some(Instant::now()), false) {
            Ok(conn) => Ok(Some(conn)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The accept loop: take a finished connection if one is queued, else
    /// drive the engine (or, when `block` is false and another thread drives
    /// it, give up) until one is, running failure hooks as they come.
    fn accept_until(&self, deadline: Option<Instant>, block: bool) -> Result<Connection<T>> {
        loop {
            self.run_failure_hooks();
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if let Some(conn) = self.shared.wake.pop_ready().and_then(|a| self.hand_out(a)) {
                return Ok(conn);
            }
            if !self.become_driver(deadline, block)? {
                // The thread that drove the handshakes returned: look again.
                continue;
            }
            let result = {
                let _driving = DriverGuard(&self.shared);
                let mut engine = lock(&self.engine);
                match self.shared.wake.has_work() {
                    true => Ok(()),
                    false => engine.run(deadline),
                }
            };
            if let Err(e) = result {
                self.run_failure_hooks();
                if matches!(e, Error::Closed) {
                    return Err(e);
                }
                return match self.shared.wake.pop_ready().and_then(|a| self.hand_out(a)) {
                    Some(conn) => Ok(conn),
                    None => Err(e),
                };
            }
        }
    }

    /// Makes this thread the one that drives the handshakes: `Ok(true)`.
    /// While another thread drives them, waits (unless `block` is false)
    /// until that thread returns, `Ok(false)`, or `deadline` passes.
    fn become_driver(&self, deadline: Option<Instant>, block: bool) -> Result<bool> {
        let shared = &self.shared;
        let mut driving = lock(&shared.driving);
        if !*driving {
            *driving = true;
            return Ok(true);
        }
        if !block {
            return Err(Error::Timeout);
        }
        match deadline {
            None => drop(shared.driver_left.wait(driving)),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout);
                }
                drop(shared.driver_left.wait_timeout(driving, left));
            }
        }
        Ok(false)
    }

    /// The connection for a client that finished: of this listener's trust
    /// only with the proof that state needs, which an authenticated
    /// listener's engine always gives.
    fn hand_out(&self, accepted: Accepted) -> Option<Connection<T>> {
        let mut conn =
            Connection::with_reader(accepted.stream, accepted.reader, self.opts.max_message);
        conn.set_codec(self.opts.codec);
        let conn = T::admit(conn, accepted.proof)?;
        self.shared.accepted.fetch_add(1, Ordering::Relaxed);
        *lock(&self.shared.last_accepted) = accepted.peer;
        Some(conn)
    }

    /// Runs the failure hook for every failure queued so far, with no lock
    /// held, so that a hook may call back into this listener.
    fn run_failure_hooks(&self) {
        let failures = self.shared.wake.take_failures();
        if let Some(hook) = &self.opts.on_failure {
            for failure in &failures {
                hook(failure);
            }
        }
    }

    /// Whether a completed connection (or a failure for the hook) is
    /// waiting, without waiting for a thread that is inside `accept()`.
    pub(crate) fn has_ready(&self) -> bool {
        self.shared.wake.has_work()
    }

    /// What `wait()` watches: readable (signalled) when a client arrives or
    /// a handshake can move on (Unix) or has finished (Windows).
    pub(crate) fn wait_source(&self) -> sys::WaitSource<'_> {
        self.shared.wake.wait_source()
    }

    /// When the engine next needs time (a handshake deadline, an eviction,
    /// the end of a pause after `EMFILE`), for an async driver's timer;
    /// `None` when it needs none, or another thread is driving it (that
    /// thread keeps the time then).
    #[cfg(unix)]
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async listener keeps its own timer")
    )]
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.engine.try_lock().ok().and_then(|e| e.next_wake())
    }

    /// Wakes whoever waits on the listener's readiness, to take a
    /// connection that is queued already.
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async listener nudges")
    )]
    pub(crate) fn nudge(&self) {
        self.shared.wake.nudge();
    }

    /// Whether there is work for an async accept (a connection or a
    /// failure queued, an error, the listener closed): `true`, or `false`
    /// with `waker` kept to be woken when there is (Windows: the engine's
    /// threads wake it).
    #[cfg(windows)]
    #[cfg_attr(
        not(feature = "tokio"),
        allow(dead_code, reason = "only the async listener waits so")
    )]
    pub(crate) fn wake_on_work(&self, waker: &std::task::Waker) -> bool {
        // Closed after the waker is kept: close() wakes it.
        self.shared.wake.wake_on_work(waker) || self.shared.closed.load(Ordering::SeqCst)
    }

    /// A descriptor of the engine's poll, which is readable when the
    /// engine has work (a client, a handshake message, a queued
    /// connection): what an async runtime watches.
    #[cfg(unix)]
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async listener watches the poll")
    )]
    pub(crate) fn dup_poll_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        sys::dup_raw(self.shared.wake.wait_source().raw_fd())
    }

    /// When an `accept()` begun now would give up.
    #[cfg_attr(
        not(any(feature = "tokio", all(unix, feature = "async-io"))),
        allow(dead_code, reason = "only the async listener asks")
    )]
    pub(crate) fn accept_deadline(&self) -> Option<Instant> {
        self.opts.accept_timeout.and_then(deadline_after)
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
    /// Unix-socket clients are usually unnamed), as CPython's
    /// `Listener.last_accepted`. With several accepting threads, ask each
    /// connection instead: [`Connection::peer_address`].
    pub fn last_accepted(&self) -> Option<Address> {
        lock(&self.shared.last_accepted).clone()
    }

    /// Counters of accepted connections and failed handshakes.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            failed_handshakes: self.shared.failed.load(Ordering::Relaxed),
            evicted_handshakes: self.shared.evicted.load(Ordering::Relaxed),
            refused_peers: self.shared.refused.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting: a thread blocked in `accept()` wakes with
    /// [`Error::Closed`], and so does every later call. Pending handshakes
    /// are dropped. The socket and its file go when the listener is dropped.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.stop();
    }
}

/// `now + timeout`, or `None` (no deadline) when that is beyond what an
/// `Instant` can hold: `Duration::MAX` means forever.
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Locks a mutex whose data no panic can leave half-changed.
fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(unix)]
impl<T: Trust> std::os::fd::AsRawFd for Listener<T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }
}

impl Shared {
    fn new(wake: Wake) -> Arc<Shared> {
        Arc::new(Shared {
            closed: AtomicBool::new(false),
            wake,
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_accepted: Mutex::new(None),
            driving: Mutex::new(false),
            driver_left: Condvar::new(),
        })
    }
}

/// Errors of `accept` that concern only the client that left.
fn is_transient_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
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
