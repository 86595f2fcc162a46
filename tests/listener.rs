//! Listener and Client over TCP and Unix sockets: authentication, deadlines,
//! hostile clients, socket files.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(unix)]
use common::unique_path;
use common::{KEY, frame, read_frame, sha256_answer, watchdog, write_frame};
use mpconn::{Address, AuthError, Client, Error, Listener, ListenerOptions, Unverified};
#[cfg(unix)]
use mpconn::{AddressError, Family};

fn tcp_listener(key: &[u8]) -> Listener {
    Listener::bind("127.0.0.1:0", key).unwrap()
}

fn addresses() -> Vec<Address> {
    vec![
        "127.0.0.1:0".parse().unwrap(),
        common::local_address("auth"),
    ]
}

#[test]
fn same_key_connects_both_ways_over_tcp_and_unix() {
    let _w = watchdog(30);
    for address in addresses() {
        let listener = Listener::bind(&address, KEY).unwrap();
        let bound = listener.address().clone();
        let client = thread::spawn(move || {
            let mut conn = Client::connect(&bound, KEY).unwrap();
            conn.send(&("ping", 1u32)).unwrap();
            conn.recv::<String>().unwrap()
        });
        let mut conn = listener.accept().unwrap();
        assert_eq!(conn.recv::<(String, u32)>().unwrap(), ("ping".into(), 1));
        conn.send(&"pong").unwrap();
        assert_eq!(client.join().unwrap(), "pong");
        assert_eq!(listener.stats().accepted, 1);
        assert_eq!(listener.stats().failed_handshakes, 0);
    }
}

#[test]
fn wrong_keys_fail_cleanly_on_both_sides() {
    let _w = watchdog(30);
    for address in addresses() {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = failures.clone();
        let listener = ListenerOptions::new()
            .accept_timeout(Some(Duration::from_millis(500)))
            .on_handshake_failure(move |f| seen.lock().unwrap().push(f.error.to_string()))
            .bind(&address, KEY)
            .unwrap();
        let bound = listener.address().clone();
        // Handshakes progress while a thread is inside accept(), as in CPython.
        let client = thread::spawn(move || Client::connect(&bound, b"not-the-right-key-at-all"));
        assert!(matches!(listener.accept(), Err(Error::Timeout)));
        let err = client.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Auth(AuthError::Rejected)), "{err}");
        assert_eq!(listener.stats().failed_handshakes, 1);
        let failures = failures.lock().unwrap();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("digest was wrong"), "{failures:?}");
    }
}

#[test]
fn short_keys_need_an_opt_out() {
    let err = Listener::bind("127.0.0.1:0", b"short").unwrap_err();
    assert!(matches!(err, Error::Auth(AuthError::KeyTooShort(5))));
    let listener = ListenerOptions::new()
        .allow_short_key(true)
        .bind("127.0.0.1:0", b"short")
        .unwrap();
    let address = listener.address().clone();
    assert!(matches!(
        Client::connect(&address, b"short"),
        Err(Error::Auth(AuthError::KeyTooShort(5)))
    ));
    let client = thread::spawn(move || {
        Client::builder()
            .allow_short_key(true)
            .connect(&address, b"short")
            .map(drop)
    });
    listener.accept().unwrap();
    client.join().unwrap().unwrap();
}

#[test]
fn keys_never_appear_in_errors_or_debug_output() {
    let secret = b"VERY-SECRET-KEY-MATERIAL";
    let listener = Listener::bind("127.0.0.1:0", secret).unwrap();
    let bound = listener.address().clone();
    let client = thread::spawn(move || Client::connect(&bound, b"VERY-SECRET-OTHER-MATERIAL"));
    let _ = listener.accept_timeout(Duration::from_millis(500));
    let err = client.join().unwrap().unwrap_err();
    for shown in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{listener:?}"),
    ] {
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}

/// A client whose listener accepts the connection but never speaks: the
/// wait for its challenge has no limit by default (CPython's client has
/// none), and `challenge_timeout` bounds it.
#[test]
fn a_silent_listener_fails_the_client_within_its_deadline() {
    let _w = watchdog(20);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let start = Instant::now();
    let err = Client::builder()
        .handshake_timeout(Duration::from_millis(100))
        .challenge_timeout(Some(Duration::from_millis(300)))
        .connect(address, KEY)
        .unwrap_err();
    assert!(matches!(err, Error::Auth(AuthError::NoChallenge)), "{err}");
    assert!(err.to_string().contains("no challenge"), "{err}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_keyed_client_against_a_keyless_listener_fails_within_its_deadline() {
    let _w = watchdog(20);
    let listener = Listener::bind_unauthenticated("127.0.0.1:0").unwrap();
    let address = listener.address().clone();
    let server = thread::spawn(move || {
        let mut conn = listener.accept().unwrap();
        // The keyless side waits for a message; the client waits for a challenge.
        conn.recv_bytes()
    });
    let err = Client::builder()
        .challenge_timeout(Some(Duration::from_millis(300)))
        .connect(&address, KEY)
        .unwrap_err();
    assert!(matches!(err, Error::Auth(AuthError::NoChallenge)), "{err}");
    assert!(matches!(server.join().unwrap(), Err(Error::Eof)));
}

/// One raw client per hostile behaviour, then a good client: accept() must
/// serve the good one while the others are still hanging.
#[test]
fn hostile_clients_never_hold_up_accept() {
    let _w = watchdog(30);
    let failures = Arc::new(AtomicUsize::new(0));
    let counted = failures.clone();
    let listener = ListenerOptions::new()
        .handshake_timeout(Duration::from_secs(3))
        .on_handshake_failure(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0", KEY)
        .unwrap();
    let sa = match listener.address() {
        Address::Tcp(sa) => *sa,
        other => panic!("{other}"),
    };
    let mut hostile = Vec::new();
    // Silent: connects and says nothing.
    hostile.push(TcpStream::connect(sa).unwrap());
    // Garbage: a huge header.
    let mut garbage = TcpStream::connect(sa).unwrap();
    garbage
        .write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    hostile.push(garbage);
    // Dripping: half a header, then nothing.
    let mut drip = TcpStream::connect(sa).unwrap();
    drip.write_all(&[0, 0]).unwrap();
    hostile.push(drip);
    // Half-closing: shuts its write side at once.
    let half = TcpStream::connect(sa).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    hostile.push(half);
    // Resetting: connects and vanishes.
    drop(TcpStream::connect(sa).unwrap());
    // A client that answers with the listener's own challenge.
    let mirror = thread::spawn(move || {
        let mut mirror = TcpStream::connect(sa).unwrap();
        let challenge = read_frame(&mut mirror);
        write_frame(&mut mirror, &challenge);
        mirror
    });

    let start = Instant::now();
    let good = thread::spawn(move || {
        let mut conn = Client::connect(sa, KEY).unwrap();
        conn.send(&"made it").unwrap();
    });
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "made it");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "accept waited {:?}",
        start.elapsed()
    );
    good.join().unwrap();

    // The silent and dripping ones time out; all five bad ones are reported.
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
        let _ = listener.accept_timeout(Duration::from_millis(200));
    }
    assert!(
        failures.load(Ordering::SeqCst) >= 5,
        "{}",
        failures.load(Ordering::SeqCst)
    );
    assert_eq!(listener.stats().accepted, 1);
    drop(mirror.join().unwrap());
    drop(hostile);
}

#[test]
fn sixteen_clients_at_once_are_all_served() {
    let _w = watchdog(30);
    let listener = tcp_listener(KEY);
    let address = listener.address().clone();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let address = address.clone();
            thread::spawn(move || {
                let mut conn = Client::connect(&address, KEY).unwrap();
                conn.send(&i).unwrap();
                assert_eq!(conn.recv::<i32>().unwrap(), i * 2);
            })
        })
        .collect();
    for _ in 0..16 {
        let mut conn = listener.accept().unwrap();
        let i: i32 = conn.recv().unwrap();
        conn.send(&(i * 2)).unwrap();
    }
    for c in clients {
        c.join().unwrap();
    }
}

/// A hand-written client in CPython's order that writes its first message
/// in the same write as its final #WELCOME#: the listener must deliver it.
#[test]
fn bytes_right_behind_the_handshake_are_delivered() {
    let _w = watchdog(20);
    let listener = tcp_listener(KEY);
    let Address::Tcp(sa) = *listener.address() else {
        panic!()
    };
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect(sa).unwrap();
        let challenge = read_frame(&mut s);
        let message = challenge.strip_prefix(b"#CHALLENGE#").unwrap();
        write_frame(&mut s, &sha256_answer(KEY, message));
        assert_eq!(read_frame(&mut s), b"#WELCOME#");
        let nonce = [b"{sha256}".as_slice(), &[7u8; 40]].concat();
        write_frame(&mut s, &[b"#CHALLENGE#".as_slice(), &nonce].concat());
        assert_eq!(read_frame(&mut s), sha256_answer(KEY, &nonce));
        let mut tail = frame(b"#WELCOME#");
        tail.extend_from_slice(&frame(b"first"));
        tail.extend_from_slice(&frame(b"second"));
        s.write_all(&tail).unwrap();
        s
    });
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"first");
    assert_eq!(conn.recv_bytes().unwrap(), b"second");
    drop(client.join().unwrap());
}

/// A fake server that answers nothing right: no connection is ever returned.
#[test]
fn fake_servers_never_yield_a_connection() {
    let _w = watchdog(30);
    type Script = fn(&mut TcpStream);
    let scripts: [(&str, Script); 5] = [
        ("malformed challenge", |s| write_frame(s, b"#CHALLENGE")),
        ("md5 challenge", |s| {
            write_frame(s, &[b"#CHALLENGE#{md5}".as_slice(), &[1; 40]].concat())
        }),
        ("no verdict", |s| {
            write_frame(s, &[b"#CHALLENGE#{sha256}".as_slice(), &[1; 40]].concat());
            let _ = read_frame(s);
            thread::sleep(Duration::from_secs(2));
        }),
        ("welcome without knowing the key", |s| {
            write_frame(s, &[b"#CHALLENGE#{sha256}".as_slice(), &[1; 40]].concat());
            let _ = read_frame(s);
            let _ = read_frame(s); // the client's pipelined challenge
            write_frame(s, b"#WELCOME#");
            write_frame(s, &[b"{sha256}".as_slice(), &[0u8; 32]].concat());
            thread::sleep(Duration::from_millis(200));
        }),
        ("oversized message", |s| {
            s.write_all(&1000u32.to_be_bytes()).unwrap();
            s.write_all(&[0u8; 1000]).unwrap();
        }),
    ];
    for (name, script) in scripts {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let sa = server.local_addr().unwrap();
        let t = thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            script(&mut s);
        });
        let result = Client::builder()
            .handshake_timeout(Duration::from_millis(500))
            .connect(sa, KEY);
        assert!(matches!(result, Err(Error::Auth(_))), "{name}: {result:?}");
        t.join().unwrap();
    }
}

#[test]
fn unverified_connections_upgrade_by_handshake_in_either_role() {
    let _w = watchdog(20);
    let listener = Listener::bind_unauthenticated("127.0.0.1:0").unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        let mut conn = Client::connect_unauthenticated(&address).unwrap();
        conn.send(&"typed sends are fine unverified").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"upgrade now");
        let mut conn = conn.authenticate_as_server(KEY).unwrap();
        conn.recv::<u64>().unwrap()
    });
    let mut conn: mpconn::Connection<Unverified> = listener.accept().unwrap();
    assert!(!conn.recv_bytes().unwrap().is_empty());
    conn.send_bytes(b"upgrade now").unwrap();
    let mut conn = conn.authenticate_as_client(KEY).unwrap();
    conn.send(&99u64).unwrap();
    assert_eq!(client.join().unwrap(), 99);
}

#[test]
fn close_from_another_thread_wakes_accept() {
    let _w = watchdog(20);
    let listener = Arc::new(tcp_listener(KEY));
    let waiter = {
        let listener = listener.clone();
        thread::spawn(move || listener.accept().map(drop))
    };
    thread::sleep(Duration::from_millis(100));
    listener.close();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(listener.accept(), Err(Error::Closed)));
    assert!(listener.incoming().next().is_none());
}

#[test]
fn accept_timeouts_are_honoured() {
    let _w = watchdog(20);
    let listener = tcp_listener(KEY);
    let start = Instant::now();
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(150)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[test]
fn address_reports_the_real_port_and_last_accepted_the_peer() {
    let _w = watchdog(20);
    let listener = tcp_listener(KEY);
    let Address::Tcp(sa) = *listener.address() else {
        panic!()
    };
    assert_ne!(sa.port(), 0);
    assert_eq!(listener.last_accepted(), None);
    let client = thread::spawn(move || Client::connect(sa, KEY).unwrap());
    let _conn = listener.accept().unwrap();
    let conn = client.join().unwrap();
    drop(conn);
    match listener.last_accepted() {
        Some(Address::Tcp(peer)) => assert!(peer.ip().is_loopback()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ipv6_and_host_names_work() {
    let _w = watchdog(20);
    for text in ["[::1]:0", "localhost:0"] {
        let listener = match Listener::bind(text, KEY) {
            Ok(l) => l,
            // A machine without IPv6 on loopback: say so rather than pass.
            Err(Error::Io(e)) if text.starts_with('[') => {
                eprintln!("skipping {text}: {e}");
                continue;
            }
            Err(e) => panic!("{text}: {e}"),
        };
        let address = listener.address().clone();
        let client = thread::spawn(move || Client::connect(&address, KEY).unwrap());
        listener.accept().unwrap();
        client.join().unwrap();
    }
}

#[cfg(unix)]
#[test]
fn unix_socket_files_are_private_and_cleaned_up() {
    use std::os::unix::fs::PermissionsExt;
    let _w = watchdog(20);
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0) };
    let path = unique_path("mode");
    let listener = Listener::bind(&path, KEY);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    drop(listener);
    assert!(!path.exists());
}

#[cfg(unix)]
#[test]
fn a_rebound_path_is_left_to_its_new_owner() {
    let _w = watchdog(20);
    let path = unique_path("rebound");
    let first = Listener::bind(&path, KEY).unwrap();
    std::fs::remove_file(&path).unwrap();
    let second = Listener::bind(&path, KEY).unwrap();
    drop(first);
    assert!(
        path.exists(),
        "the first listener removed the second one's file"
    );
    drop(second);
    assert!(!path.exists());
    // The directory was the first listener's, and it still held the second
    // one's socket when the first went, so it stays.
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
}

#[cfg(unix)]
#[test]
fn stale_busy_and_long_paths_are_clear_errors() {
    let _w = watchdog(20);
    let path = unique_path("stale");
    // A socket file left by a listener that died without cleaning up.
    let dead = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(dead);
    assert!(path.exists());
    let err = Listener::bind(&path, KEY).unwrap_err();
    assert!(
        matches!(err, Error::Address(AddressError::StaleSocket(_))),
        "{err}"
    );
    assert!(err.to_string().contains("reclaim_stale_socket"));
    let live = ListenerOptions::new()
        .reclaim_stale_socket(true)
        .bind(&path, KEY)
        .unwrap();
    let err = ListenerOptions::new()
        .reclaim_stale_socket(true)
        .bind(&path, KEY)
        .unwrap_err();
    assert!(
        matches!(err, Error::Address(AddressError::InUse(_))),
        "{err}"
    );
    drop(live);

    let long = std::env::temp_dir().join("x".repeat(200));
    let err = Listener::bind(&long, KEY).unwrap_err();
    assert!(matches!(err, Error::Address(AddressError::PathTooLong { len, .. }) if len > 200));
    assert!(matches!(
        Client::connect(&long, KEY),
        Err(Error::Address(AddressError::PathTooLong { .. }))
    ));
}

#[cfg(unix)]
#[test]
fn arbitrary_unix_addresses_serve_and_vanish() {
    let _w = watchdog(20);
    let address = Address::arbitrary(Family::Unix).unwrap();
    let Address::Unix(path) = &address else {
        panic!()
    };
    let dir = path.parent().unwrap().to_path_buf();
    let listener = Listener::bind(&address, KEY).unwrap();
    let bound = listener.address().clone();
    let client = thread::spawn(move || Client::connect(&bound, KEY).unwrap());
    listener.accept().unwrap();
    client.join().unwrap();
    drop(listener);
    assert!(!dir.exists(), "private directory left behind");
}

/// A directory named like the private ones of `Address::arbitrary`, right
/// under the temporary directory, that the user made: a listener bound in it
/// leaves it in place, whether or not anything else is in it.
#[cfg(unix)]
#[test]
fn a_directory_the_listener_did_not_make_survives_it() {
    let _w = watchdog(20);
    for other_file in [false, true] {
        let dir =
            std::env::temp_dir().join(format!("mpconn-user-{}-{other_file}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        if other_file {
            std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        }
        let path = dir.join("listener.sock");
        drop(Listener::bind(&path, KEY).unwrap());
        assert!(!path.exists(), "socket file left behind");
        assert!(dir.is_dir(), "the listener removed {}", dir.display());
        if other_file {
            assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The private directory of `Address::arbitrary` belongs to the process that
/// made it: another process bound in it leaves it in place, and so does a
/// listener whose directory was replaced by another at the same path.
#[cfg(unix)]
#[test]
fn an_arbitrary_directory_is_removed_only_by_its_makers_listener() {
    const PATH_VAR: &str = "MPCONN_TEST_SOCKET_PATH";
    if common::child_role().as_deref() == Some("bind-and-drop") {
        let path = std::env::var_os(PATH_VAR).unwrap();
        drop(Listener::bind(std::path::Path::new(&path), KEY).unwrap());
        return;
    }
    let _w = watchdog(30);
    let Address::Unix(path) = Address::arbitrary(Family::Unix).unwrap() else {
        panic!()
    };
    let dir = path.parent().unwrap().to_path_buf();
    let child = common::spawn_child(
        "an_arbitrary_directory_is_removed_only_by_its_makers_listener",
        "bind-and-drop",
        std::process::Stdio::null(),
        &[(PATH_VAR, path.to_str().unwrap())],
    );
    common::expect_success(child);
    assert!(!path.exists(), "the child left its socket file");
    assert!(dir.is_dir(), "another process removed the directory");

    // Swapped, socket file and all, for a directory of the same name while
    // the listener ran: the socket file is still the listener's own.
    let listener = Listener::bind(&path, KEY).unwrap();
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(moved.join("listener.sock"), &path).unwrap();
    drop(listener);
    assert!(!path.exists(), "socket file left behind");
    assert!(
        dir.is_dir(),
        "the listener removed a directory it did not make"
    );
    std::fs::remove_dir(&dir).unwrap();
    std::fs::remove_dir(&moved).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_sockets_work_when_named() {
    let _w = watchdog(20);
    let name = format!("unix:@mpconn-test-{}", std::process::id());
    let listener = Listener::bind(name.as_str(), KEY).unwrap();
    assert_eq!(listener.address().to_string(), name);
    let client = thread::spawn(move || Client::connect(name.as_str(), KEY).unwrap());
    listener.accept().unwrap();
    client.join().unwrap();
}

#[test]
fn incoming_yields_connections() {
    let _w = watchdog(20);
    let listener = tcp_listener(KEY);
    let address = listener.address().clone();
    let clients = thread::spawn(move || {
        for i in 0..3u8 {
            Client::connect(&address, KEY).unwrap().send(&i).unwrap();
        }
    });
    let mut got: Vec<u8> = listener
        .incoming()
        .take(3)
        .map(|c| c.unwrap().recv::<u8>().unwrap())
        .collect();
    // Handshakes finish in any order (on Windows each runs on a thread of
    // its own): a client's connect returns before the listener has read its
    // last #WELCOME#, so the next client's handshake can finish first.
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
    clients.join().unwrap();
}

#[test]
fn a_failure_hook_may_call_back_into_its_listener() {
    let _w = watchdog(20);
    let slot: Arc<std::sync::OnceLock<Arc<Listener>>> = Arc::new(std::sync::OnceLock::new());
    let seen = Arc::new(AtomicUsize::new(0));
    let (hook_slot, hook_seen) = (slot.clone(), seen.clone());
    let listener = Arc::new(
        ListenerOptions::new()
            .on_handshake_failure(move |_| {
                let listener = hook_slot.get().unwrap();
                // Both take the listener's lock: a deadlock if the hook ran under it.
                let _ = listener.last_accepted();
                let _ = listener.try_accept();
                hook_seen.fetch_add(1, Ordering::SeqCst);
            })
            .bind("127.0.0.1:0", KEY)
            .unwrap(),
    );
    slot.set(listener.clone()).unwrap();
    let address = listener.address().clone();
    let bad = thread::spawn(move || Client::connect(&address, b"the wrong key, long enough"));
    assert!(matches!(
        listener.accept_timeout(Duration::from_secs(2)),
        Err(Error::Timeout)
    ));
    assert!(bad.join().unwrap().is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn failures_are_reported_while_accept_is_still_waiting() {
    let _w = watchdog(30);
    for address in addresses() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let listener = Arc::new(
            ListenerOptions::new()
                .on_handshake_failure(move |f| {
                    let _ = tx.lock().unwrap().send(f.error.to_string());
                })
                .bind(address, KEY)
                .unwrap(),
        );
        let waiting = listener.clone();
        let acceptor = thread::spawn(move || waiting.accept().map(drop));
        let bad = Client::connect(listener.address(), b"the wrong key, long enough");
        assert!(bad.is_err());
        // The hook runs now, not when some later client is accepted.
        let reported = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(reported.contains("digest"), "{reported}");
        assert!(!acceptor.is_finished());
        listener.close();
        assert!(matches!(acceptor.join().unwrap(), Err(Error::Closed)));
    }
}

/// A hand-written server that writes its first message in the same write as
/// its verdict and answer: the client must deliver it after the handshake.
#[test]
fn bytes_right_behind_the_servers_answer_are_delivered_to_the_client() {
    let _w = watchdog(20);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let sa = server.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let ours = [b"{sha256}".as_slice(), &[9u8; 40]].concat();
        write_frame(&mut s, &[b"#CHALLENGE#".as_slice(), &ours].concat());
        assert_eq!(read_frame(&mut s), sha256_answer(KEY, &ours));
        let theirs = read_frame(&mut s);
        let theirs = theirs.strip_prefix(b"#CHALLENGE#").unwrap().to_vec();
        let mut reply = frame(b"#WELCOME#");
        reply.extend_from_slice(&frame(&sha256_answer(KEY, &theirs)));
        reply.extend_from_slice(&frame(b"first from the server"));
        s.write_all(&reply).unwrap();
        assert_eq!(read_frame(&mut s), b"#WELCOME#");
        s
    });
    let mut conn = Client::connect(sa, KEY).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"first from the server");
    drop(t.join().unwrap());
}
