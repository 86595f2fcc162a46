//! Descriptors across processes: `send_fds` / `recv_fds` and whole
//! connections handed over with `send_connection` / `recv_connection`,
//! between mpconn ends (CPython peers are in tests/python_fds.rs).

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::thread;

use common::{KEY, child_role, local_address, os_pipe, spawn_child, watchdog};
use mpconn::{Client, Connection, DescriptorError, Error, Listener, MAX_FDS, Unverified};

fn is_cloexec(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFD on an open descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    flags & libc::FD_CLOEXEC != 0
}

/// Sends one byte carrying `fds` by hand, so that tests can send what
/// mpconn never would.
fn raw_sendmsg(sock: &UnixStream, byte: u8, fds: &[RawFd]) {
    let payload = std::mem::size_of_val(fds);
    let mut control = vec![0u64; 64];
    let mut b = [byte];
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_* compute sizes and offsets inside `control` (512 bytes).
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(payload as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), payload);
        assert_eq!(libc::sendmsg(sock.as_raw_fd(), &msg, 0), 1);
    }
}

/// `a`, and the socket at the other end of it.
fn unverified_pair() -> (Connection<Unverified>, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Connection::from(OwnedFd::from(a)), b)
}

/// Whether every write end of the pipe whose read end is `r` is closed:
/// a read then sees end of stream at once.
fn write_ends_all_closed(r: &mut std::fs::File) -> bool {
    let mut b = [0u8; 1];
    r.read(&mut b).unwrap() == 0
}

#[test]
fn descriptors_arrive_working_and_close_on_exec() {
    let _w = watchdog(20);
    let (mut a, mut b) = mpconn::pipe().unwrap();
    let (mut r, w) = os_pipe();
    a.send_fds(&[w.as_fd()]).unwrap();
    drop(w);
    let mut got = b.recv_fds().unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        is_cloexec(&got[0]),
        "received descriptors are close-on-exec"
    );
    let mut w2 = std::fs::File::from(got.pop().unwrap());
    w2.write_all(b"through the passed end").unwrap();
    drop(w2);
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "through the passed end");
}

#[test]
fn descriptors_keep_their_place_among_messages() {
    // The receiver reads ahead: the first recv_bytes takes the frame, the
    // byte with the descriptors and the frame behind it in one read, so the
    // descriptors must wait with their byte and not be lost.
    let _w = watchdog(20);
    let (mut a, mut b) = mpconn::pipe().unwrap();
    let (r1, w1) = os_pipe();
    let (r2, _w2) = os_pipe();
    a.send_bytes(b"before").unwrap();
    a.send_fds(&[r1.as_fd(), w1.as_fd(), r2.as_fd()]).unwrap();
    a.send_bytes(b"after").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"before");
    // A message is not descriptors, and asking for them consumes nothing.
    assert!(b.poll(Some(std::time::Duration::ZERO)).unwrap());
    let got = b.recv_fds().unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(b.recv_bytes().unwrap(), b"after");
    drop(a);
    match b.recv_fds() {
        Err(Error::Eof) => {}
        other => panic!("expected Eof once a is gone, got {other:?}"),
    }
}

#[test]
fn asking_for_descriptors_when_a_message_comes_consumes_nothing() {
    let _w = watchdog(20);
    let (mut a, mut b) = mpconn::pipe().unwrap();
    a.send_bytes(b"a message").unwrap();
    match b.recv_fds() {
        Err(Error::Descriptors(DescriptorError::NotPassed)) => {}
        other => panic!("expected NotPassed, got {other:?}"),
    }
    assert_eq!(b.recv_bytes().unwrap(), b"a message");
}

#[test]
fn descriptors_sent_inside_a_message_are_closed_not_kept() {
    // A peer attaches descriptors to a byte of a message body: they belong
    // to no receive and must be closed, not leak.
    let _w = watchdog(20);
    let (mut conn, peer) = unverified_pair();
    let (mut r, w) = os_pipe();
    (&peer).write_all(&[0, 0, 0, 2, b'x']).unwrap();
    raw_sendmsg(&peer, b'y', &[w.as_raw_fd()]);
    drop(w);
    (&peer).write_all(&[0, 0, 0, 1, b'z']).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"xy");
    assert_eq!(conn.recv_bytes().unwrap(), b"z");
    // The next read closes what a message consumed; the peer closing ends it.
    drop(peer);
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
    assert!(write_ends_all_closed(&mut r), "the passed write end leaked");
}

#[test]
fn a_count_that_does_not_match_is_refused_and_closes_what_came() {
    let _w = watchdog(20);
    let (mut conn, peer) = unverified_pair();
    let (mut r, w) = os_pipe();
    raw_sendmsg(&peer, 5, &[w.as_raw_fd()]);
    drop(w);
    match conn.recv_fds() {
        Err(Error::Descriptors(DescriptorError::CountMismatch {
            announced: 5,
            received: 1,
        })) => {}
        other => panic!("expected CountMismatch, got {other:?}"),
    }
    assert!(
        write_ends_all_closed(&mut r),
        "the refused descriptor leaked"
    );
}

#[test]
fn counts_out_of_range_and_other_transports_are_refused() {
    let _w = watchdog(20);
    let (mut a, _b) = mpconn::pipe().unwrap();
    assert!(matches!(
        a.send_fds(&[]),
        Err(Error::Descriptors(DescriptorError::Count { count: 0, .. }))
    ));
    let (r, _w) = os_pipe();
    let many: Vec<_> = (0..=MAX_FDS).map(|_| r.as_fd()).collect();
    assert!(matches!(
        a.send_fds(&many),
        Err(Error::Descriptors(DescriptorError::Count { .. }))
    ));
    // MAX_FDS itself goes through (the same descriptor many times).
    let (mut a, mut b) = mpconn::pipe().unwrap();
    a.send_fds(&many[..MAX_FDS]).unwrap();
    assert_eq!(b.recv_fds().unwrap().len(), MAX_FDS);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut tcp = Connection::from(OwnedFd::from(tcp));
    assert!(matches!(
        tcp.send_fds(&[r.as_fd()]),
        Err(Error::Descriptors(DescriptorError::Unsupported))
    ));
    assert!(matches!(
        tcp.recv_fds(),
        Err(Error::Descriptors(DescriptorError::Unsupported))
    ));
}

/// The role that receives with almost no descriptors left: the kernel
/// cannot install them all, and the receive must fail without a leak.
#[test]
fn a_truncated_control_message_is_an_error_that_leaks_nothing() {
    if child_role().as_deref() == Some("truncated") {
        let fd: RawFd = std::env::var("MPCONN_FD").unwrap().parse().unwrap();
        // SAFETY: the parent passed this descriptor open, for us alone.
        let mut conn = Connection::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let open = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        // Fill the descriptor table up to a low limit, then free one slot:
        // of the descriptors that come, the kernel can install one only.
        let limit = libc::rlimit {
            rlim_cur: (highest_fd() + 8) as libc::rlim_t,
            rlim_max: (highest_fd() + 8) as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let mut fillers = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fillers.push(f);
        }
        fillers.pop();
        let before = open();
        conn.send_bytes(b"ready").unwrap();
        match conn.recv_fds() {
            Err(Error::Descriptors(DescriptorError::Truncated)) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert_eq!(open(), before, "descriptors leaked");
        conn.send_bytes(b"ok").unwrap();
        return;
    }
    if child_role().is_some() {
        return;
    }
    let _w = watchdog(30);
    let (parent, child_end) = UnixStream::pair().unwrap();
    // The child inherits its end: clear close-on-exec on it.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(child_end.as_raw_fd(), libc::F_SETFD, 0) };
    let fd = child_end.as_raw_fd().to_string();
    let child = spawn_child(
        "a_truncated_control_message_is_an_error_that_leaks_nothing",
        "truncated",
        Stdio::null(),
        &[("MPCONN_FD", &fd)],
    );
    drop(child_end);
    let mut conn = Connection::from(OwnedFd::from(parent)).dangerous_trust_without_authentication();
    assert_eq!(conn.recv_bytes().unwrap(), b"ready");
    let (r, w) = os_pipe();
    let (r2, w2) = os_pipe();
    conn.send_fds(&[r.as_fd(), w.as_fd(), r2.as_fd(), w2.as_fd()])
        .unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"ok");
    common::expect_success(child);
}

fn highest_fd() -> RawFd {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .max()
        .unwrap()
}

#[test]
fn a_connection_handed_over_keeps_what_was_read_ahead() {
    let _w = watchdog(30);
    let address = local_address("handover");
    let listener = Listener::bind(&address, KEY).unwrap();
    let addr = listener.address().clone();
    let client = thread::spawn(move || {
        let mut conn = Client::connect(&addr, KEY).unwrap();
        // Sent right behind the handshake, in one write.
        let mut batch = conn.batch();
        for i in 0..3u32 {
            batch.send(&i).unwrap();
        }
        batch.flush().unwrap();
        drop(batch);
        let reply: String = conn.recv().unwrap();
        assert_eq!(reply, "served 0 1 2");
        conn.send(&99u32).unwrap();
        assert_eq!(conn.recv::<u32>().unwrap(), 100);
    });
    let mut accepted = listener.accept().unwrap();
    // The acceptor receives the first message itself; the read that brings
    // it brings the other two (they came in one write), so they are read
    // ahead when the connection is handed over.
    let first: u32 = accepted.recv().unwrap();
    assert_eq!(first, 0);
    let (mut coordinator, mut worker) = mpconn::pipe().unwrap();
    coordinator.send_connection(accepted).unwrap();
    let mut served: Connection = worker.recv_connection().unwrap();
    let got: Vec<u32> = (0..2).map(|_| served.recv().unwrap()).collect();
    served
        .send(&format!("served {first} {} {}", got[0], got[1]))
        .unwrap();
    let n: u32 = served.recv().unwrap();
    served.send(&(n + 1)).unwrap();
    client.join().unwrap();
}

#[test]
fn closing_a_connection_leaves_other_holders_of_its_socket_working() {
    // CPython's close() closes this process's descriptor only; a copy held
    // elsewhere (here a dup standing in for a child's) keeps working.
    let _w = watchdog(20);
    let (a, mut b) = mpconn::pipe().unwrap();
    let copy = a.as_fd().try_clone_to_owned().unwrap();
    a.close().unwrap();
    let mut copy = Connection::from(copy).dangerous_trust_without_authentication();
    copy.send_bytes(b"still here").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"still here");
    b.send_bytes(b"and back").unwrap();
    assert_eq!(copy.recv_bytes().unwrap(), b"and back");
    drop(copy);
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

/// Whether the pipe whose read end is `r` reports that every write end is
/// closed (POLLHUP with nothing to read) within `ms` milliseconds.
fn hung_up_within(r: &std::fs::File, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1 && pfd.revents & libc::POLLHUP != 0
}

#[test]
fn a_silent_peer_cannot_make_a_listener_hold_its_descriptors() {
    // Before any handshake, a peer sends one byte carrying a descriptor (a
    // header it never finishes) and then nothing. The listener's handshake
    // read must close the descriptor at once, not hold it until the
    // handshake's deadline (30 s here), or a few such peers fill the
    // listener's descriptor table.
    let _w = watchdog(60);
    let listener: Listener = mpconn::ListenerOptions::new()
        .first_answer_timeout(std::time::Duration::from_secs(30))
        .handshake_timeout(std::time::Duration::from_secs(30))
        .bind(local_address("silent-fds"), KEY)
        .unwrap();
    let path = match listener.address() {
        mpconn::Address::Unix(p) => p.clone(),
        other => panic!("not a Unix address: {other:?}"),
    };
    let accepting = thread::spawn(move || {
        let _ = listener.accept_timeout(std::time::Duration::from_millis(1500));
    });
    let attacker = UnixStream::connect(&path).unwrap();
    let (r, w) = os_pipe();
    raw_sendmsg(&attacker, 0, &[w.as_raw_fd()]);
    drop(w);
    assert!(
        hung_up_within(&r, 1000),
        "the listener still holds the descriptor a silent peer sent"
    );
    drop(attacker);
    accepting.join().unwrap();
}

#[test]
fn descriptors_inside_an_unfinished_header_are_closed_when_the_receive_times_out() {
    let _w = watchdog(20);
    let (mut conn, peer) = unverified_pair();
    let (r, w) = os_pipe();
    // Three bytes of a header, the third carrying a descriptor, and no more.
    (&peer).write_all(&[0, 0]).unwrap();
    raw_sendmsg(&peer, 0, &[w.as_raw_fd()]);
    drop(w);
    assert!(matches!(
        conn.recv_bytes_timeout(std::time::Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(hung_up_within(&r, 0), "a header byte's descriptor was kept");
    drop(peer);
}

#[test]
fn descriptors_read_ahead_go_along_with_a_connection_handed_over() {
    let _w = watchdog(30);
    let listener = Listener::bind(local_address("handover-fds"), KEY).unwrap();
    let addr = listener.address().clone();
    let (mut r, w) = os_pipe();
    let client = thread::spawn(move || {
        let mut conn = Client::connect(&addr, KEY).unwrap();
        conn.send_bytes(b"first").unwrap();
        conn.send_fds(&[w.as_fd()]).unwrap();
        conn.send_bytes(b"second").unwrap();
        drop(w);
        assert_eq!(conn.recv_bytes().unwrap(), b"done");
    });
    let mut accepted = listener.accept().unwrap();
    // Wait until the descriptor and the second message are here too, so
    // that receiving the first message reads them ahead.
    thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(accepted.recv_bytes().unwrap(), b"first");
    let (mut coordinator, mut worker) = mpconn::pipe().unwrap();
    coordinator.send_connection(accepted).unwrap();
    let mut served: Connection = worker.recv_connection().unwrap();
    let mut fds = served.recv_fds().unwrap();
    assert_eq!(fds.len(), 1);
    std::fs::File::from(fds.pop().unwrap())
        .write_all(b"through the handed-over descriptor")
        .unwrap();
    assert_eq!(served.recv_bytes().unwrap(), b"second");
    served.send_bytes(b"done").unwrap();
    client.join().unwrap();
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "through the handed-over descriptor");
}

#[test]
fn a_message_that_is_not_a_hand_over_is_a_clear_error() {
    let _w = watchdog(20);
    let (mut a, mut b) = mpconn::pipe().unwrap();
    let (r, _w) = os_pipe();
    a.send_fds(&[r.as_fd()]).unwrap();
    a.send_bytes(b"short").unwrap();
    match b.recv_connection() {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {}
        other => panic!("expected InvalidData, got {other:?}"),
    }
    let mut bad = u64::to_le_bytes(100).to_vec();
    bad.push(1);
    bad.extend_from_slice(b"only ten b");
    a.send_fds(&[r.as_fd()]).unwrap();
    a.send_bytes(&bad).unwrap();
    assert!(matches!(b.recv_connection(), Err(Error::Io(_))));
}
