//! The two halves of a split connection, and the handle that closes a
//! connection from another thread.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Weak;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Authenticated, Connection, Receiver, Sender, Trust, deadline_after};
use crate::error::Result;
use crate::transport::Endpoint;

/// The sending half of a [`Connection::split`].
pub struct SendHalf<T: Trust = Authenticated> {
    tx: Sender,
    _trust: PhantomData<fn() -> T>,
}

/// The receiving half of a [`Connection::split`]. Typed `recv` exists only
/// for authenticated connections, as on `Connection`.
pub struct RecvHalf<T: Trust = Authenticated> {
    rx: Receiver,
    _trust: PhantomData<fn() -> T>,
}

impl<T: Trust> fmt::Debug for SendHalf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendHalf")
            .field("stream", self.tx.endpoint().stream())
            .finish()
    }
}

impl<T: Trust> fmt::Debug for RecvHalf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHalf")
            .field("stream", self.rx.endpoint().stream())
            .finish()
    }
}

impl<T: Trust> SendHalf<T> {
    pub(super) fn new(tx: Sender) -> Self {
        SendHalf {
            tx,
            _trust: PhantomData,
        }
    }

    /// As [`Connection::send`].
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.tx.send(value)
    }

    /// As [`Connection::send_bytes`].
    ///
    /// # Errors
    /// As [`Connection::send_bytes`].
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.tx.send_bytes(buf)
    }

    /// As [`Connection::batch`].
    pub fn batch(&mut self) -> super::Batch<'_> {
        super::Batch::new(&mut self.tx)
    }

    /// A handle that closes the whole connection from any thread.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle::new(self.tx.weak())
    }

    /// Puts the halves of one connection back together.
    ///
    /// # Errors
    /// Gives both halves back when they come from different connections.
    #[allow(clippy::type_complexity)]
    pub fn reunite(
        self,
        rx: RecvHalf<T>,
    ) -> std::result::Result<Connection<T>, Box<(Self, RecvHalf<T>)>> {
        if !self.tx.same_endpoint(&rx.rx) {
            return Err(Box::new((self, rx)));
        }
        Ok(Connection::from_halves(self.tx, rx.rx))
    }
}

impl<T: Trust> RecvHalf<T> {
    pub(super) fn new(rx: Receiver) -> Self {
        RecvHalf {
            rx,
            _trust: PhantomData,
        }
    }

    pub(crate) fn receiver_ref(&self) -> &Receiver {
        &self.rx
    }

    /// As [`Connection::recv_bytes`].
    ///
    /// # Errors
    /// As [`Connection::recv_bytes`].
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.rx.recv_bytes(None)
    }

    /// As [`Connection::recv_bytes_timeout`].
    ///
    /// # Errors
    /// As [`Connection::recv_bytes_timeout`].
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.rx.recv_bytes(deadline_after(timeout))
    }

    /// As [`Connection::recv_bytes_into`].
    ///
    /// # Errors
    /// As [`Connection::recv_bytes_into`].
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv_bytes_into_at(buf, 0)
    }

    /// As [`Connection::recv_bytes_into_at`].
    ///
    /// # Errors
    /// As [`Connection::recv_bytes_into_at`].
    pub fn recv_bytes_into_at(&mut self, buf: &mut [u8], offset: usize) -> Result<usize> {
        self.rx.recv_bytes_into_at(buf, offset)
    }

    /// As [`Connection::poll`].
    ///
    /// # Errors
    /// As [`Connection::poll`].
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.rx.poll(timeout)
    }

    /// A handle that closes the whole connection from any thread.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle::new(self.rx.weak())
    }
}

impl RecvHalf<Authenticated> {
    /// As [`Connection::recv`].
    ///
    /// # Errors
    /// As [`Connection::recv`].
    pub fn recv<V: DeserializeOwned>(&mut self) -> Result<V> {
        self.rx.recv(None)
    }

    /// As [`Connection::recv_timeout`].
    ///
    /// # Errors
    /// As [`Connection::recv_timeout`].
    pub fn recv_timeout<V: DeserializeOwned>(&mut self, timeout: Duration) -> Result<V> {
        self.rx.recv(deadline_after(timeout))
    }
}

/// Closes a connection from any thread (CPython cannot do this).
///
/// A thread blocked in a receive or send on the connection wakes with
/// [`Error::Closed`](crate::Error::Closed), and so does every later call. The handle keeps nothing
/// alive: once the connection is dropped, closing is a no-op.
#[derive(Debug, Clone)]
pub struct CloseHandle {
    endpoint: Weak<Endpoint>,
}

impl CloseHandle {
    pub(super) fn new(endpoint: Weak<Endpoint>) -> Self {
        CloseHandle { endpoint }
    }

    /// Closes the connection; see the type's documentation.
    pub fn close(&self) {
        if let Some(endpoint) = self.endpoint.upgrade() {
            endpoint.close();
        }
    }

    /// Whether the connection still exists and has not been closed.
    pub fn is_open(&self) -> bool {
        self.endpoint
            .upgrade()
            .is_some_and(|e| !crate::transport::ByteStream::is_closed(&*e))
    }
}
