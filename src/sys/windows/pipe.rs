//! Windows named pipes in message mode, adapted to a framed byte stream:
//! each pipe message reads as a 4- or 12-byte header plus its payload, and
//! written frames leave as one pipe message each, without the header
//! (CPython's framing on pipes). Overlapped I/O gives reads a deadline.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::sync::Mutex;
use std::time::Instant;

use windows_sys::Win32::Foundation::{
    ERROR_BROKEN_PIPE, ERROR_IO_PENDING, ERROR_MORE_DATA, ERROR_PIPE_CONNECTED,
    ERROR_PIPE_NOT_CONNECTED, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE,
    INVALID_HANDLE_VALUE, LocalFree, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING,
    PIPE_ACCESS_DUPLEX, ReadFile, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT, WriteFile,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_MESSAGE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_MESSAGE, PIPE_WAIT, PeekNamedPipe, SetNamedPipeHandleState,
};
use windows_sys::Win32::System::Threading::{CreateEventW, INFINITE, WaitForSingleObject};

const BUFSIZE: u32 = 64 * 1024;

/// Only the pipe's owner (its creator) gets access.
const OWNER_ONLY: &str = "D:P(A;;GA;;;OW)";

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

fn last_error() -> u32 {
    // SAFETY: GetLastError has no preconditions.
    unsafe { GetLastError() }
}

/// One end of a message-mode named pipe.
#[derive(Debug)]
pub struct Pipe {
    handle: OwnedHandle,
    rx: Mutex<Rx>,
    tx: Mutex<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Rx {
    /// A whole message as framed bytes, header first, not yet handed out.
    framed: Vec<u8>,
    pos: usize,
    /// The peer closed its end.
    eof: bool,
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

    /// Runs one overlapped operation to its end or its deadline.
    fn overlapped(
        &self,
        deadline: Option<Instant>,
        start: impl FnOnce(*mut OVERLAPPED) -> i32,
    ) -> io::Result<Outcome> {
        // SAFETY: null attributes and name make an unnamed manual-reset event.
        let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if event.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: CreateEventW returned a handle we now own.
        let event = unsafe { OwnedHandle::from_raw_handle(event as _) };
        // SAFETY: OVERLAPPED is plain data; all zero is its documented start state.
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        ov.hEvent = event.as_raw_handle() as HANDLE;
        if start(&mut ov) == 0 {
            let e = last_error();
            if e != ERROR_IO_PENDING {
                // A synchronous ERROR_MORE_DATA has still moved bytes: the
                // OVERLAPPED holds how many.
                return Ok(Outcome::Failed(e, ov.InternalHigh as u32));
            }
        }
        let ms = match deadline {
            None => INFINITE,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(u128::from(INFINITE - 1)) as u32,
        };
        // SAFETY: the event handle is live for the whole call.
        let waited = unsafe { WaitForSingleObject(ov.hEvent, ms) };
        if waited == WAIT_TIMEOUT {
            // SAFETY: `ov` is the OVERLAPPED of an operation issued on this handle.
            unsafe { CancelIoEx(self.raw(), &ov) };
        }
        let mut n = 0u32;
        // SAFETY: `ov` stays alive until the operation has completed, which
        // GetOverlappedResult with bWait = TRUE waits for.
        let ok = unsafe { GetOverlappedResult(self.raw(), &ov, &mut n, 1) };
        if ok != 0 {
            return Ok(Outcome::Done(n));
        }
        let e = last_error();
        if waited == WAIT_TIMEOUT && e == windows_sys::Win32::Foundation::ERROR_OPERATION_ABORTED {
            return Ok(Outcome::TimedOut);
        }
        Ok(Outcome::Failed(e, n))
    }

    /// Reads one whole pipe message; `None` at end of stream.
    fn read_message(&self, deadline: Option<Instant>) -> io::Result<Option<Vec<u8>>> {
        let mut msg = vec![0u8; BUFSIZE as usize];
        let mut got = 0usize;
        loop {
            let room = (msg.len() - got).min(u32::MAX as usize) as u32;
            let buf = msg[got..].as_mut_ptr();
            // SAFETY: `buf` points to `room` writable bytes of `msg`, which
            // outlives the operation (overlapped() waits for completion).
            let outcome = self.overlapped(deadline, |ov| unsafe {
                ReadFile(self.raw(), buf, room, ptr::null_mut(), ov)
            })?;
            match outcome {
                Outcome::Done(n) => {
                    msg.truncate(got + n as usize);
                    return Ok(Some(msg));
                }
                Outcome::Failed(ERROR_MORE_DATA, n) => {
                    got += n as usize;
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
                    msg.resize(got + (left as usize).max(1), 0);
                }
                Outcome::Failed(ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED, _) => {
                    return Ok(None);
                }
                Outcome::Failed(e, _) => return Err(io::Error::from_raw_os_error(e as i32)),
                Outcome::TimedOut if got == 0 => return Err(io::ErrorKind::TimedOut.into()),
                // The rest of a started message is already in the pipe.
                Outcome::TimedOut => continue,
            }
        }
    }

    /// Makes sure a message (or the end) is buffered; `false` on timeout.
    fn fill(&self, rx: &mut Rx, deadline: Option<Instant>) -> io::Result<bool> {
        if rx.pos < rx.framed.len() || rx.eof {
            return Ok(true);
        }
        match self.read_message(deadline) {
            Ok(Some(msg)) => {
                rx.framed.clear();
                rx.pos = 0;
                let len = msg.len() as u64;
                if len <= 0x7fff_ffff {
                    rx.framed.extend_from_slice(&(len as u32).to_be_bytes());
                } else {
                    rx.framed.extend_from_slice(&(-1i32).to_be_bytes());
                    rx.framed.extend_from_slice(&len.to_be_bytes());
                }
                rx.framed.extend_from_slice(&msg);
                Ok(true)
            }
            Ok(None) => {
                rx.eof = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Framed bytes of the next message; `Ok(0)` at end of stream.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        self.fill(&mut rx, None)?;
        let n = buf.len().min(rx.framed.len() - rx.pos);
        buf[..n].copy_from_slice(&rx.framed[rx.pos..rx.pos + n]);
        rx.pos += n;
        Ok(n)
    }

    /// Whether a message (or the end) is here within the deadline.
    pub fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        self.fill(&mut rx, deadline)
    }

    /// Takes framed bytes; every complete frame leaves as one pipe message.
    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.extend_from_slice(bytes);
        loop {
            let (hlen, len) = match frame_len(&tx) {
                Some(h) => h,
                None => return Ok(bytes.len()),
            };
            if tx.len() < hlen + len {
                return Ok(bytes.len());
            }
            let payload = tx[hlen..hlen + len].as_ptr();
            // SAFETY: `payload` points to `len` bytes of `tx`, which is locked
            // and unchanged until the operation completes.
            let outcome = self.overlapped(None, |ov| unsafe {
                WriteFile(self.raw(), payload, len as u32, ptr::null_mut(), ov)
            })?;
            match outcome {
                Outcome::Done(n) if n as usize == len => {}
                Outcome::Done(_) => return Err(io::ErrorKind::WriteZero.into()),
                Outcome::Failed(e, _) => {
                    tx.clear();
                    return Err(io::Error::from_raw_os_error(e as i32));
                }
                Outcome::TimedOut => unreachable!("writes have no deadline"),
            }
            tx.drain(..hlen + len);
        }
    }
}

/// Header length and payload length of the frame at the start of `bytes`.
fn frame_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let short = i32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    if short >= 0 {
        return Some((4, short as usize));
    }
    let long = u64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?);
    Some((12, long as usize))
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
/// exists already (a squatter).
pub fn create_instance(name: &str, first: bool) -> io::Result<Pipe> {
    let security = OwnerOnly::new()?;
    let mut open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
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
    let wname = wide(name);
    // SAFETY: wname is NUL-terminated; no security attributes, no template.
    let h = unsafe {
        CreateFileW(
            wname.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
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
            handle,
            rx: Mutex::new(Rx::default()),
            tx: Mutex::new(Vec::new()),
        }
    }

    /// Waits for a client on a server instance.
    pub fn connect(&self) -> io::Result<()> {
        // SAFETY: the OVERLAPPED passed in stays alive until completion.
        let outcome = self.overlapped(None, |ov| unsafe { ConnectNamedPipe(self.raw(), ov) })?;
        match outcome {
            Outcome::Done(_) | Outcome::Failed(ERROR_PIPE_CONNECTED, _) => Ok(()),
            Outcome::Failed(e, _) => Err(io::Error::from_raw_os_error(e as i32)),
            Outcome::TimedOut => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

/// A connected pair over a fresh uniquely named pipe, as CPython's Pipe().
pub fn pair(name: &str) -> io::Result<(Pipe, Pipe)> {
    let server = create_instance(name, true)?;
    let client = open(name)?;
    server.connect()?;
    Ok((server, client))
}
