//! The Unix listener engine: the listening socket and every pending
//! handshake on one mio poll, driven by the thread inside `accept()`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::Socket;

use super::{Accepted, HandshakeFailure, ListenerOptions, Shared, is_transient_accept_error};
use crate::address::{Address, Family};
use crate::error::{AuthError, Error, Result};
use crate::handshake::READ_AHEAD;
use crate::key::AuthKey;
use crate::proto::auth::{Handshake, Role, Status};
use crate::socket::{self, unix_path::SocketFile};
use crate::sys;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_PENDING: usize = 2;

/// Wakes the thread inside `accept()`; the poll's descriptor is what
/// `wait()` watches.
pub(super) struct Wake {
    waker: Waker,
    poll_fd: RawFd,
}

impl Wake {
    /// Wakes the thread inside `accept()` to find the listener closed.
    pub(super) fn stop(&self) {
        // A failed wake-up only means the poll is already gone.
        let _ = self.waker.wake();
    }

    pub(super) fn wait_source(&self) -> sys::WaitSource<'_> {
        sys::WaitSource::fd(self.poll_fd)
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

/// The accept loop's state, behind the listener's mutex.
pub(super) struct Engine {
    poll: Poll,
    events: Events,
    socket: Socket,
    key: Option<AuthKey>,
    pub(super) opts: ListenerOptions,
    /// Slot i holds the client registered with token FIRST_PENDING + i.
    pending: Vec<Option<Pending>>,
    free: Vec<usize>,
    ready: VecDeque<Accepted>,
    pub(super) last_accepted: Option<Address>,
    shared: Arc<Shared>,
    backoff: Backoff,
    /// A TCP listener: accepted sockets get TCP_NODELAY.
    tcp: bool,
    /// Clients may be waiting in the backlog: set by the poller's edge,
    /// cleared when accept(2) runs dry.
    backlog: bool,
    /// Failures waiting for the hook, which runs outside the lock.
    pub(super) failures: Vec<HandshakeFailure>,
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
        });
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
        Ok((engine, shared, bound.address, bound.cleanup))
    }

    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Runs the handshakes until one completes or `deadline` passes. The
    /// poll runs at least once, so a deadline of now makes this a
    /// non-blocking step. `Ok(None)` is a pause: failures wait in
    /// `failures` for the hook, which the caller runs outside the lock
    /// before it calls again.
    pub(super) fn accept(&mut self, deadline: Option<Instant>) -> Result<Option<Accepted>> {
        let mut polled = false;
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                self.drop_all_pending();
                return Err(Error::Closed);
            }
            if let Some(accepted) = self.ready.pop_front() {
                self.last_accepted = accepted.peer.clone();
                self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(accepted));
            }
            if !self.failures.is_empty() {
                return Ok(None);
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
