//! Unix: every transport is a socket descriptor.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

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

/// A connected stream socket (Unix domain or TCP).
#[derive(Debug)]
pub struct Stream(Socket);

impl Stream {
    /// A connected pair of Unix stream sockets, both close-on-exec.
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        let (a, b) = (Stream::from_socket(a)?, Stream::from_socket(b)?);
        Ok((a, b))
    }

    /// Wraps a connected socket, turning off SIGPIPE where the platform
    /// needs a socket option for that.
    pub fn from_socket(socket: Socket) -> io::Result<Stream> {
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        socket.set_nosigpipe(true)?;
        Ok(Stream(socket))
    }

    /// A one-way pair, `(reader, writer)`: a socketpair with the other
    /// direction shut down on each end.
    pub fn pair_simplex() -> io::Result<(Stream, Stream)> {
        let (r, w) = Stream::pair()?;
        r.shutdown(Shutdown::Write)?;
        w.shutdown(Shutdown::Read)?;
        Ok((r, w))
    }

    /// Adopts a descriptor that must be a connected stream socket.
    pub fn from_fd(fd: OwnedFd) -> Stream {
        Stream(Socket::from(fd))
    }

    /// The underlying socket.
    pub fn socket(&self) -> &Socket {
        &self.0
    }

    /// One `recv` into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.0, buf)
    }

    /// One `recv` of at most `max` bytes into the spare capacity of `v`,
    /// which the caller has reserved; the bytes read are appended to `v`.
    pub fn read_spare(&self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let spare = v.spare_capacity_mut();
        let take = spare.len().min(max);
        let n = self.0.recv(&mut spare[..take])?;
        let len = v.len() + n;
        // SAFETY: recv wrote and so initialised the first n bytes of the spare
        // capacity (socket2's contract for `recv` on MaybeUninit buffers), and
        // n <= take <= spare capacity, so len <= capacity.
        unsafe { v.set_len(len) };
        Ok(n)
    }

    /// One vectored send that never raises SIGPIPE.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(bufs, SEND_FLAGS)
    }

    /// Waits until the socket is ready for `interest` or `deadline` passes.
    /// Returns `false` on timeout. Error and hang-up conditions count as
    /// ready: the next read or write reports them.
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
        wait_fd(self.0.as_fd(), interest, deadline)
    }

    /// Asks TCP to acknowledge the next segments at once rather than
    /// delaying the ACK (Linux; a no-op elsewhere and on other sockets).
    pub fn quick_ack(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // Fails harmlessly (ENOPROTOOPT) on Unix-domain sockets.
            let _ = self.0.set_tcp_quickack(true);
        }
    }

    /// The peer's address, when the socket has one.
    pub fn peer_addr(&self) -> Option<socket2::SockAddr> {
        self.0.peer_addr().ok()
    }

    /// A socket keeps no message of its own once read.
    pub fn has_buffered(&self) -> bool {
        false
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.shutdown(how)
    }

    /// Switches between blocking and non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(&self.0, nonblocking)
    }

    /// One vectored send that never blocks (`MSG_DONTWAIT`) and never
    /// raises SIGPIPE; `WouldBlock` when the socket buffer is full.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0
            .send_vectored_with_flags(bufs, SEND_FLAGS | libc::MSG_DONTWAIT)
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
        self.0.as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<Stream> for OwnedFd {
    fn from(s: Stream) -> OwnedFd {
        s.0.into()
    }
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
    let fd = stream.as_fd();
    let socket = socket2::SockRef::from(&fd);
    let local = socket.local_addr().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => no_credentials("the descriptor is not a socket"),
        _ => e,
    })?;
    if local.domain() != Domain::UNIX {
        return Err(no_credentials(
            "only Unix-domain sockets have them, not TCP",
        ));
    }
    // An unconnected socket would report made-up ids (Linux gives the
    // overflow uid): insist on a peer.
    socket.peer_addr()?;
    let mut ids = peer_ids(fd)?;
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
