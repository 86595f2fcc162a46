//! Handles that move bytes and are not message pipes: anonymous pipe ends
//! (`CreatePipe`, byte mode, synchronous), byte-mode named pipes (Rust's
//! `ChildStdout` is one, opened for overlapped I/O) and disk files. They
//! have `ReadFile` and `WriteFile` and no pipe messages; the transport above
//! frames messages on them as on a socket.
//!
//! A synchronous pipe has no overlapped reads, so no event says when bytes
//! come: readiness is `PeekNamedPipe` (the bytes there, or the end),
//! looked at again after a pause that doubles from 50 µs to
//! [`POLL_MAX`]. A read takes at most the bytes the peek reported, so it
//! never waits in the kernel: a receive keeps its deadline, a close seen by
//! the loop wakes it, and no thread sits in a blocking `ReadFile` that
//! would hold a synchronous handle's I/O lock against another thread's peek.
//! Writes block until the pipe has taken the bytes, as on a message pipe.

use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Wdk::Storage::FileSystem::{
    FILE_MODE_INFORMATION, FILE_SYNCHRONOUS_IO_ALERT, FILE_SYNCHRONOUS_IO_NONALERT,
    FileModeInformation, NtQueryInformationFile,
};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF, ERROR_IO_PENDING, ERROR_NO_DATA,
    ERROR_OPERATION_ABORTED, ERROR_PIPE_NOT_CONNECTED, HANDLE, STATUS_SUCCESS,
};
use windows_sys::Win32::Networking::WinSock::{
    SO_TYPE, SOCKET, SOCKET_ERROR, SOL_SOCKET, WSADATA, WSAStartup, getsockopt,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_TYPE_CHAR, FILE_TYPE_DISK, FILE_TYPE_PIPE, GetFileType, ReadFile, WriteFile,
};
use windows_sys::Win32::System::IO::{CancelIoEx, IO_STATUS_BLOCK, OVERLAPPED};
use windows_sys::Win32::System::Pipes::{GetNamedPipeInfo, PIPE_TYPE_MESSAGE, PeekNamedPipe};

use super::last_error;
use super::pipe::Op;

/// The longest pause between two looks at a quiet pipe: how late, at
/// most, a receive, `poll` or `wait()` learns that bytes or the end came
/// (plus the scheduler's own delay).
pub const POLL_MAX: Duration = Duration::from_millis(1);

/// The first pause after a look found nothing.
const POLL_MIN: Duration = Duration::from_micros(50);

/// Pieces of one write up to this size in total are joined and written
/// with one `WriteFile` (a frame header and a small payload, say).
const JOIN_MAX: usize = 64 * 1024;

/// What a handle given to `Stream::from_handle` turned out to be.
#[derive(Debug)]
pub enum Class {
    /// A socket (Windows reports sockets as pipes to `GetFileType`).
    Socket,
    /// A message-mode named pipe opened for overlapped I/O, or a pipe end
    /// whose type cannot be read: the message-pipe transport.
    MessagePipe,
    /// Bytes through `ReadFile` and `WriteFile`, framed above.
    Bytes(Kind, bool),
}

/// Which calls a [`Plain`] handle takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A byte-mode pipe end: readiness from `PeekNamedPipe`.
    Pipe,
    /// A disk file: always ready; its end is the end of stream.
    File,
    /// A handle that cannot carry a connection; every call says why.
    Refused(&'static str),
}

/// Tells what `handle` is: its file type, for a pipe its type (message or
/// byte) from `GetNamedPipeInfo`, and whether it was opened for overlapped
/// I/O (`NtQueryInformationFile(FileModeInformation)`: a synchronous handle
/// has `FILE_SYNCHRONOUS_IO_*` set). A pipe end whose type cannot be read
/// (a write-only handle without `FILE_READ_ATTRIBUTES`) is taken for a
/// message pipe, as every pipe handle was before byte pipes were known.
pub fn classify(handle: &OwnedHandle) -> Class {
    let h = handle.as_raw_handle() as HANDLE;
    // SAFETY: the handle is open (owned by the caller).
    let file_type = unsafe { GetFileType(h) };
    match file_type {
        FILE_TYPE_PIPE if is_socket(h) => Class::Socket,
        FILE_TYPE_PIPE => {
            let mut flags = 0u32;
            // SAFETY: the handle is open; only the flags out-parameter, a
            // live local, is asked for.
            let ok = unsafe {
                GetNamedPipeInfo(
                    h,
                    &mut flags,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
            let overlapped = is_overlapped(h);
            if ok == 0 {
                if last_error() == ERROR_ACCESS_DENIED {
                    return Class::MessagePipe;
                }
                return refused("a handle of pipe type that is neither a pipe nor a socket");
            }
            match (flags & PIPE_TYPE_MESSAGE != 0, overlapped) {
                (true, Some(false)) => refused(
                    "a message-mode pipe opened for synchronous I/O cannot carry a connection: \
                     open it with FILE_FLAG_OVERLAPPED",
                ),
                (true, _) => Class::MessagePipe,
                // Not knowing, take the calls that work either way.
                (false, overlapped) => Class::Bytes(Kind::Pipe, overlapped.unwrap_or(true)),
            }
        }
        FILE_TYPE_DISK => match is_overlapped(h) {
            Some(false) => Class::Bytes(Kind::File, false),
            _ => refused(
                "a file opened for overlapped I/O cannot carry a connection: \
                 open it for synchronous I/O",
            ),
        },
        FILE_TYPE_CHAR => refused("a console or other character device cannot carry a connection"),
        _ => refused("not a pipe, socket or file handle"),
    }
}

fn refused(why: &'static str) -> Class {
    Class::Bytes(Kind::Refused(why), false)
}

/// Whether the handle was opened for overlapped I/O; `None` when it
/// cannot be asked.
fn is_overlapped(h: HANDLE) -> Option<bool> {
    // SAFETY: IO_STATUS_BLOCK and FILE_MODE_INFORMATION are plain data for
    // which all zero is a valid value.
    let mut status: IO_STATUS_BLOCK = unsafe { mem::zeroed() };
    let mut mode = FILE_MODE_INFORMATION { Mode: 0 };
    // SAFETY: the handle is open; the buffer is one live
    // FILE_MODE_INFORMATION and its size is passed.
    let r = unsafe {
        NtQueryInformationFile(
            h,
            &mut status,
            (&raw mut mode).cast(),
            mem::size_of::<FILE_MODE_INFORMATION>() as u32,
            FileModeInformation,
        )
    };
    let synchronous = mode.Mode & (FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT);
    (r == STATUS_SUCCESS).then_some(synchronous == 0)
}

/// Whether the handle is a socket: `getsockopt(SO_TYPE)` answers for one
/// only. Winsock is started first (as std and socket2 do, once), so that a
/// socket inherited by a process that has made none is still recognised.
fn is_socket(h: HANDLE) -> bool {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // SAFETY: WSADATA is plain data; WSAStartup fills it. The count it
        // keeps is never dropped: Winsock stays up for the process, as std
        // leaves it.
        let mut data: WSADATA = unsafe { mem::zeroed() };
        // SAFETY: as above; 2.2 is the version std and socket2 ask for.
        unsafe { WSAStartup(0x202, &mut data) };
    });
    let mut kind: i32 = 0;
    let mut len = mem::size_of::<i32>() as i32;
    // SAFETY: the option buffer is one live i32 and `len` says so; on a
    // handle that is not a socket the call fails with WSAENOTSOCK.
    let r = unsafe {
        getsockopt(
            h as SOCKET,
            SOL_SOCKET,
            SO_TYPE,
            (&raw mut kind).cast(),
            &mut len,
        )
    };
    r != SOCKET_ERROR
}

/// What one look at a pipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// This many bytes wait to be read.
    Bytes(u32),
    /// The writer is gone and every byte has been read.
    End,
    /// Nothing yet.
    Nothing,
}

/// The pause before the next look at a quiet pipe, doubling from
/// `POLL_MIN` to `POLL_MAX`.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Backoff {
        Backoff(POLL_MIN)
    }

    /// The pause to take now, never past `deadline`; `None` once the
    /// deadline has passed.
    pub fn next(&mut self, deadline: Option<Instant>) -> Option<Duration> {
        let mut pause = self.0;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            pause = pause.min(left);
        }
        self.0 = (self.0 * 2).min(POLL_MAX);
        Some(pause)
    }

    /// Sleeps the next pause; `false` once the deadline has passed.
    fn pause(&mut self, deadline: Option<Instant>) -> bool {
        match self.next(deadline) {
            Some(pause) => {
                std::thread::sleep(pause);
                true
            }
            None => false,
        }
    }
}

/// A handle read with `ReadFile` and written with `WriteFile`.
#[derive(Debug)]
pub struct Plain {
    handle: OwnedHandle,
    kind: Kind,
    /// Opened for overlapped I/O: each call takes an OVERLAPPED and waits
    /// for it, and `close` can cancel a write in flight.
    overlapped: bool,
    /// Set by `shutdown(Both)` (`close`): reads and writes fail, and the
    /// readiness loops end.
    closed: AtomicBool,
    /// The reads' overlapped state (overlapped handles only).
    rx: Mutex<Option<Op>>,
    tx: Mutex<Tx>,
}

/// The write side: pieces of a small write, joined, and the writes'
/// overlapped state.
#[derive(Debug, Default)]
struct Tx {
    joined: Vec<u8>,
    op: Option<Op>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Plain {
    /// Wraps `handle`, of the kind and mode [`classify`] found.
    pub fn new(handle: OwnedHandle, kind: Kind, overlapped: bool) -> Plain {
        Plain {
            handle,
            kind,
            overlapped,
            closed: AtomicBool::new(false),
            rx: Mutex::new(None),
            tx: Mutex::new(Tx::default()),
        }
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle() as HANDLE
    }

    /// The handle.
    pub fn handle(&self) -> &OwnedHandle {
        &self.handle
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// One look at the pipe, without taking anything.
    fn look(&self) -> io::Result<Look> {
        let mut avail = 0u32;
        // SAFETY: no buffer is passed (size 0); `avail` is a live local.
        let ok = unsafe {
            PeekNamedPipe(
                self.raw(),
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                &mut avail,
                ptr::null_mut(),
            )
        };
        if ok != 0 {
            return Ok(if avail > 0 {
                Look::Bytes(avail)
            } else {
                Look::Nothing
            });
        }
        match last_error() {
            ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_NO_DATA => Ok(Look::End),
            ERROR_ACCESS_DENIED => Err(not_readable()),
            e => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// Whether a read would return at once: bytes or the end are there, or
    /// the handle is closed here, refused, a file, or in error (the read
    /// reports it).
    pub fn readable_now(&self) -> bool {
        match self.kind {
            Kind::Pipe if !self.is_closed() => !matches!(self.look(), Ok(Look::Nothing)),
            _ => true,
        }
    }

    /// Waits until a read would return at once, or `deadline` passes
    /// (`false`): looks at the pipe, pausing in between.
    pub fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let mut backoff = Backoff::new();
        loop {
            if self.readable_now() {
                return Ok(true);
            }
            if !backoff.pause(deadline) {
                return Ok(false);
            }
        }
    }

    /// One read into `buf`; `Ok(0)` at the end of stream. On a pipe it
    /// waits (looking, pausing) until bytes or the end are there, then
    /// takes at most what is there, so the `ReadFile` never blocks.
    pub fn read(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let want = match self.kind {
            Kind::Refused(why) => return Err(refusal(why)),
            Kind::File => buf.len(),
            Kind::Pipe => {
                let mut backoff = Backoff::new();
                loop {
                    if self.is_closed() {
                        return Err(closed());
                    }
                    match self.look()? {
                        Look::End => return Ok(0),
                        Look::Bytes(n) => break buf.len().min(n as usize),
                        Look::Nothing => {
                            backoff.pause(None);
                        }
                    }
                }
            }
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let len = want.min(u32::MAX as usize) as u32;
        let data = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: `data` is valid for writes of `len` <= buf.len() bytes,
        // and the buffer stays borrowed until the call has completed
        // (`transfer` waits for an overlapped one).
        let result = self.transfer(&self.rx, |n, ov| unsafe {
            ReadFile(self.raw(), data, len, n, ov)
        });
        match result {
            Ok(n) => Ok(n as usize),
            Err(e) => match e.raw_os_error().map(|e| e as u32) {
                Some(ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_HANDLE_EOF) => Ok(0),
                Some(ERROR_ACCESS_DENIED) => Err(not_readable()),
                Some(ERROR_OPERATION_ABORTED) if self.is_closed() => Err(closed()),
                _ => Err(e),
            },
        }
    }

    /// One write of `bufs` (joined when small, else the first piece); it
    /// blocks until the pipe has taken the bytes.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Kind::Refused(why) = self.kind {
            return Err(refusal(why));
        }
        if self.is_closed() {
            return Err(closed());
        }
        let mut guard = lock(&self.tx);
        let Tx { joined, op } = &mut *guard;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let pieces = bufs.iter().filter(|b| !b.is_empty()).count();
        let bytes: &[u8] = if pieces > 1 && total <= JOIN_MAX {
            joined.clear();
            for b in bufs {
                joined.extend_from_slice(b);
            }
            joined
        } else {
            bufs.iter().find(|b| !b.is_empty()).map_or(&[], |b| &b[..])
        };
        if bytes.is_empty() {
            return Ok(0);
        }
        let len = bytes.len().min(u32::MAX as usize) as u32;
        let data = bytes.as_ptr();
        let mut slot = op.take();
        // SAFETY: `data` is valid for reads of `len` bytes and stays
        // borrowed until the call has completed (`transfer` waits for an
        // overlapped one).
        let result = self.transfer_with(&mut slot, |n, ov| unsafe {
            WriteFile(self.raw(), data, len, n, ov)
        });
        *op = slot;
        match result {
            Ok(n) => Ok(n as usize),
            Err(e) => Err(match e.raw_os_error().map(|e| e as u32) {
                Some(ERROR_NO_DATA | ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED) => {
                    io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the pipe's reading end is closed",
                    )
                }
                Some(ERROR_ACCESS_DENIED) => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the handle is not open for writing (the reading end of a pipe?)",
                ),
                Some(ERROR_OPERATION_ABORTED) if self.is_closed() => closed(),
                _ => e,
            }),
        }
    }

    /// Runs one `ReadFile` or `WriteFile` to its end: synchronously, or
    /// with the OVERLAPPED in `slot` on an overlapped handle.
    fn transfer(
        &self,
        slot: &Mutex<Option<Op>>,
        call: impl FnOnce(*mut u32, *mut OVERLAPPED) -> i32,
    ) -> io::Result<u32> {
        self.transfer_with(&mut lock(slot), call)
    }

    fn transfer_with(
        &self,
        slot: &mut Option<Op>,
        call: impl FnOnce(*mut u32, *mut OVERLAPPED) -> i32,
    ) -> io::Result<u32> {
        if !self.overlapped {
            let mut n = 0u32;
            if call(&mut n, ptr::null_mut()) == 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(n);
        }
        let op = match slot {
            Some(op) => op,
            empty => empty.insert(Op::new()?),
        };
        op.prepare();
        // A close before this point is seen here, and one after the start
        // cancels the operation; one in between (a few instructions) is
        // missed, and the call runs as if it had come later.
        if self.is_closed() {
            return Err(closed());
        }
        if call(ptr::null_mut(), op.ov_mut()) == 0 {
            let e = last_error();
            if e != ERROR_IO_PENDING {
                return Err(io::Error::from_raw_os_error(e as i32));
            }
        }
        op.result(self.raw())
            .map_err(|(e, _)| io::Error::from_raw_os_error(e as i32))
    }

    /// `Both` marks the handle closed, which ends the readiness loops and
    /// fails later reads and writes, and on an overlapped handle cancels
    /// the I/O in flight. A synchronous write blocked on a full pipe is not
    /// woken: only `CancelSynchronousIo` on its thread could. One direction
    /// alone cannot be shut.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        if how != std::net::Shutdown::Both {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only a socket can be shut down one way",
            ));
        }
        self.closed.store(true, Ordering::SeqCst);
        if self.overlapped {
            // SAFETY: a null OVERLAPPED cancels all of this process's I/O
            // on the handle, which is open.
            unsafe { CancelIoEx(self.raw(), ptr::null()) };
        }
        Ok(())
    }
}

impl From<Plain> for OwnedHandle {
    fn from(plain: Plain) -> OwnedHandle {
        plain.handle
    }
}

fn refusal(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, why)
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection was closed here")
}

fn not_readable() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the handle is not open for reading (the writing end of a pipe?)",
    )
}
