//! A listener and clients under attack: reflection by a keyless listener,
//! durations at their limits, and readers of a listener while another
//! thread is inside `accept()`. (Floods are in `flood.rs`.)

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    KEY, child_role, read_frame, sha256_answer, spawn_child, try_read_frame, watchdog, write_frame,
};
use mpconn::{AuthError, Client, Error, Listener, ListenerOptions};

const ROGUE_VAR: &str = "MPCONN_TEST_ROGUE";
const REFLECTION_TEST: &str = "a_keyless_listener_cannot_reflect_one_client_into_another";

/// Exit codes of the client processes of the reflection test.
const REFUSED: i32 = 0;
const FOOLED: i32 = 3;
const OTHER: i32 = 4;

/// Client A connects to a listener that does not hold the key. The rogue
/// sends A a challenge of its own, takes A's challenge, and hands it to
/// client B as if it were a listener's; B's answer would prove the key to
/// A. A and B are separate processes holding the key. B must refuse to
/// answer, and A must not get a connection.
#[test]
fn a_keyless_listener_cannot_reflect_one_client_into_another() {
    if let Some(role) = child_role() {
        return reflection_client(&role);
    }
    let _w = watchdog(60);
    let rogue = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = rogue.local_addr().unwrap().to_string();
    let env = [(ROGUE_VAR, address.as_str())];
    let spawn = |role| spawn_child(REFLECTION_TEST, role, Stdio::null(), &env);

    let a = spawn("client-a");
    let (mut to_a, _) = rogue.accept().unwrap();
    write_frame(
        &mut to_a,
        &[b"#CHALLENGE#{sha256}".as_slice(), &[0x5a; 40]].concat(),
    );
    let _a_answer = try_read_frame(&mut to_a).unwrap();
    let a_challenge = try_read_frame(&mut to_a).unwrap();
    assert!(a_challenge.starts_with(b"#CHALLENGE#{sha256}"));

    let b = spawn("client-b");
    let (mut to_b, _) = rogue.accept().unwrap();
    write_frame(&mut to_b, &a_challenge);
    let b_answer = try_read_frame(&mut to_b);
    if let Ok(answer) = &b_answer {
        // What the attack needs: B's answer goes to A as the listener's.
        write_frame(&mut to_a, b"#WELCOME#");
        write_frame(&mut to_a, answer);
        if try_read_frame(&mut to_a).is_ok_and(|v| v == b"#WELCOME#") {
            // A took the rogue for a key holder: give it a typed value.
            write_frame(&mut to_a, &[5, b'r', b'o', b'g', b'u', b'e']);
        }
    }
    drop((to_a, to_b));
    let a = a.wait_with_output().unwrap().status.code();
    let b = b.wait_with_output().unwrap().status.code();
    assert!(b_answer.is_err(), "B answered another client's challenge");
    assert_eq!(b, Some(REFUSED), "B must refuse with AuthError::Reflected");
    assert_eq!(a, Some(REFUSED), "A must not authenticate the rogue");
}

/// One client of the reflection test, in its own process: reports through
/// its exit code whether it authenticated the rogue.
fn reflection_client(role: &str) {
    let address = std::env::var(ROGUE_VAR).unwrap();
    let result = Client::builder()
        .handshake_timeout(Duration::from_secs(10))
        .connect(address.as_str(), KEY);
    let code = match (role, result) {
        (_, Ok(mut conn)) => {
            let value = conn.recv::<String>();
            eprintln!("{role}: authenticated a keyless listener, received {value:?}");
            FOOLED
        }
        ("client-b", Err(Error::Auth(AuthError::Reflected))) => REFUSED,
        ("client-a", Err(Error::Auth(_))) => REFUSED,
        (_, Err(e)) => {
            eprintln!("{role}: {e:?}");
            OTHER
        }
    };
    std::process::exit(code);
}

/// `Duration::MAX` anywhere means "no deadline", never a panic: an
/// unchecked `Instant + Duration` in the listener used to panic on the
/// first client, with its lock held.
#[test]
fn durations_of_any_size_mean_forever() {
    let _w = watchdog(30);
    let listener = ListenerOptions::new()
        .handshake_timeout(Duration::MAX)
        .first_answer_timeout(Duration::MAX)
        .accept_timeout(Some(Duration::MAX))
        .bind("127.0.0.1:0", KEY)
        .unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        let options = Client::builder()
            .handshake_timeout(Duration::MAX)
            .connect_timeout(Some(Duration::MAX));
        let mut first = options.connect(&address, KEY).unwrap();
        first.send(&1u32).unwrap();
        let mut second = options.connect(&address, KEY).unwrap();
        second.send_bytes(b"two").unwrap();
        let echoed: u32 = first.recv_timeout(Duration::MAX).unwrap();
        assert_eq!(echoed, 1);
        (first, second)
    });
    let mut first = listener.accept().unwrap();
    assert_eq!(first.recv_timeout::<u32>(Duration::MAX).unwrap(), 1);
    first.send(&1u32).unwrap();
    let mut second = listener.accept_timeout(Duration::MAX).unwrap();
    assert_eq!(second.recv_bytes_timeout(Duration::MAX).unwrap(), b"two");
    let ready = mpconn::wait(&[&second], Some(Duration::ZERO)).unwrap();
    assert!(ready.is_empty());
    drop(client.join().unwrap());
    assert_eq!(mpconn::wait(&[&second], Some(Duration::MAX)).unwrap(), [0]);
}

/// While one thread waits inside `accept()`, everything that only reads
/// the listener, and `try_accept()`, returns at once.
#[test]
fn reading_a_listener_never_waits_for_a_thread_inside_accept() {
    let _w = watchdog(30);
    let listener = Arc::new(Listener::bind("127.0.0.1:0", KEY).unwrap());
    let acceptor = {
        let listener = listener.clone();
        thread::spawn(move || listener.accept().map(drop))
    };
    // Let the acceptor settle into its wait.
    thread::sleep(Duration::from_millis(200));
    let (done, finished) = mpsc::channel();
    let reader = {
        let listener = listener.clone();
        thread::spawn(move || {
            assert!(listener.try_accept().unwrap().is_none());
            assert_eq!(listener.last_accepted(), None);
            #[cfg(unix)]
            assert!(std::os::fd::AsRawFd::as_raw_fd(&*listener) >= 0);
            assert_eq!(listener.stats().accepted, 0);
            assert!(!format!("{listener:?}").is_empty());
            done.send(()).unwrap();
        })
    };
    let answered = finished.recv_timeout(Duration::from_secs(5));
    listener.close();
    assert!(matches!(acceptor.join().unwrap(), Err(Error::Closed)));
    assert!(
        answered.is_ok(),
        "the readers waited for the thread inside accept()"
    );
    reader.join().unwrap();
}

/// Each connection knows its peer, whichever thread accepted it.
#[test]
fn connections_know_their_peer_address() {
    let _w = watchdog(30);
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || Client::connect(&address, KEY).unwrap());
    let accepted = listener.accept().unwrap();
    let client = client.join().unwrap();
    assert_eq!(client.peer_address().as_ref(), Some(listener.address()));
    let from = accepted.peer_address().unwrap();
    assert_eq!(Some(&from), listener.last_accepted().as_ref());
    assert_ne!(&from, listener.address());
    let (a, _b) = mpconn::pipe().unwrap();
    assert_eq!(a.peer_address(), None);
}

/// A client that answered in time is not failed because the listener was
/// busy and read its answer late: deadlines judge the client. Here the
/// listener sends its challenge, then nobody drives it for three times the
/// first-answer deadline, while the client answers after 10 ms.
#[test]
fn a_busy_listener_does_not_blame_a_client_that_answered_in_time() {
    let _w = watchdog(30);
    let listener = ListenerOptions::new()
        .first_answer_timeout(Duration::from_millis(100))
        .bind("127.0.0.1:0", KEY)
        .unwrap();
    let mpconn::Address::Tcp(address) = *listener.address() else {
        panic!("a TCP listener has a TCP address")
    };
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect(address).unwrap();
        let challenge = read_frame(&mut s);
        thread::sleep(Duration::from_millis(10));
        write_frame(
            &mut s,
            &sha256_answer(KEY, &challenge[b"#CHALLENGE#".len()..]),
        );
        assert_eq!(read_frame(&mut s), b"#WELCOME#");
        let ours = [b"{sha256}".as_slice(), &[0x42; 40]].concat();
        write_frame(&mut s, &[b"#CHALLENGE#".as_slice(), &ours].concat());
        assert_eq!(read_frame(&mut s), sha256_answer(KEY, &ours));
        write_frame(&mut s, b"#WELCOME#");
        write_frame(&mut s, b"served");
        s
    });
    // One step: the client is accepted and challenged, its answer not read.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(5) {
        assert!(listener.try_accept().unwrap().is_none());
    }
    thread::sleep(Duration::from_millis(300));
    let mut conn = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"served");
    assert_eq!(listener.stats().failed_handshakes, 0);
    drop(client.join().unwrap());
}

/// With one pending slot: a client that has answered the challenge holds
/// the key, and a newcomer never evicts it (it waits for that client's
/// deadline); a client that has said nothing is evicted for the newcomer.
/// (Unix: the Windows listener does not evict.)
#[cfg(unix)]
#[test]
fn eviction_spares_clients_that_proved_the_key() {
    let _w = watchdog(30);
    for answers in [true, false] {
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = failures.clone();
        let listener = Arc::new(
            ListenerOptions::new()
                .max_pending_handshakes(1)
                .handshake_timeout(Duration::from_millis(600))
                .first_answer_timeout(Duration::from_secs(5))
                .on_handshake_failure(move |f| seen.lock().unwrap().push(f.error.to_string()))
                .bind("127.0.0.1:0", KEY)
                .unwrap(),
        );
        let mpconn::Address::Tcp(address) = *listener.address() else {
            panic!("a TCP listener has a TCP address")
        };
        let acceptor = {
            let listener = listener.clone();
            thread::spawn(move || listener.accept_timeout(Duration::from_secs(10)))
        };
        let mut first = TcpStream::connect(address).unwrap();
        let challenge = read_frame(&mut first);
        if answers {
            write_frame(
                &mut first,
                &sha256_answer(KEY, &challenge[b"#CHALLENGE#".len()..]),
            );
            assert_eq!(read_frame(&mut first), b"#WELCOME#");
        }
        let start = Instant::now();
        let newcomer = Client::builder()
            .handshake_timeout(Duration::from_secs(5))
            .connect(listener.address(), KEY);
        let waited = start.elapsed();
        assert!(newcomer.is_ok(), "answers {answers}: {newcomer:?}");
        assert!(acceptor.join().unwrap().is_ok());
        let stats = listener.stats();
        let failures = failures.lock().unwrap();
        assert_eq!(
            stats.failed_handshakes, 1,
            "answers {answers}: {failures:?}"
        );
        if answers {
            // Served only once the first client's whole deadline ran out.
            assert_eq!(stats.evicted_handshakes, 0);
            assert!(failures[0].contains("deadline"), "{failures:?}");
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
        } else {
            assert_eq!(stats.evicted_handshakes, 1);
            assert!(failures[0].contains("needed its slot"), "{failures:?}");
        }
        drop(first);
    }
}

/// Several threads may accept at once: one drives the handshakes, another
/// still keeps its own deadline, and every client is handed to one of them.
#[test]
fn several_threads_accept_at_once() {
    let _w = watchdog(30);
    let listener = Arc::new(Listener::bind("127.0.0.1:0", KEY).unwrap());
    let driver = {
        let listener = listener.clone();
        thread::spawn(move || listener.accept().map(|mut c| c.recv::<u32>().unwrap()))
    };
    thread::sleep(Duration::from_millis(100));
    // A second acceptor with a deadline of its own: it times out, though
    // the first one is inside accept() with none.
    let start = Instant::now();
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() < Duration::from_secs(5));
    let second = {
        let listener = listener.clone();
        thread::spawn(move || listener.accept().map(|mut c| c.recv::<u32>().unwrap()))
    };
    let address = listener.address().clone();
    for i in 0..2u32 {
        Client::connect(&address, KEY).unwrap().send(&i).unwrap();
    }
    let mut got = [
        driver.join().unwrap().unwrap(),
        second.join().unwrap().unwrap(),
    ];
    got.sort_unstable();
    assert_eq!(got, [0, 1]);
}
