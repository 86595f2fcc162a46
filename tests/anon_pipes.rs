//! Windows: handles that move bytes as transports. Anonymous pipes
//! (`CreatePipe`: byte mode, synchronous), a byte-mode named pipe opened
//! for overlapped I/O, and a disk file carry CPython's frames; poll,
//! timeouts, wait(), WaitSet, end of stream and close behave as on a
//! socket. Runs under Wine.

#![cfg(windows)]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::process::Stdio;
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use common::{child_role, frame, spawn_child, watchdog};
use mpconn::{Connection, Error, Unverified, WaitSet, wait};
use windows_sys::Win32::Foundation::{DUPLICATE_SAME_ACCESS, DuplicateHandle, HANDLE};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, PIPE_ACCESS_DUPLEX,
};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, CreatePipe, PIPE_READMODE_BYTE, PIPE_TYPE_BYTE, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcess, PROCESS_DUP_HANDLE};

/// A fresh anonymous pipe, its handles not inheritable: (reading end, writing end).
fn anon_pipe() -> (OwnedHandle, OwnedHandle) {
    let mut r: HANDLE = ptr::null_mut();
    let mut w: HANDLE = ptr::null_mut();
    // SAFETY: both out-parameters are live locals; default security and size.
    let ok = unsafe { CreatePipe(&mut r, &mut w, ptr::null(), 0) };
    assert_ne!(ok, 0, "CreatePipe: {}", std::io::Error::last_os_error());
    // SAFETY: CreatePipe succeeded, so both are fresh handles we own.
    unsafe {
        (
            OwnedHandle::from_raw_handle(r as RawHandle),
            OwnedHandle::from_raw_handle(w as RawHandle),
        )
    }
}

/// An anonymous pipe as two connections: (reading end, writing end).
fn anon_ends() -> (Connection<Unverified>, Connection<Unverified>) {
    let (r, w) = anon_pipe();
    (Connection::from(r), Connection::from(w))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

const SIZES: [usize; 10] = [
    0,
    1,
    100,
    4095,
    4096,
    4097,
    65_536,
    70_000,
    1 << 20,
    5 << 20,
];

#[test]
fn an_anonymous_pipe_carries_messages_of_every_size_then_end_of_stream() {
    let _w = watchdog(60);
    let (mut r, mut w) = anon_ends();
    let writer = thread::spawn(move || {
        for &n in &SIZES {
            w.send_bytes(&pattern(n)).unwrap();
        }
        let mut batch = w.batch();
        for i in 0..100u32 {
            batch.send_bytes(&i.to_le_bytes()).unwrap();
        }
        batch.flush().unwrap();
    });
    for &n in &SIZES {
        let msg = r.recv_bytes().unwrap();
        assert_eq!(msg.len(), n);
        assert!(msg == pattern(n), "message of {n} bytes garbled");
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
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn the_frames_are_cpythons() {
    let _w = watchdog(30);
    // What mpconn writes is a 4-byte big-endian length and the payload.
    let (raw_r, w) = anon_pipe();
    let mut w = Connection::from(w);
    w.send_bytes(b"hello").unwrap();
    drop(w);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut File::from(raw_r), &mut got).unwrap();
    assert_eq!(got, frame(b"hello"));
    // And what a CPython writer writes, mpconn reads.
    let (r, raw_w) = anon_pipe();
    let mut r = Connection::from(r);
    let mut raw_w = File::from(raw_w);
    raw_w.write_all(&frame(b"from python")).unwrap();
    raw_w.write_all(&frame(b"")).unwrap();
    drop(raw_w);
    assert_eq!(r.recv_bytes().unwrap(), b"from python");
    assert_eq!(r.recv_bytes().unwrap(), b"");
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn poll_and_timeouts_keep_their_deadline_and_lose_nothing() {
    let _w = watchdog(30);
    let (r, raw_w) = anon_pipe();
    let mut r = Connection::from(r);
    let mut raw_w = File::from(raw_w);
    assert!(!r.poll(Some(Duration::ZERO)).unwrap());
    let started = Instant::now();
    assert!(!r.poll(Some(Duration::from_millis(100))).unwrap());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "poll woke early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "poll overslept: {took:?}");

    let started = Instant::now();
    assert!(matches!(
        r.recv_bytes_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "recv woke early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "recv overslept: {took:?}");

    // A frame that arrives in pieces: each timeout keeps what came, and
    // never waits past its deadline for the rest.
    let msg = pattern(100_000);
    let framed = frame(&msg);
    let cuts = [0, 2, 4, 3000, 70_000, framed.len()];
    for piece in cuts.windows(2) {
        let started = Instant::now();
        assert!(matches!(
            r.recv_bytes_timeout(Duration::from_millis(50)),
            Err(Error::Timeout)
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        // The writer's part runs in a thread: more than the pipe's buffer
        // blocks until the reader takes it.
        let part = framed[piece[0]..piece[1]].to_vec();
        let mut w = raw_w.try_clone().unwrap();
        let t = thread::spawn(move || w.write_all(&part).unwrap());
        if piece[1] < framed.len() {
            // Whatever of the piece the receive takes, it keeps.
            let _ = r.recv_bytes_timeout(Duration::from_millis(50));
            t.join().unwrap();
        } else {
            assert_eq!(r.recv_bytes_timeout(Duration::from_secs(10)).unwrap(), msg);
            t.join().unwrap();
        }
    }
    raw_w.write_all(&frame(b"next")).unwrap();
    assert!(r.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(r.recv_bytes().unwrap(), b"next");
}

#[test]
fn wait_and_wait_set_see_bytes_and_the_end() {
    let _w = watchdog(30);
    let (r1, mut w1) = anon_ends();
    let (r2, mut w2) = anon_ends();
    // A named pipe among them: events and looked-at pipes in one wait.
    let (named_a, mut named_b) = mpconn::pipe().unwrap();
    let items: [&dyn mpconn::Waitable; 3] = [&r1, &r2, &named_a];
    let started = Instant::now();
    assert!(
        wait(&items, Some(Duration::from_millis(100)))
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(100));

    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        w2.send_bytes(b"two").unwrap();
        (w2, Instant::now())
    });
    assert_eq!(
        wait(&items, Some(Duration::from_secs(10))).unwrap(),
        vec![1]
    );
    let woke = Instant::now();
    let (w2, sent) = sender.join().unwrap();
    // Nothing signals a synchronous pipe: the wait looks at it at least
    // every millisecond. The bound leaves room for a busy machine.
    let late = woke.saturating_duration_since(sent);
    eprintln!("wait() saw the bytes {late:?} after the send returned");
    assert!(
        late < Duration::from_millis(500),
        "wait saw the bytes late: {late:?}"
    );

    named_b.send(&7u32).unwrap();
    let mut ready = wait(&items, Some(Duration::from_secs(10))).unwrap();
    ready.sort();
    assert_eq!(ready, vec![1, 2]);
    drop(named_b);

    let mut set = WaitSet::new().unwrap();
    let k1 = set.insert(r1).unwrap();
    let k2 = set.insert(r2).unwrap();
    assert_eq!(set.wait(Some(Duration::from_secs(10))).unwrap(), vec![k2]);
    assert_eq!(set.get_mut(k2).unwrap().recv_bytes().unwrap(), b"two");
    assert!(
        set.wait(Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    w1.send_bytes(b"one").unwrap();
    assert_eq!(set.wait(Some(Duration::from_secs(10))).unwrap(), vec![k1]);
    assert_eq!(set.get_mut(k1).unwrap().recv_bytes().unwrap(), b"one");
    // The end of stream is readiness too.
    drop(w2);
    assert_eq!(set.wait(Some(Duration::from_secs(10))).unwrap(), vec![k2]);
    assert!(matches!(
        set.get_mut(k2).unwrap().recv_bytes(),
        Err(Error::Eof)
    ));
    drop(w1);
}

#[test]
fn a_close_handle_wakes_a_blocked_receive_and_poll() {
    let _w = watchdog(30);
    let (r, writer) = anon_pipe();
    let mut r = Connection::from(r);
    // A CPython frame first: the receive that then blocks is a framed one.
    let mut writer = File::from(writer);
    writer.write_all(&frame(b"first")).unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"first");
    let close = r.close_handle();
    let blocked = thread::spawn(move || r.recv_bytes());
    thread::sleep(Duration::from_millis(100));
    close.close();
    let started = Instant::now();
    while !blocked.is_finished() && started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(blocked.is_finished(), "the receive stayed blocked");
    assert!(matches!(blocked.join().unwrap(), Err(Error::Closed)));

    let (mut r, _writer) = anon_ends();
    let close = r.close_handle();
    let polling = thread::spawn(move || r.poll(None));
    thread::sleep(Duration::from_millis(100));
    close.close();
    let started = Instant::now();
    while !polling.is_finished() && started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(polling.is_finished(), "poll stayed blocked");
    // As on a named pipe: ready, and the next call reports the close.
    assert!(polling.join().unwrap().unwrap());
}

#[test]
fn a_writer_without_reader_and_the_wrong_direction_are_clear_errors() {
    let _w = watchdog(30);
    let (r, mut w) = anon_ends();
    drop(r);
    match w.send_bytes(b"nobody reads this") {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => panic!("expected a broken pipe, got {other:?}"),
    }

    let (mut r, mut w) = anon_ends();
    match r.send_bytes(b"x") {
        Err(Error::Io(e)) => assert!(e.to_string().contains("not open for writing"), "{e}"),
        other => panic!("a send on a reading end: {other:?}"),
    }
    match w.recv_bytes_timeout(Duration::from_secs(5)) {
        Err(Error::Io(e)) => assert!(e.to_string().contains("not open for reading"), "{e}"),
        other => panic!("a receive on a writing end: {other:?}"),
    }
    // The connection goes on in its own direction.
    w.send_bytes(b"still fine").unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"still fine");

    // A handle that cannot carry a connection says so at once.
    let nul = File::options().read(true).write(true).open("NUL").unwrap();
    let mut c = Connection::from(OwnedHandle::from(nul));
    match c.recv_bytes_timeout(Duration::from_secs(5)) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
            assert!(e.to_string().contains("character device"), "{e}");
        }
        other => panic!("a receive on NUL: {other:?}"),
    }
    assert!(matches!(c.send_bytes(b"x"), Err(Error::Io(_))));
}

#[test]
fn an_overlapped_byte_mode_named_pipe_is_framed_too() {
    let _w = watchdog(30);
    let name = format!(r"\\.\pipe\mpconn-test-bytepipe-{}", std::process::id());
    let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
    // SAFETY: `wide` is NUL-terminated; default security.
    let server = unsafe {
        CreateNamedPipeW(
            wide.as_ptr(),
            PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
            1,
            4096,
            4096,
            0,
            ptr::null(),
        )
    };
    assert_ne!(server as isize, -1);
    // SAFETY: as above; no template.
    let client = unsafe {
        CreateFileW(
            wide.as_ptr(),
            0xC000_0000, // GENERIC_READ | GENERIC_WRITE
            0,
            ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED,
            ptr::null_mut(),
        )
    };
    assert_ne!(client as isize, -1);
    // SAFETY: both are fresh handles we own (the client's open connected
    // the pipe, so no ConnectNamedPipe is needed).
    let (mut a, mut b) = unsafe {
        (
            Connection::from(OwnedHandle::from_raw_handle(server as RawHandle)),
            Connection::from(OwnedHandle::from_raw_handle(client as RawHandle)),
        )
    };
    assert!(!a.poll(Some(Duration::from_millis(20))).unwrap());
    let echo = thread::spawn(move || {
        while let Ok(msg) = b.recv_bytes() {
            b.send_bytes(&msg).unwrap();
        }
    });
    for &n in &SIZES {
        a.send_bytes(&pattern(n)).unwrap();
        assert!(a.recv_bytes().unwrap() == pattern(n), "{n} bytes garbled");
    }
    assert!(matches!(
        a.recv_bytes_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    drop(a);
    echo.join().unwrap();
}

#[test]
fn a_file_holds_frames() {
    let _w = watchdog(30);
    let dir = std::env::temp_dir().join(format!("mpconn-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("frames");
    let mut w = Connection::from(OwnedHandle::from(File::create(&path).unwrap()));
    for &n in &SIZES[..8] {
        w.send_bytes(&pattern(n)).unwrap();
    }
    drop(w);
    let mut r = Connection::from(OwnedHandle::from(File::open(&path).unwrap()));
    assert!(r.poll(Some(Duration::ZERO)).unwrap());
    for &n in &SIZES[..8] {
        assert!(r.recv_bytes().unwrap() == pattern(n), "{n} bytes garbled");
    }
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Duplicates `handle` into process `pid`; its value there.
fn duplicate_into(handle: &OwnedHandle, pid: u32) -> usize {
    // SAFETY: plain call; the result is checked and closed below.
    let process = unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) };
    assert!(!process.is_null(), "OpenProcess");
    // SAFETY: OpenProcess gave a handle we own.
    let process = unsafe { OwnedHandle::from_raw_handle(process as RawHandle) };
    let mut value: HANDLE = ptr::null_mut();
    // SAFETY: both process handles are valid, `handle` is open, `value` a live local.
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
    assert_ne!(
        ok,
        0,
        "DuplicateHandle: {}",
        std::io::Error::last_os_error()
    );
    value as usize
}

/// The child: adopts the two pipe ends whose values come on its stdin,
/// echoes every message back doubled in length, and leaves at the end of
/// stream.
fn run_echo_child() {
    let mut line = String::new();
    BufReader::new(std::io::stdin())
        .read_line(&mut line)
        .unwrap();
    let mut values = line.split_whitespace().map(|v| v.parse::<usize>().unwrap());
    let (r, w) = (values.next().unwrap(), values.next().unwrap());
    // SAFETY: the parent duplicated these handles into this process for it
    // to own.
    let (mut r, mut w) = unsafe {
        (
            Connection::from(OwnedHandle::from_raw_handle(r as RawHandle)),
            Connection::from(OwnedHandle::from_raw_handle(w as RawHandle)),
        )
    };
    loop {
        match r.recv_bytes() {
            Ok(msg) => w.send_bytes(&[msg.as_slice(), &msg].concat()).unwrap(),
            Err(Error::Eof) => break,
            Err(e) => panic!("child: {e}"),
        }
    }
    w.send_bytes(b"bye").unwrap();
}

#[test]
fn anonymous_pipes_connect_a_parent_and_its_child() {
    if child_role().as_deref() == Some("echo") {
        return run_echo_child();
    }
    let _w = watchdog(90);
    let (to_child_r, to_child_w) = anon_pipe();
    let (from_child_r, from_child_w) = anon_pipe();
    let mut child = spawn_child(
        "anonymous_pipes_connect_a_parent_and_its_child",
        "echo",
        Stdio::piped(),
        &[],
    );
    let pid = child.id();
    let r = duplicate_into(&to_child_r, pid);
    let w = duplicate_into(&from_child_w, pid);
    // The child's copies are the only ones now: the ends come when it
    // (or this process) lets go.
    drop((to_child_r, from_child_w));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{r} {w}").unwrap();
    drop(stdin);

    let mut tx = Connection::from(to_child_w);
    let mut rx = Connection::from(from_child_r);
    for &n in &SIZES[..9] {
        let msg = pattern(n);
        let sender = thread::spawn(move || {
            tx.send_bytes(&msg).unwrap();
            tx
        });
        let back = rx.recv_bytes_timeout(Duration::from_secs(30)).unwrap();
        tx = sender.join().unwrap();
        assert_eq!(back.len(), 2 * n);
        assert!(back[..n] == pattern(n) && back[n..] == pattern(n));
    }
    drop(tx);
    assert_eq!(
        rx.recv_bytes_timeout(Duration::from_secs(30)).unwrap(),
        b"bye"
    );
    assert!(matches!(
        rx.recv_bytes_timeout(Duration::from_secs(30)),
        Err(Error::Eof)
    ));
    assert!(child.wait().unwrap().success());
}
