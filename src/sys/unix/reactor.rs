//! Registration with tokio's reactor, whose safe constructor is gone: the
//! descriptor must stay open and the same while registered, which only the
//! owner of the descriptor can promise.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// A type that owns exactly one descriptor, which its `as_raw_fd` always
/// returns and which stays open as long as the value lives.
pub trait OwnsFd: AsRawFd + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

impl sealed::Sealed for super::Stream {}
impl OwnsFd for super::Stream {}
impl sealed::Sealed for OwnedFd {}
impl OwnsFd for OwnedFd {}

/// Registers `source` with the current tokio runtime's reactor for
/// readiness in both directions.
pub fn tokio_register<S: OwnsFd>(source: S) -> io::Result<AsyncFd<S>> {
    let interest = tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE;
    // SAFETY: `OwnsFd` is implemented only for `Stream` and `OwnedFd`, which
    // own their descriptor, always return that one from `as_raw_fd`, and
    // close it only when dropped; the `AsyncFd` owns the value, so the
    // descriptor stays open and the same while registered.
    unsafe { AsyncFd::register_with_interest(source, interest) }.map_err(|e| e.into_parts().1)
}
