//! [`Runtime`] for async-io (smol, async-std): descriptors in an
//! [`Async`], async-io's timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use async_io::{Async, Timer};

use super::{Runtime, Source, sealed};
use crate::sys::Interest;

/// The async-io reactor (feature `async-io`), which smol and async-std run
/// on. It needs no runtime context: its reactor thread starts on first use.
#[derive(Debug, Clone, Copy)]
pub enum AsyncIo {}

impl sealed::Sealed for AsyncIo {}

/// async-io's timer, as a future of `()`.
#[derive(Debug)]
pub struct Sleep(Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for AsyncIo {
    type Io<S: Source> = Async<S>;
    type Sleep = Sleep;

    fn register<S: Source>(source: S) -> io::Result<Async<S>> {
        Async::new(source)
    }

    fn get<S: Source>(io: &Async<S>) -> &S {
        io.get_ref()
    }

    fn into_inner<S: Source>(io: Async<S>) -> io::Result<S> {
        io.into_inner()
    }

    fn poll_io<S: Source, T>(
        io: &Async<S>,
        cx: &mut Context<'_>,
        interest: Interest,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(io.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            // Ready when an event came since this task last saw `Pending`:
            // then the operation runs again.
            match interest {
                Interest::Readable => ready!(io.poll_readable(cx))?,
                Interest::Writable => ready!(io.poll_writable(cx))?,
            }
        }
    }

    async fn io<'a, S: Source, T: Send + 'a>(
        io: &'a Async<S>,
        interest: Interest,
        op: impl FnMut(&S) -> io::Result<T> + Send + 'a,
    ) -> io::Result<T> {
        match interest {
            Interest::Readable => io.read_with(op).await,
            Interest::Writable => io.write_with(op).await,
        }
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep(Timer::at(deadline))
    }

    async fn resolve(host: String, port: u16) -> io::Result<Vec<std::net::SocketAddr>> {
        // On the `blocking` crate's thread pool, as smol's own networking does.
        blocking::unblock(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect)
        })
        .await
    }
}
