//! Windows named pipes in message mode. They move whole pipe messages:
//! `recv_message` reads one message whole into the caller's buffer (one
//! that passes the caller's limit is refused unread, by its length), and
//! `send_message` writes one. This file knows nothing of frame headers; the
//! transport above maps one message to one pipe message (CPython's framing
//! on pipes). Overlapped I/O gives reads a deadline, and a zero-byte read
//! in flight tells `wait()` when a message has come.

use std::io::{self, IoSlice};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_BROKEN_PIPE, ERROR_FILE_NOT_FOUND, ERROR_IO_PENDING,
    ERROR_MORE_DATA, ERROR_NO_DATA, ERROR_OPERATION_ABORTED, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED,
    ERROR_PIPE_NOT_CONNECTED, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, LocalFree,
    STATUS_PENDING, WAIT_ABANDONED_0, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING,
    PIPE_ACCESS_DUPLEX, PIPE_ACCESS_INBOUND, ReadFile, SECURITY_IDENTIFICATION,
    SECURITY_SQOS_PRESENT, WriteFile,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, DisconnectNamedPipe, NMPWAIT_WAIT_FOREVER,
    PIPE_READMODE_MESSAGE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_MESSAGE, PIPE_WAIT, PeekNamedPipe,
    SetNamedPipeHandleState, WaitNamedPipeW,
};
use windows_sys::Win32::System::Threading::{CreateEventW, INFINITE, WaitForMultipleObjects};

use super::last_error;
use super::wake::EventWaker;

mod nonblocking;

const BUFSIZE: u32 = 64 * 1024;

/// Only the pipe's owner (its creator) gets access.
const OWNER_ONLY: &str = "D:P(A;;GA;;;OW)";

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// One end of a message-mode named pipe.
#[derive(Debug)]
pub struct Pipe {
    /// The readiness probe. Declared first so that it is dropped first: a
    /// probe still in flight is cancelled and waited for while the handle
    /// is open.
    probe: Mutex<ProbeSlot>,
    /// The write side; before the handle too, for a write still in flight
    /// (`nonblocking.rs`).
    tx: Mutex<Tx>,
    handle: OwnedHandle,
    rx: Mutex<Rx>,
    /// Set by `cancel_all`: no new reads or writes start.
    cancelled: AtomicBool,
}

/// The zero-byte read that tells `wait()` a message has come. It stays in
/// flight from one `wait()` to the next, so that a wait costs system calls
/// for the pipes that became ready, not for every pipe; a read of the pipe
/// first lets it finish, since it is ahead of the read in the pipe's queue.
#[derive(Debug, Default)]
struct ProbeSlot {
    op: Option<Op>,
    /// The pipe's handle (as a number) while the probe is in flight.
    in_flight: Option<usize>,
    /// Wakes an async receive when the probe ends (`nonblocking.rs`).
    waker: EventWaker,
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        // The wait on the probe's event ends before the event closes.
        self.waker.disarm();
        if let (Some(op), Some(handle)) = (self.op.as_mut(), self.in_flight) {
            // The kernel writes into the OVERLAPPED until the read ends:
            // end it before the memory goes.
            op.cancel(handle as HANDLE);
            let _ = op.result(handle as HANDLE);
        }
    }
}

#[derive(Debug, Default)]
struct Rx {
    /// A readiness probe took an empty message, not handed out yet.
    empty: bool,
    /// The peer closed its end.
    eof: bool,
    /// The reads' overlapped state, kept from one read to the next.
    op: Option<Op>,
}

impl Rx {
    /// What a read returns without reading: an empty message a probe took,
    /// or the end.
    fn take_news(&mut self) -> Option<PipeRecv> {
        if std::mem::take(&mut self.empty) {
            Some(PipeRecv::Message)
        } else if self.eof {
            Some(PipeRecv::Eof)
        } else {
            None
        }
    }

    fn has_news(&self) -> bool {
        self.empty || self.eof
    }
}

/// The write side: the parts of a message given in several pieces, joined,
/// and the writes' overlapped state. An async send leaves its write in
/// flight from `flight`, a buffer of the pipe's own (`nonblocking.rs`).
#[derive(Debug, Default)]
struct Tx {
    joined: Vec<u8>,
    op: Option<Op>,
    /// The message of a write in flight; untouched until it ends.
    flight: Vec<u8>,
    /// The pipe's handle (as a number) while a write is in flight.
    in_flight: Option<usize>,
    /// Wakes an async send when the write in flight ends.
    waker: EventWaker,
}

impl Drop for Tx {
    fn drop(&mut self) {
        self.waker.disarm();
        if let (Some(handle), Some(op)) = (self.in_flight, self.op.as_mut()) {
            // The kernel reads `flight` and writes the OVERLAPPED until the
            // write ends: end it before the memory goes. The peer may have
            // read a part of that message already; the handle closes next.
            op.cancel(handle as HANDLE);
            let _ = op.result(handle as HANDLE);
        }
    }
}

/// What [`Pipe::recv_message`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeRecv {
    /// A whole message (possibly empty), now in the caller's buffer.
    Message,
    /// A message of this many bytes, above the limit. It was not read into
    /// memory, and its bytes stay in the pipe: no later message can be
    /// told apart from them, so the pipe is of no more use for reading.
    TooLarge(u64),
    /// The peer closed its end.
    Eof,
    /// The deadline passed before a message came.
    TimedOut,
}

/// The readiness probe of one pipe: already ready, or a zero-byte read in flight.
#[derive(Debug)]
pub enum Probe {
    /// Ready to read now.
    Ready,
    /// A zero-byte read is in flight: its event is signalled when it ends.
    /// A pipe keeps its own op (`None`); a socket's comes along, to be
    /// cancelled after the wait.
    Pending(HANDLE, Option<Op>),
}

/// One overlapped operation: its OVERLAPPED and event, boxed so that they
/// stay put while the kernel holds their address.
pub struct Op {
    ov: Box<OVERLAPPED>,
    event: OwnedHandle,
    byte: Box<[u8; 1]>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("event", &self.event).finish()
    }
}

// SAFETY: the raw pointers inside OVERLAPPED are owned by this op (its event)
// or null; nothing else aliases them.
unsafe impl Send for Op {}

impl Op {
    pub fn new() -> io::Result<Op> {
        // SAFETY: null attributes and name make an unnamed manual-reset event.
        let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if event.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: CreateEventW returned a handle we now own.
        let event = unsafe { OwnedHandle::from_raw_handle(event as _) };
        // SAFETY: OVERLAPPED is plain data; all zero is its documented start state.
        let mut ov: Box<OVERLAPPED> = Box::new(unsafe { std::mem::zeroed() });
        ov.hEvent = event.as_raw_handle() as HANDLE;
        Ok(Op {
            ov,
            event,
            byte: Box::new([0]),
        })
    }

    /// Makes the op ready for its next operation: a zeroed OVERLAPPED with
    /// the same event (ReadFile, WriteFile and ConnectNamedPipe reset the
    /// event when they start).
    pub fn prepare(&mut self) {
        let event = self.ov.hEvent;
        // SAFETY: OVERLAPPED is plain data; all zero is its documented start
        // state, and no operation is in flight on it (every use waits for
        // completion).
        *self.ov = unsafe { std::mem::zeroed() };
        self.ov.hEvent = event;
    }

    /// The OVERLAPPED, to start an operation with.
    pub fn ov_mut(&mut self) -> *mut OVERLAPPED {
        &mut *self.ov
    }

    /// The event the operation signals when it completes.
    pub fn event(&self) -> HANDLE {
        self.event.as_raw_handle() as HANDLE
    }

    /// Whether the operation has ended, read from the OVERLAPPED without a
    /// system call (the `HasOverlappedIoCompleted` macro).
    pub fn is_complete(&self) -> bool {
        // SAFETY: `ov` is a live, aligned OVERLAPPED; the kernel may update
        // Internal concurrently, hence the volatile read, as the macro does.
        let internal = unsafe { ptr::read_volatile(&raw const self.ov.Internal) };
        internal != STATUS_PENDING as usize
    }

    /// Asks the kernel to cancel the operation (it may complete anyway).
    pub fn cancel(&self, handle: HANDLE) {
        // SAFETY: `ov` belongs to an operation issued on `handle`; cancelling
        // one that already completed is a harmless no-op.
        unsafe { CancelIoEx(handle, &*self.ov) };
    }

    /// Waits for the operation to end and returns the bytes it moved, or
    /// the error with the bytes moved so far.
    pub fn result(&mut self, handle: HANDLE) -> Result<u32, (u32, u32)> {
        let mut n = 0u32;
        // SAFETY: `ov` stays alive (boxed, owned by self) until the operation
        // has completed, which GetOverlappedResult with bWait = TRUE waits for.
        let ok = unsafe { GetOverlappedResult(handle, &*self.ov, &mut n, 1) };
        if ok != 0 {
            Ok(n)
        } else {
            Err((last_error(), n))
        }
    }
}

/// Waits until one of `handles` is signalled or `deadline` passes: the
/// index of a signalled one, or `None` on timeout.
pub fn wait_any(handles: &[HANDLE], deadline: Option<Instant>) -> io::Result<Option<usize>> {
    loop {
        let ms = match deadline {
            None => INFINITE,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(u128::from(INFINITE - 1)) as u32,
        };
        // SAFETY: the handles are live events or waitable objects of the
        // caller for the duration of the call; at most 64 of them.
        let r = unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), 0, ms) };
        if r == WAIT_TIMEOUT {
            // The millisecond clock can wake a hair early: go again.
            if deadline.is_some_and(|d| Instant::now() < d) {
                continue;
            }
            return Ok(None);
        }
        if r == WAIT_FAILED {
            return Err(io::Error::last_os_error());
        }
        let i = r.wrapping_sub(WAIT_OBJECT_0) as usize;
        if i < handles.len() {
            return Ok(Some(i));
        }
        let i = r.wrapping_sub(WAIT_ABANDONED_0) as usize;
        return Ok(Some(i.min(handles.len() - 1)));
    }
}

/// Records what an ended probe found; `true` when the pipe is ready.
fn settle(rx: &mut Rx, result: Result<u32, (u32, u32)>) -> bool {
    match result {
        // A zero-byte read that succeeded took an empty message.
        Ok(_) => {
            rx.empty = true;
            true
        }
        Err((ERROR_MORE_DATA, _)) => true,
        Err((ERROR_OPERATION_ABORTED, _)) => false,
        Err((ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_NO_DATA, _)) => {
            rx.eof = true;
            true
        }
        // Anything else: the next read reports it.
        Err(_) => true,
    }
}

/// How an overlapped operation ended.
enum Outcome {
    Done(u32),
    Failed(u32, u32),
    TimedOut,
}

impl Pipe {
    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle() as HANDLE
    }

    /// Runs one overlapped operation to its end, its deadline, or until
    /// `stop` (an event) is signalled; the last two give `TimedOut`. `op`
    /// is reused from call to call: one event per direction, not one per
    /// message.
    fn overlapped(
        &self,
        op: &mut Op,
        deadline: Option<Instant>,
        stop: Option<HANDLE>,
        start: impl FnOnce(*mut OVERLAPPED) -> i32,
    ) -> io::Result<Outcome> {
        op.prepare();
        let finished = if start(op.ov_mut()) != 0 {
            // Completed at once: no need to wait on the event.
            true
        } else {
            let e = last_error();
            if e != ERROR_IO_PENDING {
                // A synchronous ERROR_MORE_DATA has still moved bytes: the
                // OVERLAPPED holds how many.
                return Ok(Outcome::Failed(e, op.ov.InternalHigh as u32));
            }
            let both = [op.event(), stop.unwrap_or(ptr::null_mut())];
            let handles = if stop.is_some() {
                &both[..]
            } else {
                &both[..1]
            };
            wait_any(handles, deadline)? == Some(0)
        };
        if !finished {
            op.cancel(self.raw());
        }
        match op.result(self.raw()) {
            Ok(n) => Ok(Outcome::Done(n)),
            Err((ERROR_OPERATION_ABORTED, _)) if !finished => Ok(Outcome::TimedOut),
            Err((e, n)) => Ok(Outcome::Failed(e, n)),
        }
    }

    /// The readiness probe of `wait()`: ready now, or the event of a
    /// zero-byte read in flight, which completes when a message (or the
    /// end) arrives without taking it. An empty message is the exception:
    /// the zero-byte read takes it, and the pipe keeps it in its buffer.
    pub fn probe(&self) -> io::Result<Probe> {
        let mut rx = self.lock_rx();
        let mut slot = self.lock_probe();
        match self.reap_probe(&mut rx, &mut slot) {
            None => {
                let event = slot.op.as_ref().map_or(ptr::null_mut(), Op::event);
                return Ok(Probe::Pending(event, None));
            }
            Some(true) => return Ok(Probe::Ready),
            Some(false) => {}
        }
        // Closed here: the next read reports it at once.
        if rx.has_news() || self.cancelled.load(Ordering::SeqCst) {
            return Ok(Probe::Ready);
        }
        let op = match &mut slot.op {
            Some(op) => op,
            empty => empty.insert(Op::new()?),
        };
        op.prepare();
        let buf = op.byte.as_mut_ptr();
        // SAFETY: the zero-byte read writes nothing into `buf`, which lives
        // in the boxed op anyway; the OVERLAPPED stays put in its box, and
        // the op is kept (in the slot) until the read has ended: reaped,
        // waited for by a read, or cancelled and waited for on drop.
        let started = unsafe { ReadFile(self.raw(), buf, 0, ptr::null_mut(), op.ov_mut()) };
        let e = if started == 0 { last_error() } else { 0 };
        if e == ERROR_IO_PENDING {
            let event = op.event();
            slot.in_flight = Some(self.raw() as usize);
            return Ok(Probe::Pending(event, None));
        }
        // Done at once: an empty message was taken, or a message or the end
        // is waiting, or an error the next read reports. Ready in every case.
        settle(&mut rx, if e == 0 { Ok(0) } else { Err((e, 0)) });
        Ok(Probe::Ready)
    }

    /// After a wait: whether the probe has seen a message (or the end).
    /// A probe still in flight stays in flight.
    pub fn probe_ready(&self) -> bool {
        let mut rx = self.lock_rx();
        let mut slot = self.lock_probe();
        match self.reap_probe(&mut rx, &mut slot) {
            None => false,
            Some(ready) => ready || rx.has_news(),
        }
    }

    /// Ends the probe if it has ended, recording what it found in `rx`:
    /// `None` while it is still in flight; `Some(ready)` otherwise (`false`
    /// when there was no probe or it was cancelled).
    fn reap_probe(&self, rx: &mut Rx, slot: &mut ProbeSlot) -> Option<bool> {
        let (Some(_), Some(op)) = (slot.in_flight, slot.op.as_mut()) else {
            return Some(false);
        };
        if !op.is_complete() {
            return None;
        }
        let result = op.result(self.raw());
        slot.in_flight = None;
        Some(settle(rx, result))
    }

    /// Waits until `deadline` for a probe in flight to end; a read must not
    /// overtake it, or an empty message it takes would be lost. `false` on
    /// timeout, with the probe still in flight.
    fn finish_probe_before_read(&self, rx: &mut Rx, deadline: Option<Instant>) -> io::Result<bool> {
        let mut slot = self.lock_probe();
        if self.reap_probe(rx, &mut slot).is_some() {
            return Ok(true);
        }
        let Some(op) = slot.op.as_mut() else {
            return Ok(true);
        };
        if wait_any(&[op.event()], deadline)?.is_none() {
            return Ok(false);
        }
        // Signalled: the read has ended (or ends now; result() waits).
        let result = op.result(self.raw());
        slot.in_flight = None;
        settle(rx, result);
        Ok(true)
    }

    /// Cancels a probe in flight and records what it found, so that
    /// nothing it took is lost when the handle changes hands.
    pub fn end_probe(&self) {
        let mut rx = self.lock_rx();
        let mut slot = self.lock_probe();
        if let (Some(_), Some(op)) = (slot.in_flight, slot.op.as_mut()) {
            op.cancel(self.raw());
            let result = op.result(self.raw());
            slot.in_flight = None;
            settle(&mut rx, result);
        }
    }

    fn lock_probe(&self) -> std::sync::MutexGuard<'_, ProbeSlot> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_rx(&self) -> std::sync::MutexGuard<'_, Rx> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tx(&self) -> std::sync::MutexGuard<'_, Tx> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the next pipe message whole into `out` (cleared first), within
    /// `deadline`. A message longer than `limit` is not read: its length
    /// comes back instead ([`PipeRecv::TooLarge`]), so a peer cannot make
    /// us buffer more than the limit. Nothing is taken on a timeout, so the
    /// next call reads the same message.
    pub fn recv_message(
        &self,
        out: &mut Vec<u8>,
        limit: u64,
        deadline: Option<Instant>,
    ) -> io::Result<PipeRecv> {
        out.clear();
        let mut rx = self.lock_rx();
        if let Some(news) = rx.take_news() {
            return Ok(news);
        }
        if !self.finish_probe_before_read(&mut rx, deadline)? {
            return Ok(PipeRecv::TimedOut);
        }
        // The probe took an empty message, or found the end.
        if let Some(news) = rx.take_news() {
            return Ok(news);
        }
        let mut op = match rx.op.take() {
            Some(op) => op,
            None => Op::new()?,
        };
        let result = self.read_message(&mut op, out, limit, deadline);
        rx.op = Some(op);
        match result {
            Ok(PipeRecv::Message) => {}
            Ok(PipeRecv::Eof) => {
                rx.eof = true;
                out.clear();
            }
            _ => out.clear(),
        }
        result
    }

    fn read_message(
        &self,
        op: &mut Op,
        out: &mut Vec<u8>,
        limit: u64,
        deadline: Option<Instant>,
    ) -> io::Result<PipeRecv> {
        out.reserve(BUFSIZE as usize);
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(ERROR_OPERATION_ABORTED as i32));
            }
            let len = out.len();
            let room = (out.capacity() - len).min(u32::MAX as usize) as u32;
            let buf = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            // SAFETY: `buf` points to the `room` bytes of spare capacity of
            // `out`, which is neither moved nor resized until the operation
            // has completed (overlapped() waits for that).
            let outcome = self.overlapped(op, deadline, None, |ov| unsafe {
                ReadFile(self.raw(), buf, room, ptr::null_mut(), ov)
            })?;
            let moved = match outcome {
                Outcome::Done(n) | Outcome::Failed(ERROR_MORE_DATA, n) => n as usize,
                _ => 0,
            };
            // SAFETY: the read wrote `moved` <= `room` bytes at the start of
            // the spare capacity, so they are initialised and in bounds.
            unsafe { out.set_len(len + moved) };
            let got = out.len() as u64;
            match outcome {
                Outcome::Done(_) if got > limit => return Ok(PipeRecv::TooLarge(got)),
                Outcome::Done(_) => return Ok(PipeRecv::Message),
                Outcome::Failed(ERROR_MORE_DATA, _) => {
                    let left = self.left_in_message().max(1);
                    let total = got + u64::from(left);
                    if total > limit {
                        return Ok(PipeRecv::TooLarge(total));
                    }
                    out.reserve(left as usize);
                }
                Outcome::Failed(ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED, _) => {
                    return Ok(PipeRecv::Eof);
                }
                Outcome::Failed(e, _) => return Err(io::Error::from_raw_os_error(e as i32)),
                Outcome::TimedOut if got == 0 => return Ok(PipeRecv::TimedOut),
                // The rest of a started message is already in the pipe.
                Outcome::TimedOut => {}
            }
        }
    }

    /// The bytes of the current message still in the pipe.
    fn left_in_message(&self) -> u32 {
        let mut left = 0u32;
        // SAFETY: only the out-parameter for the bytes left is passed.
        unsafe {
            PeekNamedPipe(
                self.raw(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                &mut left,
            )
        };
        left
    }

    /// Whether an empty message a readiness probe took waits here.
    pub fn has_buffered(&self) -> bool {
        self.lock_rx().empty
    }

    /// Whether a message (or the end) is here within the deadline, without
    /// taking it: the readiness probe of `wait()`, waited for. A pipe
    /// closed here (`cancel_all`) is ready, as in [`probe`](Self::probe):
    /// the next read reports the close at once. Its cancelled probe must
    /// not surface as this wait's error, which would read as a timeout
    /// (`ERROR_OPERATION_ABORTED` is `ErrorKind::TimedOut`).
    pub fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let closed_here = || self.cancelled.load(Ordering::SeqCst);
        loop {
            let event = match self.probe() {
                Ok(Probe::Ready) => return Ok(true),
                Ok(Probe::Pending(event, _)) => event,
                Err(_) if closed_here() => return Ok(true),
                Err(e) => return Err(e),
            };
            match wait_any(&[event], deadline) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(_) if closed_here() => return Ok(true),
                Err(e) => return Err(e),
            }
            if self.probe_ready() || closed_here() {
                return Ok(true);
            }
            // The probe ended with no news (another thread ended it): probe again.
        }
    }

    /// Sends one pipe message made of `parts`. A message in one part leaves
    /// from the caller's buffer; several parts are joined first. Blocks
    /// while the pipe's buffer is full, as a message pipe does until the
    /// reader takes the message.
    pub fn send_message(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut guard = self.lock_tx();
        // An async send's message goes first, whole.
        self.finish_write(&mut guard)?;
        let Tx { joined, op, .. } = &mut *guard;
        let op = match op {
            Some(op) => op,
            None => op.insert(Op::new()?),
        };
        let mut filled = parts.iter().filter(|p| !p.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => self.write_message(op, &[]),
            (Some(one), None) => self.write_message(op, one),
            _ => {
                joined.clear();
                for part in parts {
                    joined.extend_from_slice(part);
                }
                let sent = self.write_message(op, joined);
                joined.clear();
                if joined.capacity() > 4 * BUFSIZE as usize {
                    *joined = Vec::new();
                }
                sent
            }
        }
    }

    /// Sends `payload` as one pipe message.
    fn write_message(&self, op: &mut Op, payload: &[u8]) -> io::Result<()> {
        let len = message_len(payload)?;
        // SAFETY: `payload` is borrowed, so unchanged, until the operation
        // completes (overlapped() waits for that).
        let outcome = self.overlapped(op, None, None, |ov| unsafe {
            WriteFile(self.raw(), payload.as_ptr(), len, ptr::null_mut(), ov)
        })?;
        match outcome {
            Outcome::Done(n) => written(Ok(n), len),
            Outcome::Failed(e, n) => written(Err((e, n)), len),
            Outcome::TimedOut => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Cancels every read and write in flight on this pipe, from any thread:
    /// `close()` uses it to wake blocked callers. Later reads and writes fail.
    pub fn cancel_all(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        // SAFETY: a null OVERLAPPED cancels all I/O on the handle, which is open.
        unsafe { CancelIoEx(self.raw(), ptr::null()) };
    }
}

/// The length of a pipe message, which a `u32` holds.
fn message_len(payload: &[u8]) -> io::Result<u32> {
    u32::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a pipe message is limited to 4 GiB",
        )
    })
}

/// What the end of a write of `len` bytes means: sent whole, or the error.
fn written(result: Result<u32, (u32, u32)>, len: u32) -> io::Result<()> {
    match result {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(io::ErrorKind::WriteZero.into()),
        Err((ERROR_NO_DATA | ERROR_BROKEN_PIPE, _)) => Err(io::ErrorKind::BrokenPipe.into()),
        Err((e, _)) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Security attributes that admit only the pipe's owner; free with LocalFree.
struct OwnerOnly {
    attrs: SECURITY_ATTRIBUTES,
}

impl OwnerOnly {
    fn new() -> io::Result<OwnerOnly> {
        let sddl = wide(OWNER_ONLY);
        let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
        // SAFETY: sddl is NUL-terminated UTF-16; sd receives a LocalAlloc'd
        // descriptor that Drop frees.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnerOnly {
            attrs: SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: sd,
                bInheritHandle: 0,
            },
        })
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        // SAFETY: the descriptor came from LocalAlloc inside the conversion.
        unsafe { LocalFree(self.attrs.lpSecurityDescriptor) };
    }
}

/// Creates an instance of the pipe `name`; `first` refuses a name that
/// exists already (a squatter's, or another listener's).
pub fn create_instance(name: &str, first: bool) -> io::Result<Pipe> {
    create(name, first, Direction::Duplex)
}

/// Which way a pipe carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Duplex,
    /// From the client end to the server end only (CPython's
    /// `Pipe(duplex=False)`).
    ToServer,
}

fn create(name: &str, first: bool, direction: Direction) -> io::Result<Pipe> {
    // FILE_FLAG_FIRST_PIPE_INSTANCE is the guarantee on Windows; Wine does not
    // enforce it, so look first as well (the flag closes the race on Windows).
    if first && exists(name) {
        return Err(io::Error::from_raw_os_error(ERROR_ACCESS_DENIED as i32));
    }
    let security = OwnerOnly::new()?;
    let access = match direction {
        Direction::Duplex => PIPE_ACCESS_DUPLEX,
        Direction::ToServer => PIPE_ACCESS_INBOUND,
    };
    let mut open_mode = access | FILE_FLAG_OVERLAPPED;
    if first {
        open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    let wname = wide(name);
    // SAFETY: wname is NUL-terminated; the security attributes live across the call.
    let h = unsafe {
        CreateNamedPipeW(
            wname.as_ptr(),
            open_mode,
            PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            255,
            BUFSIZE,
            BUFSIZE,
            0,
            &security.attrs,
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CreateNamedPipeW returned a valid handle we now own.
    Ok(Pipe::from_handle(unsafe {
        OwnedHandle::from_raw_handle(h as _)
    }))
}

/// Opens the client end of the pipe `name`, with identification-only
/// impersonation rights for the server.
pub fn open(name: &str) -> io::Result<Pipe> {
    open_for(name, Direction::Duplex)
}

fn open_for(name: &str, direction: Direction) -> io::Result<Pipe> {
    let access = match direction {
        Direction::Duplex => GENERIC_READ | GENERIC_WRITE,
        // GENERIC_WRITE includes the right to set the read mode below.
        Direction::ToServer => GENERIC_WRITE,
    };
    let wname = wide(name);
    // SAFETY: wname is NUL-terminated; no security attributes, no template.
    let h = unsafe {
        CreateFileW(
            wname.as_ptr(),
            access,
            0,
            ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CreateFileW returned a valid handle we now own.
    let pipe = Pipe::from_handle(unsafe { OwnedHandle::from_raw_handle(h as _) });
    let mode = PIPE_READMODE_MESSAGE;
    // SAFETY: mode lives across the call; the other parameters are optional.
    if unsafe { SetNamedPipeHandleState(pipe.raw(), &mode, ptr::null(), ptr::null()) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pipe)
}

impl Pipe {
    fn from_handle(handle: OwnedHandle) -> Pipe {
        Pipe {
            probe: Mutex::new(ProbeSlot::default()),
            handle,
            rx: Mutex::new(Rx::default()),
            tx: Mutex::new(Tx::default()),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Waits for a client on a server instance, until `stop` (an event) is
    /// signalled; `Ok(false)` when stopped. A client that connected and
    /// left again before this call (`ERROR_NO_DATA`) is disconnected and
    /// the wait goes on, on the same instance.
    pub fn accept_client(&self, stop: HANDLE) -> io::Result<bool> {
        loop {
            let mut op = Op::new()?;
            // SAFETY: the OVERLAPPED passed in stays alive until completion.
            let outcome = self.overlapped(&mut op, None, Some(stop), |ov| unsafe {
                ConnectNamedPipe(self.raw(), ov)
            })?;
            match outcome {
                Outcome::Done(_) | Outcome::Failed(ERROR_PIPE_CONNECTED, _) => return Ok(true),
                Outcome::Failed(ERROR_NO_DATA, _) => {
                    // SAFETY: the handle is an open server instance.
                    unsafe { DisconnectNamedPipe(self.raw()) };
                }
                Outcome::Failed(e, _) => return Err(io::Error::from_raw_os_error(e as i32)),
                Outcome::TimedOut => return Ok(false),
            }
        }
    }

    /// The pipe's handle.
    pub fn handle(&self) -> &OwnedHandle {
        &self.handle
    }
}

impl From<OwnedHandle> for Pipe {
    fn from(handle: OwnedHandle) -> Pipe {
        Pipe::from_handle(handle)
    }
}

impl From<Pipe> for OwnedHandle {
    fn from(pipe: Pipe) -> OwnedHandle {
        // The other fields go first, the probe (ended) among them.
        let Pipe { handle, .. } = pipe;
        handle
    }
}

/// A connected pair over a fresh, randomly named pipe, as CPython's Pipe().
pub fn pair(name: &str) -> io::Result<(Pipe, Pipe)> {
    pair_for(name, Direction::Duplex)
}

/// A one-way pair, `(reader, writer)`: the reader's end is created
/// inbound-only and the writer opens it for writing only, so neither can
/// go the wrong way (CPython's `Pipe(duplex=False)`).
pub fn pair_simplex(name: &str) -> io::Result<(Pipe, Pipe)> {
    pair_for(name, Direction::ToServer)
}

fn pair_for(name: &str, direction: Direction) -> io::Result<(Pipe, Pipe)> {
    let server = create(name, true, direction)?;
    let client = open_for(name, direction)?;
    // The client is connected already, so this returns at once; the event
    // it could be stopped by is never signalled.
    let never = Op::new()?;
    if !server.accept_client(never.event())? {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok((server, client))
}

/// Opens the client end of `name` within `deadline`, waiting while every
/// instance is busy, as CPython's Client does.
pub fn connect(name: &str, deadline: Option<Instant>) -> io::Result<Pipe> {
    loop {
        match open(name) {
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {}
            other => return other,
        }
        let ms = match deadline {
            None => NMPWAIT_WAIT_FOREVER,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).as_millis();
                if left == 0 {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                left.min(u128::from(u32::MAX - 1)) as u32
            }
        };
        let wname = wide(name);
        // SAFETY: wname is NUL-terminated. The outcome only decides whether
        // to try again; open() reports the real error.
        unsafe { WaitNamedPipeW(wname.as_ptr(), ms) };
    }
}

/// Whether some process serves the pipe `name` already.
pub fn exists(name: &str) -> bool {
    let wname = wide(name);
    // SAFETY: wname is NUL-terminated.
    let ok = unsafe { WaitNamedPipeW(wname.as_ptr(), 1) };
    ok != 0 || last_error() != ERROR_FILE_NOT_FOUND
}
