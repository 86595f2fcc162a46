//! The async `Listener`: the blocking listener's engine, driven by a task.
//!
//! The engine that accepts clients and runs their handshakes, with its
//! admission policy and deadlines (SECURITY.md), is the blocking
//! listener's own: on Unix, every socket of it sits on one mio poll, and
//! that poll's descriptor is readable whenever the engine has work. The
//! async listener registers that descriptor with the runtime, moves the
//! engine with the non-blocking [`crate::Listener::try_accept`] when it is
//! readable, and sleeps on the runtime's timer until the engine's next
//! deadline. On Windows the engine's own threads accept clients and run
//! their handshakes with their deadlines, and wake the tasks waiting in
//! `accept` when they queue a connection (or a failure for the hook); the
//! task only takes it. A flood meets exactly the policy it meets on a
//! blocking listener.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::task::Poll;

use super::{Connection, Runtime, with_deadline};
use crate::address::{Address, ToAddress};
use crate::connection::{Authenticated, Trust, Unverified};
use crate::error::Result;
use crate::listener::{ListenerOptions, ListenerStats};

/// A bound socket that accepts authenticated connections without blocking:
/// the async form of [`crate::Listener`], on the runtime `R`
/// ([`mpconn::tokio::Listener`](crate::tokio::Listener),
/// `mpconn::async_io::Listener` on Unix).
///
/// The handshakes of many clients run at once, under the same admission
/// policy and deadlines as on the blocking listener (the same engine
/// drives them), while a task awaits [`accept`](Self::accept). Several
/// tasks may accept at once.
pub struct Listener<R: Runtime, T: Trust = Authenticated> {
    /// The engine's poll, registered with the runtime (Unix).
    #[cfg(unix)]
    signal: R::Io<std::os::fd::OwnedFd>,
    inner: crate::Listener<T>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime, T: Trust> fmt::Debug for Listener<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Listener<R, Authenticated> {
    /// Binds an authenticated listener with default options.
    ///
    /// # Errors
    /// As [`ListenerOptions::bind`], and [`Error::Io`](crate::Error::Io)
    /// when the runtime cannot watch it.
    pub fn bind(address: impl ToAddress, authkey: &[u8]) -> Result<Self> {
        Self::bind_with(ListenerOptions::new(), address, authkey)
    }

    /// Binds an authenticated listener with `options`.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_with(
        options: ListenerOptions,
        address: impl ToAddress,
        authkey: &[u8],
    ) -> Result<Self> {
        Self::from_blocking(options.bind(address, authkey)?)
    }
}

impl<R: Runtime> Listener<R, Unverified> {
    /// Binds a listener that runs no handshake: what it accepts is a
    /// `Connection<R, Unverified>`, bytes only until authenticated.
    ///
    /// # Errors
    /// As [`bind`](Listener::bind), without the key checks.
    pub fn bind_unauthenticated(address: impl ToAddress) -> Result<Self> {
        Self::bind_unauthenticated_with(ListenerOptions::new(), address)
    }

    /// [`bind_unauthenticated`](Self::bind_unauthenticated) with `options`.
    ///
    /// # Errors
    /// As [`bind_unauthenticated`](Self::bind_unauthenticated).
    pub fn bind_unauthenticated_with(
        options: ListenerOptions,
        address: impl ToAddress,
    ) -> Result<Self> {
        Self::from_blocking(options.bind_unauthenticated(address)?)
    }
}

impl<R: Runtime, T: Trust> Listener<R, T> {
    /// Drives a blocking listener from the runtime instead. Do not accept
    /// on it from threads any more: the listener is moved in.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the runtime cannot watch it.
    pub fn from_blocking(listener: crate::Listener<T>) -> Result<Self> {
        Ok(Listener {
            #[cfg(unix)]
            signal: R::register(listener.dup_poll_fd()?)?,
            inner: listener,
            _runtime: PhantomData,
        })
    }

    /// Gives the blocking listener back, with its handshakes in flight.
    pub fn into_blocking(self) -> crate::Listener<T> {
        self.inner
    }

    /// Waits for the next client that passes the handshake (any client,
    /// for an unauthenticated listener), up to the accept timeout if the
    /// options set one. Failed handshakes do not end it: they are counted
    /// and reported to the failure hook, as on the blocking listener.
    ///
    /// Cancellation safe: a connection is taken from the listener only by
    /// the poll that returns it.
    ///
    /// # Errors
    /// As [`crate::Listener::accept`].
    pub async fn accept(&self) -> Result<Connection<R, T>> {
        let deadline = self.inner.accept_deadline();
        with_deadline::<R, _>(deadline, self.accept_forever()).await
    }

    #[cfg(unix)]
    async fn accept_forever(&self) -> Result<Connection<R, T>> {
        use std::future::Future;
        use std::io;
        use std::pin::Pin;

        use super::Timer;
        use crate::sys::Interest;

        /// The wait for the engine's poll to become readable, with what
        /// the engine gave then.
        type Ready<'a, T> =
            Pin<Box<dyn Future<Output = io::Result<Result<crate::Connection<T>>>> + Send + 'a>>;

        loop {
            // A connection may be queued from an earlier round while the
            // poll has nothing new to report.
            if let Some(conn) = self.inner.try_accept()? {
                return self.adopt(conn);
            }
            let inner = &self.inner;
            // Boxed as a `dyn Future + Send`: held across the await below,
            // the runtime's own future type (which captures a reference)
            // would make this future `Send` only for one lifetime, and so
            // unusable in `tokio::spawn` (rust-lang/rust#100013).
            let mut ready: Ready<'_, T> = Box::pin(R::io(
                &self.signal,
                Interest::Readable,
                move |_| match inner.try_accept() {
                    Ok(Some(conn)) => Ok(Ok(conn)),
                    Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => Ok(Err(e)),
                },
            ));
            let mut timer = Timer::<R>::default();
            let woke = poll_fn(|cx| {
                if let Poll::Ready(result) = ready.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                // The engine's deadlines pass without any event.
                timer.poll_at(cx, inner.next_wake()).map(|()| None)
            })
            .await;
            match woke {
                Some(Ok(Ok(conn))) => return self.adopt(conn),
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(e.into()),
                None => continue,
            }
        }
    }

    /// The engine's threads keep its deadlines and wake this task when they
    /// queue work; taking it never waits.
    #[cfg(windows)]
    async fn accept_forever(&self) -> Result<Connection<R, T>> {
        let conn = poll_fn(|cx| {
            loop {
                match self.inner.try_accept() {
                    Ok(Some(conn)) => return Poll::Ready(Ok(conn)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                // Work queued between the look and the waker's keeping is
                // seen here; work queued after wakes the task.
                if !self.inner.wake_on_work(cx.waker()) {
                    return Poll::Pending;
                }
            }
        })
        .await?;
        self.adopt(conn)
    }

    /// Moves the engine forward without waiting and returns a connection
    /// that has completed its handshake, if any.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn try_accept(&self) -> Result<Option<Connection<R, T>>> {
        self.inner
            .try_accept()?
            .map(|conn| self.adopt(conn))
            .transpose()
    }

    fn adopt(&self, conn: crate::Connection<T>) -> Result<Connection<R, T>> {
        // One round may finish several handshakes: let another waiting
        // task know that more are queued.
        if self.inner.has_ready() {
            self.inner.nudge();
        }
        Connection::from_blocking(conn)
    }

    /// The bound address, with the real port after binding port 0.
    pub fn address(&self) -> &Address {
        self.inner.address()
    }

    /// The address of the last accepted peer, when it has one.
    pub fn last_accepted(&self) -> Option<Address> {
        self.inner.last_accepted()
    }

    /// Counters of accepted connections and failed handshakes.
    pub fn stats(&self) -> ListenerStats {
        self.inner.stats()
    }

    /// Stops accepting: a task waiting in `accept()` wakes with
    /// [`Error::Closed`](crate::Error::Closed), and so does every later call.
    pub fn close(&self) {
        self.inner.close();
    }
}
