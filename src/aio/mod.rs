//! Async connections: the same listener engine, handshake machine and
//! message transport as the blocking types, driven by an async runtime.
//!
//! Nothing of the protocol is written twice. A connection's bytes go
//! through the blocking code's `MessageReader` and its handshake through
//! `Exchange::step`;
//! what changes is only how a stream that has no bytes (or no room) waits.
//! The blocking code waits in `poll(2)`; here `Polled` stands in for the
//! stream, registers the task's waker with the runtime's reactor, and tells
//! the code above that it would have to wait. The reader keeps whatever it
//! had read, and the future returns `Pending`. When the task is woken the
//! same call runs again and the reader goes on where it stopped. That is
//! also why a receive is cancellation safe: its progress lives in the
//! connection, not in the future.
//!
//! The runtimes differ only in [`Runtime`]: how a descriptor is registered
//! with the reactor, how one I/O call waits for readiness, and how to sleep
//! until an instant. [`Tokio`](crate::tokio::Tokio) (feature `tokio`) and
//! `AsyncIo` (feature `async-io`, for smol and async-std; Unix only)
//! implement it; `mpconn::tokio` and `mpconn::async_io` name the types
//! below for their runtime.
//!
//! **Windows** (tokio only). A TCP socket is handed to tokio's reactor, which
//! owns it, and each I/O call runs inside its `try_io` on a view of the
//! socket that never closes it. A named pipe moves whole messages, and
//! tokio's `NamedPipe` would make a byte stream of them (boundaries and
//! empty messages lost, bytes read ahead inside it), so no runtime holds
//! it: its own non-blocking calls do the waiting. A receive looks at the
//! pipe's readiness probe (the zero-byte read that `wait()` uses) and
//! reads only once it has ended; while it is in flight, the system thread
//! pool waits on its event and wakes the task, so no thread is spent per
//! connection. A send copies the message into a buffer of the pipe's own
//! and leaves the write in flight when the pipe cannot take it at once:
//! the kernel may read that buffer after the future is gone, and the
//! message is committed whole or not at all. The cost is one copy per
//! message sent on a pipe, and a thread-pool wait registered per wait.
//! The listener is the blocking one's thread engine, whose threads wake
//! the accepting tasks when they queue a connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::error::Error;
use crate::sys::{self, Interest};
use crate::transport::ByteStream;

mod client;
mod connection;
mod halves;
mod listener;
mod send;

pub use client::Client;
pub use connection::Connection;
pub use halves::{RecvHalf, SendHalf};
pub use listener::Listener;

mod sealed {
    pub trait Sealed {}
}

/// A descriptor a runtime can watch: a connection's stream, or the
/// listener engine's poll.
#[cfg(unix)]
#[doc(hidden)]
pub trait Source: Send + Sync + 'static + std::os::fd::AsFd + SourceFd {}

/// What tokio's reactor needs of a source: that it owns its descriptor.
#[cfg(all(unix, feature = "tokio"))]
#[doc(hidden)]
pub trait SourceFd: sys::OwnsFd {}
#[cfg(all(unix, feature = "tokio"))]
impl<S: sys::OwnsFd> SourceFd for S {}
#[cfg(all(unix, not(feature = "tokio")))]
#[doc(hidden)]
pub trait SourceFd: std::os::fd::AsRawFd {}
#[cfg(all(unix, not(feature = "tokio")))]
impl<S: std::os::fd::AsRawFd> SourceFd for S {}
#[cfg(unix)]
impl Source for sys::Stream {}
#[cfg(unix)]
impl Source for std::os::fd::OwnedFd {}

/// What a runtime can watch on Windows: a connection's stream, and nothing
/// else (the listener's engine wakes its tasks itself). The conversions
/// let a runtime hold the stream its own way.
#[cfg(windows)]
#[doc(hidden)]
pub trait Source: Send + Sync + 'static + Sized {
    /// The stream, to register.
    fn into_stream(self) -> sys::Stream;
    /// The source, given back.
    fn from_stream(stream: sys::Stream) -> Self;
    /// The source, seen in a registered stream.
    fn from_stream_ref(stream: &sys::Stream) -> &Self;
}

#[cfg(windows)]
impl Source for sys::Stream {
    fn into_stream(self) -> sys::Stream {
        self
    }
    fn from_stream(stream: sys::Stream) -> Self {
        stream
    }
    fn from_stream_ref(stream: &sys::Stream) -> &Self {
        stream
    }
}

/// An async runtime mpconn's async types run on. Sealed: implemented by
/// [`Tokio`](crate::tokio::Tokio) and `AsyncIo` (`mpconn::async_io`, Unix).
/// Its methods are the seam between mpconn and the runtime's reactor, not
/// API for users.
pub trait Runtime: sealed::Sealed + Sized + Send + Sync + 'static {
    /// A descriptor registered with the reactor.
    #[doc(hidden)]
    type Io<S: Source>: Send + Sync;
    /// A timer that fires at an instant.
    #[doc(hidden)]
    type Sleep: Future<Output = ()> + Send;

    /// Registers `source`, which is already non-blocking, for readiness in
    /// both directions. Fails outside the runtime's context where the
    /// runtime says so instead of panicking.
    #[doc(hidden)]
    fn register<S: Source>(source: S) -> io::Result<Self::Io<S>>;
    /// The registered descriptor.
    #[doc(hidden)]
    fn get<S: Source>(io: &Self::Io<S>) -> &S;
    /// Deregisters and returns the descriptor.
    #[doc(hidden)]
    fn into_inner<S: Source>(io: Self::Io<S>) -> io::Result<S>;
    /// Runs `op` until it does not fail with `WouldBlock`, waiting for
    /// `interest` in between; `Pending` (with the task's waker registered)
    /// when the descriptor is not ready.
    #[doc(hidden)]
    fn poll_io<S: Source, T>(
        io: &Self::Io<S>,
        cx: &mut Context<'_>,
        interest: Interest,
        op: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>>;
    /// `Pending`, with the task's waker registered, when the runtime knows
    /// that the descriptor is not ready for `interest`; `Ready` when it may
    /// be. Lets a receive that needs bytes wait without walking the reader
    /// first. A runtime that keeps no readiness says `Ready`.
    #[doc(hidden)]
    fn poll_ready<S: Source>(
        io: &Self::Io<S>,
        cx: &mut Context<'_>,
        interest: Interest,
    ) -> Poll<io::Result<()>> {
        let _ = (io, cx, interest);
        Poll::Ready(Ok(()))
    }
    /// As [`poll_io`](Self::poll_io) for a read whose `op` also says
    /// whether it drained the descriptor. Then the readiness seen is
    /// forgotten, as tokio's own streams do after a short read, so that the
    /// next read waits for the reactor's next event instead of first
    /// failing with `WouldBlock`: one system call less per message when
    /// messages come one at a time. A runtime that has no readiness to
    /// forget ignores the hint.
    #[doc(hidden)]
    fn poll_read_io<S: Source, T>(
        io: &Self::Io<S>,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&S) -> io::Result<(T, bool)>,
    ) -> Poll<io::Result<T>> {
        Self::poll_io(io, cx, Interest::Readable, |s| op(s).map(|(t, _)| t))
    }
    /// Runs `op` once the descriptor is ready for `interest`, again
    /// after each `WouldBlock`, until it gives something else; unlike
    /// [`poll_io`](Self::poll_io), any number of tasks may wait at once.
    /// For the listener's poll (Unix).
    #[cfg(unix)]
    #[doc(hidden)]
    fn io<'a, S: Source, T: Send + 'a>(
        io: &'a Self::Io<S>,
        interest: Interest,
        op: impl FnMut(&S) -> io::Result<T> + Send + 'a,
    ) -> impl Future<Output = io::Result<T>> + Send + 'a;
    /// A timer that fires at `deadline`.
    #[doc(hidden)]
    fn sleep_until(deadline: Instant) -> Self::Sleep;
    /// Resolves a host name with the system's resolver, on a thread that
    /// may block, not on the task's.
    #[doc(hidden)]
    fn resolve(
        host: String,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<std::net::SocketAddr>>> + Send;
}

/// A registered stream seen through the blocking code's [`ByteStream`],
/// for one poll of one task: an operation the stream cannot do now
/// registers the task's waker and fails with `WouldBlock`, and from then on
/// `wait` for that direction says "not ready", so that the transport and
/// the handshake driver stop and keep their state, reporting
/// [`Error::Timeout`] (they are always called with a deadline).
pub(crate) struct Polled<'a, 'c, R: Runtime> {
    io: &'a R::Io<sys::Stream>,
    cx: RefCell<&'a mut Context<'c>>,
    /// Which directions registered the waker in this poll.
    read_pending: Cell<bool>,
    write_pending: Cell<bool>,
}

impl<'a, 'c, R: Runtime> Polled<'a, 'c, R> {
    pub(crate) fn new(io: &'a R::Io<sys::Stream>, cx: &'a mut Context<'c>) -> Self {
        Polled {
            io,
            cx: RefCell::new(cx),
            read_pending: Cell::new(false),
            write_pending: Cell::new(false),
        }
    }

    fn pending(&self, interest: Interest) -> &Cell<bool> {
        match interest {
            Interest::Readable => &self.read_pending,
            Interest::Writable => &self.write_pending,
        }
    }

    /// Whether an operation stopped because the stream was not ready: the
    /// task's waker is registered, and the caller returns `Pending`.
    pub(crate) fn is_pending(&self) -> bool {
        self.read_pending.get() || self.write_pending.get()
    }

    /// The result of a transport call as a poll: `Pending` when it stopped
    /// for readiness, the result otherwise.
    pub(crate) fn finish<T>(&self, result: crate::Result<T>) -> Poll<crate::Result<T>> {
        match result {
            Err(Error::Timeout) if self.is_pending() => Poll::Pending,
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock && self.is_pending() => {
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    fn op<T>(
        &self,
        interest: Interest,
        op: impl FnMut(&sys::Stream) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut cx = self.cx.borrow_mut();
        let poll = R::poll_io(self.io, &mut cx, interest, op);
        self.ready_or_would_block(interest, poll)
    }

    /// A read of at most `want` bytes; `brought_fds` tells whether the
    /// read brought descriptors along.
    fn read_op(
        &self,
        want: usize,
        mut op: impl FnMut(&sys::Stream) -> io::Result<usize>,
        brought_fds: impl Fn() -> bool,
    ) -> io::Result<usize> {
        let mut cx = self.cx.borrow_mut();
        let poll = R::poll_read_io(self.io, &mut cx, |s| {
            let n = op(s)?;
            // A stream socket's read stops short only when nothing more is
            // there, except right after a byte carrying descriptors (Linux
            // ends the read there).
            Ok((n, n > 0 && n < want && !brought_fds()))
        });
        self.ready_or_would_block(Interest::Readable, poll)
    }

    fn ready_or_would_block<T>(
        &self,
        interest: Interest,
        poll: Poll<io::Result<T>>,
    ) -> io::Result<T> {
        match poll {
            Poll::Ready(result) => result,
            Poll::Pending => {
                self.pending(interest).set(true);
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    pub(crate) fn stream(&self) -> &sys::Stream {
        R::get(self.io)
    }
}

impl<R: Runtime> ByteStream for Polled<'_, '_, R> {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len();
        self.read_op(want, |s| s.read(buf), || false)
    }

    fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let want = (v.capacity() - v.len()).min(max);
        self.read_op(want, |s| s.read_spare(v, max), || false)
    }

    fn read_spare_passing(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        passed: &mut Option<sys::Passed>,
    ) -> io::Result<usize> {
        let want = (v.capacity() - v.len()).min(max);
        let passed = RefCell::new(passed);
        self.read_op(
            want,
            |s| s.read_spare_passing(v, max, &mut passed.borrow_mut()),
            || passed.borrow().is_some(),
        )
    }

    // The descriptor is non-blocking while registered, so a plain write
    // never blocks.
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.op(Interest::Writable, |s| s.write_vectored(bufs))
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored(bufs)
    }

    fn end(&self) {
        // ENOTCONN only means the peer is gone already.
        let _ = R::get::<sys::Stream>(self.io).shutdown(std::net::Shutdown::Both);
    }

    /// Ready unless an operation in this direction found the stream not
    /// ready during this poll. A deadline is never waited for: the caller
    /// sets its deadlines with the runtime's timers. A named pipe is looked
    /// at (its probe), since no pipe operation reads ahead to find out.
    fn wait(&self, interest: Interest, _deadline: Option<Instant>) -> io::Result<bool> {
        if self.pending(interest).get() {
            return Ok(false);
        }
        #[cfg(windows)]
        if let (Some(pipe), Interest::Readable) = (self.stream().as_pipe(), interest) {
            return self.pipe_not_readable(pipe).map(|not| !not);
        }
        Ok(true)
    }

    fn quick_ack(&self) {
        self.stream().quick_ack();
    }

    #[cfg(windows)]
    fn pipe(&self) -> Option<&sys::Pipe> {
        self.stream().as_pipe()
    }

    /// A pipe message if one is here; otherwise `TimedOut`, with the task
    /// to be woken when one comes.
    #[cfg(windows)]
    fn recv_message(
        &self,
        out: &mut Vec<u8>,
        limit: u64,
        _deadline: Option<Instant>,
    ) -> io::Result<sys::PipeRecv> {
        let pipe = self.pipe().ok_or_else(crate::transport::not_a_pipe)?;
        for _ in 0..PIPE_SPINS {
            match pipe.try_recv_message(out, limit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if self.pipe_not_readable(pipe)? {
                return Ok(sys::PipeRecv::TimedOut);
            }
        }
        Ok(self.yield_now(Interest::Readable, sys::PipeRecv::TimedOut))
    }

    /// Commits one pipe message whole; `WouldBlock`, with nothing sent,
    /// while an earlier one is still in flight, the task to be woken when
    /// it ends.
    #[cfg(windows)]
    fn send_message(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let pipe = self.pipe().ok_or_else(crate::transport::not_a_pipe)?;
        loop {
            match pipe.try_send_message(parts) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if pipe.poll_flush(&mut self.cx.borrow_mut())?.is_pending() {
                self.write_pending.set(true);
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

/// How often one poll tries a pipe that its probe calls ready before it
/// lets other tasks run.
#[cfg(windows)]
const PIPE_SPINS: usize = 4;

#[cfg(windows)]
impl<R: Runtime> Polled<'_, '_, R> {
    /// Whether `pipe` has nothing to read: then the task's waker is
    /// registered for when it has.
    fn pipe_not_readable(&self, pipe: &sys::Pipe) -> io::Result<bool> {
        match pipe.poll_readable(&mut self.cx.borrow_mut()) {
            Poll::Ready(ready) => ready.map(|()| false),
            Poll::Pending => {
                self.read_pending.set(true);
                Ok(true)
            }
        }
    }

    /// Gives other tasks a turn: wakes this one again at once and says it
    /// is not ready.
    fn yield_now<T>(&self, interest: Interest, value: T) -> T {
        self.cx.borrow().waker().wake_by_ref();
        self.pending(interest).set(true);
        value
    }
}

/// A pinned, boxed timer that is made when first needed and moved when the
/// instant changes.
pub(crate) struct Timer<R: Runtime> {
    sleep: Option<(Instant, Pin<Box<R::Sleep>>)>,
}

impl<R: Runtime> Default for Timer<R> {
    fn default() -> Self {
        Timer { sleep: None }
    }
}

impl<R: Runtime> Timer<R> {
    /// Polls a timer for `at` (none: nothing to wait for, `Pending`);
    /// `Ready` once that instant has passed.
    pub(crate) fn poll_at(&mut self, cx: &mut Context<'_>, at: Option<Instant>) -> Poll<()> {
        let Some(at) = at else {
            self.sleep = None;
            return Poll::Pending;
        };
        if at <= Instant::now() {
            return Poll::Ready(());
        }
        match &mut self.sleep {
            Some((when, _)) if *when == at => {}
            slot => *slot = Some((at, Box::pin(R::sleep_until(at)))),
        }
        match &mut self.sleep {
            Some((_, sleep)) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Runs `fut` with a deadline: [`Error::Timeout`] once `deadline` passes.
/// `fut` is dropped then, so it must be cancellation safe.
pub(crate) async fn with_deadline<R: Runtime, T>(
    deadline: Option<Instant>,
    fut: impl Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = Timer::<R>::default();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        match timer.poll_at(cx, deadline) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Switches `stream` to non-blocking mode and registers it.
pub(crate) fn register<R: Runtime>(stream: sys::Stream) -> crate::Result<R::Io<sys::Stream>> {
    stream.set_nonblocking(true)?;
    Ok(R::register(stream)?)
}

/// Deregisters a stream and switches it back to blocking mode.
pub(crate) fn deregister<R: Runtime>(io: R::Io<sys::Stream>) -> crate::Result<sys::Stream> {
    let stream = R::into_inner(io)?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(feature = "tokio")]
pub(crate) mod tokio_rt;

#[cfg(all(unix, feature = "async-io"))]
pub(crate) mod async_io_rt;
