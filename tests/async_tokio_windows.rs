//! The tokio connections on Windows (under Wine in CI): named pipes, whose
//! async side is mpconn's own (non-blocking pipe calls woken through the
//! system thread pool), TCP through tokio's reactor, async and blocking
//! ends against each other, and cancellation on a pipe.

#![cfg(all(windows, feature = "tokio"))]

mod common;

use std::time::Duration;

use common::{KEY, local_address, watchdog};
use mpconn::tokio::{Client, Connection, Listener};
use mpconn::{Error, ListenerOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A named pipe, and TCP.
fn addresses(tag: &str) -> Vec<mpconn::Address> {
    vec![local_address(tag), "127.0.0.1:0".parse().unwrap()]
}

/// Bytes that tell one message from another and show where a cut fell.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(37))
        .collect()
}

#[test]
fn pipe_messages_keep_their_bounds_empty_and_large_alike() {
    let _w = watchdog(60);
    runtime().block_on(async {
        let address = local_address("tokio-bounds");
        let listener = Listener::bind(address.clone(), KEY).unwrap();
        // Larger than the pipe's 64 KiB buffer, so a send waits for the
        // reader, and several messages back to back.
        let sizes = [0, 1, 5, 65_536, 65_537, 3_000_000, 0, 17];
        let server = async {
            let mut conn = listener.accept().await.unwrap();
            for (i, &len) in sizes.iter().enumerate() {
                conn.send_bytes(&pattern(len, i as u8)).await.unwrap();
            }
            let echoed: Vec<u32> = conn.recv().await.unwrap();
            assert_eq!(echoed.len(), sizes.len());
        };
        let client = async {
            let mut conn = Client::connect(address.clone(), KEY).await.unwrap();
            let mut lens = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                let got = conn.recv_bytes().await.unwrap();
                assert_eq!(got, pattern(len, i as u8), "message {i}");
                lens.push(got.len() as u32);
            }
            conn.send(&lens).await.unwrap();
            assert!(matches!(conn.recv_bytes().await, Err(Error::Eof)));
        };
        tokio::join!(server, client);
    });
}

#[test]
fn a_wrong_key_fails_on_a_pipe_and_the_listener_goes_on() {
    let _w = watchdog(30);
    runtime().block_on(async {
        let address = local_address("tokio-wrong-key");
        let listener = Listener::bind(address.clone(), KEY).unwrap();
        let accept = async { listener.accept().await.unwrap() };
        let clients = async {
            let wrong = Client::connect(address.clone(), b"not the key, but long enough").await;
            assert!(matches!(wrong, Err(Error::Auth(_))), "{wrong:?}");
            Client::connect(address.clone(), KEY).await.unwrap()
        };
        let (mut a, mut b) = tokio::join!(accept, clients);
        b.send(&"after the failure").await.unwrap();
        assert_eq!(a.recv::<String>().await.unwrap(), "after the failure");
        assert_eq!(listener.stats().failed_handshakes, 1);
    });
}

#[test]
fn several_clients_at_once_on_a_pipe_and_on_tcp() {
    let _w = watchdog(60);
    runtime().block_on(async {
        for address in addresses("tokio-many") {
            let listener = Listener::bind(address.clone(), KEY).unwrap();
            let bound = listener.address().clone();
            let server = async {
                let mut conns = Vec::new();
                for _ in 0..8 {
                    conns.push(listener.accept().await.unwrap());
                }
                for conn in &mut conns {
                    let n: u32 = conn.recv().await.unwrap();
                    conn.send(&(n * 2)).await.unwrap();
                }
            };
            let clients = futures_util::future::join_all((0..8u32).map(|i| {
                let bound = bound.clone();
                async move {
                    let mut conn = Client::connect(bound, KEY).await.unwrap();
                    conn.send(&i).await.unwrap();
                    assert_eq!(conn.recv::<u32>().await.unwrap(), i * 2);
                }
            }));
            tokio::join!(server, clients);
            assert_eq!(listener.stats().accepted, 8, "{address}");
        }
    });
}

#[test]
fn split_halves_send_and_receive_at_once_on_several_threads() {
    let _w = watchdog(120);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for address in addresses("tokio-duplex") {
            let listener = std::sync::Arc::new(Listener::bind(address.clone(), KEY).unwrap());
            let bound = listener.address().clone();
            // Both futures are Send: they run on the runtime's threads.
            let server = tokio::spawn({
                let listener = listener.clone();
                async move { listener.accept().await }
            });
            let client = tokio::spawn(Client::connect(bound, KEY));
            let server = server.await.unwrap().unwrap();
            let client = client.await.unwrap().unwrap();
            // Each end sends large messages while it receives the other's:
            // neither pipe nor socket can hold them, so a send that waited
            // in place of a receive would deadlock both ends.
            let (mut senders, mut receivers) = (Vec::new(), Vec::new());
            for (conn, seed) in [(server, 1u8), (client, 2u8)] {
                let (mut tx, mut rx) = conn.split();
                senders.push(tokio::spawn(async move {
                    for i in 0..20u8 {
                        tx.send_bytes(&pattern(250_000, seed ^ i)).await.unwrap();
                    }
                    // Kept until the other end has read everything.
                    tx
                }));
                receivers.push(tokio::spawn(async move {
                    for i in 0..20u8 {
                        let got = rx.recv_bytes().await.unwrap();
                        assert_eq!(got, pattern(250_000, (3 - seed) ^ i), "message {i}");
                    }
                }));
            }
            for receiver in receivers {
                receiver.await.unwrap();
            }
            for sender in senders {
                sender.await.unwrap();
            }
        }
    });
}

#[test]
fn an_async_client_talks_to_a_blocking_listener() {
    let _w = watchdog(60);
    for address in addresses("tokio-async-client") {
        let listener = mpconn::Listener::bind(address.clone(), KEY).unwrap();
        let bound = listener.address().clone();
        let server = std::thread::spawn(move || {
            let mut conn = listener.accept().unwrap();
            let got: String = conn.recv().unwrap();
            conn.send(&got.to_uppercase()).unwrap();
            conn.send_bytes(&pattern(200_000, 9)).unwrap();
            // Blocks until the client has read what came before.
            assert_eq!(conn.recv_bytes().unwrap(), b"done");
        });
        runtime().block_on(async {
            let mut conn = Client::connect(bound.clone(), KEY).await.unwrap();
            conn.send(&"hello").await.unwrap();
            assert_eq!(conn.recv::<String>().await.unwrap(), "HELLO");
            assert_eq!(conn.recv_bytes().await.unwrap(), pattern(200_000, 9));
            conn.send_bytes(b"done").await.unwrap();
            assert!(
                matches!(conn.recv_bytes().await, Err(Error::Eof)),
                "{bound}"
            );
        });
        server.join().unwrap();
    }
}

#[test]
fn a_blocking_client_talks_to_an_async_listener() {
    let _w = watchdog(60);
    for address in addresses("tokio-async-listener") {
        let rt = runtime();
        let listener = rt.block_on(async { Listener::bind(address.clone(), KEY).unwrap() });
        let bound = listener.address().clone();
        let client = std::thread::spawn(move || {
            let mut conn = mpconn::Client::connect(bound, KEY).unwrap();
            conn.send(&41u32).unwrap();
            assert_eq!(conn.recv::<u32>().unwrap(), 42);
            assert_eq!(conn.recv_bytes().unwrap(), pattern(300_000, 3));
        });
        rt.block_on(async {
            let mut conn = listener.accept().await.unwrap();
            let n: u32 = conn.recv().await.unwrap();
            conn.send(&(n + 1)).await.unwrap();
            conn.send_bytes(&pattern(300_000, 3)).await.unwrap();
            assert!(
                matches!(conn.recv_bytes().await, Err(Error::Eof)),
                "{address}"
            );
        });
        client.join().unwrap();
    }
}

#[test]
fn closing_the_listener_wakes_a_waiting_accept_and_the_timeout_holds() {
    let _w = watchdog(30);
    runtime().block_on(async {
        for address in addresses("tokio-close") {
            let listener = Listener::bind(address.clone(), KEY).unwrap();
            let closer = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                listener.close();
            };
            let (accepted, ()) = tokio::join!(listener.accept(), closer);
            assert!(matches!(accepted, Err(Error::Closed)), "{address}");

            let timed = Listener::bind_with(
                ListenerOptions::new().accept_timeout(Some(Duration::from_millis(100))),
                address_again(&address),
                KEY,
            )
            .unwrap();
            let started = std::time::Instant::now();
            assert!(matches!(timed.accept().await, Err(Error::Timeout)));
            assert!(started.elapsed() >= Duration::from_millis(90));
        }
    });
}

/// A fresh address of the same kind: a new pipe name, or a new TCP port.
fn address_again(address: &mpconn::Address) -> mpconn::Address {
    match address {
        mpconn::Address::Pipe(_) => local_address("tokio-again"),
        _ => "127.0.0.1:0".parse().unwrap(),
    }
}

#[test]
fn a_pipe_receive_dropped_again_and_again_loses_nothing() {
    let _w = watchdog(60);
    runtime().block_on(async {
        let (a, b) = mpconn::pipe().unwrap();
        let mut a = Connection::from_blocking(a).unwrap();
        // Dropped while nothing has come: the readiness probe stays in
        // flight, and what comes next is received whole.
        let dropped = a.recv_bytes_timeout(Duration::from_millis(30)).await;
        assert!(matches!(dropped, Err(Error::Timeout)), "{dropped:?}");
        let mut buf = vec![0; 16];
        tokio::select! {
            _ = a.recv_bytes_into(&mut buf) => panic!("nothing was sent"),
            _ = tokio::time::sleep(Duration::from_millis(30)) => {}
        }
        // A writer that sends at its own pace, empty messages among the
        // rest, while every receive races a short timer.
        let count = 300usize;
        let writer = std::thread::spawn(move || {
            let mut b = b;
            for i in 0..count {
                let len = [0, 1, 100, 70_000][i % 4];
                b.send_bytes(&pattern(len, i as u8)).unwrap();
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            b
        });
        let mut got = 0;
        let mut dropped = 0;
        while got < count {
            tokio::select! {
                m = a.recv_bytes() => {
                    let len = [0, 1, 100, 70_000][got % 4];
                    assert_eq!(m.unwrap(), pattern(len, got as u8), "message {got}");
                    got += 1;
                }
                _ = tokio::time::sleep(Duration::from_micros(300)) => dropped += 1,
            }
        }
        assert!(
            dropped > 0,
            "no receive was dropped: the test proved nothing"
        );
        let mut b = writer.join().unwrap();
        // The connection still works both ways, blocking on the far end.
        a.send(&"still in step").await.unwrap();
        assert_eq!(b.recv::<String>().unwrap(), "still in step");
    });
}

#[test]
fn a_pipe_send_dropped_while_the_pipe_is_full_is_delivered_whole() {
    let _w = watchdog(60);
    runtime().block_on(async {
        let (a, b) = mpconn::pipe().unwrap();
        let mut a = Connection::from_blocking(a).unwrap();
        let big = pattern(4_000_000, 1);
        // Nobody reads: the message is committed to the pipe, and the send
        // is dropped by select! while the pipe has not taken it.
        tokio::select! {
            _ = a.send_bytes(&big) => panic!("the pipe took 4 MB with nobody reading"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        // And a send dropped before it could begin (the first is still in
        // flight) sends nothing.
        let dropped = a
            .send_bytes_timeout(b"never", Duration::from_millis(30))
            .await;
        assert!(matches!(dropped, Err(Error::Timeout)), "{dropped:?}");
        let expected = big.clone();
        let reader = std::thread::spawn(move || {
            let mut b = b;
            assert_eq!(b.recv_bytes().unwrap(), expected);
            assert_eq!(b.recv_bytes().unwrap(), b"after");
            b
        });
        a.send_bytes(b"after").await.unwrap();
        let mut b = reader.join().unwrap();
        // A finished send stays sent when the connection goes at once.
        a.send_bytes(b"last").await.unwrap();
        drop(a);
        assert_eq!(b.recv_bytes().unwrap(), b"last");
        assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    });
}

#[test]
fn a_handshake_waits_behind_a_pipe_message_still_in_flight() {
    let _w = watchdog(60);
    let (a, b) = mpconn::pipe().unwrap();
    // The ends of pipe() are trusted; an upgrade needs unverified ones.
    let a = mpconn::Connection::from(std::os::windows::io::OwnedHandle::try_from(a).unwrap());
    let b = mpconn::Connection::from(std::os::windows::io::OwnedHandle::try_from(b).unwrap());
    let big = pattern(3_000_000, 6);
    let peer = {
        let expected = big.clone();
        std::thread::spawn(move || {
            let mut b = b;
            // Late: the server's challenge waits behind the big message.
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(b.recv_bytes().unwrap(), expected);
            let mut b = b.authenticate_as_client(KEY).unwrap();
            assert_eq!(b.recv::<String>().unwrap(), "through");
        })
    };
    runtime().block_on(async {
        let mut a = Connection::from_blocking(a).unwrap();
        let dropped = a.send_bytes_timeout(&big, Duration::from_millis(20)).await;
        assert!(matches!(dropped, Err(Error::Timeout)), "{dropped:?}");
        let mut a = a.authenticate_as_server(KEY).await.unwrap();
        a.send(&"through").await.unwrap();
    });
    peer.join().unwrap();
}

#[test]
fn into_blocking_finishes_a_pipe_message_still_in_flight() {
    let _w = watchdog(60);
    let rt = runtime();
    let (a, b) = mpconn::pipe().unwrap();
    let big = pattern(2_000_000, 4);
    let reader = {
        let expected = big.clone();
        std::thread::spawn(move || {
            let mut b = b;
            // Late, so that the message waits in flight meanwhile.
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(b.recv_bytes().unwrap(), expected);
            assert_eq!(b.recv_bytes().unwrap(), b"blocking");
        })
    };
    let mut a = rt.block_on(async {
        let mut a = Connection::from_blocking(a).unwrap();
        let dropped = a.send_bytes_timeout(&big, Duration::from_millis(20)).await;
        assert!(matches!(dropped, Err(Error::Timeout)), "{dropped:?}");
        a.into_blocking().await.unwrap()
    });
    a.send_bytes(b"blocking").unwrap();
    reader.join().unwrap();
}

#[test]
fn an_empty_message_a_blocking_wait_took_survives_the_move_to_async() {
    let _w = watchdog(30);
    let (a, mut b) = mpconn::pipe().unwrap();
    b.send_bytes(b"").unwrap();
    b.send_bytes(b"second").unwrap();
    // The readiness probe of wait() takes an empty message off the pipe,
    // and the pipe keeps it.
    let ready = mpconn::wait(&[&a as &dyn mpconn::Waitable], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ready.len(), 1);
    runtime().block_on(async {
        let mut a = Connection::from_blocking(a).unwrap();
        assert!(a.poll(Some(Duration::from_secs(5))).await.unwrap());
        assert_eq!(a.recv_bytes().await.unwrap(), b"");
        assert_eq!(a.recv_bytes().await.unwrap(), b"second");
        // Nothing more: the poll waits out its timeout.
        let started = std::time::Instant::now();
        assert!(!a.poll(Some(Duration::from_millis(100))).await.unwrap());
        assert!(started.elapsed() >= Duration::from_millis(90));
        drop(b);
        assert!(a.poll(Some(Duration::from_secs(5))).await.unwrap());
        assert!(matches!(a.recv_bytes().await, Err(Error::Eof)));
    });
}

#[test]
fn a_connection_moves_between_blocking_and_async_over_tcp() {
    let _w = watchdog(30);
    let listener = mpconn::Listener::bind("127.0.0.1:0", KEY).unwrap();
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || mpconn::Client::connect(bound, KEY).unwrap());
    let blocking = listener.accept().unwrap();
    let mut peer = client.join().unwrap();
    let mut batch = peer.batch();
    for i in 0..3u32 {
        batch.send(&i).unwrap();
    }
    batch.flush().unwrap();
    drop(batch);
    let mut blocking = blocking;
    // The first receive reads all three frames ahead.
    assert_eq!(blocking.recv::<u32>().unwrap(), 0);
    let rt = runtime();
    let mut blocking = rt.block_on(async {
        let mut conn = Connection::from_blocking(blocking).unwrap();
        assert_eq!(conn.recv::<u32>().await.unwrap(), 1);
        conn.into_blocking().await.unwrap()
    });
    assert_eq!(blocking.recv::<u32>().unwrap(), 2);
    blocking.send(&7u32).unwrap();
    assert_eq!(peer.recv::<u32>().unwrap(), 7);
}

#[test]
fn a_plain_handle_cannot_become_async() {
    let _w = watchdog(30);
    let (reader, _writer) = std::io::pipe().unwrap();
    let conn = mpconn::Connection::from(std::os::windows::io::OwnedHandle::from(reader));
    runtime().block_on(async {
        let moved = Connection::from_blocking(conn.dangerous_trust_without_authentication());
        match moved {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported),
            other => panic!("{other:?}"),
        }
    });
}
