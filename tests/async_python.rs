//! Real CPython interpreters (3.8 to 3.13) against the async listener and
//! the async client, over TCP and Unix sockets, on both runtimes: bytes and
//! pickled values both ways, and a wrong key in each direction.
//!
//! Every interpreter, socket kind and direction runs at once: the Python
//! processes are started first, then one task per case talks to its own,
//! so the whole file takes about as long as its slowest case. Interpreters
//! are found as in `python_interop.rs`: a missing one is reported and
//! skipped, except under CI (`CI=true`), where it fails the run.

#![cfg(all(unix, feature = "pickle", any(feature = "tokio", feature = "async-io")))]

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KEY, PYTHON_VERSIONS, interpreters, is_legacy_python, unique_path, watchdog};
use futures_util::future::{join, join_all};
use mpconn::aio::{Client, Connection, Listener, Runtime};
use mpconn::{Address, AuthError, ClientOptions, Codec, Error, ListenerOptions};
use serde::{Deserialize, Serialize};

/// The key the Python side holds in the wrong-key cases.
const WRONG_KEY: &[u8] = b"the-python-side-key-0123";

/// A Python client: bytes (one of them past 64 KiB) whose echo comes back
/// reversed, then two pickled values the Rust side answers. Exits 0, or 3
/// on AuthenticationError.
const PY_CLIENT: &str = r#"
import os, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(9)), daemon=True).start()
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
kind, where, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
if kind == 'tcp':
    host, port = where.rsplit(':', 1)
    address, family = (host, int(port)), 'AF_INET'
else:
    address, family = where, 'AF_UNIX'
try:
    conn = Client(address, family, authkey=key)
except AuthenticationError as e:
    sys.exit(3)
big = bytes(range(256)) * 1024 + b'tail'
for m in (b'', b'hello from python', big):
    conn.send_bytes(m)
    assert conn.recv_bytes() == m[::-1], 'echo mismatch'
conn.send((41, 'hello', [1, 2, 3]))
assert conn.recv() == (42, 'HELLO', 6), 'tuple'
conn.send({'name': 'many', 'values': list(range(30000))})
assert conn.recv() == {'name': 'MANY', 'values': list(range(30000))[::-1]}, 'record'
conn.close()
"#;

/// A Python Listener: prints its address, reverses every message until
/// b'pickles', then answers pickled values until the client leaves. Exits
/// 0, or 3 on AuthenticationError.
const PY_SERVER: &str = r#"
import os, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(9)), daemon=True).start()
from multiprocessing.connection import Listener
from multiprocessing import AuthenticationError
kind, where, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
address = ('127.0.0.1', 0) if kind == 'tcp' else where
with Listener(address, 'AF_INET' if kind == 'tcp' else 'AF_UNIX', authkey=key) as l:
    a = l.address
    print('%s:%d' % a if kind == 'tcp' else a, flush=True)
    try:
        conn = l.accept()
    except AuthenticationError as e:
        sys.exit(3)
    while True:
        m = conn.recv_bytes()
        if m == b'pickles':
            break
        conn.send_bytes(m[::-1])
    while True:
        try:
            v = conn.recv()
        except EOFError:
            break
        if isinstance(v, tuple):
            conn.send((v[0] + 1, v[1].upper(), sum(v[2])))
        else:
            conn.send({'name': v['name'].upper(), 'values': v['values'][::-1]})
"#;

/// The pickled dict both scripts exchange: over 64 KiB as a pickle.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    values: Vec<u32>,
}

const KINDS: [&str; 2] = ["tcp", "unix"];

/// How long a receive waits for Python: a peer that is stuck fails its case
/// by name before the watchdog ends the whole test.
const PATIENCE: Duration = Duration::from_secs(20);

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Python process, killed if the test lets go of it before it exits (a
/// case that fails leaves none behind). The scripts also exit when their
/// standard input closes, so that a test process that dies (the watchdog
/// aborts it) takes them along.
struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(py: &Path, script: &str, kind: &str, where_: &str, key: &[u8]) -> Python {
    let child = Command::new(py)
        .arg("-c")
        .arg(script)
        .args([kind, where_, &hex(key)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Python(child)
}

/// Runs `f` on a thread of its own: what blocks (a child's output, its
/// exit) waits there, and the future resolves with the result on any
/// runtime.
fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    async move { rx.await.expect("the helper thread panicked") }
}

/// A Python Listener and the address it printed.
async fn python_server(py: &Path, kind: &'static str, key: &'static [u8]) -> (Python, Address) {
    let py = py.to_path_buf();
    off_thread(move || {
        let where_ = match kind {
            "tcp" => String::new(),
            _ => unique_path("py").display().to_string(),
        };
        let mut child = python(&py, PY_SERVER, kind, &where_, key);
        let mut line = String::new();
        BufReader::new(child.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address: Address = line.trim().parse().unwrap();
        (child, address)
    })
    .await
}

/// How `python` exits. The process is killed if this future is dropped
/// first.
async fn exit_code(mut python: Python) -> i32 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        while !tx.is_closed() {
            if let Some(status) = python.0.try_wait().unwrap() {
                let _ = tx.send(status.code().unwrap_or(-1));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    rx.await.expect("the waiting thread panicked")
}

/// An async listener for one case, with the failures its hook saw.
fn our_listener<R: Runtime>(kind: &str, legacy: bool) -> (Listener<R>, Arc<Mutex<Vec<String>>>) {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let address: Address = match kind {
        "tcp" => "127.0.0.1:0".parse().unwrap(),
        _ => Address::Unix(unique_path("rs")),
    };
    let options = ListenerOptions::new()
        .codec(Codec::Pickle)
        .allow_legacy_md5(legacy)
        // Dozens of interpreters start at once, and our own clients answer
        // from the same busy thread: the deadlines are not what is tested.
        .first_answer_timeout(Duration::from_secs(20))
        .handshake_timeout(Duration::from_secs(20))
        // A Python process that dies early ends the wait for it.
        .accept_timeout(Some(Duration::from_secs(20)))
        .on_handshake_failure(move |f| seen.lock().unwrap().push(f.error.to_string()));
    (
        Listener::bind_with(options, &address, KEY).unwrap(),
        failures,
    )
}

fn client_options(legacy: bool) -> ClientOptions {
    ClientOptions::new()
        .codec(Codec::Pickle)
        .allow_legacy_md5(legacy)
        .handshake_timeout(Duration::from_secs(20))
}

/// A Python client talks to our listener: its bytes come back reversed,
/// its pickles are answered.
async fn python_client_to_our_listener<R: Runtime>(version: &str, py: &Path, kind: &str) {
    let case = format!("python {version} client, {kind}");
    let (listener, failures) = our_listener::<R>(kind, is_legacy_python(version));
    let child = python(py, PY_CLIENT, kind, &listener.address().to_string(), KEY);
    let mut conn = listener
        .accept()
        .await
        .unwrap_or_else(|e| panic!("{case}: {e} {failures:?}"));
    assert_eq!(conn.codec(), Codec::Pickle, "{case}");
    for _ in 0..3 {
        let mut m = conn
            .recv_bytes_timeout(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        m.reverse();
        conn.send_bytes(&m).await.unwrap();
    }
    let (n, s, list): (u32, String, Vec<i64>) = conn
        .recv_timeout(PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    conn.send(&(n + 1, s.to_uppercase(), list.iter().sum::<i64>()))
        .await
        .unwrap();
    let mut record: Record = conn
        .recv_timeout(PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(record.values.len(), 30_000, "{case}");
    record.name = record.name.to_uppercase();
    record.values.reverse();
    conn.send(&record).await.unwrap();
    assert!(
        matches!(conn.recv_bytes_timeout(PATIENCE).await, Err(Error::Eof)),
        "{case}"
    );
    assert_eq!(exit_code(child).await, 0, "{case}");
    assert_eq!(listener.stats().accepted, 1, "{case}");
}

/// Our client talks to a Python Listener.
async fn our_client_to_python_listener<R: Runtime>(version: &str, py: &Path, kind: &'static str) {
    let case = format!("python {version} listener, {kind}");
    let (child, address) = python_server(py, kind, KEY).await;
    let mut conn: Connection<R> =
        Client::connect_with(&client_options(is_legacy_python(version)), &address, KEY)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for m in [&b""[..], b"hello from rust", &big] {
        conn.send_bytes(m).await.unwrap();
        let mut back = conn
            .recv_bytes_timeout(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        back.reverse();
        assert_eq!(back, m, "{case}");
    }
    conn.send_bytes(b"pickles").await.unwrap();
    conn.send(&(41u32, "hello", vec![1i64, 2, 3]))
        .await
        .unwrap();
    let back: (u32, String, i64) = conn
        .recv_timeout(PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(back, (42, "HELLO".to_string(), 6), "{case}");
    let record = Record {
        name: "many".into(),
        values: (0..30_000).collect(),
    };
    conn.send(&record).await.unwrap();
    let back: Record = conn
        .recv_timeout(PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(back.name, "MANY", "{case}");
    assert!(back.values.iter().rev().eq(record.values.iter()), "{case}");
    drop(conn);
    assert_eq!(exit_code(child).await, 0, "{case}");
}

/// Our client with one key, a Python Listener with another: we see
/// `Error::Auth`, Python sees AuthenticationError.
async fn our_client_with_a_wrong_key<R: Runtime>(version: &str, py: &Path, kind: &'static str) {
    let case = format!("python {version} listener, {kind}, wrong key");
    let (child, address) = python_server(py, kind, WRONG_KEY).await;
    let options = client_options(is_legacy_python(version));
    let err = Client::<R>::connect_with(&options, &address, KEY)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::Rejected)),
        "{case}: {err}"
    );
    assert_eq!(exit_code(child).await, 3, "{case}");
}

/// A Python client with the wrong key at our listener: Python sees
/// AuthenticationError, the listener counts a failed handshake, reports it
/// to the hook, and goes on to accept a client with the key.
async fn python_client_with_a_wrong_key<R: Runtime>(version: &str, py: &Path, kind: &str) {
    let case = format!("python {version} client, {kind}, wrong key");
    let legacy = is_legacy_python(version);
    let (listener, failures) = our_listener::<R>(kind, legacy);
    let address = listener.address().clone();
    let child = python(py, PY_CLIENT, kind, &address.to_string(), WRONG_KEY);
    // The accept runs the Python client's handshake; it ends only with the
    // valid client that comes once Python has given up.
    let accept = listener.accept();
    let then_a_valid_client = async {
        assert_eq!(exit_code(child).await, 3, "{case}");
        let mut conn: Connection<R> = Client::connect_with(&client_options(legacy), &address, KEY)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        conn.recv_timeout::<String>(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"))
    };
    let (accepted, got) = join(
        async {
            let mut conn = accept.await.unwrap_or_else(|e| panic!("{case}: {e}"));
            conn.send(&"served").await.unwrap();
        },
        then_a_valid_client,
    )
    .await;
    let () = accepted;
    assert_eq!(got, "served", "{case}");
    let stats = listener.stats();
    assert_eq!((stats.accepted, stats.failed_handshakes), (1, 1), "{case}");
    let failures = failures.lock().unwrap();
    assert!(
        failures.len() == 1 && failures[0].contains("digest was wrong"),
        "{case}: {failures:?}"
    );
}

/// Every case for every interpreter and socket kind, all at once.
async fn all_cases<R: Runtime>(pythons: &[(String, PathBuf)]) {
    let mut cases: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
    for (version, py) in pythons {
        for kind in KINDS {
            cases.push(Box::pin(python_client_to_our_listener::<R>(
                version, py, kind,
            )));
            cases.push(Box::pin(our_client_to_python_listener::<R>(
                version, py, kind,
            )));
            cases.push(Box::pin(our_client_with_a_wrong_key::<R>(
                version, py, kind,
            )));
            cases.push(Box::pin(python_client_with_a_wrong_key::<R>(
                version, py, kind,
            )));
        }
    }
    join_all(cases).await;
}

#[cfg(feature = "tokio")]
#[test]
fn python_peers_with_the_tokio_listener_and_client() {
    let _w = watchdog(60);
    let pythons = interpreters(&PYTHON_VERSIONS);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(all_cases::<mpconn::tokio::Tokio>(&pythons));
}

#[cfg(feature = "async-io")]
#[test]
fn python_peers_with_the_async_io_listener_and_client() {
    let _w = watchdog(60);
    let pythons = interpreters(&PYTHON_VERSIONS);
    async_io::block_on(all_cases::<mpconn::async_io::AsyncIo>(&pythons));
}
