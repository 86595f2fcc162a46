//! The tokio connections: listener and client over TCP and Unix sockets
//! (named pipes on Windows), cancellation, conversion to and from blocking
//! connections. `async_tokio_windows.rs` has the Windows-only ones.

#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::{KEY, watchdog};
use mpconn::tokio::{Client, Connection, Listener};
use mpconn::{Error, Unverified};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// TCP, and a Unix socket (a named pipe on Windows).
fn addresses(tag: &str) -> Vec<mpconn::Address> {
    vec!["127.0.0.1:0".parse().unwrap(), common::local_address(tag)]
}

/// A connected pair of raw sockets: Unix-domain on Unix, TCP over loopback
/// on Windows.
#[cfg(unix)]
type Raw = std::os::unix::net::UnixStream;
#[cfg(windows)]
type Raw = std::net::TcpStream;

fn raw_socket_pair() -> (Raw, Raw) {
    #[cfg(unix)]
    return Raw::pair().unwrap();
    #[cfg(windows)]
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = Raw::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }
}

/// A blocking connection over a raw socket.
fn adopt(socket: Raw) -> mpconn::Connection<Unverified> {
    #[cfg(unix)]
    return mpconn::Connection::from(std::os::fd::OwnedFd::from(socket));
    #[cfg(windows)]
    return mpconn::Connection::from(std::os::windows::io::OwnedSocket::from(socket));
}

#[test]
fn a_client_and_a_listener_exchange_typed_messages_over_tcp_and_unix() {
    let _w = watchdog(30);
    runtime().block_on(async {
        for address in addresses("tokio-typed") {
            let listener = Listener::bind(address.clone(), KEY).unwrap();
            let bound = listener.address().clone();
            let server = async {
                let mut conn = listener.accept().await.unwrap();
                let got: (u32, String) = conn.recv().await.unwrap();
                conn.send(&(got.0 + 1, got.1.to_uppercase())).await.unwrap();
                conn.send_bytes(&vec![7; 300_000]).await.unwrap();
            };
            let client = async {
                let mut conn = Client::connect(bound.clone(), KEY).await.unwrap();
                conn.send(&(41u32, "hello".to_string())).await.unwrap();
                let back: (u32, String) = conn.recv().await.unwrap();
                assert_eq!(back, (42, "HELLO".to_string()));
                assert_eq!(conn.recv_bytes().await.unwrap(), vec![7; 300_000]);
                assert!(matches!(conn.recv_bytes().await, Err(Error::Eof)));
            };
            tokio::join!(server, client);
            assert_eq!(listener.stats().accepted, 1, "{address}");
        }
    });
}

#[test]
fn a_wrong_key_fails_on_both_sides_and_the_listener_goes_on() {
    let _w = watchdog(30);
    runtime().block_on(async {
        let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
        let bound = listener.address().clone();
        let accept = async { listener.accept().await.unwrap() };
        let clients = async {
            let wrong = Client::connect(bound.clone(), b"not the key, but long enough").await;
            assert!(matches!(wrong, Err(Error::Auth(_))), "{wrong:?}");
            Client::connect(bound.clone(), KEY).await.unwrap()
        };
        let (mut a, mut b) = tokio::join!(accept, clients);
        a.send(&1u8).await.unwrap();
        assert_eq!(b.recv::<u8>().await.unwrap(), 1);
        assert_eq!(listener.stats().failed_handshakes, 1);
    });
}

/// A raw socket at the far end, to cut a frame wherever a test likes.
fn raw_pair() -> (Raw, Connection<Unverified>) {
    let (raw, ours) = raw_socket_pair();
    (raw, Connection::from_blocking(adopt(ours)).unwrap())
}

#[test]
fn a_receive_dropped_half_way_loses_nothing() {
    use std::io::Write;
    let _w = watchdog(30);
    runtime().block_on(async {
        let (mut raw, conn) = raw_pair();
        let mut conn = conn.dangerous_trust_without_authentication();
        let message: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let wire = common::frame(&message);
        // Each kind of receive is dropped by a timeout, then by select!,
        // after a part of the frame (a part of the header, first) came.
        for cut in [2, 4, 1000, 200_000] {
            // The writer runs on a thread: a part larger than the socket
            // takes waits for the receives below to read.
            let part = wire[..cut].to_vec();
            let mut w = raw.try_clone().unwrap();
            let first = std::thread::spawn(move || w.write_all(&part).unwrap());
            let dropped = tokio::time::timeout(Duration::from_millis(20), conn.recv_bytes()).await;
            assert!(dropped.is_err(), "cut {cut}: the receive should still wait");
            let mut buf = vec![0; message.len()];
            tokio::select! {
                _ = conn.recv_bytes_into(&mut buf) => panic!("cut {cut}: nothing whole yet"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            first.join().unwrap();
            let rest = wire[cut..].to_vec();
            let mut w = raw.try_clone().unwrap();
            let second = std::thread::spawn(move || w.write_all(&rest).unwrap());
            assert_eq!(conn.recv_bytes().await.unwrap(), message, "cut {cut}");
            second.join().unwrap();
        }
        // A typed receive too.
        let typed = common::frame(
            &bincode::serde::encode_to_vec((7u64, "seven"), bincode::config::standard()).unwrap(),
        );
        raw.write_all(&typed[..5]).unwrap();
        let dropped = conn
            .recv_timeout::<(u64, String)>(Duration::from_millis(20))
            .await;
        assert!(matches!(dropped, Err(Error::Timeout)), "{dropped:?}");
        raw.write_all(&typed[5..]).unwrap();
        assert_eq!(
            conn.recv::<(u64, String)>().await.unwrap(),
            (7, "seven".to_string())
        );
    });
}

/// A receive that drained the socket waits for the next event rather than
/// trying again first: each message arriving after that still wakes it,
/// whether it comes whole, in pieces, right behind another, or larger than
/// one read takes (a full read has not drained the socket).
#[test]
fn messages_arriving_one_by_one_each_wake_the_receive() {
    use std::io::Write;
    let _w = watchdog(30);
    runtime().block_on(async {
        let (raw, conn) = raw_pair();
        let mut conn = conn.dangerous_trust_without_authentication();
        let big = vec![7u8; 20_000];
        let expected = big.clone();
        // The writer goes on only once the messages before are received, so
        // that no later event can stand in for a wake-up that went missing.
        let (received, next) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut raw = raw;
            for i in 0..300u32 {
                let wire = common::frame(&i.to_be_bytes());
                match i % 4 {
                    0 => raw.write_all(&wire).unwrap(),
                    1 => {
                        raw.write_all(&wire[..3]).unwrap();
                        std::thread::sleep(Duration::from_micros(200));
                        raw.write_all(&wire[3..]).unwrap();
                    }
                    2 => {
                        let two = [wire.clone(), common::frame(b"next")].concat();
                        raw.write_all(&two).unwrap();
                    }
                    _ => raw
                        .write_all(&[wire, common::frame(&big)].concat())
                        .unwrap(),
                }
                next.recv().unwrap();
            }
        });
        for i in 0..300u32 {
            assert_eq!(conn.recv_bytes().await.unwrap(), i.to_be_bytes(), "{i}");
            match i % 4 {
                2 => assert_eq!(conn.recv_bytes().await.unwrap(), b"next"),
                3 => assert_eq!(conn.recv_bytes().await.unwrap(), expected),
                _ => {}
            }
            received.send(()).unwrap();
        }
        writer.join().unwrap();
        assert!(matches!(conn.recv_bytes().await, Err(Error::Eof)));
    });
}

#[test]
fn a_send_dropped_half_way_is_finished_by_the_next_send() {
    let _w = watchdog(30);
    runtime().block_on(async {
        let (a, b) = mpconn::pipe().unwrap();
        let mut a = Connection::from_blocking(a).unwrap();
        let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
        // Nobody reads yet: the socket takes a part of the message, and the
        // send times out with the rest unsent.
        let dropped = a.send_bytes_timeout(&big, Duration::from_millis(50)).await;
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
        a.send_bytes(b"last").await.unwrap();
        assert_eq!(b.recv_bytes().unwrap(), b"last");
    });
}

#[test]
fn a_connection_moves_between_blocking_and_async_with_what_it_read_ahead() {
    let _w = watchdog(30);
    let (mut blocking, mut peer) = mpconn::pipe().unwrap();
    // Three messages in one write: the first receive reads all of them.
    let mut batch = peer.batch();
    for i in 0..3u32 {
        batch.send(&i).unwrap();
    }
    batch.flush().unwrap();
    drop(batch);
    assert_eq!(blocking.recv::<u32>().unwrap(), 0);
    let rt = runtime();
    let blocking = rt.block_on(async {
        let mut conn = Connection::from_blocking(blocking).unwrap();
        assert_eq!(conn.recv::<u32>().await.unwrap(), 1);
        // The third message is read ahead again, with the fourth.
        peer.send(&3u32).unwrap();
        peer.send(&4u32).unwrap();
        assert_eq!(conn.recv::<u32>().await.unwrap(), 2);
        assert!(conn.poll(Some(Duration::from_secs(5))).await.unwrap());
        conn.into_blocking().await.unwrap()
    });
    let mut blocking = blocking;
    assert_eq!(blocking.recv::<u32>().unwrap(), 3);
    assert_eq!(blocking.recv::<u32>().unwrap(), 4);
    blocking.send(&5u32).unwrap();
    assert_eq!(peer.recv::<u32>().unwrap(), 5);
}

#[test]
fn an_unverified_connection_authenticates_without_blocking() {
    let _w = watchdog(30);
    runtime().block_on(async {
        let (a, b) = raw_socket_pair();
        let adopt = |s| Connection::from_blocking(adopt(s)).unwrap();
        let (a, b) = (adopt(a), adopt(b));
        let (a, b) = tokio::join!(a.authenticate_as_server(KEY), b.authenticate_as_client(KEY));
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        a.send(&"proved").await.unwrap();
        assert_eq!(b.recv::<String>().await.unwrap(), "proved");
    });
}

#[test]
fn a_host_name_is_resolved_off_the_task_and_each_address_tried() {
    let _w = watchdog(30);
    runtime().block_on(async {
        let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
        let port = match listener.address() {
            mpconn::Address::Tcp(sa) => sa.port(),
            other => panic!("{other:?}"),
        };
        // "localhost" may resolve to ::1 first, where nothing listens.
        let name = format!("localhost:{port}");
        let (accepted, connected) =
            tokio::join!(listener.accept(), Client::connect(name.as_str(), KEY));
        let (mut a, mut b) = (accepted.unwrap(), connected.unwrap());
        b.send(&9u16).await.unwrap();
        assert_eq!(a.recv::<u16>().await.unwrap(), 9);
        let unknown = Client::connect("no-such-host.invalid:1", KEY).await;
        assert!(
            matches!(unknown, Err(Error::Io(_) | Error::Address(_))),
            "{unknown:?}"
        );
    });
}

/// Receives message `i` the way `i` picks: whole, or into a buffer; both
/// are cancellation safe.
async fn recv_either(conn: &mut Connection, i: u32, buf: &mut [u8]) -> mpconn::Result<Vec<u8>> {
    match i % 2 {
        0 => conn.recv_bytes().await,
        _ => {
            let n = conn.recv_bytes_into(buf).await?;
            Ok(buf[..n].to_vec())
        }
    }
}

/// The receive side of the proof: message `next` is whole, in order.
fn expect_message(message: &[u8], next: u32) {
    let (stream, seq) = common::check_message(message).unwrap();
    assert_eq!(
        (stream, seq),
        (0, next),
        "a message lost, repeated or reordered"
    );
    assert_eq!(
        message.len(),
        common::CHECKSUMMED_HEADER + common::varied_size(seq)
    );
}

/// Every message arrives in two parts, and a receive that had the first
/// part to read is dropped by `select!` (a ticker wins the race) before the
/// second is written, each time: the next receive still returns every
/// message once, whole and in order.
#[test]
fn receives_dropped_by_select_mid_message_lose_and_repeat_nothing() {
    const COUNT: u32 = 300;
    let _w = watchdog(60);
    runtime().block_on(async {
        let (raw, conn) = raw_pair();
        let mut conn = conn.dangerous_trust_without_authentication();
        // A frame header read from the middle of a message is refused at
        // once rather than waited for.
        conn.set_max_message_size(256 * 1024);
        let writer = common::CutWriter::start(raw, COUNT);
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        let mut buf = vec![0; 256 * 1024];
        let (mut next, mut released, mut dropped) = (0, None, 0);
        while next < COUNT {
            // The first part is in the socket before the receive below is
            // first polled, and the second cannot be, so the ticker wins.
            let armed = writer.first_part_written(next) && released != Some(next);
            tokio::select! {
                biased;
                message = recv_either(&mut conn, next, &mut buf) => {
                    expect_message(&message.unwrap(), next);
                    next += 1;
                }
                _ = ticker.tick() => if armed {
                    dropped += 1;
                    released = Some(next);
                    writer.go();
                }
            }
        }
        assert_eq!(dropped, COUNT);
        writer.join();
    });
}

/// A peer streams checksummed messages as fast as it can while each
/// receive races a ticker in `select!`, for thousands of rounds: every
/// message arrives once, whole and in order, however many receives the
/// ticker dropped.
#[test]
fn a_stream_received_in_select_against_a_ticker_arrives_whole_and_in_order() {
    const COUNT: u32 = 3000;
    let _w = watchdog(60);
    let (a, b) = mpconn::pipe().unwrap();
    let peer = std::thread::spawn(move || {
        let mut b = b;
        for i in 0..COUNT {
            b.send_bytes(&common::checksummed(0, i, common::varied_size(i)))
                .unwrap();
        }
    });
    runtime().block_on(async {
        let mut conn = Connection::from_blocking(a).unwrap();
        let mut ticker = tokio::time::interval(Duration::from_micros(200));
        let mut buf = vec![0; 256 * 1024];
        let (mut next, mut ticks) = (0, 0u64);
        while next < COUNT {
            tokio::select! {
                message = recv_either(&mut conn, next, &mut buf) => {
                    expect_message(&message.unwrap(), next);
                    next += 1;
                }
                _ = ticker.tick() => ticks += 1,
            }
        }
        assert!(matches!(conn.recv_bytes().await, Err(Error::Eof)));
        eprintln!("{COUNT} messages, {ticks} receives dropped for the ticker");
    });
    peer.join().unwrap();
}

/// Every future of the async API is `Send`, so that it can be spawned on a
/// multi-threaded runtime: this file does not compile otherwise. Checked
/// with the concrete runtime: a check generic over it passed while
/// `Listener::accept` was `Send` for one lifetime only, which
/// `tokio::spawn` refused (rust-lang/rust#100013).
#[allow(dead_code)]
fn every_future_is_send(
    listener: std::sync::Arc<Listener>,
    unverified_listener: std::sync::Arc<Listener<Unverified>>,
    mut conn: Connection,
    unverified: Connection<Unverified>,
    other: Connection<Unverified>,
) {
    fn send<F: std::future::Future + Send>(_: F) {}
    send(async move { listener.accept().await });
    send(async move { unverified_listener.accept().await });
    send(async move { Client::connect("127.0.0.1:1", KEY).await });
    send(async move { Client::connect_unauthenticated("127.0.0.1:1").await });
    send(async move { unverified.authenticate_as_server(KEY).await });
    send(async move { other.authenticate_as_client(KEY).await });
    send(async move {
        let t = Duration::ZERO;
        let mut buf = [0u8; 4];
        conn.send(&1u8).await?;
        conn.send_bytes(b"").await?;
        conn.send_bytes_timeout(b"", t).await?;
        conn.flush().await?;
        conn.recv::<u8>().await?;
        conn.recv_timeout::<u8>(t).await?;
        conn.recv_bytes().await?;
        conn.recv_bytes_timeout(t).await?;
        conn.recv_bytes_into(&mut buf).await?;
        conn.recv_bytes_into_at(&mut buf, 1).await?;
        conn.poll(None).await?;
        let (mut tx, mut rx) = conn.split();
        tx.send(&1u8).await?;
        rx.recv::<u8>().await?;
        let conn = Connection::reunite(tx, rx).map_err(|_| Error::Closed)?;
        conn.into_blocking().await.map(drop)
    });
}

#[test]
fn every_future_is_send_is_checked_at_compile_time() {
    let _ = every_future_is_send;
}
