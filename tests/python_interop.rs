//! Real CPython interpreters on the other end, in both directions, over TCP
//! and Unix sockets.
//!
//! Interpreters are looked up in pyenv (3.8 to 3.13). A missing one is
//! reported and skipped, except under CI (`CI=true`), where it fails the run.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KEY, interpreters, unique_path, watchdog};
use mpconn::{Address, AuthError, Client, Connection, Error, Listener, ListenerOptions};

use common::PYTHON_VERSIONS as VERSIONS;

use common::is_legacy_python as is_legacy;

/// A Python Listener that echoes every message. It prints its address, then
/// exits 0 after the client leaves, 3 on AuthenticationError, 4 on EOFError
/// during the handshake.
const PY_SERVER: &str = r#"
import sys
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
        print('auth-error', e, file=sys.stderr); sys.exit(3)
    except EOFError:
        sys.exit(4)
    while True:
        try:
            m = conn.recv_bytes()
        except EOFError:
            break
        conn.send_bytes(m)
"#;

/// A Python Client that sends an empty, a short and a 20 MiB message and
/// checks each echo. Exits 0, or 3 on AuthenticationError.
const PY_CLIENT: &str = r#"
import sys
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
    print('auth-error', e, file=sys.stderr); sys.exit(3)
big = bytes(range(256)) * (20 * 4096)
for m in (b'', b'hello from python', big):
    conn.send_bytes(m)
    assert conn.recv_bytes() == m, 'echo mismatch'
conn.close()
"#;

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn python(py: &PathBuf, script: &str, kind: &str, where_: &str, key: &[u8]) -> Child {
    Command::new(py)
        .arg("-c")
        .arg(script)
        .args([kind, where_, &hex(key)])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Starts a Python Listener and reads the address it bound.
fn python_server(py: &PathBuf, kind: &str, key: &[u8]) -> (Child, Address) {
    let where_ = match kind {
        "tcp" => String::new(),
        _ => unique_path("py").display().to_string(),
    };
    let mut child = python(py, PY_SERVER, kind, &where_, key);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address: Address = line.trim().parse().unwrap();
    (child, address)
}

fn exit_code(mut child: Child) -> i32 {
    child.wait().unwrap().code().unwrap_or(-1)
}

/// Our side of the conversation with the Python echo server.
fn talk_to_echo(conn: &mut Connection) {
    let big: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    for m in [&b""[..], b"hello from rust", &big] {
        conn.send_bytes(m).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), m);
    }
}

/// Serves echo to one Python client.
fn serve_echo(conn: &mut Connection) {
    loop {
        match conn.recv_bytes() {
            Ok(m) => conn.send_bytes(&m).unwrap(),
            Err(Error::Eof) => return,
            Err(e) => panic!("serving python: {e}"),
        }
    }
}

const KINDS: [&str; 2] = ["tcp", "unix"];

fn our_listener(kind: &str, legacy: bool) -> (Listener, Arc<Mutex<Vec<String>>>) {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let address: Address = match kind {
        "tcp" => "127.0.0.1:0".parse().unwrap(),
        _ => Address::Unix(unique_path("rs")),
    };
    let listener = ListenerOptions::new()
        .allow_legacy_md5(legacy)
        .accept_timeout(Some(Duration::from_secs(20)))
        .on_handshake_failure(move |f| seen.lock().unwrap().push(f.error.to_string()))
        .bind(&address, KEY)
        .unwrap();
    (listener, failures)
}

#[test]
fn rust_client_talks_to_python_listeners() {
    let _w = watchdog(240);
    for (version, py) in interpreters(&VERSIONS) {
        let legacy = is_legacy(&version);
        for kind in KINDS {
            let (child, address) = python_server(&py, kind, KEY);
            let mut conn = Client::builder()
                .allow_legacy_md5(legacy)
                .connect(&address, KEY)
                .unwrap_or_else(|e| panic!("python {version} {kind}: {e}"));
            talk_to_echo(&mut conn);
            drop(conn);
            assert_eq!(exit_code(child), 0, "python {version} {kind}");
        }
    }
}

#[test]
fn python_clients_talk_to_rust_listeners() {
    let _w = watchdog(240);
    for (version, py) in interpreters(&VERSIONS) {
        let legacy = is_legacy(&version);
        for kind in KINDS {
            let (listener, failures) = our_listener(kind, legacy);
            let child = python(&py, PY_CLIENT, kind, &listener.address().to_string(), KEY);
            let mut conn = listener
                .accept()
                .unwrap_or_else(|e| panic!("python {version} {kind}: {e} {failures:?}"));
            serve_echo(&mut conn);
            assert_eq!(exit_code(child), 0, "python {version} {kind}");
        }
    }
}

#[test]
fn wrong_keys_fail_on_both_sides_with_python() {
    let _w = watchdog(120);
    for (version, py) in interpreters(&["3.12", "3.13"]) {
        for kind in KINDS {
            // Python listener, Rust client with another key.
            let (child, address) = python_server(&py, kind, b"the-python-side-key-0123");
            let err = Client::connect(&address, KEY).unwrap_err();
            assert!(
                matches!(err, Error::Auth(AuthError::Rejected)),
                "{version} {kind}: {err}"
            );
            assert_eq!(exit_code(child), 3, "python {version} {kind} listener");

            // Rust listener, Python client with another key.
            let (listener, failures) = our_listener(kind, false);
            let child = python(
                &py,
                PY_CLIENT,
                kind,
                &listener.address().to_string(),
                b"the-python-side-key-0123",
            );
            assert!(matches!(
                listener.accept_timeout(Duration::from_secs(3)),
                Err(Error::Timeout)
            ));
            assert_eq!(exit_code(child), 3, "python {version} {kind} client");
            let failures = failures.lock().unwrap();
            assert!(
                failures.len() == 1 && failures[0].contains("digest was wrong"),
                "{failures:?}"
            );
        }
    }
}

#[test]
fn legacy_python_is_refused_by_default_with_a_clear_error() {
    let _w = watchdog(120);
    for (version, py) in interpreters(&["3.11"]) {
        for kind in KINDS {
            // A 3.11 listener: our client refuses its MD5 challenge, with an
            // answer that cannot verify, so Python raises
            // AuthenticationError, not EOFError (exit 4 before).
            let (child, address) = python_server(&py, kind, KEY);
            let err = Client::connect(&address, KEY).unwrap_err();
            assert!(
                matches!(err, Error::Auth(AuthError::LegacyRefused)),
                "{version} {kind}: {err}"
            );
            assert!(err.to_string().contains("allow_legacy_md5"), "{err}");
            assert_eq!(exit_code(child), 3, "python {version} {kind} listener");

            // A 3.11 client: our listener refuses its bare MD5 answer.
            let (listener, failures) = our_listener(kind, false);
            let child = python(&py, PY_CLIENT, kind, &listener.address().to_string(), KEY);
            assert!(matches!(
                listener.accept_timeout(Duration::from_secs(3)),
                Err(Error::Timeout)
            ));
            assert_eq!(exit_code(child), 3, "python {version} {kind} client");
            let failures = failures.lock().unwrap();
            assert!(
                failures.len() == 1 && failures[0].contains("allow_legacy_md5"),
                "{failures:?}"
            );
        }
    }
}

#[test]
fn a_python_client_may_send_right_behind_its_handshake() {
    let _w = watchdog(60);
    const SCRIPT: &str = r#"
import sys
from multiprocessing.connection import Client
where, key = sys.argv[2], bytes.fromhex(sys.argv[3])
host, port = where.rsplit(':', 1)
conn = Client((host, int(port)), authkey=key)
for i in range(100):
    conn.send_bytes(b'%d' % i)
conn.close()
"#;
    for (_, py) in interpreters(&["3.13"]) {
        let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
        let child = python(&py, SCRIPT, "tcp", &listener.address().to_string(), KEY);
        let mut conn = listener.accept().unwrap();
        for i in 0..100 {
            assert_eq!(conn.recv_bytes().unwrap(), i.to_string().as_bytes());
        }
        assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
        assert_eq!(exit_code(child), 0);
    }
}
