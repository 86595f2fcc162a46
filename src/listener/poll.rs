//! The Unix listener engine: the listening socket and every pending
//! handshake on one mio poll, driven by the thread inside `accept()`, with
//! the admission policy that keeps key holders served under a flood.
//!
//! - The backlog is drained eagerly: every client the kernel has queued is
//!   accepted and sent its challenge at once, so valid clients do not wait
//!   behind attackers in the kernel's first-come-first-served queue.
//! - While fewer than `max_pending` handshakes run, a client has the first
//!   answer deadline (1 s) to answer the challenge, and the handshake
//!   deadline (5 s) to finish.
//! - When the pending set is full and more clients wait, the client that
//!   has not answered and was accepted longest ago is dropped to make room,
//!   once it has had the grace period to answer. A client that has answered
//!   correctly holds the key and is never dropped for room. The grace
//!   period follows the answer times of clients that proved the key (twice
//!   the slowest of the last 16, within 20 ms to the first answer
//!   deadline): someone without the key cannot shorten it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::Socket;

use super::{Accepted, HandshakeFailure, ListenerOptions, Shared, is_transient_accept_error, lock};
use crate::address::{Address, Family};
use crate::error::{AuthError, Error, Result};
use crate::handshake::{Exchange, HANDSHAKE_MESSAGE_LIMIT, Proof, Step};
use crate::key::AuthKey;
use crate::proto::auth::Role;
use crate::socket::{self, unix_path::SocketFile};
use crate::sys;
use crate::transport::MessageReader;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_PENDING: usize = 2;

/// The grace period before the first answer time is known.
const INITIAL_GRACE: Duration = Duration::from_millis(50);
/// The shortest grace period, however fast clients answer.
const MIN_GRACE: Duration = Duration::from_millis(20);
/// How many recent answer times the grace period follows.
const ANSWER_SAMPLES: usize = 16;

/// The queue of finished work, and what wakes the thread inside `accept()`;
/// the poll's descriptor is what `wait()` watches.
pub(super) struct Wake {
    waker: Waker,
    poll_fd: RawFd,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Accepted>,
    failures: Vec<HandshakeFailure>,
}

impl Wake {
    /// Wakes the thread inside `accept()` to find the listener closed.
    pub(super) fn stop(&self) {
        // A failed wake-up only means the poll is already gone.
        let _ = self.waker.wake();
    }

    /// Wakes whoever waits on the poll, to take what is queued.
    pub(super) fn nudge(&self) {
        let _ = self.waker.wake();
    }

    pub(super) fn wait_source(&self) -> sys::WaitSource<'_> {
        sys::WaitSource::fd(self.poll_fd)
    }

    pub(super) fn pop_ready(&self) -> Option<Accepted> {
        lock(&self.queue).ready.pop_front()
    }

    pub(super) fn take_failures(&self) -> Vec<HandshakeFailure> {
        std::mem::take(&mut lock(&self.queue).failures)
    }

    /// A connection to hand out, or a failure for the hook.
    pub(super) fn has_work(&self) -> bool {
        let queue = lock(&self.queue);
        !queue.ready.is_empty() || !queue.failures.is_empty()
    }
}

/// One client in the middle of its handshake.
struct Pending {
    stream: sys::Stream,
    exchange: Exchange,
    /// The handshake reads through it; the connection goes on with it.
    reader: MessageReader,
    /// When it was accepted and sent its challenge.
    started: Instant,
    peer: Option<Address>,
}

impl Pending {
    /// Whether the client has answered our challenge correctly: it holds
    /// the key, and is never evicted.
    fn proven(&self) -> bool {
        self.exchange.handshake().messages_received() > 0
    }
}

/// The answer times of the last clients that proved the key.
#[derive(Debug, Default)]
struct AnswerTimes {
    recent: [Duration; ANSWER_SAMPLES],
    len: usize,
    next: usize,
}

impl AnswerTimes {
    fn record(&mut self, time: Duration) {
        self.recent[self.next] = time;
        self.next = (self.next + 1) % ANSWER_SAMPLES;
        self.len = (self.len + 1).min(ANSWER_SAMPLES);
    }

    /// How long an unanswered client is kept before it may make room.
    fn grace(&self, cap: Duration) -> Duration {
        let slowest = self.recent[..self.len].iter().max();
        let grace = slowest.map_or(INITIAL_GRACE, |t| t.saturating_mul(2));
        grace.max(MIN_GRACE).min(cap.max(MIN_GRACE))
    }
}

/// The accept loop's state, locked only by the thread that drives it.
pub(super) struct Engine {
    poll: Poll,
    events: Events,
    socket: Socket,
    key: Option<AuthKey>,
    opts: ListenerOptions,
    /// Slot i holds the client registered with token FIRST_PENDING + i.
    pending: Vec<Option<Pending>>,
    free: Vec<usize>,
    /// How many slots hold a client.
    count: usize,
    shared: Arc<Shared>,
    backoff: Backoff,
    answers: AnswerTimes,
    /// A TCP listener: accepted sockets get TCP_NODELAY.
    tcp: bool,
    /// Clients may be waiting in the backlog: set by the poller's edge,
    /// cleared when accept(2) runs dry.
    backlog: bool,
    /// Makes the next registration with the poll fail (tests only).
    #[cfg(test)]
    fail_next_register: bool,
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
    /// Binds `address` and sets up the poll.
    pub(super) fn open(
        opts: ListenerOptions,
        address: &Address,
        key: Option<AuthKey>,
    ) -> Result<(Engine, Arc<Shared>, Address, Option<SocketFile>)> {
        let bound = socket::bind(address, opts.bind_options())?;
        bound.socket.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        poll.registry().register(
            &mut SourceFd(&bound.socket.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let shared = Shared::new(Wake {
            waker,
            poll_fd: poll.as_raw_fd(),
            queue: Mutex::new(Queue::default()),
        });
        let engine = Engine {
            poll,
            events: Events::with_capacity(256),
            socket: bound.socket,
            key,
            opts,
            pending: Vec::new(),
            free: Vec::new(),
            count: 0,
            shared: shared.clone(),
            backoff: Backoff::default(),
            answers: AnswerTimes::default(),
            tcp: bound.address.family() == Family::Tcp,
            backlog: true,
            #[cfg(test)]
            fail_next_register: false,
        };
        Ok((engine, shared, bound.address, bound.cleanup))
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// When [`run`](Self::run) next has something to do without a poll
    /// event: a deadline, an eviction, or the end of an `EMFILE` pause.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        [
            self.next_timeout(),
            self.backoff.until,
            self.next_eviction(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the handshakes until a connection or a failure is queued, or
    /// `deadline` passes. The poll runs at least once, and until it leaves
    /// no event behind, so a deadline of now makes this a non-blocking step
    /// that has seen every event: the poll's own descriptor is then quiet
    /// until something new happens, which is what an async runtime waits
    /// for (events left in the poll would signal nothing new).
    pub(super) fn run(&mut self, deadline: Option<Instant>) -> Result<()> {
        let mut drained = false;
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                self.drop_all_pending();
                return Err(Error::Closed);
            }
            let now = Instant::now();
            self.expire(now);
            self.accept_new()?;
            if self.shared.wake.has_work() {
                return Ok(());
            }
            if drained && deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            let wake_at = [self.next_wake(), deadline].into_iter().flatten().min();
            let timeout = wake_at.map(|t| t.saturating_duration_since(now));
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            // Borrow the events apart from self while the handshakes advance.
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            // A full buffer may have left events in the poll.
            drained = events.iter().count() < events.capacity();
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

    /// Accepts every waiting client, making room by eviction when the
    /// pending set is full, until the backlog is empty or nobody can be
    /// evicted yet.
    fn accept_new(&mut self) -> Result<()> {
        if !self.backlog || self.backoff.until.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        loop {
            if self.count >= self.opts.max_pending && !self.evict_one(Instant::now()) {
                return Ok(());
            }
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
            let stream = match sys::Stream::from_socket(socket) {
                Ok(stream) => stream,
                Err(e) => {
                    self.report(peer, e.into());
                    continue;
                }
            };
            // Before any handshake work: a refused peer gets no challenge.
            if let Err(e) = self.opts.peer_user.check(&stream) {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                self.report(peer, e);
                continue;
            }
            let Some(key) = &self.key else {
                let reader = MessageReader::new(&stream, self.opts.max_message);
                self.queue_ready(stream, reader, peer, None);
                continue;
            };
            let now = Instant::now();
            let mut exchange = Exchange::new(self.opts.handshake.start(Role::Server, key, now)?);
            // The challenge goes out at once; the poll reports what comes back.
            if let Err(e) = exchange.greet(&stream) {
                self.report(peer, Error::Auth(e));
                continue;
            }
            // Registered before it takes a slot, so a registration that
            // fails leaves no slot behind.
            let slot = self.free.last().copied().unwrap_or(self.pending.len());
            if let Err(e) = self.register(&stream, Token(FIRST_PENDING + slot)) {
                self.report(peer, e.into());
                continue;
            }
            let pending = Pending {
                reader: MessageReader::new(&stream, HANDSHAKE_MESSAGE_LIMIT),
                stream,
                exchange,
                started: now,
                peer,
            };
            match self.free.pop() {
                Some(slot) => self.pending[slot] = Some(pending),
                None => self.pending.push(Some(pending)),
            }
            self.count += 1;
        }
    }

    fn register(&mut self, stream: &sys::Stream, token: Token) -> io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_register) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.poll.registry().register(
            &mut SourceFd(&stream.as_raw_fd()),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Moves one handshake as far as its socket allows.
    fn advance(&mut self, slot: usize) {
        let Some(p) = self.pending.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let proven = p.proven();
        let step = p.exchange.step(&p.stream, &mut p.reader);
        let answered = (!proven && p.proven()).then(|| p.started.elapsed());
        if let Some(time) = answered {
            self.answers.record(time);
        }
        match step {
            Step::Wait(_) => {}
            Step::Done(proof) => {
                if let Some(p) = self.remove(slot) {
                    match p.stream.set_nonblocking(false) {
                        Ok(()) => self.queue_ready(p.stream, p.reader, p.peer, Some(proof)),
                        Err(e) => self.report(p.peer, e.into()),
                    }
                }
            }
            Step::Failed(e) => {
                if let Some(p) = self.remove(slot) {
                    self.report(p.peer, Error::Auth(e));
                }
            }
        }
    }

    fn queue_ready(
        &self,
        stream: sys::Stream,
        reader: MessageReader,
        peer: Option<Address>,
        proof: Option<Proof>,
    ) {
        lock(&self.shared.wake.queue).ready.push_back(Accepted {
            stream,
            reader,
            peer,
            proof,
        });
    }

    fn remove(&mut self, slot: usize) -> Option<Pending> {
        let p = self.pending.get_mut(slot)?.take()?;
        // Deregistering a socket we are about to close or hand out cannot
        // fail in a way that matters.
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&p.stream.as_raw_fd()));
        self.free.push(slot);
        self.count -= 1;
        Some(p)
    }

    /// The unanswered client accepted longest ago, and when it may make
    /// room for another.
    fn eviction_candidate(&self) -> Option<(usize, Instant)> {
        let grace = self
            .answers
            .grace(self.opts.handshake.first_answer.unwrap_or(Duration::MAX));
        let (slot, p) = self
            .pending
            .iter()
            .enumerate()
            .filter_map(|(slot, p)| Some((slot, p.as_ref()?)))
            .filter(|(_, p)| !p.proven())
            .min_by_key(|(_, p)| p.started)?;
        Some((slot, p.started.checked_add(grace)?))
    }

    /// Makes room: drops the eviction candidate if its grace period has
    /// passed. Its socket is read first, so that an answer that arrived
    /// while the backlog was being drained is counted, and the client kept.
    fn evict_one(&mut self, now: Instant) -> bool {
        loop {
            let Some((slot, at)) = self.eviction_candidate() else {
                return false;
            };
            if at > now {
                return false;
            }
            self.advance(slot);
            let still_silent = self.pending[slot].as_ref().is_some_and(|p| !p.proven());
            if !still_silent {
                // It answered, finished or failed: either way a slot may
                // have come free; look again.
                if self.count < self.opts.max_pending {
                    return true;
                }
                continue;
            }
            if let Some(p) = self.remove(slot) {
                self.shared.evicted.fetch_add(1, Ordering::Relaxed);
                self.report(p.peer, Error::Auth(AuthError::Evicted));
            }
            return true;
        }
    }

    /// When a waiting client can next be given room by eviction.
    fn next_eviction(&self) -> Option<Instant> {
        if !self.backlog || self.count < self.opts.max_pending {
            return None;
        }
        self.eviction_candidate().map(|(_, at)| at)
    }

    /// The nearest deadline of a pending handshake.
    fn next_timeout(&self) -> Option<Instant> {
        self.pending
            .iter()
            .flatten()
            .filter_map(|p| p.exchange.handshake().poll_timeout())
            .min()
    }

    /// Fails every pending handshake whose machine has passed a deadline.
    /// Its socket is read first: a deadline judges the client, and an
    /// answer that waits unread because this thread was busy elsewhere is
    /// the listener's delay, not the client's.
    fn expire(&mut self, now: Instant) {
        for slot in 0..self.pending.len() {
            if !self.is_late(slot, now) {
                continue;
            }
            self.advance(slot);
            if self.is_late(slot, now)
                && let Some(p) = self.remove(slot)
            {
                self.report(p.peer, Error::Auth(AuthError::TimedOut));
            }
        }
    }

    fn is_late(&self, slot: usize, now: Instant) -> bool {
        self.pending[slot].as_ref().is_some_and(|p| {
            let next = p.exchange.handshake().poll_timeout();
            next.is_some_and(|t| t <= now)
        })
    }

    fn drop_all_pending(&mut self) {
        for slot in 0..self.pending.len() {
            self.remove(slot);
        }
        lock(&self.shared.wake.queue).ready.clear();
    }

    fn report(&self, peer: Option<Address>, error: Error) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        if self.opts.on_failure.is_some() {
            lock(&self.shared.wake.queue)
                .failures
                .push(HandshakeFailure { peer, error });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;
    use crate::address::Address;

    const KEY: &[u8] = b"listener engine test key";

    fn engine(opts: ListenerOptions) -> Engine {
        let address = Address::Tcp("127.0.0.1:0".parse().unwrap());
        Engine::open(opts, &address, Some(AuthKey::new(KEY)))
            .unwrap()
            .0
    }

    fn local(engine: &Engine) -> std::net::SocketAddr {
        engine.socket.local_addr().unwrap().as_socket().unwrap()
    }

    #[test]
    fn a_failed_registration_returns_its_slot() {
        let mut engine = engine(ListenerOptions::new().max_pending_handshakes(1));
        let _first = TcpStream::connect(local(&engine)).unwrap();
        engine.fail_next_register = true;
        let _ = engine.run(Some(Instant::now()));
        assert_eq!(engine.count, 0, "the failed client holds no slot");
        assert_eq!(engine.shared.failed.load(Ordering::Relaxed), 1);
        let _second = TcpStream::connect(local(&engine)).unwrap();
        let _ = engine.run(Some(Instant::now()));
        assert_eq!(engine.count, 1, "the next client takes the slot");
    }

    #[test]
    fn the_grace_period_follows_proven_answer_times() {
        let mut times = AnswerTimes::default();
        let cap = Duration::from_secs(1);
        assert_eq!(times.grace(cap), INITIAL_GRACE);
        times.record(Duration::from_micros(300));
        assert_eq!(times.grace(cap), MIN_GRACE);
        times.record(Duration::from_millis(40));
        assert_eq!(times.grace(cap), Duration::from_millis(80));
        times.record(Duration::from_secs(10));
        assert_eq!(times.grace(cap), cap);
        for _ in 0..ANSWER_SAMPLES {
            times.record(Duration::from_millis(1));
        }
        assert_eq!(times.grace(cap), MIN_GRACE, "old samples age out");
        assert_eq!(times.grace(Duration::MAX), MIN_GRACE);
    }
}
