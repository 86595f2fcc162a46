//! Sending on an async connection, and what a send dropped half-way leaves.
//!
//! A send writes the frame header and payload straight from where they lie
//! with vectored writes. When its future is dropped after the first byte
//! went out and before the last, the frame cannot be taken back: the peer
//! has its beginning. The rest (header bytes included) is copied into the
//! sender's `carry`, and whatever is sent next on the connection (another
//! send, or [`flush`](super::SendHalf::flush)) writes it out first, so the
//! peer receives that message whole and the stream stays in step. A send
//! dropped before its first byte went out sent nothing and leaves nothing.
//!
//! On an encrypted connection, a message's records are sealed into the
//! carry before its first byte goes out (the nonces are spent then), so a
//! send dropped at any point leaves its whole message there, and the next
//! send or flush delivers it.
//!
//! A Windows named pipe needs no carry: a message is committed to it whole
//! (copied into the pipe's own buffer) or not at all, and one committed
//! but not yet taken by the pipe finishes by itself
//! (`sys::Pipe::try_send_message`). A send waits until its message is
//! taken, as a blocking one does; one dropped before that leaves it to
//! finish, and the next send or flush reports how it ended.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use super::Runtime;
use crate::error::{Error, Result};
use crate::proto::frame::{self, MAX_HEADER};
use crate::proto::noise::Sealer;
use crate::sys::{self, Interest};

/// Bytes of frames already begun, to be written before anything else.
#[derive(Debug, Default)]
pub(crate) struct Carry {
    bytes: Vec<u8>,
    sent: usize,
    /// The encrypted mode's sending keys.
    sealer: Option<Box<Sealer>>,
}

/// A carry buffer larger than this is freed once written.
const CARRY_KEEP: usize = 64 * 1024;

impl Carry {
    /// From here on, every message is sealed with `sealer`.
    pub(crate) fn seal(&mut self, sealer: Sealer) {
        self.sealer = Some(Box::new(sealer));
    }

    pub(crate) fn take_sealer(&mut self) -> Option<Sealer> {
        self.sealer.take().map(|s| *s)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    /// Writes out what is carried; `Ready(Ok)` once nothing is left.
    pub(crate) fn poll_flush<R: Runtime>(
        &mut self,
        io: &R::Io<sys::Stream>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        while !self.is_empty() {
            let rest = &self.bytes[self.sent..];
            match R::poll_io(io, cx, Interest::Writable, |s| {
                s.write_vectored(&[IoSlice::new(rest)])
            }) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => {
                    // The stream is broken: nothing more will go out.
                    self.clear();
                    return Poll::Ready(Err(Error::Io(e)));
                }
            }
        }
        self.clear();
        Poll::Ready(Ok(()))
    }

    fn clear(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > CARRY_KEEP {
            self.bytes = Vec::new();
        }
        self.sent = 0;
    }

    /// Frees the buffer when nothing is carried.
    pub(crate) fn shrink(&mut self) {
        if self.is_empty() {
            self.bytes = Vec::new();
            self.sent = 0;
        }
    }
}

fn write_zero() -> Error {
    Error::Io(io::ErrorKind::WriteZero.into())
}

/// One frame under way: written from the caller's payload, and moved into
/// the carry if dropped half-way.
struct Frame<'a> {
    header: [u8; MAX_HEADER],
    header_len: usize,
    payload: &'a [u8],
    written: usize,
    /// Finished, failed, or never begun: nothing to carry.
    settled: bool,
    carry: &'a mut Carry,
}

impl Frame<'_> {
    fn total(&self) -> usize {
        self.header_len + self.payload.len()
    }

    fn poll_write<R: Runtime>(
        &mut self,
        io: &R::Io<sys::Stream>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        while self.written < self.total() {
            let header = &self.header[MAX_HEADER - self.header_len..];
            let mut slices = [IoSlice::new(header), IoSlice::new(self.payload)];
            let mut bufs = &mut slices[..];
            IoSlice::advance_slices(&mut bufs, self.written);
            match R::poll_io(io, cx, Interest::Writable, |s| s.write_vectored(bufs)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.settled = true;
                    return Poll::Ready(Err(write_zero()));
                }
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => {
                    self.settled = true;
                    return Poll::Ready(Err(Error::Io(e)));
                }
            }
        }
        self.settled = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        if self.settled || self.written == 0 {
            return;
        }
        let header = &self.header[MAX_HEADER - self.header_len..];
        let carry = &mut *self.carry;
        carry.bytes.clear();
        carry.sent = 0;
        if self.written < header.len() {
            carry.bytes.extend_from_slice(&header[self.written..]);
            carry.bytes.extend_from_slice(self.payload);
        } else {
            let from = self.written - header.len();
            carry.bytes.extend_from_slice(&self.payload[from..]);
        }
    }
}

/// Sends `payload` as one frame, after whatever is carried; on a named
/// pipe, as one pipe message.
pub(crate) async fn send_frame<R: Runtime>(
    io: &R::Io<sys::Stream>,
    carry: &mut Carry,
    payload: &[u8],
) -> Result<()> {
    #[cfg(windows)]
    if let Some(pipe) = R::get::<sys::Stream>(io).as_pipe() {
        return send_pipe_message(pipe, payload).await;
    }
    if !carry.is_empty() {
        poll_fn(|cx| carry.poll_flush::<R>(io, cx)).await?;
    }
    if let Some(sealer) = carry.sealer.as_mut() {
        carry.bytes.clear();
        carry.sent = 0;
        sealer.seal(payload, &mut carry.bytes)?;
        return poll_fn(|cx| carry.poll_flush::<R>(io, cx)).await;
    }
    let mut header = [0; MAX_HEADER];
    let header_len = frame::encode_header(payload.len() as u64, &mut header);
    let mut frame = Frame {
        header,
        header_len,
        payload,
        written: 0,
        settled: false,
        carry,
    };
    poll_fn(|cx| frame.poll_write::<R>(io, cx)).await
}

/// Writes out whatever is carried; on a named pipe, waits until the
/// pipe has taken a message still in flight.
pub(crate) async fn flush<R: Runtime>(io: &R::Io<sys::Stream>, carry: &mut Carry) -> Result<()> {
    #[cfg(windows)]
    if let Some(pipe) = R::get::<sys::Stream>(io).as_pipe() {
        return Ok(poll_fn(|cx| pipe.poll_flush(cx)).await?);
    }
    poll_fn(|cx| carry.poll_flush::<R>(io, cx)).await
}

/// Commits `payload` to the pipe as one message once an earlier one in
/// flight has ended, then waits until the pipe has taken it.
#[cfg(windows)]
async fn send_pipe_message(pipe: &sys::Pipe, payload: &[u8]) -> Result<()> {
    let mut committed = false;
    poll_fn(|cx| {
        while !committed {
            match pipe.try_send_message(&[IoSlice::new(payload)]) {
                Ok(()) => committed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // An earlier message is in flight: its end, or its error.
                    std::task::ready!(pipe.poll_flush(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        pipe.poll_flush(cx)
    })
    .await
    .map_err(Error::Io)
}
