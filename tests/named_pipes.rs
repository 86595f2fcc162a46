//! Windows named pipes (run under Wine in CI): Listener and Client over
//! `\\.\pipe\...` with the same handshake as the other transports, CPython's
//! message framing, squatting, clients that leave before the accept, and
//! `wait()` on pipes.

#![cfg(windows)]

mod common;

use std::os::windows::io::{AsRawHandle, AsRawSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{KEY, local_address, watchdog};
use mpconn::{Address, AddressError, AuthError, Client, Error, Listener, pipe, pipe_simplex, wait};

fn pipe_name(address: &Address) -> &str {
    match address {
        Address::Pipe(name) => name,
        other => panic!("not a pipe: {other}"),
    }
}

#[test]
fn authenticated_clients_exchange_typed_and_byte_messages() {
    let _w = watchdog(60);
    let listener = Listener::bind(local_address("auth"), KEY).unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        let mut conn = Client::connect(&address, KEY).unwrap();
        conn.send(&("hello", 42u32)).unwrap();
        let reply: Vec<u64> = conn.recv().unwrap();
        assert_eq!(reply, [1, 2, 3]);
        conn.send_bytes(b"").unwrap();
        conn.send_bytes(b"last").unwrap();
    });
    let mut conn = listener.accept().unwrap();
    let (text, n): (String, u32) = conn.recv().unwrap();
    assert_eq!((text.as_str(), n), ("hello", 42));
    conn.send(&vec![1u64, 2, 3]).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    assert_eq!(conn.recv_bytes().unwrap(), b"last");
    client.join().unwrap();
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
    assert_eq!(listener.stats().accepted, 1);
}

#[test]
fn wrong_keys_fail_on_both_sides_and_accept_goes_on() {
    let _w = watchdog(60);
    let listener = Listener::bind(local_address("wrong"), KEY).unwrap();
    let address = listener.address().clone();
    let impostor = thread::spawn(move || {
        let err = Client::connect(&address, b"a-different-key-of-enough-length").unwrap_err();
        assert!(matches!(err, Error::Auth(_)), "{err:?}");
        let mut conn = Client::connect(&address, KEY).unwrap();
        conn.send(&7u8).unwrap();
    });
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 7);
    impostor.join().unwrap();
    assert_eq!(listener.stats().failed_handshakes, 1);
}

#[test]
fn messages_far_above_the_pipe_buffer_arrive_whole() {
    let _w = watchdog(120);
    let listener = Listener::bind(local_address("large"), KEY).unwrap();
    let address = listener.address().clone();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sent = big.clone();
    // A message pipe's write completes only as the reader takes the bytes,
    // so the writer needs a thread of its own.
    let writer = thread::spawn(move || {
        let mut conn = Client::connect(&address, KEY).unwrap();
        conn.send_bytes(&sent).unwrap();
        conn.send_bytes(b"after").unwrap();
        conn.recv_bytes().unwrap()
    });
    let mut conn = listener.accept().unwrap();
    let got = conn.recv_bytes().unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the large message came back different");
    assert_eq!(conn.recv_bytes().unwrap(), b"after");
    conn.send_bytes(&got[..70_000]).unwrap();
    assert_eq!(writer.join().unwrap(), &big[..70_000]);
}

#[test]
fn a_peer_that_goes_away_is_a_clean_end_of_stream() {
    let _w = watchdog(30);
    let (mut a, b) = pipe().unwrap();
    drop(b);
    assert!(matches!(a.recv_bytes(), Err(Error::Eof)));

    let listener = Listener::bind(local_address("eof"), KEY).unwrap();
    let conn = Client::connect(listener.address(), KEY).unwrap();
    let mut served = listener.accept().unwrap();
    drop(conn);
    assert!(matches!(served.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn a_second_listener_on_the_same_name_fails() {
    let _w = watchdog(30);
    let first = Listener::bind(local_address("squat"), KEY).unwrap();
    let err = Listener::bind(first.address().clone(), KEY).unwrap_err();
    assert!(
        matches!(err, Error::Address(AddressError::InUse(_))),
        "{err:?}"
    );
    // The first listener still serves.
    let mut client = Client::connect(first.address(), KEY).unwrap();
    let mut conn = first.accept().unwrap();
    client.send(&1u8).unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 1);
}

#[test]
fn a_name_squatted_before_the_listener_is_refused() {
    let _w = watchdog(30);
    // Someone else (here an unauthenticated listener) holds the name first.
    let squatter = Listener::bind_unauthenticated(local_address("squatted")).unwrap();
    let err = Listener::bind(squatter.address().clone(), KEY).unwrap_err();
    assert!(
        matches!(err, Error::Address(AddressError::InUse(_))),
        "{err:?}"
    );
}

#[test]
fn a_client_that_leaves_before_accept_does_not_stop_the_listener() {
    let _w = watchdog(60);
    let listener = Listener::bind(local_address("leaver"), KEY).unwrap();
    let name = pipe_name(listener.address()).to_string();
    // Open the pipe and close it at once, before any handshake, several
    // times; then a real client must still get through. Whether the
    // acceptor sees a leaver as ERROR_NO_DATA (gone before ConnectNamedPipe
    // ran) or as a handshake that ends at once depends on timing; neither
    // may stop the accept loop.
    for _ in 0..5 {
        let raw = Client::builder()
            .connect_unauthenticated(Address::Pipe(name.clone()))
            .unwrap();
        drop(raw);
    }
    let mut client = Client::connect(listener.address(), KEY).unwrap();
    let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
    client.send(&"through").unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "through");
    let stats = listener.stats();
    assert_eq!(stats.accepted, 1);
    assert!(stats.failed_handshakes <= 5, "{stats:?}");
}

#[test]
fn many_clients_at_once_never_find_the_pipe_busy() {
    let _w = watchdog(120);
    let listener = Listener::bind(local_address("busy"), KEY).unwrap();
    let address = listener.address().clone();
    let clients: Vec<_> = (0..16u32)
        .map(|i| {
            let address = address.clone();
            thread::spawn(move || {
                let mut conn = Client::connect(&address, KEY).unwrap();
                conn.send(&i).unwrap();
                conn.recv::<u32>().unwrap()
            })
        })
        .collect();
    for _ in 0..16 {
        let mut conn = listener.accept().unwrap();
        let i: u32 = conn.recv().unwrap();
        conn.send(&(i * 10)).unwrap();
    }
    let mut answers: Vec<u32> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    answers.sort_unstable();
    assert_eq!(answers, (0..16).map(|i| i * 10).collect::<Vec<_>>());
}

#[test]
fn a_silent_client_fails_its_handshake_within_the_deadline() {
    let _w = watchdog(30);
    let listener = Listener::builder()
        .handshake_timeout(Duration::from_millis(300))
        .bind(local_address("silent"), KEY)
        .unwrap();
    let silent = Client::builder()
        .connect_unauthenticated(listener.address())
        .unwrap();
    let started = Instant::now();
    // The silent client does not hold up an honest one.
    let mut honest = Client::connect(listener.address(), KEY).unwrap();
    let mut conn = listener.accept().unwrap();
    honest.send(&5u8).unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 5);
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = Client::builder()
        .handshake_timeout(Duration::from_millis(300))
        .connect(listener.address(), b"")
        .unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::KeyTooShort { .. })),
        "{err:?}"
    );
    drop(silent);
}

#[test]
fn wait_sees_pipes_listeners_and_empty_messages() {
    let _w = watchdog(30);
    let (a, mut b) = pipe().unwrap();
    let (c, mut d) = pipe().unwrap();
    let none = wait(&[&a, &c], Some(Duration::from_millis(100))).unwrap();
    assert!(none.is_empty());
    d.send_bytes(b"").unwrap();
    assert_eq!(wait(&[&a, &c], Some(Duration::from_secs(5))).unwrap(), [1]);
    // The probe may have taken the empty message; it must still arrive.
    let mut c = c;
    assert_eq!(c.recv_bytes().unwrap(), b"");
    b.send_bytes(b"x").unwrap();
    assert_eq!(wait(&[&a, &c], Some(Duration::from_secs(5))).unwrap(), [0]);

    let listener = Listener::bind(local_address("wait"), KEY).unwrap();
    assert!(
        wait(&[&listener], Some(Duration::from_millis(100)))
            .unwrap()
            .is_empty()
    );
    let _client = Client::connect(listener.address(), KEY).unwrap();
    assert_eq!(
        wait(&[&listener], Some(Duration::from_secs(10))).unwrap(),
        [0]
    );
    assert!(listener.try_accept().unwrap().is_some());
}

#[test]
fn handles_are_exposed_and_unix_addresses_are_clear_errors() {
    let (a, b) = pipe().unwrap();
    assert_ne!(a.as_raw_handle(), b.as_raw_handle());
    assert_eq!(
        a.as_pipe_handle().unwrap().as_raw_handle(),
        a.as_raw_handle()
    );
    assert!(a.as_raw_socket().is_none() && a.as_socket().is_none());
    let tcp = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let client = Client::connect(tcp.address(), KEY).unwrap();
    let socket = client.as_raw_socket().unwrap();
    assert_eq!(client.as_socket().unwrap().as_raw_socket(), socket);
    assert_eq!(client.as_raw_handle() as u64, socket);
    assert!(client.as_pipe_handle().is_none());
    let err = Listener::bind("unix:/tmp/x.sock", KEY).unwrap_err();
    assert!(
        matches!(err, Error::Address(AddressError::Unsupported(_))),
        "{err:?}"
    );
}

#[test]
fn a_client_gone_before_connect_named_pipe_is_skipped() {
    let _w = watchdog(60);
    // One handshake at a time: while a silent client holds it, the acceptor
    // has made its spare instance but not yet called ConnectNamedPipe on it.
    let listener = Listener::builder()
        .max_pending_handshakes(1)
        .handshake_timeout(Duration::from_millis(500))
        .bind(local_address("nodata"), KEY)
        .unwrap();
    let silent = Client::builder()
        .connect_unauthenticated(listener.address())
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    // This client takes the spare instance and leaves: ConnectNamedPipe
    // will find it gone (ERROR_NO_DATA).
    let leaver = Client::builder()
        .connect_unauthenticated(listener.address())
        .unwrap();
    drop(leaver);
    let mut honest = Client::connect(listener.address(), KEY).unwrap();
    let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
    honest.send(&9u8).unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 9);
    // Only the silent client failed a handshake; the leaver never had one.
    assert_eq!(listener.stats().failed_handshakes, 1);
    drop(silent);
}

#[test]
fn messages_above_the_limit_are_refused_without_being_read() {
    let _w = watchdog(60);
    let (mut small, mut peer) = pipe().unwrap();
    small.set_max_message_size(1000);
    // The write of a message larger than the pipe's buffer completes only
    // when it is read, which never happens: it fails once we let go.
    let writer = thread::spawn(move || {
        let sent = peer.send_bytes(&vec![7u8; 300_000]);
        (sent, peer)
    });
    let err = small.recv_bytes().unwrap_err();
    assert!(
        matches!(
            err,
            Error::MessageTooLarge {
                len: 300_000,
                max: 1000
            }
        ),
        "{err:?}"
    );
    drop(small);
    let (sent, _peer) = writer.join().unwrap();
    assert!(sent.is_err());

    // A first message of 10 MB from an unauthenticated client ends its
    // handshake, without the listener reading it, and the listener goes on.
    let listener = Listener::bind(local_address("bomb"), KEY).unwrap();
    let address = listener.address().clone();
    let bomber = thread::spawn(move || {
        let mut raw = Client::builder().connect_unauthenticated(&address).unwrap();
        let _ = raw.send_bytes(&vec![0u8; 10_000_000]);
    });
    let mut honest = Client::connect(listener.address(), KEY).unwrap();
    let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
    honest.send(&3u8).unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 3);
    bomber.join().unwrap();
}

#[test]
fn simplex_pipes_are_one_way_in_the_os_too() {
    use windows_sys::Win32::Storage::FileSystem::WriteFile;
    use windows_sys::Win32::System::IO::OVERLAPPED;
    let (rx, mut tx) = pipe_simplex().unwrap();
    let handle = rx.as_pipe_handle().unwrap().as_raw_handle();
    // SAFETY: OVERLAPPED is plain data. The write is refused before any I/O
    // starts (the pipe is inbound-only at the receiver), so nothing refers
    // to `ov` after the call; a write that went through would complete at
    // once into the empty pipe's buffer.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    let ok = unsafe { WriteFile(handle as _, b"x".as_ptr(), 1, std::ptr::null_mut(), &mut ov) };
    let err = std::io::Error::last_os_error();
    assert_eq!(ok, 0, "the receiving end could write");
    assert_eq!(err.raw_os_error(), Some(5), "{err}"); // ERROR_ACCESS_DENIED
    tx.send(&"still fine").unwrap();
    let mut rx = rx;
    assert_eq!(rx.recv::<String>().unwrap(), "still fine");
}

#[test]
fn pipe_handles_work_across_processes() {
    use std::os::windows::io::{AsHandle, OwnedHandle};
    use std::process::Stdio;

    use common::{child_role, expect_success, spawn_child};
    use mpconn::{Connection, Unverified};

    if child_role().as_deref() == Some("echo") {
        let handle = std::io::stdin().as_handle().try_clone_to_owned().unwrap();
        let mut conn =
            Connection::<Unverified>::from(handle).dangerous_trust_without_authentication();
        loop {
            match conn.recv::<(u32, String)>() {
                Ok(job) => conn.send(&job).unwrap(),
                Err(Error::Eof) => return,
                Err(e) => panic!("child: {e}"),
            }
        }
    }
    let _w = watchdog(60);
    let (mut ours, theirs) = pipe().unwrap();
    let handle = OwnedHandle::try_from(theirs).map_err(|(e, _)| e).unwrap();
    let child = spawn_child(
        "pipe_handles_work_across_processes",
        "echo",
        Stdio::from(handle),
        &[],
    );
    for i in 0..100u32 {
        let job = (i, "x".repeat(i as usize * 100));
        ours.send(&job).unwrap();
        assert_eq!(ours.recv::<(u32, String)>().unwrap(), job);
    }
    drop(ours);
    expect_success(child);

    // A TCP connection has no handle to give, and gets back whole.
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let client = Client::connect(listener.address(), KEY).unwrap();
    let mut served = listener.accept().unwrap();
    let (_, mut client) = OwnedHandle::try_from(client).unwrap_err();
    client.send(&1u8).unwrap();
    assert_eq!(served.recv::<u8>().unwrap(), 1);
    served.send(&2u8).unwrap();
    assert_eq!(client.recv::<u8>().unwrap(), 2);
}

#[test]
fn a_probe_left_in_flight_by_wait_loses_no_message() {
    let _w = watchdog(30);
    let (mut a, mut b) = pipe().unwrap();
    // The wait times out and leaves its zero-byte read in flight.
    assert!(
        wait(&[&a], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    // That read takes the empty message when it comes; recv must get it.
    b.send_bytes(b"").unwrap();
    b.send_bytes(b"next").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"");
    assert_eq!(a.recv_bytes().unwrap(), b"next");

    // A receive with a timeout waits behind the probe and can time out.
    assert!(
        wait(&[&a], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        a.recv_bytes_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    b.send_bytes(b"late").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"late");

    // A handover ends the probe: an empty message it took stays with the
    // connection, which then refuses to give up its handle.
    assert!(
        wait(&[&a], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    b.send_bytes(b"").unwrap();
    thread::sleep(Duration::from_millis(100));
    let (_, mut a) = std::os::windows::io::OwnedHandle::try_from(a).unwrap_err();
    assert_eq!(a.recv_bytes().unwrap(), b"");

    // Dropping a connection with a probe in flight is clean.
    assert!(
        wait(&[&a], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    drop(a);
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}
