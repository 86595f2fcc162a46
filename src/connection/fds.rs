//! Descriptors across processes (Unix): `send_fds` / `recv_fds`, wire
//! compatible with CPython's `multiprocessing.reduction.sendfds` /
//! `recvfds` (and so `send_handle` / `recv_handle`), and whole connections
//! handed to another process with `send_connection` / `recv_connection`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::{Authenticated, Connection, Receiver, RecvHalf, SendHalf, Sender, Trust};
use crate::error::{DescriptorError, Error, Result};
use crate::sys::{self, Interest};
use crate::transport::{Endpoint, FrameReader, MessageReader, retry};

/// The most descriptors one [`send_fds`](Connection::send_fds) carries:
/// 253, Linux's `SCM_MAX_FD` (the lowest limit of the Unix kernels mpconn
/// supports). A receive takes up to as many.
pub const MAX_FDS: usize = sys::MAX_FDS;

impl Sender {
    fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.is_empty() || fds.len() > MAX_FDS {
            return Err(Error::Descriptors(DescriptorError::Count {
                count: fds.len(),
                max: MAX_FDS,
            }));
        }
        if self.is_encrypted() {
            return Err(Error::Descriptors(DescriptorError::Encrypted));
        }
        if !self.endpoint().stream().passes_fds() {
            return Err(Error::Descriptors(DescriptorError::Unsupported));
        }
        // Whatever a batch queued goes first: the descriptors come after it.
        self.flush()?;
        // CPython's count byte: the number of descriptors modulo 256.
        let byte = (fds.len() % 256) as u8;
        let sent = retry(self.endpoint(), Interest::Writable, None, |e: &Endpoint| {
            e.stream().send_fds(byte, fds, false)
        })?;
        match sent {
            0 => Err(Error::Io(std::io::ErrorKind::WriteZero.into())),
            _ => Ok(()),
        }
    }
}

impl Receiver {
    fn recv_fds(&mut self) -> Result<Vec<OwnedFd>> {
        if !self.endpoint().stream().passes_fds() {
            return Err(Error::Descriptors(DescriptorError::Unsupported));
        }
        let (announced, passed) = self.recv_passed(None)?;
        if passed.truncated {
            return Err(Error::Descriptors(DescriptorError::Truncated));
        }
        if passed.fds.len() % 256 != usize::from(announced) {
            return Err(Error::Descriptors(DescriptorError::CountMismatch {
                announced,
                received: passed.fds.len(),
            }));
        }
        Ok(passed.fds)
    }
}

impl<T: Trust> SendHalf<T> {
    /// Sends descriptors to the peer process over a Unix-domain socket:
    /// each arrives there as a new descriptor (a duplicate, as `dup` makes)
    /// for the same open file, socket or pipe. This process keeps its own.
    ///
    /// The bytes are CPython's: a Python peer receives them with
    /// `multiprocessing.reduction.recvfds(socket.socket(fileno=...), n)`,
    /// or `recv_handle(conn)` for one. Any messages queued in a
    /// [`Batch`](super::Batch) leave first, so the peer sees everything in
    /// the order it was sent.
    ///
    /// # Errors
    /// [`DescriptorError::Count`] for none or more than [`MAX_FDS`],
    /// [`DescriptorError::Unsupported`] unless this is a Unix-domain
    /// socket on Linux or Android, and the errors of [`send_bytes`](Self::send_bytes).
    pub fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.tx.send_fds(fds)
    }

    /// Hands `conn` to the peer process, which takes it with
    /// [`recv_connection`](RecvHalf::recv_connection): the prefork
    /// pattern, where one process accepts and authenticates and another
    /// serves. Nothing the far end sent is lost: what this process had
    /// read from `conn` and not received goes along, and so do descriptors
    /// that arrived with those bytes and were not received. Its queued
    /// batch is sent first. This process's copy is closed afterwards, as
    /// by dropping it; whatever happens, `conn` is gone from this process.
    ///
    /// On the wire (between mpconn ends): the connection's descriptor with
    /// [`send_fds`](Self::send_fds), then one message: an 8-byte
    /// little-endian index into the bytes that follow it (`u64::MAX` for
    /// none), one flag byte (1: descriptors came with the byte at that
    /// index and follow this message with `send_fds`; 2: the operating
    /// system had cut that set short), then the bytes read and not
    /// received.
    ///
    /// Only a `Connection<Authenticated>` can be handed on this way, so
    /// that an [`Unverified`](super::Unverified) one never arrives with the
    /// trust of an authenticated one: see `recv_connection`. (A `pipe()`
    /// end, and a connection trusted with
    /// `dangerous_trust_without_authentication`, are authenticated too.)
    ///
    /// # Errors
    /// As [`send_fds`](Self::send_fds), and those of flushing `conn`.
    pub fn send_connection(&mut self, conn: Connection<Authenticated>) -> Result<()> {
        let Connection { mut tx, mut rx } = conn;
        tx.tx.flush()?;
        let (unread, pending) = rx.rx.take_unread()?;
        let mut message = Vec::with_capacity(HANDOVER_HEADER + unread.len());
        let (at, flags) = match &pending {
            None => (u64::MAX, 0),
            Some((at, set)) => {
                let follow = if set.fds.is_empty() { 0 } else { FDS_FOLLOW };
                let cut = if set.truncated { FDS_TRUNCATED } else { 0 };
                (*at as u64, follow | cut)
            }
        };
        message.extend_from_slice(&at.to_le_bytes());
        message.push(flags);
        message.extend_from_slice(&unread);
        self.tx.send_fds(&[tx.endpoint().stream().as_fd()])?;
        self.tx.send_bytes(&message)?;
        if let Some((_, set)) = pending
            && !set.fds.is_empty()
        {
            let fds: Vec<BorrowedFd<'_>> = set.fds.iter().map(AsFd::as_fd).collect();
            self.tx.send_fds(&fds)?;
        }
        Ok(())
    }
}

/// The hand-over message's header: the index (8 bytes) and the flags.
const HANDOVER_HEADER: usize = 9;
/// Descriptors follow the hand-over message.
const FDS_FOLLOW: u8 = 1;
/// The set that follows was cut short by the sender's operating system.
const FDS_TRUNCATED: u8 = 2;

fn malformed_handover(what: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("malformed connection hand-over message: {what}"),
    ))
}

impl<T: Trust> RecvHalf<T> {
    /// Receives descriptors that the peer sent with
    /// [`send_fds`](SendHalf::send_fds), or with CPython's
    /// `multiprocessing.reduction.sendfds` / `send_handle`. They are owned
    /// and close-on-exec.
    ///
    /// The descriptors travel with one byte of the stream, so they are
    /// received in order with the messages: when the next thing the peer
    /// sent is a message, this fails with [`DescriptorError::NotPassed`]
    /// and leaves the message to be received.
    ///
    /// # Errors
    /// [`DescriptorError::NotPassed`] as above;
    /// [`DescriptorError::CountMismatch`] when the byte announces another
    /// count than arrived, and [`DescriptorError::Truncated`] when the
    /// operating system could not deliver them all (this process ran out of
    /// descriptors): in both cases every descriptor that arrived is closed;
    /// [`DescriptorError::Unsupported`] unless this is a Unix-domain socket
    /// on Linux or Android;
    /// [`Error::Eof`](crate::Error::Eof) when the peer closed.
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>> {
        self.rx.recv_fds()
    }

    /// Receives a connection that the peer handed over with
    /// [`send_connection`](SendHalf::send_connection): its descriptor and
    /// the bytes the sender had read from it, which are received first.
    ///
    /// **Trust**: the connection arrives with the trust of this one. Over
    /// an authenticated connection, the sender proved that it holds the
    /// key, and mpconn's `send_connection` hands on only connections it
    /// authenticated; a key holder vouches for the connection as it vouches
    /// for every message it sends. mpconn cannot check what a peer did
    /// before sending a descriptor, so a key holder that sends a socket it
    /// never authenticated (with raw `send_fds`, or from Python) makes the
    /// receiver trust it anyway: holding the key means being trusted.
    /// Over an unverified connection, the result is unverified too.
    ///
    /// The connection gets this connection's message limit and codec.
    ///
    /// # Errors
    /// As [`recv_fds`](Self::recv_fds);
    /// [`DescriptorError::CountMismatch`] when other than one descriptor
    /// came (all are closed); then as [`recv_bytes`](Self::recv_bytes) for
    /// the message behind it, and `Error::Io` of kind `InvalidData` when
    /// that message is not a hand-over message (see `send_connection`).
    pub fn recv_connection(&mut self) -> Result<Connection<T>> {
        let mut fds = self.rx.recv_fds()?;
        if fds.len() != 1 {
            return Err(Error::Descriptors(DescriptorError::CountMismatch {
                announced: 1,
                received: fds.len(),
            }));
        }
        let fd = fds.pop().expect("one descriptor, checked above");
        let message = self.rx.recv_bytes(None)?;
        if message.len() < HANDOVER_HEADER {
            return Err(malformed_handover("shorter than its header"));
        }
        let (header, unread) = message.split_at(HANDOVER_HEADER);
        let mut at = [0; 8];
        at.copy_from_slice(&header[..8]);
        let (at, flags) = (u64::from_le_bytes(at), header[8]);
        let passed = match at {
            u64::MAX => None,
            at if at < unread.len() as u64 => {
                let fds = match flags & FDS_FOLLOW {
                    0 => Vec::new(),
                    _ => self.rx.recv_fds()?,
                };
                let truncated = flags & FDS_TRUNCATED != 0;
                Some((at as usize, sys::Passed { fds, truncated }))
            }
            _ => return Err(malformed_handover("an index beyond its bytes")),
        };
        let unread = unread.to_vec();
        let max = self.rx.max_message();
        let endpoint = Arc::new(Endpoint::new(sys::Stream::from_fd(fd)));
        let reader = MessageReader::from(FrameReader::with_unread(unread, passed, max));
        let mut rx = Receiver::with_reader(endpoint.clone(), reader, max);
        rx.codec = self.rx.codec;
        let mut tx = Sender::new(endpoint);
        tx.codec = self.rx.codec;
        Ok(Connection::from_halves(
            SendHalf::new(tx),
            RecvHalf::new(rx),
        ))
    }
}

impl<T: Trust> Connection<T> {
    /// Sends descriptors to the peer process: [`SendHalf::send_fds`].
    ///
    /// # Errors
    /// As [`SendHalf::send_fds`].
    pub fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.tx.send_fds(fds)
    }

    /// Receives descriptors from the peer process: [`RecvHalf::recv_fds`].
    ///
    /// # Errors
    /// As [`RecvHalf::recv_fds`].
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>> {
        self.rx.recv_fds()
    }

    /// Hands a connection to the peer process:
    /// [`SendHalf::send_connection`].
    ///
    /// # Errors
    /// As [`SendHalf::send_connection`].
    pub fn send_connection(&mut self, conn: Connection<Authenticated>) -> Result<()> {
        self.tx.send_connection(conn)
    }

    /// Receives a connection the peer handed over:
    /// [`RecvHalf::recv_connection`], which says what trust it carries.
    ///
    /// # Errors
    /// As [`RecvHalf::recv_connection`].
    pub fn recv_connection(&mut self) -> Result<Connection<T>> {
        self.rx.recv_connection()
    }
}
