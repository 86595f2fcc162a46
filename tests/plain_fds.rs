//! Descriptors that are not sockets as transports: `pipe(2)` ends (what
//! CPython's `Pipe(duplex=False)` is made of) and FIFOs carry the same
//! frames, and poll, wait() and end of stream behave as on a socket.

#![cfg(unix)]

mod common;

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::{child_role, spawn_child, watchdog};
use mpconn::{Connection, Error, Unverified, WaitSet, wait};

/// A fresh close-on-exec `pipe(2)` as two connections: (reading end, writing end).
fn pipe_ends() -> (Connection<Unverified>, Connection<Unverified>) {
    let (r, w) = common::os_pipe();
    (
        Connection::from(OwnedFd::from(r)),
        Connection::from(OwnedFd::from(w)),
    )
}

#[test]
fn a_pipe_carries_messages_of_every_size_then_end_of_stream() {
    let _w = watchdog(30);
    let (mut r, mut w) = pipe_ends();
    let sizes = [0usize, 1, 100, 4096, 70_000, 1 << 20];
    let writer = thread::spawn(move || {
        for &n in &sizes {
            let msg: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            w.send_bytes(&msg).unwrap();
        }
        let mut batch = w.batch();
        for i in 0..100u32 {
            batch.send_bytes(&i.to_le_bytes()).unwrap();
        }
        batch.flush().unwrap();
    });
    for &n in &sizes {
        let msg = r.recv_bytes().unwrap();
        assert_eq!(msg.len(), n);
        assert!(msg.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
    let mut buf = [0u8; 4];
    for i in 0..100u32 {
        assert_eq!(r.recv_bytes_into(&mut buf).unwrap(), 4);
        assert_eq!(u32::from_le_bytes(buf), i);
    }
    writer.join().unwrap();
    // The writer is gone: end of stream, as on a socket.
    assert!(r.poll(Some(Duration::ZERO)).unwrap());
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn poll_wait_and_timeouts_work_on_a_pipe() {
    let _w = watchdog(30);
    let (mut r, mut w) = pipe_ends();
    assert!(!r.poll(Some(Duration::from_millis(20))).unwrap());
    assert!(
        wait(&[&r], Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        r.recv_bytes_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    w.send_bytes(b"ready").unwrap();
    assert!(r.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(wait(&[&r], Some(Duration::from_secs(5))).unwrap(), vec![0]);
    let mut set = WaitSet::new().unwrap();
    let key = set.insert(r).unwrap();
    assert_eq!(set.wait(Some(Duration::from_secs(5))).unwrap(), vec![key]);
    let mut r = set.remove(key).unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"ready");
}

#[test]
fn a_fifo_is_a_transport_too() {
    let _w = watchdog(30);
    let dir = std::env::temp_dir().join(format!("mpconn-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fifo");
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let p = path.clone();
    // Opening a FIFO for writing waits for a reader, so the writer opens it
    // in its own thread.
    let writer = thread::spawn(move || {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        let mut w = Connection::from(OwnedFd::from(f));
        w.send_bytes(b"through a fifo").unwrap();
    });
    let f = std::fs::File::open(&path).unwrap();
    let mut r = Connection::from(OwnedFd::from(f));
    assert_eq!(r.recv_bytes().unwrap(), b"through a fifo");
    writer.join().unwrap();
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writing_to_a_pipe_nobody_reads_is_an_error_not_a_signal() {
    // The child restores SIGPIPE's default action, which kills a process
    // that writes to a pipe without a reader (the Rust runtime ignores it,
    // so only a child shows whether mpconn itself keeps the signal away).
    if child_role().as_deref() == Some("sigpipe") {
        // SAFETY: setting a signal's disposition to its default.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (r, mut w) = pipe_ends();
        drop(r);
        match w.send_bytes(b"nobody reads this") {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => panic!("expected a broken pipe error, got {other:?}"),
        }
        // The signal the write raised was taken back: none is pending.
        // SAFETY: a zeroed sigset_t is valid to be filled by sigpending.
        let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: pending is valid for writes.
        unsafe { libc::sigpending(&mut pending) };
        // SAFETY: pending was filled in.
        assert_eq!(unsafe { libc::sigismember(&pending, libc::SIGPIPE) }, 0);
        println!("survived");
        return;
    }
    if child_role().is_some() {
        return;
    }
    let _w = watchdog(30);
    let out = spawn_child(
        "writing_to_a_pipe_nobody_reads_is_an_error_not_a_signal",
        "sigpipe",
        Stdio::null(),
        &[],
    )
    .wait_with_output()
    .unwrap();
    assert!(out.status.success(), "child died: {:?}", out.status);
}

#[test]
fn descriptors_do_not_travel_over_a_pipe() {
    let (mut r, mut w) = pipe_ends();
    let (keep, _) = pipe_ends();
    use std::os::fd::AsFd;
    assert!(matches!(
        w.send_fds(&[keep.as_fd()]),
        Err(Error::Descriptors(mpconn::DescriptorError::Unsupported))
    ));
    assert!(matches!(
        r.recv_fds(),
        Err(Error::Descriptors(mpconn::DescriptorError::Unsupported))
    ));
    // A pipe end has no peer credentials.
    match r.peer_credentials() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}"),
        other => panic!("a pipe end's credentials: {other:?}"),
    }
    // The wrong direction of a pipe end is a clear error, not a hang.
    assert!(matches!(r.send_bytes(b"x"), Err(Error::Io(_))));
}
