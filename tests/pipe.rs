//! pipe() and pipe_simplex() across threads and processes.

mod common;

#[cfg(unix)]
use std::io::Write;
#[cfg(unix)]
use std::os::fd::{AsFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
#[cfg(unix)]
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::watchdog;
#[cfg(unix)]
use common::{child_role, expect_success, spawn_child};
#[cfg(unix)]
use mpconn::{Connection, Unverified};
use mpconn::{Error, pipe, pipe_simplex};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<f64>,
    tag: Option<char>,
}

#[test]
fn the_seed_exchange() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    a.send(&(1, "hello", None::<i32>)).unwrap();
    assert_eq!(
        b.recv::<(i32, String, Option<i32>)>().unwrap(),
        (1, "hello".into(), None)
    );
    b.send_bytes(b"thank you").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"thank you");
    let ints: Vec<u8> = [0i32, 1, 2, 3, 4]
        .iter()
        .flat_map(|i| i.to_ne_bytes())
        .collect();
    a.send_bytes(&ints).unwrap();
    let mut buf = [0xAAu8; 40];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 20);
    assert_eq!(&buf[..20], &ints[..]);
    assert_eq!(&buf[20..], &[0xAA; 20]);
}

#[test]
fn typed_and_byte_messages_cross_threads_both_ways() {
    let _w = watchdog(30);
    let (mut a, mut b) = pipe().unwrap();
    let echo = thread::spawn(move || {
        for _ in 0..1000 {
            let job: Job = b.recv().unwrap();
            b.send(&job).unwrap();
            let bytes = b.recv_bytes().unwrap();
            b.send_bytes(&bytes).unwrap();
        }
    });
    for i in 0..1000u64 {
        let job = Job {
            id: i,
            name: format!("job {i}"),
            weights: vec![i as f64; (i % 7) as usize],
            tag: char::from_u32(0x41 + (i % 26) as u32),
        };
        a.send(&job).unwrap();
        assert_eq!(a.recv::<Job>().unwrap(), job);
        let bytes = vec![(i % 251) as u8; (i * 37 % 5000) as usize];
        a.send_bytes(&bytes).unwrap();
        assert_eq!(a.recv_bytes().unwrap(), bytes);
    }
    echo.join().unwrap();
}

#[test]
fn zero_length_and_large_messages_round_trip() {
    let _w = watchdog(30);
    let (mut a, mut b) = pipe().unwrap();
    let big: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let expected = big.clone();
    let sender = thread::spawn(move || {
        a.send_bytes(b"").unwrap();
        a.send_bytes(&big).unwrap();
        a.send_bytes(b"").unwrap();
        a.send_bytes(&big).unwrap();
        a
    });
    assert_eq!(b.recv_bytes().unwrap(), b"");
    assert_eq!(b.recv_bytes().unwrap(), expected);
    assert_eq!(b.recv_bytes().unwrap(), b"");
    let mut buf = vec![0u8; expected.len() + 8];
    assert_eq!(b.recv_bytes_into_at(&mut buf, 8).unwrap(), expected.len());
    assert_eq!(&buf[8..], &expected[..]);
    drop(sender.join().unwrap());
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn buffer_too_short_keeps_the_connection_usable() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    a.send_bytes(b"0123456789").unwrap();
    a.send_bytes(b"ok").unwrap();
    let mut small = [0u8; 4];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(message)) => assert_eq!(message, b"0123456789"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.recv_bytes_into(&mut small).unwrap(), 2);
    assert_eq!(&small[..2], b"ok");
}

#[test]
fn offsets_place_messages_and_are_checked() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(
        b.recv_bytes_into_at(&mut buf, 9),
        Err(Error::OffsetOutOfRange { offset: 9, len: 8 })
    ));
    a.send_bytes(b"xyz").unwrap();
    assert_eq!(b.recv_bytes_into_at(&mut buf, 5).unwrap(), 3);
    assert_eq!(buf, [0, 0, 0, 0, 0, b'x', b'y', b'z']);
    a.send_bytes(b"").unwrap();
    assert_eq!(b.recv_bytes_into_at(&mut buf, 8).unwrap(), 0);
    a.send_bytes(b"q").unwrap();
    assert!(
        matches!(b.recv_bytes_into_at(&mut buf, 8), Err(Error::BufferTooShort(m)) if m == b"q")
    );
}

/// The wrong direction does not compile (a doctest of `pipe_simplex`
/// shows it); the right one carries typed values, and the end of the
/// sender is the end of the stream.
#[test]
fn simplex_ends_carry_one_way() {
    let _w = watchdog(10);
    let (mut rx, mut tx) = pipe_simplex().unwrap();
    assert!(!rx.poll(Some(Duration::ZERO)).unwrap());
    tx.send(&"one way").unwrap();
    tx.send_bytes(b"raw").unwrap();
    assert_eq!(rx.recv::<String>().unwrap(), "one way");
    assert_eq!(rx.recv_bytes().unwrap(), b"raw");
    drop(tx);
    assert!(matches!(rx.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn poll_sees_buffered_data_and_honours_timeouts() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let start = Instant::now();
    assert!(!b.poll(Some(Duration::from_millis(100))).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(100));
    a.send_bytes(b"first").unwrap();
    a.send_bytes(b"second").unwrap();
    // Both frames arrive in one read; the second then sits in the buffer
    // while the socket itself is empty.
    thread::sleep(Duration::from_millis(20));
    assert!(b.poll(None).unwrap());
    assert_eq!(b.recv_bytes().unwrap(), b"first");
    assert!(
        b.poll(Some(Duration::ZERO)).unwrap(),
        "buffered frame missed"
    );
    assert_eq!(b.recv_bytes().unwrap(), b"second");
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    drop(a);
    assert!(b.poll(Some(Duration::ZERO)).unwrap(), "eof counts as ready");
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn a_timed_out_receive_loses_nothing() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    assert!(matches!(
        b.recv_timeout::<u32>(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        b.recv_bytes_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    a.send(&7u32).unwrap();
    assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(5)).unwrap(), 7);
}

#[test]
fn a_decode_failure_leaves_the_next_message_intact() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    a.send_bytes(&[2]).unwrap(); // not a bool
    a.send(&true).unwrap();
    a.send(&(1u8, 2u8)).unwrap(); // trailing bytes for a u8
    a.send(&9u8).unwrap();
    assert!(matches!(b.recv::<bool>(), Err(Error::Codec(_))));
    assert!(b.recv::<bool>().unwrap());
    assert!(matches!(
        b.recv::<u8>(),
        Err(Error::Codec(mpconn::CodecError::TrailingBytes {
            used: 1,
            len: 2
        }))
    ));
    assert_eq!(b.recv::<u8>().unwrap(), 9);
}

#[test]
fn oversized_messages_are_refused_from_the_header() {
    let _w = watchdog(10);
    let (mut a, mut b) = pipe().unwrap();
    b.set_max_message_size(1000);
    assert_eq!(b.max_message_size(), 1000);
    a.send_bytes(&[0; 1000]).unwrap();
    assert_eq!(b.recv_bytes().unwrap().len(), 1000);
    a.send_bytes(&[0; 1001]).unwrap();
    assert!(matches!(
        b.recv_bytes(),
        Err(Error::MessageTooLarge {
            len: 1001,
            max: 1000
        })
    ));
}

/// A connection whose peer is a raw socket the test writes bytes into.
#[cfg(unix)]
fn raw_peer() -> (UnixStream, Connection<Unverified>) {
    let (raw, ours) = UnixStream::pair().unwrap();
    (raw, Connection::from(OwnedFd::from(ours)))
}

#[cfg(unix)]
#[test]
fn eof_inside_a_frame_is_a_truncation_and_negative_lengths_are_errors() {
    let _w = watchdog(10);
    let (mut raw, mut conn) = raw_peer();
    raw.write_all(&[0, 0, 0, 9, b'a', b'b']).unwrap();
    drop(raw);
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::Truncated {
            expected: 9,
            received: 2
        })
    ));

    let (mut raw, mut conn) = raw_peer();
    raw.write_all(&[0, 0]).unwrap();
    drop(raw);
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::Truncated {
            expected: 4,
            received: 2
        })
    ));

    let (mut raw, mut conn) = raw_peer();
    raw.write_all(&(-7i32).to_be_bytes()).unwrap();
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::Protocol(mpconn::ProtocolError::NegativeLength(-7)))
    ));

    let (mut raw, mut conn) = raw_peer();
    let mut long = vec![0xff; 4];
    long.extend_from_slice(&3u64.to_be_bytes());
    long.extend_from_slice(b"abc");
    raw.write_all(&long).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"abc");
}

#[cfg(unix)]
#[test]
fn connections_are_send_and_descriptors_are_exposed() {
    fn assert_send<T: Send>() {}
    assert_send::<Connection>();
    assert_send::<Connection<Unverified>>();
    let (a, b) = pipe().unwrap();
    use std::os::fd::AsRawFd;
    assert_ne!(a.as_raw_fd(), b.as_raw_fd());
    assert_eq!(a.as_fd().as_raw_fd(), a.as_raw_fd());
}

#[cfg(unix)]
#[test]
fn pipe_descriptors_are_close_on_exec() {
    let (a, _b) = pipe().unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFD on a descriptor we own only reads its flags.
    let flags = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFD) };
    assert!(flags & libc::FD_CLOEXEC != 0);
}

#[cfg(unix)]
#[test]
fn signals_do_not_break_blocking_calls() {
    let _w = watchdog(20);
    extern "C" fn on_signal(_: libc::c_int) {}
    // SAFETY: installs a handler that does nothing, without SA_RESTART, so
    // blocked system calls in this process fail with EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = 0;
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
    let (mut a, mut b) = pipe().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let receiver = thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tid_tx
            .send(unsafe { libc::pthread_self() } as usize)
            .unwrap();
        let first: u64 = b.recv().unwrap();
        let start = Instant::now();
        let timed = b.recv_timeout::<u64>(Duration::from_millis(300));
        (first, timed.is_err(), start.elapsed())
    });
    let tid = tid_rx.recv().unwrap() as libc::pthread_t;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(10));
        // SAFETY: the thread is alive: it cannot finish before we send.
        unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
    }
    a.send(&42u64).unwrap();
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(20));
        // SAFETY: signalling a finished thread is not possible here: the
        // receiver waits 300 ms for a message that never comes.
        unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
    }
    let (first, timed_out, waited) = receiver.join().unwrap();
    assert_eq!(first, 42);
    assert!(timed_out);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
}

#[cfg(unix)]
#[test]
fn pipes_work_across_processes() {
    if child_role().as_deref() == Some("echo") {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let mut conn = Connection::<Unverified>::from(fd).dangerous_trust_without_authentication();
        loop {
            match conn.recv::<Job>() {
                Ok(job) => conn.send(&job).unwrap(),
                Err(Error::Eof) => return,
                Err(e) => panic!("child: {e}"),
            }
        }
    }
    let _w = watchdog(30);
    let (mut ours, theirs) = pipe().unwrap();
    let fd = OwnedFd::try_from(theirs).map_err(|(e, _)| e).unwrap();
    let child = spawn_child("pipes_work_across_processes", "echo", Stdio::from(fd), &[]);
    for i in 0..200 {
        let job = Job {
            id: i,
            name: "x".repeat(i as usize),
            weights: vec![0.5; i as usize],
            tag: None,
        };
        ours.send(&job).unwrap();
        assert_eq!(ours.recv::<Job>().unwrap(), job);
    }
    drop(ours);
    expect_success(child);
}

#[cfg(unix)]
#[test]
fn a_child_killed_mid_message_gives_a_prompt_truncation() {
    if child_role().as_deref() == Some("half") {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let mut raw = UnixStream::from(fd);
        raw.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
        std::process::abort();
    }
    let _w = watchdog(20);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = spawn_child(
        "a_child_killed_mid_message_gives_a_prompt_truncation",
        "half",
        Stdio::from(OwnedFd::from(theirs)),
        &[],
    );
    let mut conn = Connection::from(OwnedFd::from(ours));
    let start = Instant::now();
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::Truncated {
            expected: 256,
            received: 3
        })
    ));
    assert!(start.elapsed() < Duration::from_secs(10));
    let mut child = child;
    assert!(!child.wait().unwrap().success());
}

#[cfg(unix)]
#[test]
fn batches_put_the_same_bytes_on_the_wire_as_single_sends() {
    let _w = watchdog(20);
    let big = vec![5u8; 200_000];
    let script = |conn: &mut Connection<Unverified>, batched: bool| {
        let big = big.clone();
        if batched {
            let mut batch = conn.batch();
            for i in 0..500u32 {
                batch.send(&(i, "x")).unwrap();
                batch.send_bytes(&i.to_be_bytes()).unwrap();
            }
            batch.send_bytes(&big).unwrap();
            batch.send_bytes(b"").unwrap();
            batch.send(&"tail").unwrap();
            // Dropped without flush: drop writes the rest.
        } else {
            for i in 0..500u32 {
                conn.send(&(i, "x")).unwrap();
                conn.send_bytes(&i.to_be_bytes()).unwrap();
            }
            conn.send_bytes(&big).unwrap();
            conn.send_bytes(b"").unwrap();
            conn.send(&"tail").unwrap();
        }
    };
    let mut wires = Vec::new();
    for batched in [false, true] {
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::from(OwnedFd::from(ours));
        let reader = thread::spawn(move || {
            let mut raw = raw;
            let mut wire = Vec::new();
            std::io::Read::read_to_end(&mut raw, &mut wire).unwrap();
            wire
        });
        script(&mut conn, batched);
        drop(conn);
        wires.push(reader.join().unwrap());
    }
    assert_eq!(wires[0], wires[1]);
}

#[test]
fn batches_deliver_in_order_and_report_errors_on_flush() {
    let _w = watchdog(60);
    let (mut a, mut b) = pipe().unwrap();
    let reader = thread::spawn(move || {
        for i in 0..100_000u32 {
            assert_eq!(b.recv::<u32>().unwrap(), i);
        }
        b
    });
    let mut batch = a.batch();
    for i in 0..100_000u32 {
        batch.send(&i).unwrap();
    }
    batch.flush().unwrap();
    assert_eq!(batch.queued_bytes(), 0);
    drop(batch);
    let b = reader.join().unwrap();
    // Dropping `b` alone is not enough: a child that another test is
    // spawning holds a copy of every descriptor between its fork and exec,
    // and while it does, writes to `a` still succeed. Shutting the socket
    // down ends it for every holder.
    b.close_handle().close();
    drop(b);
    let mut batch = a.batch();
    batch.send_bytes(b"into the void").unwrap();
    assert!(batch.flush().is_err());
}
