//! [`Runtime`] for tokio: on Unix, descriptors in an [`AsyncFd`]; on
//! Windows, a TCP socket in a `tokio::net::TcpStream` (see
//! `sys::Registered`) and a named pipe on its own; tokio's timer.
//!
//! [`AsyncFd`]: https://docs.rs/tokio/latest/tokio/io/unix/struct.AsyncFd.html

use std::io;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use super::{Runtime, Source, sealed};
use crate::sys::Interest;

/// The tokio runtime (feature `tokio`). Its reactor and timer must be
/// enabled (`Runtime::enable_all`, or `#[tokio::main]`).
#[derive(Debug, Clone, Copy)]
pub enum Tokio {}

impl sealed::Sealed for Tokio {}

fn interest(interest: Interest) -> tokio::io::Interest {
    match interest {
        Interest::Readable => tokio::io::Interest::READABLE,
        Interest::Writable => tokio::io::Interest::WRITABLE,
    }
}

/// Fails outside a runtime's context instead of letting tokio panic.
fn in_runtime() -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other(
            "not inside a tokio runtime: call this from a task or inside Runtime::enter",
        )),
    }
}

#[cfg(unix)]
mod unix {
    use std::future::Future;

    use tokio::io::unix::AsyncFd;

    use super::*;

    impl Runtime for Tokio {
        type Io<S: Source> = AsyncFd<S>;
        type Sleep = tokio::time::Sleep;

        fn register<S: Source>(source: S) -> io::Result<AsyncFd<S>> {
            in_runtime()?;
            crate::sys::tokio_register(source)
        }

        fn get<S: Source>(io: &AsyncFd<S>) -> &S {
            io.get_ref()
        }

        fn into_inner<S: Source>(io: AsyncFd<S>) -> io::Result<S> {
            Ok(io.into_inner())
        }

        fn poll_io<S: Source, T>(
            io: &AsyncFd<S>,
            cx: &mut Context<'_>,
            interest: Interest,
            mut op: impl FnMut(&S) -> io::Result<T>,
        ) -> Poll<io::Result<T>> {
            loop {
                let mut guard = match interest {
                    Interest::Readable => ready!(io.poll_read_ready(cx))?,
                    Interest::Writable => ready!(io.poll_write_ready(cx))?,
                };
                // A `WouldBlock` clears the readiness this guard saw, and only
                // that: an event that came since is kept.
                if let Ok(result) = guard.try_io(|fd| op(fd.get_ref())) {
                    return Poll::Ready(result);
                }
            }
        }

        fn poll_ready<S: Source>(
            io: &AsyncFd<S>,
            cx: &mut Context<'_>,
            interest: Interest,
        ) -> Poll<io::Result<()>> {
            // The guard is dropped without clearing anything.
            match interest {
                Interest::Readable => io.poll_read_ready(cx).map_ok(drop),
                Interest::Writable => io.poll_write_ready(cx).map_ok(drop),
            }
        }

        fn poll_read_io<S: Source, T>(
            io: &AsyncFd<S>,
            cx: &mut Context<'_>,
            mut op: impl FnMut(&S) -> io::Result<(T, bool)>,
        ) -> Poll<io::Result<T>> {
            loop {
                let mut guard = ready!(io.poll_read_ready(cx))?;
                match guard.try_io(|fd| op(fd.get_ref())) {
                    Ok(Ok((result, drained))) => {
                        if drained {
                            // Only the readiness this guard saw: an event
                            // that came since is kept.
                            guard.clear_ready();
                        }
                        return Poll::Ready(Ok(result));
                    }
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => continue,
                }
            }
        }

        fn io<'a, S: Source, T: Send + 'a>(
            io: &'a AsyncFd<S>,
            which: Interest,
            mut op: impl FnMut(&S) -> io::Result<T> + Send + 'a,
        ) -> impl Future<Output = io::Result<T>> + Send + 'a {
            io.async_io(interest(which), move |s| op(s))
        }

        fn sleep_until(deadline: Instant) -> tokio::time::Sleep {
            tokio::time::sleep_until(deadline.into())
        }

        async fn resolve(host: String, port: u16) -> io::Result<Vec<std::net::SocketAddr>> {
            resolve(host, port).await
        }
    }
}

#[cfg(windows)]
mod windows {
    use super::*;
    use crate::sys::Registered;

    impl Runtime for Tokio {
        type Io<S: Source> = Registered;
        type Sleep = tokio::time::Sleep;

        fn register<S: Source>(source: S) -> io::Result<Registered> {
            in_runtime()?;
            crate::sys::tokio_register(source.into_stream())
        }

        fn get<S: Source>(io: &Registered) -> &S {
            S::from_stream_ref(io.get())
        }

        fn into_inner<S: Source>(io: Registered) -> io::Result<S> {
            io.into_inner().map(S::from_stream)
        }

        /// A socket's readiness comes from tokio, and `op` runs inside its
        /// `try_io`, which re-arms the reactor's interest when `op` finds
        /// the socket not ready after all. A named pipe waits for itself
        /// (see `Polled`): `op` runs once.
        fn poll_io<S: Source, T>(
            io: &Registered,
            cx: &mut Context<'_>,
            which: Interest,
            mut op: impl FnMut(&S) -> io::Result<T>,
        ) -> Poll<io::Result<T>> {
            let source = S::from_stream_ref(io.get());
            let Some(tcp) = io.tcp() else {
                return Poll::Ready(op(source));
            };
            loop {
                match which {
                    Interest::Readable => ready!(tcp.poll_read_ready(cx))?,
                    Interest::Writable => ready!(tcp.poll_write_ready(cx))?,
                }
                match tcp.try_io(interest(which), || op(source)) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    result => return Poll::Ready(result),
                }
            }
        }

        fn sleep_until(deadline: Instant) -> tokio::time::Sleep {
            tokio::time::sleep_until(deadline.into())
        }

        async fn resolve(host: String, port: u16) -> io::Result<Vec<std::net::SocketAddr>> {
            resolve(host, port).await
        }
    }
}

/// Resolves a host name on tokio's blocking pool.
async fn resolve(host: String, port: u16) -> io::Result<Vec<std::net::SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}
