//! Unix: a transport is a socket descriptor, or any other descriptor that
//! moves bytes (a pipe end, a FIFO), read and written with plain calls.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

mod fds;
mod plain;
#[cfg(feature = "tokio")]
mod reactor;

pub use fds::{MAX_FDS, Passed};
#[cfg(feature = "tokio")]
pub use reactor::{OwnsFd, tokio_register};

use socket2::{Domain, Socket, Type};

use super::Interest;

/// `send` flags: never raise SIGPIPE on a peer that has gone away.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
pub const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
pub const SEND_FLAGS: libc::c_int = 0;

/// A connected stream: a socket (Unix domain or TCP), or any other
/// descriptor that reads and writes bytes (a pipe end, a FIFO).
#[derive(Debug)]
pub struct Stream {
    fd: Socket,
    kind: Kind,
}

/// What kind of descriptor a stream is, which decides the calls it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A Unix-domain socket: reads can carry descriptors.
    Unix,
    /// Another socket (TCP).
    Net,
    /// Not a socket: `read` and `writev`.
    Plain,
}

impl Stream {
    /// A connected pair of Unix stream sockets, both close-on-exec.
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        Ok((
            Stream::socket_of(a, Kind::Unix)?,
            Stream::socket_of(b, Kind::Unix)?,
        ))
    }

    /// Wraps a connected socket, turning off SIGPIPE where the platform
    /// needs a socket option for that.
    pub fn from_socket(socket: Socket) -> io::Result<Stream> {
        let kind = socket_kind(&socket);
        Stream::socket_of(socket, kind)
    }

    fn socket_of(socket: Socket, kind: Kind) -> io::Result<Stream> {
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        socket.set_nosigpipe(true)?;
        Ok(Stream { fd: socket, kind })
    }

    /// A one-way pair, `(reader, writer)`: a socketpair with the other
    /// direction shut down on each end.
    pub fn pair_simplex() -> io::Result<(Stream, Stream)> {
        let (r, w) = Stream::pair()?;
        r.shutdown(Shutdown::Write)?;
        w.shutdown(Shutdown::Read)?;
        Ok((r, w))
    }

    /// Adopts a descriptor: a connected stream socket, or any other
    /// descriptor that reads and writes bytes (a pipe end, a FIFO).
    pub fn from_fd(fd: OwnedFd) -> Stream {
        let fd = Socket::from(fd);
        let kind = if is_socket(fd.as_raw_fd()) {
            socket_kind(&fd)
        } else {
            Kind::Plain
        };
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        if kind != Kind::Plain {
            let _ = fd.set_nosigpipe(true);
        }
        Stream { fd, kind }
    }

    /// The underlying descriptor, as a socket (whose socket calls fail on a
    /// descriptor that is not one).
    pub fn socket(&self) -> &Socket {
        &self.fd
    }

    /// Whether descriptors can travel over this stream: a Unix socket, on
    /// Linux and Android. Elsewhere the kernels attach descriptors to the
    /// bytes of a stream differently (the BSDs and macOS hand them over with
    /// the first byte of a read, and may read on), and CPython on macOS
    /// adds an acknowledgement byte; neither is built or tested here, so
    /// descriptor passing says `Unsupported` there rather than guess.
    pub fn passes_fds(&self) -> bool {
        self.kind == Kind::Unix && cfg!(any(target_os = "linux", target_os = "android"))
    }

    /// One `recv` (or `read`) into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.kind {
            Kind::Plain => {
                // SAFETY: an initialised byte slice is a valid MaybeUninit one.
                let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
                plain::read(self.fd.as_raw_fd(), buf)
            }
            _ => io::Read::read(&mut &self.fd, buf),
        }
    }

    /// One read of at most `max` bytes into the spare capacity of `v`,
    /// which the caller has reserved; the bytes read are appended to `v`.
    pub fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.read_spare_with(v, max, |s, spare| match s.kind {
            Kind::Plain => plain::read(s.fd.as_raw_fd(), spare),
            _ => s.fd.recv(spare),
        })
    }

    /// As [`read_spare`](Self::read_spare), and on a Unix socket any
    /// descriptors that arrive with the last byte read go to `passed`.
    pub fn read_spare_passing(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        passed: &mut Option<Passed>,
    ) -> io::Result<usize> {
        if !self.passes_fds() {
            return self.read_spare(v, max);
        }
        self.read_spare_with(v, max, |s, spare| {
            fds::recv(s.fd.as_raw_fd(), spare, passed)
        })
    }

    fn read_spare_with(
        &self,
        v: &mut Vec<u8>,
        max: usize,
        read: impl FnOnce(&Self, &mut [MaybeUninit<u8>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let spare = v.spare_capacity_mut();
        let take = spare.len().min(max);
        let n = read(self, &mut spare[..take])?;
        let len = v.len() + n.min(take);
        // SAFETY: the read wrote and so initialised the first n bytes of the
        // spare capacity (recv, recvmsg and read all write what they
        // report), and n <= take <= spare capacity, so len <= capacity.
        unsafe { v.set_len(len) };
        Ok(n)
    }

    /// One vectored write that never raises SIGPIPE.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.kind {
            Kind::Plain => plain::write_vectored(self.fd.as_raw_fd(), bufs, usize::MAX),
            _ => self.fd.send_vectored_with_flags(bufs, SEND_FLAGS),
        }
    }

    /// Sends one byte carrying `fds` (a Unix socket only); `nonblocking`
    /// returns `WouldBlock` instead of waiting for room.
    pub fn send_fds(
        &self,
        byte: u8,
        fds: &[BorrowedFd<'_>],
        nonblocking: bool,
    ) -> io::Result<usize> {
        if !self.passes_fds() {
            return Err(not_unix_socket());
        }
        fds::send(self.fd.as_raw_fd(), byte, fds, nonblocking)
    }

    /// Waits until the socket is ready for `interest` or `deadline` passes.
    /// Returns `false` on timeout. Error and hang-up conditions count as
    /// ready: the next read or write reports them.
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
        wait_fd(self.fd.as_fd(), interest, deadline)
    }

    /// Asks TCP to acknowledge the next segments at once rather than
    /// delaying the ACK (Linux; a no-op elsewhere and on other streams).
    pub fn quick_ack(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.kind == Kind::Net {
            let _ = self.fd.set_tcp_quickack(true);
        }
    }

    /// The peer's address, when the socket has one.
    pub fn peer_addr(&self) -> Option<socket2::SockAddr> {
        match self.kind {
            Kind::Plain => None,
            _ => self.fd.peer_addr().ok(),
        }
    }

    /// A socket keeps no message of its own once read.
    pub fn has_buffered(&self) -> bool {
        false
    }

    /// Shuts down one or both directions of a socket. A descriptor that is
    /// not a socket has no shutdown: `Unsupported`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self.kind {
            Kind::Plain => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only a socket can be shut down",
            )),
            _ => self.fd.shutdown(how),
        }
    }

    /// Switches between blocking and non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(&self.fd, nonblocking)
    }

    /// One vectored write that never blocks and never raises SIGPIPE;
    /// `WouldBlock` when there is no room. On a socket, `MSG_DONTWAIT`; on
    /// a pipe, whose descriptor other processes may share and whose
    /// blocking mode is theirs too, a `poll` for room and then a write of at
    /// most `PIPE_BUF` bytes, which that room always takes.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.kind {
            Kind::Plain => {
                if !plain::writable_now(self.fd.as_raw_fd())? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                plain::write_vectored(self.fd.as_raw_fd(), bufs, plain::PIPE_BUF)
            }
            _ => self
                .fd
                .send_vectored_with_flags(bufs, SEND_FLAGS | libc::MSG_DONTWAIT),
        }
    }
}

fn not_unix_socket() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "descriptors travel only over a Unix-domain socket (on Linux and Android)",
    )
}

/// Whether `fd` is a socket (`fstat`); `false` if it cannot be told.
fn is_socket(fd: RawFd) -> bool {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is valid for writes of one stat; fd is open (owned by the caller).
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return true; // Let the socket calls report what is wrong.
    }
    // SAFETY: fstat succeeded and filled st.
    let mode = unsafe { st.assume_init() }.st_mode;
    mode & libc::S_IFMT == libc::S_IFSOCK
}

/// A socket's kind, from its local address's family.
fn socket_kind(socket: &Socket) -> Kind {
    match socket.local_addr() {
        Ok(addr) if addr.family() == libc::AF_UNIX as libc::sa_family_t => Kind::Unix,
        _ => Kind::Net,
    }
}

/// Switches a socket between blocking and non-blocking mode with one
/// `ioctl(FIONBIO)` (socket2's version reads and writes the flags: two calls).
pub fn set_nonblocking(socket: &Socket, nonblocking: bool) -> io::Result<()> {
    let mut on = libc::c_int::from(nonblocking);
    // SAFETY: FIONBIO reads one c_int through the pointer, which points to a
    // live local for the duration of the call; the descriptor is owned by
    // `socket` and open.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONBIO, &mut on) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Connects `socket`, created non-blocking, within `timeout`, and leaves it
/// blocking: `connect`, `poll` for the outcome, read the socket's error, one
/// `ioctl` back to blocking.
pub fn connect_nonblocking(
    socket: &Socket,
    addr: &socket2::SockAddr,
    deadline: Option<Instant>,
) -> io::Result<()> {
    match socket.connect(addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if !wait_fd(socket.as_fd(), Interest::Writable, deadline)? {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    set_nonblocking(socket, false)
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Stream> for OwnedFd {
    fn from(s: Stream) -> OwnedFd {
        s.fd.into()
    }
}

/// A new descriptor for the open file of `fd`, close-on-exec: for a
/// second owner that must not outlive nor close the first (an async
/// runtime watching a listener engine's poll).
pub fn dup_raw(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller's `fd` is open for the duration of this call (it
    // belongs to an object the caller borrows), and the borrow ends here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned()
}

/// Accepts one connection, close-on-exec, already non-blocking when asked
/// (one `accept4` instead of `accept` and `fcntl` on Linux).
pub fn accept(listener: &Socket, nonblocking: bool) -> io::Result<(Socket, socket2::SockAddr)> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
        listener.accept4(flags)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let (socket, addr) = listener.accept()?;
        socket.set_nonblocking(nonblocking)?;
        Ok((socket, addr))
    }
}

/// `poll(2)` on one descriptor with a deadline; `false` on timeout.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    interest: Interest,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let events = match interest {
        Interest::Readable => libc::POLLIN,
        Interest::Writable => libc::POLLOUT,
    };
    loop {
        let timeout_ms = poll_timeout(deadline);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: pfd is a valid, initialised pollfd that lives across the
        // call, and nfds is 1, matching the single entry passed.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        match n {
            n if n > 0 => return Ok(true),
            0 => match deadline {
                Some(d) if Instant::now() >= d => return Ok(false),
                // poll's millisecond clock can wake a hair early; go again.
                _ => continue,
            },
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// What `wait()` watches on Unix: a descriptor that polls readable when the
/// object is ready (a socket, or a listener's epoll descriptor).
#[derive(Debug, Clone, Copy)]
pub struct WaitSource<'a> {
    fd: RawFd,
    _borrow: std::marker::PhantomData<&'a ()>,
}

impl<'a> WaitSource<'a> {
    /// The descriptor of `stream`.
    pub fn stream(stream: &'a Stream) -> WaitSource<'a> {
        WaitSource::fd(stream.as_raw_fd())
    }

    /// A descriptor the caller keeps open for as long as it lends the source.
    pub fn fd(fd: RawFd) -> WaitSource<'a> {
        WaitSource {
            fd,
            _borrow: std::marker::PhantomData,
        }
    }

    /// The descriptor, for registering with an epoll set.
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// `poll(2)` on many descriptors for readability with a deadline. On
/// return, `ready[i]` tells whether `sources[i]` is readable (or hung up, or
/// in error: the next read reports which). EINTR is retried with the time left.
pub fn wait_readable(
    sources: &[WaitSource<'_>],
    ready: &mut [bool],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = sources
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let timeout_ms = poll_timeout(deadline);
        // SAFETY: pfds is a live, initialised array of pfds.len() pollfds, and
        // nfds is exactly that length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 && deadline.is_none_or(|d| Instant::now() < d) {
            // Woke a hair early on the millisecond clock.
            continue;
        }
        for (r, p) in ready.iter_mut().zip(&pfds) {
            *r = p.revents != 0;
        }
        return Ok(());
    }
}

/// Milliseconds until `deadline` for poll(2), rounded up; -1 for none.
fn poll_timeout(deadline: Option<Instant>) -> libc::c_int {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            left.as_nanos()
                .div_ceil(1_000_000)
                .min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// Unix has numeric user ids, which a listener can admit by.
pub const PEER_UIDS: bool = true;

/// The credentials of the peer of a connected Unix-domain stream socket:
/// those of the process that connected (or made the socketpair), as they
/// were at that moment. `SO_PEERCRED` on Linux and Android gives pid, uid
/// and gid; `getpeereid` gives uid and gid elsewhere, with `LOCAL_PEERPID`
/// for the pid on macOS. `Unsupported` for a TCP socket or a descriptor
/// that is no socket, `NotConnected` for a socket without a peer.
pub fn peer_credentials(stream: &Stream) -> io::Result<super::PeerIds> {
    match stream.kind {
        Kind::Unix => {}
        Kind::Net => {
            return Err(no_credentials(
                "only Unix-domain sockets have them, not TCP",
            ));
        }
        Kind::Plain => return Err(no_credentials("the descriptor is not a socket")),
    }
    // An unconnected socket would report made-up ids (Linux gives the
    // overflow uid): insist on a peer.
    stream.fd.peer_addr()?;
    let mut ids = peer_ids(stream.as_fd())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    ids.same_user = ids.uid.map(|uid| uid == me);
    Ok(ids)
}

fn no_credentials(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("no peer credentials: {why}"),
    )
}

/// A pid the kernel reports; 0 means it could not name the process (a
/// peer in another pid namespace, say).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
))]
fn known_pid(pid: libc::pid_t) -> Option<u32> {
    u32::try_from(pid).ok().filter(|&pid| pid != 0)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_ids(fd: BorrowedFd<'_>) -> io::Result<super::PeerIds> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the option buffer is one live ucred and `len` is its size;
    // the descriptor is borrowed, so open.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(super::PeerIds {
        pid: known_pid(cred.pid),
        uid: Some(cred.uid),
        gid: Some(cred.gid),
        same_user: None,
    })
}

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
fn peer_ids(fd: BorrowedFd<'_>) -> io::Result<super::PeerIds> {
    let (mut uid, mut gid): (libc::uid_t, libc::gid_t) = (0, 0);
    // SAFETY: both out-parameters are live locals; the descriptor is open.
    if unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } == -1 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    let pid = {
        let mut pid: libc::pid_t = 0;
        let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
        // SAFETY: the option buffer is one live pid_t and `len` is its size.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_LOCAL,
                libc::LOCAL_PEERPID,
                (&raw mut pid).cast(),
                &mut len,
            )
        };
        if r == -1 { None } else { known_pid(pid) }
    };
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    let pid = None;
    Ok(super::PeerIds {
        pid,
        uid: Some(uid),
        gid: Some(gid),
        same_user: None,
    })
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
fn peer_ids(_fd: BorrowedFd<'_>) -> io::Result<super::PeerIds> {
    Err(no_credentials("this platform has no call for them"))
}
