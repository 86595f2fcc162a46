//! The non-blocking side of a message pipe, for async connections: reads
//! and writes that never wait, and readiness that wakes a task.
//!
//! A receive looks at the readiness probe first (the zero-byte read that
//! `wait()` uses) and reads only once it has ended, so a quiet pipe costs
//! no read that must be cancelled; while it is in flight, its event wakes
//! the task through the system thread pool ([`EventWaker`]).
//!
//! A send cannot wait in a buffer it borrows: the task may drop its future
//! while the kernel still reads the message. So the message is copied into
//! the pipe's own buffer and written from there, and a write the pipe
//! cannot take at once stays in flight and finishes by itself. Either the
//! whole message is committed to the pipe or, while an earlier one is still
//! in flight, nothing is: a dropped send never leaves half a message.
//!
//! [`EventWaker`]: super::EventWaker

use std::io::{self, IoSlice};
use std::ptr;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use windows_sys::Win32::Foundation::ERROR_IO_PENDING;
use windows_sys::Win32::Storage::FileSystem::WriteFile;

use super::{Op, Pipe, PipeRecv, Probe, Tx, last_error, message_len, written};

impl Pipe {
    /// Takes the next whole message if one is here, as
    /// [`recv_message`](Pipe::recv_message) does, and `WouldBlock` instead
    /// of waiting when none is.
    pub fn try_recv_message(&self, out: &mut Vec<u8>, limit: u64) -> io::Result<PipeRecv> {
        if let Probe::Pending(..) = self.probe()? {
            out.clear();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.recv_message(out, limit, Some(Instant::now()))? {
            PipeRecv::TimedOut => Err(io::ErrorKind::WouldBlock.into()),
            other => Ok(other),
        }
    }

    /// `Ready` once a message (or the end) is here, nothing taken;
    /// otherwise `Pending`, and the task is woken when the probe ends.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let closed_here = || self.cancelled.load(Ordering::SeqCst);
        let event = match self.probe() {
            Ok(Probe::Ready) => return Poll::Ready(Ok(())),
            Ok(Probe::Pending(event, _)) => event,
            // As in `wait_readable`: the next read reports the close.
            Err(_) if closed_here() => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        };
        // Should the probe end between the look above and this, the event
        // is signalled already and the task is woken at once.
        match self.lock_probe().waker.arm(event, cx.waker()) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Sends one message made of `parts` without waiting for the reader:
    /// copied into the pipe's own buffer, and written at once or left in
    /// flight to finish by itself. `Ok` once the whole message is
    /// committed; `WouldBlock`, with nothing sent, while an earlier message
    /// is still in flight; the error of an earlier one that failed.
    pub fn try_send_message(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut tx = self.lock_tx();
        if !self.reap_write(&mut tx)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Tx {
            flight,
            op,
            in_flight,
            ..
        } = &mut *tx;
        flight.clear();
        for part in parts {
            flight.extend_from_slice(part);
        }
        let len = message_len(flight)?;
        let op = match op {
            Some(op) => op,
            None => op.insert(Op::new()?),
        };
        op.prepare();
        // SAFETY: `flight` belongs to the pipe and is neither changed nor
        // freed until the write has ended: `reap_write` and `finish_write`
        // look at it only then, and Tx's drop cancels the write and waits
        // for it. The OVERLAPPED stays put in the op's box just as long.
        let started = unsafe {
            WriteFile(
                self.raw(),
                flight.as_ptr(),
                len,
                ptr::null_mut(),
                op.ov_mut(),
            )
        };
        if started != 0 {
            // Done at once: the result is there without waiting.
            return written(op.result(self.raw()), len);
        }
        match last_error() {
            ERROR_IO_PENDING => {
                *in_flight = Some(self.raw() as usize);
                Ok(())
            }
            e => written(Err((e, 0)), len),
        }
    }

    /// `Ready` once no write is in flight (with the error of one that
    /// failed); otherwise `Pending`, and the task is woken when it ends.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut tx = self.lock_tx();
        match self.reap_write(&mut tx) {
            Ok(true) => return Poll::Ready(Ok(())),
            Ok(false) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        let Tx { op, waker, .. } = &mut *tx;
        let Some(op) = op else {
            return Poll::Ready(Ok(()));
        };
        match waker.arm(op.event(), cx.waker()) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Ends a write in flight if it has ended: `Ok(true)` when none is in
    /// flight any more, `Ok(false)` while one is, and the error of one
    /// that failed.
    fn reap_write(&self, tx: &mut Tx) -> io::Result<bool> {
        let (Some(_), Some(op)) = (tx.in_flight, tx.op.as_mut()) else {
            return Ok(true);
        };
        if !op.is_complete() {
            return Ok(false);
        }
        let result = op.result(self.raw());
        tx.in_flight = None;
        written(result, tx.flight.len() as u32).map(|()| true)
    }

    /// Waits for a write in flight to end, for a blocking send that comes
    /// after an async one: that message goes first, whole.
    pub(super) fn finish_write(&self, tx: &mut Tx) -> io::Result<()> {
        let (Some(_), Some(op)) = (tx.in_flight, tx.op.as_mut()) else {
            return Ok(());
        };
        let result = op.result(self.raw());
        tx.in_flight = None;
        written(result, tx.flight.len() as u32)
    }
}
