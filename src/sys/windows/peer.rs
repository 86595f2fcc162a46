//! Who is at the other end of a named pipe, and handles duplicated into
//! another process (CPython's `multiprocessing.reduction.DupHandle`).

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::ptr;

use windows_sys::Win32::Foundation::{
    DUPLICATE_CLOSE_SOURCE, DUPLICATE_SAME_ACCESS, DuplicateHandle, GetHandleInformation, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, IsValidSid, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Pipes::{
    GetNamedPipeClientProcessId, GetNamedPipeInfo, GetNamedPipeServerProcessId, PIPE_SERVER_END,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_DUP_HANDLE,
    PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::Stream;
use crate::sys::PeerIds;

/// Windows has no numeric user ids to admit peers by.
pub const PEER_UIDS: bool = false;

/// The process at the other end of a named pipe: the client's process id
/// on a server end, the server's on a client end, as the system recorded
/// it when the pipe connected; and whether that process runs as our user
/// (its token's user SID is ours; `None` when the process cannot be
/// opened, because it has exited or belongs to a user who does not let us
/// look). `Unsupported` for a TCP socket.
pub fn peer_credentials(stream: &Stream) -> io::Result<PeerIds> {
    let Some(pipe) = stream.as_pipe() else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no peer credentials: only named pipes have them, not TCP",
        ));
    };
    let h = pipe.handle().as_raw_handle() as HANDLE;
    let mut flags = 0u32;
    // SAFETY: the handle is an open pipe; only the flags out-parameter, a
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
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = 0u32;
    // SAFETY: the handle is an open pipe; `pid` is a live local.
    let ok = unsafe {
        if flags & PIPE_SERVER_END != 0 {
            GetNamedPipeClientProcessId(h, &mut pid)
        } else {
            GetNamedPipeServerProcessId(h, &mut pid)
        }
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerIds {
        pid: Some(pid),
        uid: None,
        gid: None,
        same_user: same_user_as(pid),
    })
}

/// Whether process `pid` runs as our user; `None` when it cannot be asked.
fn same_user_as(pid: u32) -> Option<bool> {
    // SAFETY: GetCurrentProcess returns a pseudo handle that needs no closing.
    let ours = token_user(unsafe { GetCurrentProcess() }).ok()?;
    let process = open_process(PROCESS_QUERY_LIMITED_INFORMATION, pid).ok()?;
    let theirs = token_user(process.as_raw_handle() as HANDLE).ok()?;
    Some(ours == theirs)
}

fn open_process(access: u32, pid: u32) -> io::Result<OwnedHandle> {
    // SAFETY: no handle is passed in; a null return is checked.
    let h = unsafe { OpenProcess(access, 0, pid) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: OpenProcess returned a handle we now own.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// The user SID of a process's token, as bytes.
fn token_user(process: HANDLE) -> io::Result<Vec<u8>> {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: `process` is open for the call; `token` is a live out-parameter.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: OpenProcessToken returned a handle we now own.
    let token = unsafe { OwnedHandle::from_raw_handle(token as RawHandle) };
    let raw = token.as_raw_handle() as HANDLE;
    let mut len = 0u32;
    // SAFETY: a null buffer of length 0 asks for the size only.
    unsafe { GetTokenInformation(raw, TokenUser, ptr::null_mut(), 0, &mut len) };
    if (len as usize) < std::mem::size_of::<TOKEN_USER>() {
        return Err(io::Error::last_os_error());
    }
    // usize-aligned, as TOKEN_USER (two pointers and a u32) needs.
    let mut buf = vec![0usize; (len as usize).div_ceil(std::mem::size_of::<usize>())];
    // SAFETY: `buf` holds at least `len` bytes and lives across the call.
    let ok = unsafe { GetTokenInformation(raw, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call filled `buf` with a TOKEN_USER, suitably aligned,
    // whose SID points into `buf`, which outlives these reads.
    unsafe {
        let sid = (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid;
        if IsValidSid(sid) == 0 {
            return Err(io::Error::other("the token's user SID is not valid"));
        }
        let n = GetLengthSid(sid) as usize;
        Ok(std::slice::from_raw_parts(sid.cast::<u8>(), n).to_vec())
    }
}

/// A handle duplicated into another process: its value there, and that
/// process, opened with `PROCESS_DUP_HANDLE`. Dropped without
/// [`delivered`](Self::delivered), it closes the duplicate in the other
/// process (`DUPLICATE_CLOSE_SOURCE`), so that a handle whose message never
/// left leaks nowhere.
#[derive(Debug)]
pub struct RemoteHandle {
    process: OwnedHandle,
    value: usize,
    delivered: bool,
}

impl RemoteHandle {
    /// The handle's value in the other process.
    pub fn value(&self) -> u64 {
        self.value as u64
    }

    /// The message that names the handle left: it is the other process's now.
    pub fn delivered(mut self) {
        self.delivered = true;
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        // SAFETY: the process handle is open with PROCESS_DUP_HANDLE; with
        // DUPLICATE_CLOSE_SOURCE and no target, the call closes the handle
        // `value` in that process and makes nothing. A process that has
        // exited has no handles left to close; the call then fails harmlessly.
        unsafe {
            DuplicateHandle(
                self.process.as_raw_handle() as HANDLE,
                self.value as HANDLE,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
                0,
                DUPLICATE_CLOSE_SOURCE,
            )
        };
    }
}

/// Duplicates `handle` into process `pid`, with the same access, not
/// inheritable, as CPython's `DupHandle` does.
pub fn duplicate_into(handle: BorrowedHandle<'_>, pid: u32) -> io::Result<RemoteHandle> {
    let process = open_process(PROCESS_DUP_HANDLE, pid)?;
    let mut value: HANDLE = ptr::null_mut();
    // SAFETY: `handle` is borrowed, so open; the target process handle is
    // open with PROCESS_DUP_HANDLE; `value` is a live out-parameter.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            handle.as_raw_handle() as HANDLE,
            process.as_raw_handle() as HANDLE,
            &mut value,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(RemoteHandle {
        process,
        value: value as usize,
        delivered: false,
    })
}

/// Takes ownership of the handle `value`, which a peer duplicated into
/// this process. Refuses a value that is no open handle here (or a pseudo
/// handle), so that garbage is an error, not an object closed later.
pub fn adopt_handle(value: u64) -> io::Result<OwnedHandle> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handle value {value:#x} {why}"),
        )
    };
    let Ok(raw) = usize::try_from(value) else {
        return Err(bad("does not fit this platform"));
    };
    let h = raw as HANDLE;
    // Null, INVALID_HANDLE_VALUE (also the current process's pseudo handle)
    // and the other pseudo handles (small negative values) are never
    // duplicates.
    if h.is_null() || h == INVALID_HANDLE_VALUE || (raw as isize) < 0 {
        return Err(bad("is not a handle"));
    }
    let mut flags = 0u32;
    // SAFETY: GetHandleInformation only looks the value up in this
    // process's handle table; `flags` is a live local.
    if unsafe { GetHandleInformation(h, &mut flags) } == 0 {
        return Err(bad("is not an open handle in this process"));
    }
    // SAFETY: the value is an open handle of this process, which the peer
    // duplicated here for us to own (the caller's trust in the peer).
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}
