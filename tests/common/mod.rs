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
