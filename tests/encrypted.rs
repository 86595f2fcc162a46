//! The encrypted mode between mpconn ends over real sockets: messages of
//! every size arrive whole, both ends must agree on the mode, and CPython
//! peers are refused with an authentication error on their side.

mod common;

#[cfg(unix)]
use std::process::Command;
use std::thread;
use std::time::Duration;

use mpconn::{Address, AuthError, Client, Error, ListenerOptions};

#[cfg(unix)]
use common::interpreters;
use common::{KEY, watchdog};

/// TCP everywhere, and a Unix socket where there are Unix sockets (a
/// named pipe has no encrypted mode).
fn addresses() -> Vec<Address> {
    vec![
        "127.0.0.1:0".parse().unwrap(),
        #[cfg(unix)]
        common::local_address("encrypted"),
    ]
}

/// An encrypted listener and the address it is bound to.
fn encrypted_listener(address: impl mpconn::ToAddress) -> (mpconn::Listener, Address) {
    let listener = ListenerOptions::new()
        .encrypted(true)
        .bind(address, KEY)
        .unwrap();
    let bound = listener.address().clone();
    (listener, bound)
}

fn encrypted_client(address: &Address) -> mpconn::Connection {
    Client::builder()
        .encrypted(true)
        .connect(address, KEY)
        .unwrap()
}

fn sizes() -> Vec<usize> {
    // Around the record boundaries: 65,519 bytes of plaintext per record,
    // the first of which also carries the 8-byte length.
    vec![
        0,
        1,
        100,
        65_510,
        65_511,
        65_512,
        65_519,
        131_030,
        131_031,
        1 << 20,
        3_000_001,
    ]
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect()
}

#[test]
fn messages_of_every_size_arrive_whole_both_ways() {
    let _w = watchdog(60);
    for address in addresses() {
        let (listener, bound) = encrypted_listener(&address);
        let client = thread::spawn(move || {
            let mut conn = encrypted_client(&bound);
            for (i, len) in sizes().into_iter().enumerate() {
                assert_eq!(conn.recv_bytes().unwrap(), pattern(len, i), "len {len}");
                conn.send_bytes(&pattern(len, i + 1)).unwrap();
            }
            let typed: (String, Vec<u64>) = conn.recv().unwrap();
            conn.send(&typed).unwrap();
            // A batch: many small messages sealed into one write.
            let mut batch = conn.batch();
            for i in 0..1000u32 {
                batch.send(&i).unwrap();
            }
            batch.flush().unwrap();
            drop(batch);
            conn
        });
        let mut conn = listener.accept().unwrap();
        for (i, len) in sizes().into_iter().enumerate() {
            conn.send_bytes(&pattern(len, i)).unwrap();
            assert_eq!(conn.recv_bytes().unwrap(), pattern(len, i + 1), "len {len}");
        }
        let value = ("sealed".to_string(), vec![1u64, 2, 3]);
        conn.send(&value).unwrap();
        assert_eq!(conn.recv::<(String, Vec<u64>)>().unwrap(), value);
        for i in 0..1000u32 {
            assert_eq!(conn.recv::<u32>().unwrap(), i);
        }
        drop(client.join().unwrap());
        assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
    }
}

#[test]
fn a_short_buffer_gets_the_whole_message_back_and_the_next_one_follows() {
    let _w = watchdog(30);
    let (listener, bound) = encrypted_listener("127.0.0.1:0");
    let client = thread::spawn(move || {
        let mut conn = encrypted_client(&bound);
        conn.send_bytes(&pattern(200_000, 7)).unwrap();
        conn.send_bytes(b"next").unwrap();
        conn.recv_bytes().unwrap()
    });
    let mut conn = listener.accept().unwrap();
    let mut small = [0u8; 100];
    match conn.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(whole)) => assert_eq!(whole, pattern(200_000, 7)),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.recv_bytes_into(&mut small).unwrap(), 4);
    assert_eq!(&small[..4], b"next");
    conn.send_bytes(b"bye").unwrap();
    assert_eq!(client.join().unwrap(), b"bye");
}

#[test]
fn a_receive_that_times_out_half_way_resumes_the_same_message() {
    let _w = watchdog(30);
    let (listener, bound) = encrypted_listener("127.0.0.1:0");
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let conn = encrypted_client(&bound);
        // Larger than the socket buffers: the receiver sees part of it,
        // times out, and must go on where it stopped.
        let big = pattern(8 << 20, 3);
        let (mut tx, mut rx) = conn.split();
        let sender = thread::spawn(move || tx.send_bytes(&big).unwrap());
        wait.recv().unwrap();
        sender.join().unwrap();
        rx.recv_bytes().unwrap()
    });
    let mut conn = listener.accept().unwrap();
    let mut timeouts = 0;
    let got = loop {
        match conn.recv_bytes_timeout(Duration::from_millis(1)) {
            Ok(m) => break m,
            Err(Error::Timeout) => {
                timeouts += 1;
                if timeouts == 1 {
                    go.send(()).unwrap();
                }
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(got, pattern(8 << 20, 3));
    conn.send_bytes(b"ok").unwrap();
    assert_eq!(client.join().unwrap(), b"ok");
}

#[test]
fn both_ends_must_choose_the_encrypted_mode() {
    let _w = watchdog(30);
    for listener_encrypts in [true, false] {
        for address in addresses() {
            let listener = ListenerOptions::new()
                .encrypted(listener_encrypts)
                .accept_timeout(Some(Duration::from_millis(500)))
                .bind(&address, KEY)
                .unwrap();
            let bound = listener.address().clone();
            let failures = listener.stats();
            let client = thread::spawn(move || {
                Client::builder()
                    .encrypted(!listener_encrypts)
                    .connect(&bound, KEY)
                    .map(drop)
            });
            assert!(matches!(listener.accept(), Err(Error::Timeout)));
            let err = client.join().unwrap().unwrap_err();
            let expected = match listener_encrypts {
                // A plain client sees the listener's mode in its challenge.
                true => AuthError::EncryptionRequired,
                false => AuthError::NotEncrypted,
            };
            assert_eq!(err.to_string(), Error::Auth(expected.clone()).to_string());
            assert!(matches!(&err, Error::Auth(e) if *e == expected));
            assert!(err.to_string().contains("encrypted"));
            assert_eq!(
                listener.stats().failed_handshakes,
                failures.failed_handshakes + 1
            );
        }
    }
}

#[test]
fn a_listener_tells_which_mode_its_client_wanted() {
    let _w = watchdog(30);
    for listener_encrypts in [true, false] {
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = errors.clone();
        let listener = ListenerOptions::new()
            .encrypted(listener_encrypts)
            .accept_timeout(Some(Duration::from_millis(500)))
            .on_handshake_failure(move |f| {
                if let Error::Auth(e) = &f.error {
                    seen.lock().unwrap().push(e.clone());
                }
            })
            .bind("127.0.0.1:0", KEY)
            .unwrap();
        let bound = listener.address().clone();
        let client = thread::spawn(move || {
            let _ = Client::builder()
                .encrypted(!listener_encrypts)
                .connect(&bound, KEY);
        });
        assert!(matches!(listener.accept(), Err(Error::Timeout)));
        client.join().unwrap();
        let expected = match listener_encrypts {
            true => AuthError::NotEncrypted,
            false => AuthError::EncryptionRequired,
        };
        assert_eq!(*errors.lock().unwrap(), [expected]);
    }
}

#[test]
fn a_wrong_key_reads_as_a_listener_that_does_not_encrypt() {
    let _w = watchdog(30);
    let listener = ListenerOptions::new()
        .encrypted(true)
        .accept_timeout(Some(Duration::from_millis(500)))
        .bind("127.0.0.1:0", KEY)
        .unwrap();
    let bound = listener.address().clone();
    let client = thread::spawn(move || {
        Client::builder()
            .encrypted(true)
            .connect(&bound, b"a different key, long enough")
            .map(drop)
    });
    assert!(matches!(listener.accept(), Err(Error::Timeout)));
    // The client cannot verify the listener's tag without the key: it
    // cannot tell a wrong key from a listener that does not encrypt.
    let err = client.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Auth(AuthError::NotEncrypted)), "{err}");
}

#[cfg(unix)]
const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
host, port, key = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
try:
    Client((host, port), authkey=key)
    print("connected")
except Exception as e:
    print(type(e).__name__)
"#;

#[cfg(unix)]
const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
key = bytes.fromhex(sys.argv[1])
with Listener(("127.0.0.1", 0), authkey=key) as l:
    print(l.address[1], flush=True)
    try:
        l.accept()
        print("accepted")
    except Exception as e:
        print(type(e).__name__)
"#;

#[cfg(unix)]
fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// CPython runs on the Linux side only (Windows CPython is tested against
/// the examples, in .ci/windows/python-interop).
#[cfg(unix)]
#[test]
fn cpython_peers_get_an_authentication_error_never_a_hang() {
    let _w = watchdog(120);
    for (version, py) in interpreters(&common::PYTHON_VERSIONS) {
        // CPython client, encrypted listener. The listener's handshakes
        // move while a thread is in accept(): accept until it has failed.
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = failed.clone();
        let listener = ListenerOptions::new()
            .encrypted(true)
            .allow_legacy_md5(true)
            .accept_timeout(Some(Duration::from_millis(50)))
            .on_handshake_failure(move |f| *seen.lock().unwrap() = Some(f.error.to_string()))
            .bind("127.0.0.1:0", KEY)
            .unwrap();
        let Address::Tcp(addr) = listener.address().clone() else {
            unreachable!()
        };
        let python = py.clone();
        let child = thread::spawn(move || {
            Command::new(&python)
                .args([
                    "-c",
                    PY_CLIENT,
                    "127.0.0.1",
                    &addr.port().to_string(),
                    &hex(KEY),
                ])
                .output()
                .unwrap()
        });
        while failed.lock().unwrap().is_none() {
            assert!(matches!(listener.accept(), Err(Error::Timeout)));
        }
        let child = child.join().unwrap();
        let said = String::from_utf8_lossy(&child.stdout).trim().to_string();
        assert_eq!(said, "AuthenticationError", "python {version} client");
        let failure = failed.lock().unwrap().take().unwrap();
        assert_eq!(failure, Error::Auth(AuthError::NotEncrypted).to_string());

        // Encrypted client, CPython listener.
        let mut child = Command::new(&py)
            .args(["-c", PY_LISTENER, &hex(KEY)])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        std::io::BufRead::read_line(&mut out, &mut port).unwrap();
        let address = format!("127.0.0.1:{}", port.trim());
        let err = Client::builder()
            .encrypted(true)
            .allow_legacy_md5(true)
            .connect(address.as_str(), KEY)
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::Auth(AuthError::NotEncrypted)), "{err}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert_eq!(
            rest.trim(),
            "AuthenticationError",
            "python {version} listener"
        );
        assert!(child.wait().unwrap().success());
    }
}

#[cfg(feature = "tokio")]
mod tokio_side {
    use super::*;
    use mpconn::ClientOptions;
    use mpconn::tokio::{Client as AsyncClient, Listener as AsyncListener};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// An async listener and an async client, over TCP and Unix: every
    /// size, a receive cancelled half-way, and a send dropped before it
    /// finished, which the next flush delivers whole.
    #[test]
    fn async_ends_seal_and_open_and_lose_nothing_to_cancellation() {
        let _w = watchdog(60);
        runtime().block_on(async {
            for address in addresses() {
                let options = ListenerOptions::new().encrypted(true);
                let listener = AsyncListener::bind_with(options, &address, KEY).unwrap();
                let bound = listener.address().clone();
                let client = tokio::spawn(async move {
                    let options = ClientOptions::new().encrypted(true);
                    let mut conn = AsyncClient::connect_with(&options, &bound, KEY)
                        .await
                        .unwrap();
                    for (i, len) in sizes().into_iter().enumerate() {
                        conn.send_bytes(&pattern(len, i)).await.unwrap();
                    }
                    // Dropped long before 16 MiB can leave: sealed already,
                    // so the flush sends all of it.
                    let big = pattern(16 << 20, 9);
                    let cut = tokio::time::timeout(Duration::from_millis(1), conn.send_bytes(&big));
                    assert!(cut.await.is_err());
                    conn.flush().await.unwrap();
                    conn.send(&"after").await.unwrap();
                    conn.recv_bytes().await.unwrap()
                });
                let mut conn = listener.accept().await.unwrap();
                for (i, len) in sizes().into_iter().enumerate() {
                    assert_eq!(
                        conn.recv_bytes().await.unwrap(),
                        pattern(len, i),
                        "len {len}"
                    );
                }
                // Receives cut off by a short timeout while the big one
                // arrives; the next one returns it whole.
                let big = loop {
                    let attempt =
                        tokio::time::timeout(Duration::from_micros(200), conn.recv_bytes()).await;
                    if let Ok(message) = attempt {
                        break message.unwrap();
                    }
                };
                assert_eq!(big, pattern(16 << 20, 9));
                assert_eq!(conn.recv::<String>().await.unwrap(), "after");
                conn.send_bytes(b"done").await.unwrap();
                assert_eq!(client.await.unwrap(), b"done");
            }
        });
    }

    /// An async end and a blocking end, and a connection moved between
    /// the two worlds with its keys.
    #[test]
    fn async_and_blocking_ends_meet_and_connections_move_between_them() {
        let _w = watchdog(30);
        let (listener, bound) = encrypted_listener("127.0.0.1:0");
        let server = thread::spawn(move || {
            let mut conn = listener.accept().unwrap();
            for i in 0..100u32 {
                assert_eq!(conn.recv::<u32>().unwrap(), i);
                conn.send(&(i * 2)).unwrap();
            }
            assert_eq!(conn.recv_bytes().unwrap(), pattern(300_000, 1));
        });
        runtime().block_on(async {
            let options = ClientOptions::new().encrypted(true);
            let mut conn = AsyncClient::connect_with(&options, &bound, KEY)
                .await
                .unwrap();
            for i in 0..50u32 {
                conn.send(&i).await.unwrap();
                assert_eq!(conn.recv::<u32>().await.unwrap(), i * 2);
            }
            let mut blocking = conn.into_blocking().await.unwrap();
            for i in 50..100u32 {
                blocking.send(&i).unwrap();
                assert_eq!(blocking.recv::<u32>().unwrap(), i * 2);
            }
            let mut conn = mpconn::tokio::Connection::from_blocking(blocking).unwrap();
            conn.send_bytes(&pattern(300_000, 1)).await.unwrap();
        });
        server.join().unwrap();
    }
}

/// A Windows named pipe has no encrypted mode: both ends say so instead of
/// running the plain mode.
#[cfg(windows)]
#[test]
fn named_pipes_refuse_the_encrypted_mode() {
    let _w = watchdog(30);
    let listener = ListenerOptions::new()
        .encrypted(true)
        .accept_timeout(Some(Duration::from_millis(300)))
        .bind(common::local_address("encrypted-pipe"), KEY)
        .unwrap();
    let bound = listener.address().clone();
    let client = thread::spawn(move || {
        Client::builder()
            .encrypted(true)
            .connect(&bound, KEY)
            .map(drop)
    });
    assert!(matches!(listener.accept(), Err(Error::Timeout)));
    let err = client.join().unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::EncryptionUnsupported)),
        "{err}"
    );
}

/// A connection adopted from a socket and authenticated by hand runs the
/// encrypted mode when its `HandshakeOptions` say so; its messages are
/// sealed (it refuses to carry descriptors, which only a plain one can).
#[cfg(unix)]
#[test]
fn adopted_sockets_upgrade_to_the_encrypted_mode() {
    use std::os::fd::{AsFd, OwnedFd};
    let _w = watchdog(30);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = mpconn::Connection::from(OwnedFd::from(a));
    let b = mpconn::Connection::from(OwnedFd::from(b));
    let options = mpconn::HandshakeOptions::new().encrypted(true);
    let server = thread::spawn(move || a.authenticate_as_server_with(KEY, &options).unwrap());
    let mut client = b.authenticate_as_client_with(KEY, &options).unwrap();
    let mut server = server.join().unwrap();
    client.send(&7u32).unwrap();
    assert_eq!(server.recv::<u32>().unwrap(), 7);
    server.send_bytes(&pattern(200_000, 2)).unwrap();
    assert_eq!(client.recv_bytes().unwrap(), pattern(200_000, 2));
    let file = std::fs::File::open("/dev/null").unwrap();
    let refused = client.send_fds(&[file.as_fd()]);
    assert!(
        matches!(
            refused,
            Err(Error::Descriptors(mpconn::DescriptorError::Encrypted))
        ),
        "{refused:?}"
    );
}
