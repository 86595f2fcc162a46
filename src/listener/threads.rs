//! The Windows listener engine. An acceptor thread takes clients (a TCP
//! `accept`, or `ConnectNamedPipe` on a spare pipe instance that is
//! replaced at once), and each handshake runs on a thread of its own with
//! its deadline, so a slow client holds up only itself. Finished clients
//! queue for `accept()`; an event is signalled while the queue is not empty,
//! which is what `wait()` watches, and the tasks of an async listener that
//! wait for work are woken (`Wake::wake_on_work`).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::{Accepted, HandshakeFailure, ListenerOptions, Shared, is_transient_accept_error, lock};
use crate::address::Address;
use crate::connection::DEFAULT_MAX_MESSAGE;
use crate::credentials::PeerUser;
use crate::error::{Error, Result};
use crate::handshake::{Exchange, HANDSHAKE_MESSAGE_LIMIT, HandshakeOptions, Proof};
use crate::key::AuthKey;
use crate::proto::auth::Role;
use crate::socket::{self, unix_path::SocketFile};
use crate::sys::{self, Event, Pipe};
use crate::transport::MessageReader;

/// What the listener's threads share.
///
/// Every change a thread may wait on `changed` for (the queue, the
/// failures, `pending`, `error`, the stop event) is made with `state`
/// locked and then notified; `close()` sets `closed` before `stop()` takes
/// the lock. A waiter looks and starts waiting without letting go of the
/// lock, so no change and no notification falls between its look and its
/// wait, and no wait needs a timeout to look again. An async task does the
/// same with its waker (`wake_on_work`): a change that gives it work (a
/// connection, a failure, an error, the stop) wakes it under the lock.
pub(super) struct Wake {
    state: Mutex<State>,
    changed: Condvar,
    /// Signalled while a finished client waits in `ready`, or a failure
    /// waits for the hook.
    ready_event: Event,
    /// Signalled by `stop()`, for good: the acceptor ends.
    stop: Event,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Accepted>,
    failures: Vec<HandshakeFailure>,
    /// Handshakes in progress.
    pending: usize,
    /// An error of the acceptor, for `accept()` to report once.
    error: Option<io::Error>,
    /// The tasks of an async listener waiting for work.
    tasks: Vec<Waker>,
}

impl State {
    /// Wakes every task waiting for work.
    fn wake_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.wake();
        }
    }
}

impl Wake {
    /// Stops the engine for good: the acceptor ends, and every thread
    /// waiting on `changed` (in `accept()`, or the acceptor waiting for
    /// room) wakes to find it stopped.
    pub(super) fn stop(&self) {
        let mut state = self.lock();
        self.stop.set();
        state.wake_tasks();
        self.changed.notify_all();
    }

    /// Wakes the async tasks waiting for work, to take what is queued.
    pub(super) fn nudge(&self) {
        self.lock().wake_tasks();
    }

    /// Whether there is work for an async task (a connection or a failure
    /// queued, an error to report, the engine stopped): `true`, or `false`
    /// with `waker` kept to be woken when there is.
    pub(super) fn wake_on_work(&self, waker: &Waker) -> bool {
        let mut state = self.lock();
        let stopped = sys::wait_any(&[self.stop.raw()], Some(Instant::now()))
            .ok()
            .flatten()
            .is_some();
        if !state.ready.is_empty() || !state.failures.is_empty() || state.error.is_some() || stopped
        {
            return true;
        }
        if !state.tasks.iter().any(|task| task.will_wake(waker)) {
            state.tasks.push(waker.clone());
        }
        false
    }

    pub(super) fn wait_source(&self) -> sys::WaitSource<'_> {
        self.ready_event.wait_source()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn pop_ready(&self) -> Option<Accepted> {
        let mut state = self.lock();
        let accepted = state.ready.pop_front();
        if state.ready.is_empty() && state.failures.is_empty() {
            self.ready_event.reset();
        }
        accepted
    }

    pub(super) fn take_failures(&self) -> Vec<HandshakeFailure> {
        let mut state = self.lock();
        let failures = std::mem::take(&mut state.failures);
        if state.ready.is_empty() {
            self.ready_event.reset();
        }
        failures
    }

    /// A connection to hand out, or a failure for the hook.
    pub(super) fn has_work(&self) -> bool {
        let state = self.lock();
        !state.ready.is_empty() || !state.failures.is_empty()
    }
}

/// Where clients come from.
enum Source {
    Tcp(Socket),
    Pipe { name: String, spare: Box<Pipe> },
}

/// What the acceptor and the handshake threads need.
#[derive(Clone)]
struct Context {
    shared: Arc<Shared>,
    key: Option<Arc<AuthKey>>,
    handshake: HandshakeOptions,
    max_pending: usize,
    report_failures: bool,
    peer_user: PeerUser,
}

/// The listener's side: the queue is in `Wake`, shared with the threads.
pub(super) struct Engine {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Engine {
    /// Binds `address` and starts the acceptor thread.
    pub(super) fn open(
        opts: ListenerOptions,
        address: &Address,
        key: Option<AuthKey>,
    ) -> Result<(Engine, Arc<Shared>, Address, Option<SocketFile>)> {
        let (source, bound, cleanup) = match address {
            Address::Pipe(name) => {
                let spare = sys::create_pipe_instance(name, true).map_err(|e| {
                    if e.kind() == io::ErrorKind::PermissionDenied {
                        Error::Address(crate::error::AddressError::InUse(name.clone()))
                    } else {
                        Error::Io(e)
                    }
                })?;
                let source = Source::Pipe {
                    name: name.clone(),
                    spare: Box::new(spare),
                };
                (source, address.clone(), None)
            }
            _ => {
                let bound = socket::bind(address, opts.bind_options())?;
                (Source::Tcp(bound.socket), bound.address, bound.cleanup)
            }
        };
        let shared = Shared::new(Wake {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            ready_event: Event::new()?,
            stop: Event::new()?,
        });
        let ctx = Context {
            shared: shared.clone(),
            key: key.map(Arc::new),
            handshake: opts.handshake,
            max_pending: opts.max_pending.max(1),
            report_failures: opts.on_failure.is_some(),
            peer_user: opts.peer_user,
        };
        let accept_event = Event::new()?;
        if let Source::Tcp(socket) = &source {
            sys::select_accept(socket, &accept_event)?;
        }
        let acceptor = std::thread::Builder::new()
            .name("mpconn-acceptor".into())
            .spawn(move || match source {
                Source::Tcp(socket) => accept_tcp(&socket, &accept_event, &ctx),
                Source::Pipe { name, spare } => accept_pipes(&name, *spare, &ctx),
            })?;
        let engine = Engine {
            shared: shared.clone(),
            acceptor: Some(acceptor),
        };
        Ok((engine, shared, bound, cleanup))
    }

    /// Waits until a client has finished its handshake or a failure waits
    /// for the hook (both in the queue), or `deadline` passes.
    pub(super) fn run(&mut self, deadline: Option<Instant>) -> Result<()> {
        let wake = &self.shared.wake;
        let mut state = wake.lock();
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                state.ready.clear();
                wake.ready_event.reset();
                return Err(Error::Closed);
            }
            if !state.ready.is_empty() || !state.failures.is_empty() {
                return Ok(());
            }
            if let Some(e) = state.error.take() {
                return Err(e.into());
            }
            state = match deadline {
                None => wake.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout);
                    }
                    wake.changed
                        .wait_timeout(state, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.wake.stop();
        if let Some(acceptor) = self.acceptor.take() {
            // The acceptor ends on the stop event; a panic there is already
            // reported by the panic hook.
            let _ = acceptor.join();
        }
    }
}

impl Context {
    fn stopped(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
            || sys::wait_any(&[self.shared.wake.stop.raw()], Some(Instant::now()))
                .ok()
                .flatten()
                .is_some()
    }

    /// Waits until fewer than `max_pending` handshakes run; `false` once
    /// stopped. Woken by `finish()` and `stop()`, as `Wake` says.
    fn wait_for_room(&self) -> bool {
        let wake = &self.shared.wake;
        let mut state = wake.lock();
        while state.pending >= self.max_pending {
            if self.stopped() {
                return false;
            }
            state = wake.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        !self.stopped()
    }

    /// An acceptor error for `accept()`, then a pause that grows from 10 ms
    /// to 1 s while the errors go on.
    fn acceptor_failed(&self, e: io::Error, pause: &mut Duration) {
        let wake = &self.shared.wake;
        {
            let mut state = wake.lock();
            state.error = Some(e);
            state.wake_tasks();
        }
        wake.changed.notify_all();
        *pause = (*pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let _ = sys::wait_any(&[wake.stop.raw()], Instant::now().checked_add(*pause));
    }

    fn report(&self, peer: Option<Address>, error: Error) {
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        if self.report_failures {
            let wake = &self.shared.wake;
            {
                let mut state = wake.lock();
                state.failures.push(HandshakeFailure { peer, error });
                state.wake_tasks();
            }
            // A failure for the hook is work for try_accept(): wake wait().
            wake.ready_event.set();
            wake.changed.notify_all();
        }
    }

    /// Runs the client's handshake on a thread of its own.
    fn start_handshake(&self, stream: sys::Stream, peer: Option<Address>) {
        self.shared.wake.lock().pending += 1;
        let ctx = self.clone();
        let spawned = std::thread::Builder::new()
            .name("mpconn-handshake".into())
            .spawn(move || {
                // Before any handshake work: a refused peer gets no challenge.
                let admitted = ctx.peer_user.check(&stream).inspect_err(|_| {
                    ctx.shared.refused.fetch_add(1, Ordering::Relaxed);
                });
                let result = admitted.and_then(|()| match &ctx.key {
                    None => Ok((MessageReader::new(&stream, DEFAULT_MAX_MESSAGE), None)),
                    Some(key) => handshake(&stream, &ctx.handshake, key)
                        .map(|(reader, proof)| (reader, Some(proof))),
                });
                ctx.finish(stream, peer, result);
            });
        if let Err(e) = spawned {
            self.shared.wake.lock().pending -= 1;
            self.report(None, e.into());
        }
    }

    fn finish(
        &self,
        stream: sys::Stream,
        peer: Option<Address>,
        result: Result<(MessageReader, Option<Proof>)>,
    ) {
        let wake = &self.shared.wake;
        match result {
            Ok((reader, proof)) => {
                let mut state = wake.lock();
                state.pending -= 1;
                if !self.shared.closed.load(Ordering::SeqCst) {
                    state.ready.push_back(Accepted {
                        stream,
                        reader,
                        peer,
                        proof,
                    });
                    wake.ready_event.set();
                    state.wake_tasks();
                }
            }
            Err(e) => {
                // Counted before the slot frees, so that a client accepted
                // after this one never sees stats without this failure.
                self.report(peer, e);
                wake.lock().pending -= 1;
            }
        }
        wake.changed.notify_all();
    }
}

/// The TCP acceptor: waits on the accept event and the stop event.
fn accept_tcp(socket: &Socket, accept_event: &Event, ctx: &Context) {
    let stop = ctx.shared.wake.stop.raw();
    let mut pause = Duration::ZERO;
    loop {
        match sys::wait_any(&[accept_event.raw(), stop], None) {
            Ok(Some(0)) => accept_event.reset(),
            _ => return,
        }
        while ctx.wait_for_room() {
            let (client, peer) = match socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    ctx.acceptor_failed(e, &mut pause);
                    // Try again without waiting for a new event: the
                    // client is still in the backlog.
                    accept_event.set();
                    break;
                }
            };
            pause = Duration::ZERO;
            let peer = socket::peer_address(&peer);
            let ready = sys::clear_select(&client)
                .and_then(|()| client.set_tcp_nodelay(true))
                .and_then(|()| sys::Stream::from_socket(client));
            match ready {
                Ok(stream) => ctx.start_handshake(stream, peer),
                Err(e) => ctx.report(peer, e.into()),
            }
        }
        if ctx.stopped() {
            return;
        }
    }
}

/// The named-pipe acceptor: one instance waits for a client while the
/// others are handed out, and a new spare is made as soon as one connects,
/// so clients do not find every instance busy.
fn accept_pipes(name: &str, mut spare: Pipe, ctx: &Context) {
    let stop = ctx.shared.wake.stop.raw();
    let mut pause = Duration::ZERO;
    while ctx.wait_for_room() {
        match spare.accept_client(stop) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                ctx.acceptor_failed(e, &mut pause);
                continue;
            }
        }
        let next = loop {
            match sys::create_pipe_instance(name, false) {
                Ok(next) => break next,
                Err(e) => ctx.acceptor_failed(e, &mut pause),
            }
            if ctx.stopped() {
                return;
            }
        };
        pause = Duration::ZERO;
        let client = std::mem::replace(&mut spare, next);
        ctx.start_handshake(sys::Stream::Pipe(client), None);
    }
}

/// The server's handshake over a blocking stream (a named pipe or a TCP
/// socket), within the handshake deadlines; returns the reader it read
/// through, which may hold the client's first messages.
fn handshake(
    stream: &sys::Stream,
    opts: &HandshakeOptions,
    key: &AuthKey,
) -> Result<(MessageReader, Proof)> {
    let mut exchange = Exchange::new(opts.start(Role::Server, key, Instant::now())?);
    // Handshake messages are small: a client that sends a large one must
    // not make us buffer it (a pipe reader refuses it by its length, unread).
    let mut reader = MessageReader::new(stream, HANDSHAKE_MESSAGE_LIMIT);
    let proof = exchange.drive_blocking(stream, &mut reader)?;
    Ok((reader, proof))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `accept()` and the acceptor waiting for room look whether the
    /// listener is closed, then wait on `changed`, holding the lock in
    /// between; this test is such a waiter. A `close()` that comes in
    /// between must still wake it: `stop()` cannot notify before the waiter
    /// waits.
    #[test]
    fn a_stop_between_the_look_and_the_wait_wakes_the_waiter() {
        let shared = Shared::new(Wake {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            ready_event: Event::new().unwrap(),
            stop: Event::new().unwrap(),
        });
        let ctx = Context {
            shared: shared.clone(),
            key: None,
            handshake: ListenerOptions::new().handshake,
            max_pending: 1,
            report_failures: false,
            peer_user: PeerUser::Any,
        };
        let wake = &shared.wake;
        let state = wake.lock();
        assert!(!ctx.stopped());
        let closer = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                // What Listener::close() does.
                shared.closed.store(true, Ordering::SeqCst);
                shared.wake.stop();
            })
        };
        // Room for the close to run to its end, were it not held back.
        std::thread::sleep(Duration::from_millis(200));
        let (_state, waited) = wake
            .changed
            .wait_timeout(state, Duration::from_secs(5))
            .unwrap();
        assert!(!waited.timed_out(), "the close's wake-up was lost");
        assert!(ctx.stopped());
        closer.join().unwrap();
    }
}
