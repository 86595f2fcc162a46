//! Windows: TCP sockets, named pipes and plain handles behind one `Stream`.
//!
//! A socket is a byte stream; a named pipe is a message pipe, which moves
//! whole messages (`Pipe::recv_message`, `Pipe::send_message`) and has no
//! byte-stream calls: the transport above tells the two apart
//! (`Stream::as_pipe`). A plain handle (an anonymous pipe end, a byte-mode
//! named pipe, a disk file) is a byte stream read with `ReadFile` and
//! written with `WriteFile` (`plain.rs`). Readiness for `wait()` comes from
//! zero-byte overlapped reads, as in CPython's `wait()` on Windows: they
//! complete when data arrives without taking it; a synchronous pipe has no
//! such reads, and is looked at with `PeekNamedPipe` every millisecond at
//! most instead.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsRawSocket, BorrowedHandle, FromRawHandle, FromRawSocket,
    IntoRawHandle, OwnedHandle, RawHandle, RawSocket,
};
use std::ptr;
use std::time::Instant;

use rand::TryRng;
use socket2::{SockAddr, Socket};
use windows_sys::Win32::Foundation::{ERROR_OPERATION_ABORTED, HANDLE};
use windows_sys::Win32::Networking::WinSock::{
    FD_ACCEPT, POLLRDNORM, POLLWRNORM, SO_EXCLUSIVEADDRUSE, SOCKET, SOCKET_ERROR, SOL_SOCKET,
    WSA_IO_PENDING, WSABUF, WSAEventSelect, WSAGetLastError, WSAPOLLFD, WSAPoll, WSARecv,
    setsockopt,
};
use windows_sys::Win32::System::Threading::{CreateEventW, ResetEvent, SetEvent};

use super::Interest;

mod peer;
mod pipe;
mod plain;
#[cfg(feature = "tokio")]
mod reactor;
mod wake;

/// The calling thread's last Win32 error code.
fn last_error() -> u32 {
    // SAFETY: GetLastError has no preconditions.
    unsafe { windows_sys::Win32::Foundation::GetLastError() }
}

pub use peer::{PEER_UIDS, adopt_handle, duplicate_into, peer_credentials};
pub use pipe::{Op, Pipe, PipeRecv, Probe, wait_any};
pub use plain::Plain;
#[cfg(feature = "tokio")]
pub use reactor::{Registered, tokio_register};

/// Descriptors passed with a read: Unix only, so none here (the type has no
/// values, and the transport's slot for them stays empty).
#[derive(Debug)]
pub enum Passed {}

/// A connected stream: a TCP socket, one end of a named pipe, or a plain
/// handle that moves bytes.
#[derive(Debug)]
pub enum Stream {
    /// A connected TCP socket.
    Socket(Socket),
    /// A message-mode named pipe: whole messages, no byte-stream calls.
    Pipe(Pipe),
    /// An anonymous or byte-mode pipe end, or a disk file: bytes through
    /// `ReadFile` and `WriteFile`, framed above as on a socket.
    Plain(Plain),
}

impl Stream {
    /// A connected pair over a fresh, randomly named pipe (CPython's
    /// `Pipe()` on Windows). Neither handle is inheritable.
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = pipe::pair(&pair_name()?)?;
        Ok((Stream::Pipe(a), Stream::Pipe(b)))
    }

    /// A one-way pair, `(reader, writer)`, over a fresh, randomly named
    /// pipe that only carries messages from the writer to the reader.
    pub fn pair_simplex() -> io::Result<(Stream, Stream)> {
        let (r, w) = pipe::pair_simplex(&pair_name()?)?;
        Ok((Stream::Pipe(r), Stream::Pipe(w)))
    }

    /// Wraps a connected socket.
    pub fn from_socket(socket: Socket) -> io::Result<Stream> {
        Ok(Stream::Socket(socket))
    }

    /// Adopts a handle as what it is (`plain::classify`): a socket; a
    /// message-mode named pipe opened for overlapped I/O (or a pipe end
    /// whose type cannot be read: a write-only one); a byte-mode pipe end
    /// (anonymous or named, synchronous or overlapped) or a synchronous
    /// disk file, as a plain byte stream. Any other handle becomes a plain
    /// stream whose every call fails with `Unsupported` and says why.
    pub fn from_handle(handle: OwnedHandle) -> Stream {
        match plain::classify(&handle) {
            plain::Class::Socket => {
                let raw = handle.into_raw_handle() as RawSocket;
                // SAFETY: the handle is a socket (getsockopt answered for
                // it), and its ownership moves from `handle` to the Socket.
                Stream::Socket(unsafe { Socket::from_raw_socket(raw) })
            }
            plain::Class::MessagePipe => Stream::Pipe(Pipe::from(handle)),
            plain::Class::Bytes(kind, overlapped) => {
                Stream::Plain(Plain::new(handle, kind, overlapped))
            }
        }
    }

    /// Whether a message already read from the OS waits inside the stream:
    /// an empty one a pipe's readiness probe took (the probe is ended
    /// first, so that it counts); a socket keeps nothing.
    pub fn has_buffered(&self) -> bool {
        match self {
            Stream::Socket(_) | Stream::Plain(_) => false,
            Stream::Pipe(p) => {
                p.end_probe();
                p.has_buffered()
            }
        }
    }

    /// One read of bytes from a socket. A pipe has no bytes-level calls
    /// (`Unsupported`): read it with `Pipe::recv_message`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Socket(s) => io::Read::read(&mut &*s, buf),
            Stream::Pipe(_) => Err(not_bytes()),
            Stream::Plain(p) => {
                // SAFETY: an initialised byte slice is a valid MaybeUninit
                // one, and the read only writes bytes into it.
                let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
                p.read(buf)
            }
        }
    }

    /// As `read_spare`: descriptors travel only over Unix sockets, so
    /// nothing ever arrives in `passed` here.
    pub fn read_spare_passing(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        _passed: &mut Option<Passed>,
    ) -> io::Result<usize> {
        self.read_spare(v, max)
    }

    /// One read of at most `max` bytes appended to `v`.
    pub fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match self {
            Stream::Socket(s) => {
                let spare = v.spare_capacity_mut();
                let take = spare.len().min(max);
                let n = s.recv(&mut spare[..take])?;
                let len = v.len() + n;
                // SAFETY: recv wrote and so initialised the first n bytes of
                // the spare capacity (socket2's contract for MaybeUninit
                // buffers), and n <= take <= spare capacity.
                unsafe { v.set_len(len) };
                Ok(n)
            }
            Stream::Pipe(_) => Err(not_bytes()),
            Stream::Plain(p) => {
                let spare = v.spare_capacity_mut();
                let take = spare.len().min(max);
                let n = p.read(&mut spare[..take])?;
                let len = v.len() + n.min(take);
                // SAFETY: ReadFile wrote and so initialised the first n
                // bytes of the spare capacity, and n <= take <= spare
                // capacity.
                unsafe { v.set_len(len) };
                Ok(n)
            }
        }
    }

    /// One vectored write of bytes to a socket. A pipe has no bytes-level
    /// calls (`Unsupported`): write it with `Pipe::send_message`.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Socket(s) => s.send_vectored(bufs),
            Stream::Pipe(_) => Err(not_bytes()),
            Stream::Plain(p) => p.write_vectored(bufs),
        }
    }

    /// A write that does not block on a socket. A plain handle has no way to
    /// learn the room in its pipe: its write blocks as `write_vectored` does.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Socket(s) => {
                s.set_nonblocking(true)?;
                let r = s.send_vectored(bufs);
                s.set_nonblocking(false)?;
                r
            }
            Stream::Pipe(_) => Err(not_bytes()),
            Stream::Plain(p) => p.write_vectored(bufs),
        }
    }

    /// Waits until the stream is ready for `interest` or `deadline` passes;
    /// `false` on timeout. A pipe is readable once a message or the end is
    /// there (nothing is taken), and always writable (its writes block). A
    /// plain handle likewise, its pipe looked at until the deadline.
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
        match (self, interest) {
            (Stream::Socket(s), _) => wait_socket(s, interest, deadline),
            (Stream::Pipe(p), Interest::Readable) => p.wait_readable(deadline),
            (Stream::Plain(p), Interest::Readable) => p.wait_readable(deadline),
            (Stream::Pipe(_) | Stream::Plain(_), Interest::Writable) => Ok(true),
        }
    }

    /// Switches a socket between blocking and non-blocking mode. A named
    /// pipe's calls are overlapped, and its non-blocking ones are calls of
    /// their own (`Pipe::try_recv_message`, `Pipe::try_send_message`):
    /// nothing to switch. A plain handle has no non-blocking mode.
    #[cfg_attr(
        not(feature = "tokio"),
        allow(dead_code, reason = "only the async connections switch")
    )]
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Socket(s) => s.set_nonblocking(nonblocking),
            Stream::Pipe(_) => Ok(()),
            Stream::Plain(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a plain handle has no non-blocking mode",
            )),
        }
    }

    /// Linux's TCP_QUICKACK has no Windows counterpart.
    pub fn quick_ack(&self) {}

    /// Shuts down one or both directions. On a pipe, only `Both` does
    /// anything: it fails blocked and later reads and writes (`close()`);
    /// the peer sees the end when the handle closes. One direction of a
    /// simplex pair is refused by the connection itself. On a plain handle,
    /// `Both` marks it closed (see `Plain::shutdown`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Socket(s) => s.shutdown(how),
            Stream::Plain(p) => p.shutdown(how),
            Stream::Pipe(p) => {
                if how == Shutdown::Both {
                    p.cancel_all();
                }
                Ok(())
            }
        }
    }

    /// The peer's address, for a TCP stream; `None` for a named pipe.
    pub fn peer_addr(&self) -> Option<socket2::SockAddr> {
        self.as_socket()?.peer_addr().ok()
    }

    /// The socket, for a TCP stream.
    pub fn as_socket(&self) -> Option<&Socket> {
        match self {
            Stream::Socket(s) => Some(s),
            Stream::Pipe(_) | Stream::Plain(_) => None,
        }
    }

    /// The pipe, for a message-mode named pipe.
    pub fn as_pipe(&self) -> Option<&Pipe> {
        match self {
            Stream::Pipe(p) => Some(p),
            Stream::Socket(_) | Stream::Plain(_) => None,
        }
    }

    /// The handle, for a named pipe or a plain handle; `None` for a socket.
    pub fn as_pipe_handle(&self) -> Option<BorrowedHandle<'_>> {
        match self {
            Stream::Socket(_) => None,
            Stream::Pipe(p) => Some(p.handle().as_handle()),
            Stream::Plain(p) => Some(p.handle().as_handle()),
        }
    }

    /// Starts a readiness probe for `wait_readable`; `None` for a stream
    /// that nothing signals and that is not ready now (a synchronous pipe,
    /// looked at again and again).
    fn probe(&self) -> io::Result<Option<Probe>> {
        match self {
            Stream::Pipe(p) => p.probe().map(Some),
            Stream::Socket(s) => probe_socket(s).map(Some),
            Stream::Plain(p) => Ok(p.readable_now().then_some(Probe::Ready)),
        }
    }

    /// After the wait: whether the stream is ready to read. A socket's
    /// probe is cancelled if it is still in flight; a pipe's stays.
    fn probe_ready(&self, op: Option<Op>) -> bool {
        match (self, op) {
            (Stream::Pipe(p), _) => p.probe_ready(),
            (Stream::Plain(p), _) => p.readable_now(),
            (Stream::Socket(s), Some(op)) => finish_socket_probe(s, op),
            (Stream::Socket(_), None) => false,
        }
    }
}

impl AsRawHandle for Stream {
    /// The pipe handle, or the socket as a handle (what CPython's
    /// `fileno()` gives for either).
    fn as_raw_handle(&self) -> RawHandle {
        match self {
            Stream::Socket(s) => s.as_raw_socket() as RawHandle,
            Stream::Pipe(p) => p.handle().as_raw_handle(),
            Stream::Plain(p) => p.handle().as_raw_handle(),
        }
    }
}

/// What a bytes-level call on a pipe gets.
fn not_bytes() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a named pipe moves whole messages, not bytes",
    )
}

/// A pipe name nobody can guess: 128 random bits.
fn pair_name() -> io::Result<String> {
    let mut random = [0u8; 16];
    rand::rngs::SysRng
        .try_fill_bytes(&mut random)
        .map_err(io::Error::other)?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        r"\\.\pipe\mpconn-pair-{}-{hex}",
        std::process::id()
    ))
}

fn socket_handle(s: &Socket) -> HANDLE {
    s.as_raw_socket() as HANDLE
}

/// Starts a zero-byte overlapped receive: it completes when data or the end
/// arrives and takes nothing.
fn probe_socket(s: &Socket) -> io::Result<Probe> {
    let mut op = Op::new()?;
    let buf = WSABUF {
        len: 0,
        buf: ptr::null_mut(),
    };
    let mut flags = 0u32;
    // SAFETY: one WSABUF of length zero (nothing is written through it); the
    // OVERLAPPED lives in the boxed op until finish_socket_probe has waited
    // for the operation to end.
    let r = unsafe {
        WSARecv(
            s.as_raw_socket() as SOCKET,
            &buf,
            1,
            ptr::null_mut(),
            &mut flags,
            op.ov_mut(),
            None,
        )
    };
    // SAFETY: WSAGetLastError has no preconditions.
    if r == SOCKET_ERROR && unsafe { WSAGetLastError() } == WSA_IO_PENDING {
        return Ok(Probe::Pending(op.event(), Some(op)));
    }
    // Done at once (data or the end is there), or an error the next read reports.
    Ok(Probe::Ready)
}

fn finish_socket_probe(s: &Socket, mut op: Op) -> bool {
    if !op.is_complete() {
        op.cancel(socket_handle(s));
    }
    !matches!(
        op.result(socket_handle(s)),
        Err((ERROR_OPERATION_ABORTED, _))
    )
}

/// `WSAPoll` on one socket with a deadline; `false` on timeout.
fn wait_socket(s: &Socket, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
    let events = match interest {
        Interest::Readable => POLLRDNORM,
        Interest::Writable => POLLWRNORM,
    };
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_nanos()
                .div_ceil(1_000_000)
                .min(i32::MAX as u128) as i32,
        };
        let mut pfd = WSAPOLLFD {
            fd: s.as_raw_socket() as SOCKET,
            events,
            revents: 0,
        };
        // SAFETY: one initialised WSAPOLLFD that lives across the call.
        let n = unsafe { WSAPoll(&mut pfd, 1, ms) };
        match n {
            n if n > 0 => return Ok(true),
            0 if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(false),
            0 => continue,
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

/// Connects `socket` within `deadline` and leaves it blocking.
pub fn connect_nonblocking(
    socket: &Socket,
    addr: &SockAddr,
    deadline: Option<Instant>,
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    match socket.connect(addr) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if !wait_socket(socket, Interest::Writable, deadline)? {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    socket.set_nonblocking(false)
}

/// Binds `socket` to its port exclusively (`SO_EXCLUSIVEADDRUSE`): no other
/// socket, not even one with `SO_REUSEADDR`, can bind the same address and
/// take its clients. Call before `bind`.
pub fn set_exclusive_address(socket: &Socket) -> io::Result<()> {
    let on: i32 = 1;
    // SAFETY: the option value is one live i32, and its length is passed.
    let r = unsafe {
        setsockopt(
            socket.as_raw_socket() as SOCKET,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&raw const on).cast(),
            std::mem::size_of::<i32>() as i32,
        )
    };
    if r == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `socket` has `SO_EXCLUSIVEADDRUSE` set.
#[cfg(test)]
pub fn exclusive_address(socket: &Socket) -> io::Result<bool> {
    let mut on: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as i32;
    // SAFETY: the option buffer is one live i32 and `len` says so.
    let r = unsafe {
        windows_sys::Win32::Networking::WinSock::getsockopt(
            socket.as_raw_socket() as SOCKET,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&raw mut on).cast(),
            &mut len,
        )
    };
    if r == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    Ok(on != 0)
}

/// Opens the client end of the named pipe `name` within `deadline`.
pub fn connect_pipe(name: &str, deadline: Option<Instant>) -> io::Result<Stream> {
    pipe::connect(name, deadline).map(Stream::Pipe)
}

/// Creates an instance of the named pipe `name` for a listener; `first`
/// fails when the name is taken.
pub fn create_pipe_instance(name: &str, first: bool) -> io::Result<Pipe> {
    pipe::create_instance(name, first)
}

/// What `wait()` watches on Windows: a stream (probed with a zero-byte
/// read) or an event that is signalled while the object is ready.
#[derive(Debug, Clone, Copy)]
pub enum WaitSource<'a> {
    /// A connection's stream.
    Stream(&'a Stream),
    /// A manual-reset event, a listener's "connection ready" for one.
    Event(BorrowedHandle<'a>),
}

impl<'a> WaitSource<'a> {
    /// The source of `stream`.
    pub fn stream(stream: &'a Stream) -> WaitSource<'a> {
        WaitSource::Stream(stream)
    }
}

/// The most handles one `WaitForMultipleObjects` takes.
const MAX_WAIT: usize = 64;

/// Waits until some of `sources` are readable or `deadline` passes; on
/// return `ready[i]` tells about `sources[i]`.
///
/// Each stream has a zero-byte overlapped read in flight, and the wait is
/// on their events. A pipe's probe stays in flight after the wait, so the
/// next wait costs nothing for a pipe that stayed quiet; a socket's is
/// cancelled. Past 64 handles (the limit of one wait), helper threads wait
/// on the further groups. A plain pipe, which nothing signals, is looked at
/// again after each slice of the wait, the slices growing from 50 µs to
/// `plain::POLL_MAX`, so it is reported at most about that late.
pub fn wait_readable(
    sources: &[WaitSource<'_>],
    ready: &mut [bool],
    deadline: Option<Instant>,
) -> io::Result<()> {
    // What each source waits on: a probe (and a socket's op) or an event.
    let mut waiting: Vec<Option<Option<Op>>> = Vec::with_capacity(sources.len());
    let mut handles: Vec<HANDLE> = Vec::with_capacity(sources.len());
    // Sources that nothing signals, looked at between slices of the wait.
    let mut looked: Vec<usize> = Vec::new();
    let mut any = false;
    let mut failure = None;
    for (i, source) in sources.iter().enumerate() {
        match source {
            WaitSource::Stream(s) => match s.probe() {
                Ok(Some(Probe::Ready)) => {
                    ready[i] = true;
                    any = true;
                    waiting.push(None);
                }
                Ok(Some(Probe::Pending(event, op))) => {
                    handles.push(event);
                    waiting.push(Some(op));
                }
                Ok(None) => {
                    looked.push(i);
                    waiting.push(None);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            },
            WaitSource::Event(h) => {
                handles.push(h.as_raw_handle() as HANDLE);
                waiting.push(Some(None));
            }
        }
    }
    if failure.is_none() && !any {
        failure = wait_signalled_or_looked(sources, &handles, &looked, ready, deadline).err();
    }
    for (i, (source, waited)) in sources.iter().zip(waiting).enumerate() {
        let Some(op) = waited else { continue };
        ready[i] = match source {
            WaitSource::Stream(s) => s.probe_ready(op),
            WaitSource::Event(h) => {
                let h = h.as_raw_handle() as HANDLE;
                wait_any(&[h], Some(Instant::now()))?.is_some()
            }
        };
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits until one of `handles` is signalled, one of the `looked` sources
/// is readable (marked in `ready`), or `deadline` passes.
fn wait_signalled_or_looked(
    sources: &[WaitSource<'_>],
    handles: &[HANDLE],
    looked: &[usize],
    ready: &mut [bool],
    deadline: Option<Instant>,
) -> io::Result<()> {
    // Whether a handle was signalled before `until`.
    let wait = |until: Option<Instant>| -> io::Result<bool> {
        if handles.len() <= MAX_WAIT {
            return Ok(wait_any(handles, until)?.is_some());
        }
        wait_groups(handles, until)?;
        for group in handles.chunks(MAX_WAIT) {
            if wait_any(group, Some(Instant::now()))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if looked.is_empty() {
        if !handles.is_empty() {
            return wait(deadline).map(drop);
        }
        // Nothing to wait for: sleep out the deadline, as poll(2) does.
        return match deadline {
            Some(d) => {
                std::thread::sleep(d.saturating_duration_since(Instant::now()));
                Ok(())
            }
            None => Err(io::Error::other("wait() with nothing to wait for")),
        };
    }
    let mut backoff = plain::Backoff::new();
    loop {
        let Some(slice) = backoff.next(deadline) else {
            return Ok(());
        };
        if handles.is_empty() {
            std::thread::sleep(slice);
        } else if wait(Instant::now().checked_add(slice))? {
            return Ok(());
        }
        let mut found = false;
        for &i in looked {
            if let WaitSource::Stream(s) = sources[i]
                && s.probe_ready(None)
            {
                ready[i] = true;
                found = true;
            }
        }
        if found {
            return Ok(());
        }
    }
}

/// Watches more than 64 handles, the limit of one wait: this thread takes
/// the first 63 and a helper thread each further 63, every one of them also
/// watching a shared event that whoever wakes first signals to release the
/// rest.
fn wait_groups(handles: &[HANDLE], deadline: Option<Instant>) -> io::Result<()> {
    let done = Event::new()?;
    // Handles are raw pointers, which may not cross threads as such; they
    // stay valid for the whole call, which outlives the helpers.
    let as_numbers = |group: &[HANDLE]| -> Vec<usize> {
        group
            .iter()
            .map(|&h| h as usize)
            .chain([done.raw() as usize])
            .collect()
    };
    let wait_group = |group: &[usize]| -> io::Result<()> {
        let handles: Vec<HANDLE> = group.iter().map(|&h| h as HANDLE).collect();
        let result = wait_any(&handles, deadline).map(drop);
        done.set();
        result
    };
    let (first, rest) = handles.split_at(MAX_WAIT - 1);
    let helper_groups: Vec<Vec<usize>> = rest.chunks(MAX_WAIT - 1).map(as_numbers).collect();
    let first = as_numbers(first);
    std::thread::scope(|scope| {
        let helpers: Vec<_> = helper_groups
            .iter()
            .map(|group| scope.spawn(|| wait_group(group)))
            .collect();
        let mut result = wait_group(&first);
        for helper in helpers {
            let joined = helper
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a wait helper thread panicked")));
            result = result.and(joined);
        }
        result
    })
}

/// A manual-reset event: signalled until reset.
#[derive(Debug)]
pub struct Event(OwnedHandle);

impl Event {
    /// A new event, not signalled.
    pub fn new() -> io::Result<Event> {
        // SAFETY: null attributes and name make an unnamed manual-reset event.
        let h = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: CreateEventW returned a handle we now own.
        Ok(Event(unsafe {
            OwnedHandle::from_raw_handle(h as RawHandle)
        }))
    }

    /// Signals the event.
    pub fn set(&self) {
        // SAFETY: the handle is an open event.
        unsafe { SetEvent(self.raw()) };
    }

    /// Clears the signal.
    pub fn reset(&self) {
        // SAFETY: the handle is an open event.
        unsafe { ResetEvent(self.raw()) };
    }

    /// The handle, for `wait_any`.
    pub fn raw(&self) -> HANDLE {
        self.0.as_raw_handle() as HANDLE
    }

    /// The event as a `wait()` source.
    pub fn wait_source(&self) -> WaitSource<'_> {
        WaitSource::Event(self.0.as_handle())
    }
}

/// Has `event` signalled whenever `listener` has a client to accept (and
/// makes the listening socket non-blocking, as `WSAEventSelect` does).
pub fn select_accept(listener: &Socket, event: &Event) -> io::Result<()> {
    // SAFETY: the socket and the event are open for the duration of the call.
    let r = unsafe {
        WSAEventSelect(
            listener.as_raw_socket() as SOCKET,
            event.raw() as isize,
            FD_ACCEPT as i32,
        )
    };
    if r == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Undoes the `WSAEventSelect` that an accepted socket inherits from its
/// listener, and makes it blocking again.
pub fn clear_select(socket: &Socket) -> io::Result<()> {
    // SAFETY: the socket is open; a null event with no events cancels the
    // association.
    let r = unsafe { WSAEventSelect(socket.as_raw_socket() as SOCKET, 0, 0) };
    if r == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    socket.set_nonblocking(false)
}
