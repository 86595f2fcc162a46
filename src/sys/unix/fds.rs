//! Descriptors passed over a Unix socket (`SCM_RIGHTS`), in the form
//! CPython's `multiprocessing.reduction.sendfds` uses: one byte holding the
//! count modulo 256, with the descriptors attached to it.
//!
//! Linux ends a read right after the bytes that carry descriptors, so
//! descriptors that arrive belong to the last byte of the read that got
//! them. [`recv`] reports them with that read; the transport above decides
//! whether that byte is one a caller asked descriptors of.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::SEND_FLAGS;

/// The most descriptors one message carries: Linux's `SCM_MAX_FD`, the
/// lowest limit among the Unix kernels mpconn runs on.
pub const MAX_FDS: usize = 253;

/// Room for one `SCM_RIGHTS` control message of `MAX_FDS` descriptors, in
/// `usize` words so that it is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = control_space(MAX_FDS) / mem::size_of::<usize>() + 1;

const fn control_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    unsafe { libc::CMSG_SPACE((fds * mem::size_of::<libc::c_int>()) as libc::c_uint) as usize }
}

/// Descriptors that arrived with the last byte of a read.
#[derive(Debug)]
pub struct Passed {
    /// The descriptors, close-on-exec, owned: dropping them closes them.
    pub fds: Vec<OwnedFd>,
    /// The kernel could not deliver them all (`MSG_CTRUNC`: more than the
    /// control buffer held, or this process ran out of descriptors); the
    /// ones it could not deliver it closed.
    pub truncated: bool,
}

/// One `recvmsg` into `buf` with room for descriptors. Any that arrive are
/// put in `passed` (replacing, and so closing, whatever it held).
pub fn recv(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
    passed: &mut Option<Passed>,
) -> io::Result<usize> {
    let mut control = [0usize; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: msg points to one iovec over `buf` (valid for writes of its
    // length) and to `control` (valid for writes of msg_controllen bytes);
    // all three live across the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, cloexec::RECV_FLAGS) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // control messages; the CMSG_* macros walk their headers within that
    // length, each payload is read only within those bytes (`bytes` is
    // capped above), and an SCM_RIGHTS payload is an array of descriptors
    // that the kernel installed in this process for us, so we own them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let start = data as usize - control.as_ptr() as usize;
            // A header that claims more than the kernel filled in (a message
            // cut short elsewhere keeps its length), or less than itself, is
            // read no further than the control bytes actually there.
            let claimed = (header.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
            let bytes = claimed.min((msg.msg_controllen as usize).saturating_sub(start));
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                for i in 0..bytes / mem::size_of::<libc::c_int>() {
                    let raw = data
                        .add(i * mem::size_of::<libc::c_int>())
                        .cast::<libc::c_int>()
                        .read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    cloexec::after_recv(&fds);
    let truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    if !fds.is_empty() || truncated {
        *passed = Some(Passed { fds, truncated });
    }
    Ok(n as usize)
}

/// Close-on-exec for received descriptors: asked of `recvmsg` where the
/// kernel has `MSG_CMSG_CLOEXEC`, set right after elsewhere (where a fork
/// by another thread in between can still inherit them).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
mod cloexec {
    pub const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC;

    pub fn after_recv(_fds: &[std::os::fd::OwnedFd]) {}
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
mod cloexec {
    use std::os::fd::AsRawFd;

    pub const RECV_FLAGS: libc::c_int = 0;

    pub fn after_recv(fds: &[std::os::fd::OwnedFd]) {
        for fd in fds {
            // SAFETY: fcntl on a descriptor we own, with integer arguments.
            // It fails only on a bad descriptor, and the bytes are read
            // already, so an error must not lose them: it is ignored.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// One `sendmsg` of the single byte `byte` carrying `fds` (at most
/// [`MAX_FDS`], at least one). `nonblocking` adds `MSG_DONTWAIT`.
pub fn send(fd: RawFd, byte: u8, fds: &[BorrowedFd<'_>], nonblocking: bool) -> io::Result<usize> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("one message carries 1 to {MAX_FDS} descriptors"),
        ));
    }
    let mut control = [0usize; CONTROL_WORDS];
    let payload = fds.len() * mem::size_of::<libc::c_int>();
    let mut byte = [byte];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is a plain C struct for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_space(fds.len()) as _;
    // SAFETY: `control` is zeroed, aligned for cmsghdr and at least
    // control_space(MAX_FDS) >= msg_controllen bytes long, so the first
    // header and its payload of `payload` bytes lie inside it; the
    // descriptors are borrowed and open for the duration of the call.
    let n = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload as libc::c_uint) as _;
        let data = libc::CMSG_DATA(cmsg);
        for (i, fd) in fds.iter().enumerate() {
            data.add(i * mem::size_of::<libc::c_int>())
                .cast::<libc::c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
        let flags = SEND_FLAGS | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        libc::sendmsg(fd, &msg, flags)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
