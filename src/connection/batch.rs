//! `Batch`: many messages in one system call.

use std::fmt;

use serde::Serialize;

use super::Sender;
use crate::error::Result;

/// A corked writer: messages queue up in memory and leave together, in one
/// system call per 64 KiB, instead of one per message. Get one from
/// [`Connection::batch`](super::Connection::batch) or
/// [`SendHalf::batch`](super::SendHalf::batch).
///
/// The bytes on the wire are exactly those of the same messages sent one by
/// one, so the peer (Python included) sees no difference. Queued messages
/// leave when the queue passes 64 KiB, when a message of 64 KiB or more is
/// added, on [`flush`](Self::flush), and when the batch is dropped.
///
/// ```
/// let (mut a, mut b) = mpconn::pipe()?;
/// let mut batch = a.batch();
/// for i in 0..1000u32 {
///     batch.send(&i)?;
/// }
/// batch.flush()?;
/// assert_eq!(b.recv::<u32>()?, 0);
/// # Ok::<(), mpconn::Error>(())
/// ```
pub struct Batch<'a> {
    tx: &'a mut Sender,
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("queued_bytes", &self.tx.queued_len())
            .finish()
    }
}

impl<'a> Batch<'a> {
    pub(super) fn new(tx: &'a mut Sender) -> Self {
        Batch { tx }
    }

    /// Queues `buf` as one message.
    ///
    /// # Errors
    /// As [`Connection::send_bytes`](super::Connection::send_bytes), when this
    /// call writes the queue out.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.tx.queue_bytes(buf)
    }

    /// Queues a typed value.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) if the value cannot be encoded
    /// (nothing is queued then); otherwise as [`send_bytes`](Self::send_bytes).
    pub fn send<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<()> {
        self.tx.queue(value)
    }

    /// Writes out everything queued.
    ///
    /// # Errors
    /// As [`Connection::send_bytes`](super::Connection::send_bytes).
    pub fn flush(&mut self) -> Result<()> {
        self.tx.flush()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.tx.queued_len()
    }
}

impl Drop for Batch<'_> {
    /// Writes out what is still queued. Errors are lost here, as in
    /// `std::io::BufWriter`: call [`flush`](Batch::flush) to see them.
    fn drop(&mut self) {
        let _ = self.tx.flush();
    }
}
