//! The handshake against real CPython peers wherever it runs: on a
//! connection a Python parent hands to a Rust child (CPython's
//! `deliver_challenge` / `answer_challenge` on one end,
//! `authenticate_as_*_with` on the other), refusals that the Python side
//! must report as `AuthenticationError`, and a client that waits for a
//! sequential CPython listener.
//!
//! Interpreters come from pyenv (3.8 to 3.13); a missing one is skipped,
//! except under CI (`CI=true`).

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{KEY, PYTHON_VERSIONS, child_role, interpreters, is_legacy_python, watchdog};
use mpconn::{Address, AuthError, Client, Connection, Error, HandshakeOptions, Unverified};

/// The Python parent: makes a socket pair (`socketpair`) or a duplex
/// `multiprocessing.Pipe()` (`pipe`, a socket pair on Unix), starts this
/// test binary with the other end as its stdin, runs CPython's handshake in
/// `role` on its own end (`digest` names the digest of its challenge on
/// 3.12 and later, empty for the default), then sends a message and
/// expects one back. Prints what happened (`ok`, `auth-error: ...`, `eof`
/// or `other: ...`) and then `child-exit N`.
const PY_PARENT: &str = r#"
import socket, subprocess, sys, time
from multiprocessing import AuthenticationError, Pipe
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
exe, test, transport, role, digest, key, delay = sys.argv[1:8]
key = bytes.fromhex(key)
if transport == 'socketpair':
    a, b = socket.socketpair()
    ours, theirs = Connection(a.detach()), Connection(b.detach())
else:
    ours, theirs = Pipe()
child = subprocess.Popen([exe, test, '--exact', '--nocapture', '--test-threads=1'],
                         stdin=theirs.fileno(), stdout=subprocess.DEVNULL)
theirs.close()
time.sleep(float(delay))
def deliver():
    if digest:
        deliver_challenge(ours, key, digest_name=digest)
    else:
        deliver_challenge(ours, key)
try:
    if role == 'server':
        deliver()
        answer_challenge(ours, key)
    else:
        answer_challenge(ours, key)
        deliver()
    ours.send_bytes(b'from python')
    assert ours.recv_bytes() == b'from rust'
    outcome = 'ok'
except AuthenticationError as e:
    outcome = 'auth-error: %s' % e
except EOFError:
    outcome = 'eof'
except Exception as e:
    outcome = 'other: %r' % e
ours.close()
print(outcome, flush=True)
print('child-exit', child.wait(), flush=True)
"#;

const CHILD_ROLE: &str = "python-parent";
/// The Rust child's settings, from the test through Python's environment.
const ROLE_VAR: &str = "MPCONN_HS_ROLE";
const KEY_VAR: &str = "MPCONN_HS_KEY";
const LEGACY_VAR: &str = "MPCONN_HS_LEGACY";
const TIMEOUT_VAR: &str = "MPCONN_HS_TIMEOUT_MS";
const EXPECT_VAR: &str = "MPCONN_HS_EXPECT";

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// One run: a Python parent and the Rust child it starts.
#[derive(Clone, Copy)]
struct Run<'a> {
    py: &'a Path,
    /// `socketpair` or `pipe`.
    transport: &'a str,
    /// The role CPython plays: `server` (deliver, then answer) or `client`.
    python_role: &'a str,
    /// The digest of Python's challenge (3.12+), or "" for its default.
    digest: &'a str,
    python_key: &'a [u8],
    rust_key: &'a [u8],
    /// `HandshakeOptions::allow_legacy_md5` on the Rust side.
    legacy: bool,
    /// `HandshakeOptions::handshake_timeout` on the Rust side.
    timeout: Option<Duration>,
    /// How long Python waits before its handshake.
    delay: Duration,
    /// `ok`, or the Rust side's error as `{:?}` prints it.
    expect: &'a str,
}

impl Run<'_> {
    /// Runs it; returns Python's outcome line. The Rust child checks its own
    /// expectation, and its exit status is asserted here.
    fn go(&self, test: &str) -> String {
        let rust_role = match self.python_role {
            "server" => "client",
            _ => "server",
        };
        let timeout = self.timeout.map(|t| t.as_millis().to_string());
        let mut child = Command::new(self.py)
            .arg("-c")
            .arg(PY_PARENT)
            .arg(std::env::current_exe().unwrap())
            .args([test, self.transport, self.python_role, self.digest])
            .arg(hex(self.python_key))
            .arg(self.delay.as_secs_f64().to_string())
            .env("MPCONN_TEST_ROLE", CHILD_ROLE)
            .env(ROLE_VAR, rust_role)
            .env(KEY_VAR, hex(self.rust_key))
            .env(LEGACY_VAR, if self.legacy { "1" } else { "0" })
            .env(TIMEOUT_VAR, timeout.unwrap_or_default())
            .env(EXPECT_VAR, self.expect)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success(), "python failed: {out}");
        let mut lines = out.lines();
        let outcome = lines.next().unwrap_or_default().to_string();
        assert_eq!(
            lines.next(),
            Some("child-exit 0"),
            "the Rust child failed (python: {outcome})"
        );
        outcome
    }
}

/// The Rust child: authenticates the connection on its stdin with the
/// options the test set, and checks the outcome it expects.
fn rust_child() {
    let var = |name| std::env::var(name).unwrap();
    let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    let conn = Connection::<Unverified>::from(fd);
    let mut options = HandshakeOptions::new().allow_legacy_md5(var(LEGACY_VAR) == "1");
    if let Ok(ms) = var(TIMEOUT_VAR).parse() {
        options = options.handshake_timeout(Duration::from_millis(ms));
    }
    let key = unhex(&var(KEY_VAR));
    let result = match var(ROLE_VAR).as_str() {
        "server" => conn.authenticate_as_server_with(&key, &options),
        _ => conn.authenticate_as_client_with(&key, &options),
    };
    match (var(EXPECT_VAR).as_str(), result) {
        ("ok", Ok(mut conn)) => {
            assert_eq!(conn.recv_bytes().unwrap(), b"from python");
            conn.send_bytes(b"from rust").unwrap();
            assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
        }
        ("ok", Err(e)) => panic!("rust child: {e:?}"),
        (expected, Ok(_)) => panic!("rust child authenticated, expected {expected}"),
        (expected, Err(e)) => assert_eq!(format!("{e:?}"), expected, "rust child: {e}"),
    }
}

const SUCCESS_TEST: &str = "python_parents_and_rust_children_authenticate_over_inherited_sockets";

/// Issue #13, item 3: a Python parent hands one end of a socket pair, or
/// of `multiprocessing.Pipe()`, to a Rust child, and both run the
/// handshake on it in either role, legacy MD5 allowed for 3.8 to 3.11
/// (which speak nothing else), then exchange messages. With the key-only
/// `authenticate_as_*`, a 3.8 to 3.11 parent could never succeed.
#[test]
fn python_parents_and_rust_children_authenticate_over_inherited_sockets() {
    if child_role().as_deref() == Some(CHILD_ROLE) {
        return rust_child();
    }
    let _w = watchdog(180);
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        for transport in ["socketpair", "pipe"] {
            for python_role in ["server", "client"] {
                let run = Run {
                    py: &py,
                    transport,
                    python_role,
                    digest: "",
                    python_key: KEY,
                    rust_key: KEY,
                    legacy: is_legacy_python(&version),
                    timeout: None,
                    delay: Duration::ZERO,
                    expect: "ok",
                };
                let outcome = run.go(SUCCESS_TEST);
                assert_eq!(outcome, "ok", "python {version} {transport} {python_role}");
            }
        }
    }
}

const LATE_TEST: &str = "an_adopted_client_end_waits_for_a_late_python_challenge";

/// Issue #13, item 5, on an adopted connection: the Rust client's
/// exchange deadline (300 ms) counts from Python's challenge, which comes
/// a second after the start.
#[test]
fn an_adopted_client_end_waits_for_a_late_python_challenge() {
    if child_role().as_deref() == Some(CHILD_ROLE) {
        return rust_child();
    }
    let _w = watchdog(60);
    for (version, py) in interpreters(&["3.13"]) {
        let run = Run {
            py: &py,
            transport: "socketpair",
            python_role: "server",
            digest: "",
            python_key: KEY,
            rust_key: KEY,
            legacy: false,
            timeout: Some(Duration::from_millis(300)),
            delay: Duration::from_secs(1),
            expect: "ok",
        };
        assert_eq!(run.go(LATE_TEST), "ok", "python {version}");
    }
}

const REFUSAL_TEST: &str = "refusals_reach_python_as_authentication_errors";

/// Issue #13, item 4: every way the Rust side refuses a CPython peer,
/// in both roles, ends in `AuthenticationError` on the Python side (not
/// `EOFError`) and in the Rust side's own specific error.
#[test]
fn refusals_reach_python_as_authentication_errors() {
    if child_role().as_deref() == Some(CHILD_ROLE) {
        return rust_child();
    }
    let _w = watchdog(240);
    let short = b"short key";
    let too_short = format!("Auth(KeyTooShort({}))", short.len());
    let mut failed = Vec::new();
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        let legacy = is_legacy_python(&version);
        let base = Run {
            py: &py,
            transport: "socketpair",
            python_role: "server",
            digest: "",
            python_key: KEY,
            rust_key: KEY,
            legacy,
            timeout: None,
            delay: Duration::ZERO,
            expect: "",
        };
        let mut cases = Vec::new();
        for python_role in ["server", "client"] {
            let base = Run {
                python_role,
                ..base
            };
            if legacy {
                // MD5, the only digest 3.8 to 3.11 speak, not allowed.
                cases.push(Run {
                    legacy: false,
                    expect: "Auth(LegacyRefused)",
                    ..base
                });
            } else {
                // A 3.12+ challenge in a digest the Rust side refuses: the
                // first message of a Python server, or the second half of a
                // Python client.
                cases.push(Run {
                    digest: "md5",
                    expect: "Auth(LegacyRefused)",
                    ..base
                });
                let sha1 = r#"Auth(DigestRefused("sha1"))"#;
                cases.push(Run {
                    digest: "sha1",
                    expect: sha1,
                    ..base
                });
            }
            // A key the Rust side refuses as too short.
            cases.push(Run {
                python_key: short,
                rust_key: short,
                expect: &too_short,
                ..base
            });
            // Keys that differ.
            let expect = match python_role {
                "server" => "Auth(Rejected)",
                _ => "Auth(WrongDigest)",
            };
            cases.push(Run {
                python_key: b"the python side's other key",
                expect,
                ..base
            });
        }
        for (i, case) in cases.into_iter().enumerate() {
            let run = Run {
                transport: ["socketpair", "pipe"][i % 2],
                ..case
            };
            let outcome = run.go(REFUSAL_TEST);
            if !outcome.starts_with("auth-error: digest") {
                failed.push(format!(
                    "python {version} as {} against {}: {outcome:?}",
                    run.python_role, run.expect
                ));
            }
        }
    }
    let failed = failed.join("\n");
    assert!(
        failed.is_empty(),
        "no AuthenticationError in python:\n{failed}"
    );
}

/// A CPython Listener that waits `delay` seconds before its `accept()` (a
/// sequential server busy with someone else), then echoes one message.
/// Prints its address first; exits 0, or 5 when the accept fails.
const PY_SLOW_SERVER: &str = r#"
import sys, time
from multiprocessing.connection import Listener
kind, where, key, delay = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), float(sys.argv[4])
address = ('127.0.0.1', 0) if kind == 'tcp' else where
with Listener(address, 'AF_INET' if kind == 'tcp' else 'AF_UNIX', authkey=key) as l:
    a = l.address
    print('%s:%d' % a if kind == 'tcp' else a, flush=True)
    time.sleep(delay)
    try:
        conn = l.accept()
    except Exception as e:
        print('accept failed:', repr(e), file=sys.stderr)
        sys.exit(5)
    conn.send_bytes(conn.recv_bytes())
"#;

fn slow_python_server(py: &Path, kind: &str, delay: Duration) -> (Child, Address) {
    let where_ = match kind {
        "tcp" => String::new(),
        _ => common::unique_path("slow").display().to_string(),
    };
    let mut child = Command::new(py)
        .arg("-c")
        .arg(PY_SLOW_SERVER)
        .args([kind, &where_, &hex(KEY), &delay.as_secs_f64().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

/// Issue #13, item 5: a client's handshake deadline (300 ms here) counts
/// from the listener's challenge, so a sequential CPython listener that
/// gets to `accept()` a second after the connection serves the client
/// (before, the client gave up at 300 ms and Python's `accept()` raised
/// BrokenPipeError). Every version at once, over TCP and a Unix socket.
#[test]
fn a_client_waits_for_a_sequential_python_listener() {
    let _w = watchdog(60);
    let mut runs = Vec::new();
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        for kind in ["tcp", "unix"] {
            let py: PathBuf = py.clone();
            let version = version.clone();
            runs.push(thread::spawn(move || {
                let (server, address) = slow_python_server(&py, kind, Duration::from_secs(1));
                let started = Instant::now();
                let mut conn = Client::builder()
                    .allow_legacy_md5(is_legacy_python(&version))
                    .handshake_timeout(Duration::from_millis(300))
                    .connect(&address, KEY)
                    .unwrap_or_else(|e| panic!("python {version} {kind}: {e}"));
                assert!(started.elapsed() >= Duration::from_millis(700));
                conn.send_bytes(b"late but served").unwrap();
                assert_eq!(conn.recv_bytes().unwrap(), b"late but served");
                let status = server.wait_with_output().unwrap().status;
                assert!(status.success(), "python {version} {kind}: {status}");
            }));
        }
    }
    for run in runs {
        run.join().unwrap();
    }
}

/// The wait for the challenge is bounded when the user asks: with
/// `challenge_timeout` shorter than the listener's delay, the client fails
/// with `AuthError::NoChallenge` when it passes, not later.
#[test]
fn a_challenge_timeout_bounds_the_wait_for_a_python_listener() {
    let _w = watchdog(60);
    for (version, py) in interpreters(&["3.13"]) {
        let (server, address) = slow_python_server(&py, "tcp", Duration::from_secs(2));
        let started = Instant::now();
        let err = Client::builder()
            .challenge_timeout(Some(Duration::from_millis(300)))
            .connect(&address, KEY)
            .unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(err, Error::Auth(AuthError::NoChallenge)),
            "python {version}: {err:?}"
        );
        assert!(err.to_string().contains("no challenge"), "{err}");
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
            "{waited:?}"
        );
        // The listener finds the client gone when it gets to it.
        let status = server.wait_with_output().unwrap().status;
        assert_eq!(status.code(), Some(5), "python {version}");
    }
}
