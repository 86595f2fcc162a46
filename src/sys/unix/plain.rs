//! I/O on descriptors that are not sockets: pipe ends (CPython's
//! `Pipe(duplex=False)` is made of `os.pipe()`), FIFOs, terminals. They have
//! `read` and `writev` but no `recv`, `send` or `MSG_NOSIGNAL`.

use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::os::fd::RawFd;

/// One `read` into `buf`.
pub fn read(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes for the duration of
    // the call; read writes at most that many.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `writev` of at most `limit` bytes from `bufs` that never raises
/// SIGPIPE: a pipe whose reading end is gone fails with `EPIPE` instead of
/// killing the process, whatever the process's SIGPIPE disposition.
///
/// SIGPIPE is blocked in this thread for the write; if the write failed with
/// `EPIPE` and raised one, it is taken off the pending set before the old
/// mask comes back. A SIGPIPE the caller had blocked and pending already is
/// left alone.
pub fn write_vectored(fd: RawFd, bufs: &[IoSlice<'_>], limit: usize) -> io::Result<usize> {
    let mut slices = Vec::new();
    let bufs = cap(bufs, limit, &mut slices);
    let iovcnt = bufs.len().min(libc::c_int::MAX as usize) as libc::c_int;
    let sigpipe = SigSet::only(libc::SIGPIPE);
    let old = sigpipe.block()?;
    // SAFETY: IoSlice is ABI-compatible with iovec, and bufs holds iovcnt
    // of them, each valid for reads for the duration of the call.
    let n = unsafe { libc::writev(fd, bufs.as_ptr().cast(), iovcnt) };
    let result = if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    };
    if let Err(e) = &result
        && e.raw_os_error() == Some(libc::EPIPE)
        && !old.contains(libc::SIGPIPE)
    {
        sigpipe.consume_pending();
    }
    old.restore();
    result
}

/// `bufs` cut down to at most `limit` bytes in total.
fn cap<'a>(
    bufs: &'a [IoSlice<'a>],
    limit: usize,
    out: &'a mut Vec<IoSlice<'a>>,
) -> &'a [IoSlice<'a>] {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total <= limit {
        return bufs;
    }
    let mut left = limit;
    for b in bufs {
        if left == 0 {
            break;
        }
        let take = b.len().min(left);
        out.push(IoSlice::new(&b[..take]));
        left -= take;
    }
    out
}

/// A signal set, and the thread's mask as it was.
struct SigSet(libc::sigset_t);

impl SigSet {
    fn only(signal: libc::c_int) -> SigSet {
        // SAFETY: sigemptyset and sigaddset initialise and edit the set we
        // pass, which lives on the stack for both calls.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), signal);
            SigSet(set.assume_init())
        }
    }

    /// Blocks these signals in this thread; returns the mask before.
    fn block(&self) -> io::Result<SigSet> {
        // SAFETY: an all-zero sigset_t is a valid value to be overwritten.
        let mut old: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: both sets are valid for the call.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, &mut old) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(SigSet(old))
    }

    fn contains(&self, signal: libc::c_int) -> bool {
        // SAFETY: the set is initialised.
        unsafe { libc::sigismember(&self.0, signal) == 1 }
    }

    /// Puts this mask back in place for this thread.
    fn restore(&self) {
        // SAFETY: the set is initialised; a null old-set pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }

    /// Takes these signals off the pending set if they are pending (they
    /// are blocked, so `sigwait` on a pending one returns at once).
    fn consume_pending(&self) {
        // SAFETY: an all-zero sigset_t is a valid value to be overwritten.
        let mut pending: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: pending is valid for writes.
        if unsafe { libc::sigpending(&mut pending) } != 0 {
            return;
        }
        // SAFETY: pending was filled in by sigpending.
        if unsafe { libc::sigismember(&pending, libc::SIGPIPE) } != 1 {
            return;
        }
        let mut taken: libc::c_int = 0;
        // SAFETY: the set and the output are valid; SIGPIPE is blocked and
        // pending, so sigwait does not block.
        unsafe { libc::sigwait(&self.0, &mut taken) };
    }
}

/// Whether a `write` of up to `PIPE_BUF` bytes would not block now.
pub fn writable_now(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, nfds 1, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n > 0)
}

/// The size a pipe write is atomic up to, and that `POLLOUT` promises room for.
pub const PIPE_BUF: usize = libc::PIPE_BUF;
