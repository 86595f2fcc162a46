//! Helpers shared by the integration tests: a watchdog so that a hang fails
//! instead of stalling CI, unique socket paths, and child processes that
//! re-execute the test binary in a named role.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A key long enough for the default checks.
pub const KEY: &[u8] = b"integration-test-key-0123456789";

/// Aborts the whole test process if it is still alive after `secs`, unless
/// dropped first: a hung test fails loudly instead of stalling the run.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let name = thread::current().name().unwrap_or("?").to_string();
    thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("watchdog: test {name} still running after {secs} s; aborting");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A socket path no other test uses, in a private directory of its own made
/// by `Address::arbitrary`, so that the listener bound there removes it.
pub fn unique_path(tag: &str) -> PathBuf {
    match mpconn::Address::arbitrary(mpconn::Family::Unix).unwrap() {
        mpconn::Address::Unix(path) => path.with_file_name(format!("{tag}.sock")),
        other => panic!("not a socket path: {other:?}"),
    }
}

/// A local address no other test uses: a Unix socket path, or a named
/// pipe on Windows.
pub fn local_address(tag: &str) -> mpconn::Address {
    #[cfg(unix)]
    return mpconn::Address::Unix(unique_path(tag));
    #[cfg(windows)]
    {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        mpconn::Address::Pipe(format!(
            r"\\.\pipe\mpconn-test-{tag}-{}-{n}",
            std::process::id()
        ))
    }
}

const ROLE_VAR: &str = "MPCONN_TEST_ROLE";

/// The role this process was started in, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// The command that runs this test binary again, only `test`, with `role`
/// set: what `spawn_child` starts, for a caller that adjusts it first.
pub fn child_command(test: &str, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role);
    cmd
}

/// Starts this test binary again, running only `test`, with `role` set.
pub fn spawn_child(test: &str, role: &str, stdin: Stdio, envs: &[(&str, &str)]) -> Child {
    let mut cmd = child_command(test, role);
    cmd.stdin(stdin);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // Wine now and then fails a process creation with ERROR_INTERNAL_ERROR
    // (1359) while the machine is busy (seen in the load test), and a
    // second attempt succeeds; the Windows tests run under Wine, so they
    // get a few attempts for that error only.
    let attempts = if cfg!(windows) { 5 } else { 1 };
    for _ in 1..attempts {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(1359) => thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("starting a child: {e}"),
        }
    }
    cmd.spawn().unwrap()
}

/// Waits for `child` and asserts that it exited successfully.
pub fn expect_success(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// The CPython versions the interop tests run against.
pub const PYTHON_VERSIONS: [&str; 6] = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"];

/// Whether a CPython version speaks only the legacy HMAC-MD5 handshake.
pub fn is_legacy_python(version: &str) -> bool {
    matches!(version, "3.8" | "3.9" | "3.10" | "3.11")
}

/// Finds `python3.X` in pyenv's versions or on PATH.
pub fn interpreter(version: &str) -> Option<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(version)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .map(|e| e.path().join("bin").join("python3"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().or_else(|| {
        let name = format!("python{version}");
        Command::new(&name)
            .arg("-c")
            .arg("pass")
            .status()
            .ok()
            .filter(|s| s.success())
            .map(|_| PathBuf::from(name))
    })
}

/// The interpreters to run against, failing under CI if any is missing.
pub fn interpreters(versions: &[&str]) -> Vec<(String, PathBuf)> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut out = Vec::new();
    for v in versions {
        match interpreter(v) {
            Some(p) => out.push((v.to_string(), p)),
            None if ci => panic!("CI=true and no python{v} interpreter was found"),
            None => eprintln!("SKIPPED: no python{v} interpreter found; not testing against it"),
        }
    }
    out
}

/// Reads one CPython frame with a 4-byte header.
pub fn read_frame(s: &mut impl std::io::Read) -> Vec<u8> {
    try_read_frame(s).unwrap()
}

/// Reads one CPython frame with a 4-byte header, or the error that ended it.
pub fn try_read_frame(s: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

/// `payload` behind a 4-byte CPython header.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Writes `payload` as one CPython frame.
pub fn write_frame(s: &mut impl std::io::Write, payload: &[u8]) {
    s.write_all(&frame(payload)).unwrap();
}

/// What a key holder answers to a challenge `message` (the bytes after
/// `#CHALLENGE#`) in sha256.
pub fn sha256_answer(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(message);
    [b"{sha256}".as_slice(), &mac.finalize().into_bytes()].concat()
}

/// A fresh close-on-exec `pipe(2)`: (read end, write end).
#[cfg(unix)]
pub fn os_pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as std::os::fd::RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// A message that proves itself: the stream it belongs to, its sequence
/// number in that stream and a checksum of both and of its `len` bytes of
/// payload, so that a receiver can tell a lost, repeated, reordered, cut or
/// corrupted message (see [`check_message`]). The payload is pseudo-random,
/// seeded by stream and sequence number.
pub fn checksummed(stream: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKSUMMED_HEADER + len + 8);
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let mut x = (u64::from(stream) << 32 | u64::from(seq)) ^ 0x9e37_79b9_7f4a_7c15;
    while out.len() < CHECKSUMMED_HEADER + len {
        // xorshift64*: eight bytes a step, fast enough in debug builds.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(CHECKSUMMED_HEADER + len);
    let sum = checksum(stream, seq, &out[CHECKSUMMED_HEADER..]);
    out[8..16].copy_from_slice(&sum.to_le_bytes());
    out
}

/// The bytes ahead of a [`checksummed`] message's payload.
pub const CHECKSUMMED_HEADER: usize = 16;

/// The stream and sequence number of a [`checksummed`] message, or what is
/// wrong with it.
pub fn check_message(message: &[u8]) -> Result<(u32, u32), String> {
    let Some((header, payload)) = message.split_at_checked(CHECKSUMMED_HEADER) else {
        return Err(format!("a message of {} bytes, no header", message.len()));
    };
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
    let (stream, seq) = (word(0), word(4));
    let sum = u64::from_le_bytes(header[8..16].try_into().unwrap());
    if sum != checksum(stream, seq, payload) {
        return Err(format!(
            "stream {stream} message {seq} ({} bytes of payload): wrong checksum",
            payload.len()
        ));
    }
    Ok((stream, seq))
}

fn checksum(stream: u32, seq: u32, payload: &[u8]) -> u64 {
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    let mut h = mix(
        0xcbf2_9ce4_8422_2325,
        u64::from(stream) << 32 | u64::from(seq),
    );
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        h = mix(h, u64::from_le_bytes(w.try_into().unwrap()));
    }
    for &b in words.remainder() {
        h = mix(h, u64::from(b));
    }
    mix(h, payload.len() as u64)
}

/// The payload size of message `i` in the streams of checksummed messages:
/// mostly small, now and then empty, and every seventh past 64 KiB.
pub fn varied_size(i: u32) -> usize {
    let r = (u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize;
    match i % 7 {
        0 => 64 * 1024 + 1 + r % (96 * 1024),
        1 if i.is_multiple_of(3) => 0,
        _ => r % 4096,
    }
}

/// The far end of a receive-cancellation proof, on a thread over a raw
/// socket: each message's frame is written in two parts, cut at a place
/// that varies (inside the header too), and the second part only once the
/// receiving side calls [`go`](Self::go), which it does after dropping a
/// receive that had the first part to read.
pub struct CutWriter {
    first_parts: Arc<std::sync::atomic::AtomicU32>,
    go: std::sync::mpsc::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CutWriter {
    /// Starts writing `count` checksummed messages of stream 0 (sizes
    /// from [`varied_size`]) to `raw`.
    pub fn start(mut raw: impl std::io::Write + Send + 'static, count: u32) -> CutWriter {
        let first_parts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (go, went) = std::sync::mpsc::channel::<()>();
        let written = first_parts.clone();
        let thread = thread::spawn(move || {
            for i in 0..count {
                let wire = frame(&checksummed(0, i, varied_size(i)));
                let cut = match i % 5 {
                    // Inside the 4-byte header.
                    0 => 1 + (i as usize / 5) % 3,
                    _ => 1 + (i as usize).wrapping_mul(7919) % (wire.len() - 1),
                };
                raw.write_all(&wire[..cut]).unwrap();
                written.store(i + 1, Ordering::SeqCst);
                if went.recv().is_err() {
                    return;
                }
                raw.write_all(&wire[cut..]).unwrap();
            }
        });
        CutWriter {
            first_parts,
            go,
            thread: Some(thread),
        }
    }

    /// Whether the first part of message `i` is all written: a receive
    /// polled from now on finds it (or what of it the socket took).
    pub fn first_part_written(&self, i: u32) -> bool {
        self.first_parts.load(Ordering::SeqCst) > i
    }

    /// Lets the writer send the rest of the current message.
    pub fn go(&self) {
        let _ = self.go.send(());
    }

    /// Waits for the writer, passing on its panic.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Raises this process's soft limit on descriptors to `wanted`, failing the
/// test if the hard limit does not allow it.
#[cfg(unix)]
pub fn raise_descriptor_limit(wanted: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let wanted = wanted as libc::rlim_t;
    assert!(
        limit.rlim_max >= wanted,
        "the test needs {wanted} descriptors; the hard limit is {}",
        limit.rlim_max
    );
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit reads the rlimit we pass; raising the soft limit
        // within the hard one only lets this process open more.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
}
