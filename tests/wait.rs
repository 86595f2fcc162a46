//! wait(), WaitSet, split halves, closing from another thread, and a load
//! test of many clients through one listener.

mod common;

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{KEY, child_role, expect_success, spawn_child, watchdog};
use mpconn::{
    Client, Connection, Error, Listener, WaitSet, WaitSource, Waitable, pipe, pipe_simplex, wait,
};

#[test]
fn wait_reports_ready_connections_and_honours_timeouts() {
    let _w = watchdog(20);
    let (a, mut a_peer) = pipe().unwrap();
    let (b, mut b_peer) = pipe().unwrap();
    let (c, c_peer) = pipe().unwrap();
    let items: [&dyn Waitable; 3] = [&a, &b, &c];

    let start = Instant::now();
    assert!(
        wait(&items, Some(Duration::from_millis(100)))
            .unwrap()
            .is_empty()
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(wait(&items, Some(Duration::ZERO)).unwrap().is_empty());

    b_peer.send(&1u8).unwrap();
    assert_eq!(wait(&items, None).unwrap(), [1]);
    a_peer.send(&2u8).unwrap();
    drop(c_peer); // EOF counts as ready
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        wait(&items, Some(Duration::from_secs(1))).unwrap(),
        [0, 1, 2]
    );
}

#[test]
fn wait_sees_messages_buffered_inside_a_connection() {
    let _w = watchdog(20);
    let (mut a, mut b) = pipe().unwrap();
    b.send(&1u8).unwrap();
    b.send(&2u8).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(a.recv::<u8>().unwrap(), 1);
    // The second frame came in the same read: the socket is empty now.
    assert_eq!(wait(&[&a], Some(Duration::ZERO)).unwrap(), [0]);
    let mut set = WaitSet::new().unwrap();
    let key = set.insert(a).unwrap();
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), [key]);
    assert_eq!(set.get_mut(key).unwrap().recv::<u8>().unwrap(), 2);
    assert!(
        set.wait(Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn simplex_receivers_are_ready_only_with_a_message() {
    let (rx, mut tx) = pipe_simplex().unwrap();
    assert!(
        wait(&[&rx], Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty()
    );
    tx.send_bytes(b"now").unwrap();
    assert_eq!(wait(&[&rx], Some(Duration::from_secs(5))).unwrap(), [0]);
}

#[test]
fn wait_reports_listeners_with_clients_to_accept() {
    let _w = watchdog(20);
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    assert!(
        wait(&[&listener], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    let address = listener.address().clone();
    let client = thread::spawn(move || Client::connect(&address, KEY).unwrap());
    let mut accepted = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.is_none() && Instant::now() < deadline {
        let ready = wait(&[&listener], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ready, [0]);
        accepted = listener.try_accept().unwrap();
    }
    let mut conn = accepted.expect("handshake never completed");
    let mut client = client.join().unwrap();
    client.send(&"hi").unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "hi");
}

#[test]
fn wait_set_keys_follow_inserts_and_removes() {
    let _w = watchdog(20);
    let mut set = WaitSet::new().unwrap();
    let mut peers = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..50 {
        let (a, b) = pipe().unwrap();
        keys.push(set.insert(a).unwrap());
        peers.push(b);
    }
    assert_eq!(set.len(), 50);
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), Vec::<usize>::new());
    peers[7].send(&7u32).unwrap();
    peers[42].send(&42u32).unwrap();
    let ready = set.wait(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(ready, [keys[7], keys[42]]);
    let mut removed = set.remove(keys[7]).unwrap();
    assert_eq!(removed.recv::<u32>().unwrap(), 7);
    // Not read yet: still ready on the next wait, though no new edge came.
    assert_eq!(set.wait(Some(Duration::ZERO)).unwrap(), [keys[42]]);
    assert_eq!(set.get_mut(keys[42]).unwrap().recv::<u32>().unwrap(), 42);
    assert!(set.wait(Some(Duration::ZERO)).unwrap().is_empty());
    let (a, _b) = pipe().unwrap();
    assert_eq!(set.insert(a).unwrap(), keys[7], "keys are reused");
}

#[test]
fn split_halves_work_from_two_threads_without_interleaving() {
    let _w = watchdog(30);
    let (a, b) = pipe().unwrap();
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    let big = vec![9u8; 300_000];
    let big_check = big.clone();
    let writer = thread::spawn(move || {
        for i in 0..200u32 {
            a_tx.send(&i).unwrap();
            a_tx.send_bytes(&big).unwrap();
        }
        a_tx
    });
    let echo = thread::spawn(move || {
        for _ in 0..400 {
            let m = b_rx.recv_bytes().unwrap();
            b_tx.send_bytes(&m).unwrap();
        }
        (b_tx, b_rx)
    });
    for i in 0..200u32 {
        assert_eq!(a_rx.recv::<u32>().unwrap(), i);
        assert_eq!(a_rx.recv_bytes().unwrap(), big_check);
    }
    let a_tx = writer.join().unwrap();
    let (b_tx, b_rx) = echo.join().unwrap();
    let mut a: Connection = a_tx.reunite(a_rx).unwrap();
    let b: Connection = b_tx.reunite(b_rx).unwrap();
    drop(b);
    assert!(matches!(a.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn halves_of_different_connections_do_not_reunite() {
    let (a, _a2) = pipe().unwrap();
    let (b, _b2) = pipe().unwrap();
    let (a_tx, _a_rx) = a.split();
    let (_b_tx, b_rx) = b.split();
    assert!(a_tx.reunite(b_rx).is_err());
}

#[test]
fn a_blocked_receive_is_woken_by_close_from_another_thread() {
    let _w = watchdog(20);
    let (mut a, _b) = pipe().unwrap();
    let handle = a.close_handle();
    assert!(handle.is_open());
    let blocked = thread::spawn(move || {
        let r = a.recv_bytes();
        (r, a)
    });
    thread::sleep(Duration::from_millis(100));
    handle.close();
    let (result, mut a) = blocked.join().unwrap();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(matches!(a.send_bytes(b"x"), Err(Error::Closed)));
    assert!(matches!(a.recv::<u8>(), Err(Error::Closed)));
    assert!(!handle.is_open());
    drop(a);
    handle.close(); // a no-op once the connection is gone
}

/// Calls that wait with a deadline (a timed receive, `poll`, a handshake)
/// wake at a close from another thread and report it as the close, not
/// as their deadline: on Windows, a closed pipe's wait used to end in
/// `Error::Timeout` (a cancelled read is `ERROR_OPERATION_ABORTED`, which
/// the standard library counts as a timeout).
#[test]
fn timed_waits_and_handshakes_are_woken_by_close_from_another_thread() {
    let _w = watchdog(30);
    fn closed_while_blocked<C: Send + 'static, R: Send + 'static>(
        conn: C,
        handle: mpconn::CloseHandle,
        call: impl FnOnce(C) -> R + Send + 'static,
    ) -> R {
        let blocked = thread::spawn(move || call(conn));
        thread::sleep(Duration::from_millis(100));
        let closed = Instant::now();
        handle.close();
        let result = blocked.join().unwrap();
        assert!(closed.elapsed() < Duration::from_secs(2), "not woken");
        result
    }
    let (a, _b) = pipe().unwrap();
    let handle = a.close_handle();
    let result = closed_while_blocked(a, handle, |mut a| {
        a.recv_bytes_timeout(Duration::from_secs(10)).map(drop)
    });
    assert!(
        matches!(result, Err(Error::Closed)),
        "timed receive: {result:?}"
    );

    let (a, _b) = pipe().unwrap();
    let handle = a.close_handle();
    let result = closed_while_blocked(a, handle, |mut a| {
        let ready = a.poll(Some(Duration::from_secs(10)));
        (ready, a.recv_bytes().map(drop))
    });
    assert!(
        matches!(result, (Ok(true), Err(Error::Closed))),
        "poll: {result:?}"
    );

    // Over the platform's local transport: a Unix socket, or a named pipe.
    let listener = Listener::bind_unauthenticated(common::local_address("close")).unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || Client::connect_unauthenticated(&address).unwrap());
    let accepted = listener.accept().unwrap();
    let _silent_peer = client.join().unwrap();
    let handle = accepted.close_handle();
    let result = closed_while_blocked(accepted, handle, |c| {
        c.authenticate_as_server(KEY).map(drop)
    });
    assert!(
        matches!(result, Err(Error::Closed)),
        "handshake: {result:?}"
    );
}

#[test]
fn a_split_receiver_is_woken_by_its_sender_side_handle() {
    let _w = watchdog(20);
    let (a, _b) = pipe().unwrap();
    let (tx, mut rx) = a.split();
    let handle = tx.close_handle();
    let blocked = thread::spawn(move || rx.recv::<u64>().map(drop));
    thread::sleep(Duration::from_millis(50));
    handle.close();
    assert!(matches!(blocked.join().unwrap(), Err(Error::Closed)));
}

/// A listener and its connections in one WaitSet.
enum Slot {
    Listener(Box<Listener>),
    Peer(Connection, u32),
}

impl Waitable for Slot {
    fn ready_now(&self) -> bool {
        match self {
            Slot::Listener(l) => l.ready_now(),
            Slot::Peer(c, _) => c.ready_now(),
        }
    }
    fn wait_source(&self) -> Option<WaitSource<'_>> {
        match self {
            Slot::Listener(l) => l.wait_source(),
            Slot::Peer(c, _) => c.wait_source(),
        }
    }
}

const LOAD_PROCESSES: usize = 4;
const LOAD_CLIENTS_PER_PROCESS: usize = 25;
/// Messages per client: a million in all on Linux. Under Wine every
/// named-pipe read and write goes through the wineserver, which made the
/// full count take 200 to 300 s there; a fifth of it still keeps a hundred
/// clients busy at once and finishes in about a minute.
const LOAD_MESSAGES: u32 = if cfg!(windows) { 2_000 } else { 10_000 };

type Message = (u32, u32, Vec<u8>, u64);

fn checksum(client: u32, seq: u32, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client
        .to_le_bytes()
        .iter()
        .chain(&seq.to_le_bytes())
        .chain(payload)
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn load_client_process() {
    let address = std::env::var("MPCONN_LOAD_ADDRESS").unwrap();
    let first: u32 = std::env::var("MPCONN_LOAD_FIRST").unwrap().parse().unwrap();
    let threads: Vec<_> = (0..LOAD_CLIENTS_PER_PROCESS as u32)
        .map(|i| {
            let address = address.clone();
            thread::spawn(move || {
                let id = first + i;
                let mut conn = Client::connect(address.as_str(), KEY).unwrap();
                for seq in 0..LOAD_MESSAGES {
                    let payload = vec![(seq % 251) as u8; (seq % 97) as usize];
                    let sum = checksum(id, seq, &payload);
                    conn.send(&(id, seq, payload, sum)).unwrap();
                }
                // The server confirms the count before we leave.
                assert_eq!(conn.recv::<u32>().unwrap(), LOAD_MESSAGES);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_hundred_busy_clients_lose_no_message() {
    if child_role().as_deref() == Some("load-client") {
        return load_client_process();
    }
    let _w = watchdog(300);
    let listener = Listener::bind(common::local_address("load"), KEY).unwrap();
    let address = listener.address().to_string();
    let mut set = WaitSet::new().unwrap();
    set.insert(Slot::Listener(Box::new(listener))).unwrap();
    let children: Vec<_> = (0..LOAD_PROCESSES)
        .map(|p| {
            let first = (p * LOAD_CLIENTS_PER_PROCESS).to_string();
            spawn_child(
                "a_hundred_busy_clients_lose_no_message",
                "load-client",
                Stdio::null(),
                &[
                    ("MPCONN_LOAD_ADDRESS", &address),
                    ("MPCONN_LOAD_FIRST", &first),
                ],
            )
        })
        .collect();
    let total_clients = LOAD_PROCESSES * LOAD_CLIENTS_PER_PROCESS;
    let mut seen = vec![false; total_clients];
    let mut finished = 0;
    let mut messages = 0u64;
    while finished < total_clients {
        let ready = set.wait(Some(Duration::from_secs(30))).unwrap();
        assert!(!ready.is_empty(), "no progress for 30 s");
        for key in ready {
            let mut accepted = Vec::new();
            let mut done = false;
            match set.get_mut(key).unwrap() {
                Slot::Listener(l) => {
                    while let Some(conn) = l.try_accept().unwrap() {
                        accepted.push(conn);
                    }
                }
                Slot::Peer(conn, expected) => {
                    // Everything already here, without blocking for more.
                    while conn.poll(Some(Duration::ZERO)).unwrap() {
                        let (id, seq, payload, sum): Message = conn.recv().unwrap();
                        assert_eq!(seq, *expected, "client {id}: out of order or lost");
                        assert_eq!(sum, checksum(id, seq, &payload), "client {id} seq {seq}");
                        if seq == 0 {
                            assert!(!seen[id as usize], "client {id} twice");
                            seen[id as usize] = true;
                        }
                        *expected += 1;
                        messages += 1;
                        if *expected == LOAD_MESSAGES {
                            conn.send(&LOAD_MESSAGES).unwrap();
                            finished += 1;
                            done = true;
                            break;
                        }
                    }
                }
            }
            if done {
                set.remove(key);
            }
            for conn in accepted {
                set.insert(Slot::Peer(conn, 0)).unwrap();
            }
        }
    }
    for child in children {
        expect_success(child);
    }
    assert_eq!(messages, total_clients as u64 * u64::from(LOAD_MESSAGES));
    assert!(seen.iter().all(|&s| s));
}
