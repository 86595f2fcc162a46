//! Descriptors between mpconn and real CPython 3.8–3.13 processes:
//! `send_fds` / `recv_fds` against `multiprocessing.reduction`'s
//! `send_handle` / `recv_handle` / `sendfds` / `recvfds` in both
//! directions, the ends of a Python `Pipe(duplex=False)` (plain `os.pipe()`
//! descriptors) handed to an mpconn child, and a socket end that an mpconn
//! parent passes to a Python child and then closes.

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    KEY, PYTHON_VERSIONS, child_role, interpreters, is_legacy_python, os_pipe, unique_path,
    watchdog,
};
use mpconn::{Address, Connection, Error, Listener, ListenerOptions};

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Python side of the descriptor exchange, as a Client of our listener.
const PY_FDS: &str = r#"
import os, socket, sys
from multiprocessing.connection import Client
from multiprocessing import reduction
path, key = sys.argv[1], bytes.fromhex(sys.argv[2])
conn = Client(path, 'AF_UNIX', authkey=key)

# 1. Python sends one descriptor between two messages (send_handle).
r, w = os.pipe()
conn.send_bytes(b'before')
reduction.send_handle(conn, w, None)
conn.send_bytes(b'after')
os.close(w)
got = b''
while True:
    chunk = os.read(r, 100)
    if not chunk:
        break
    got += chunk
assert got == b'written by rust', got
os.close(r)

# 2. Python receives one (recv_handle) and writes through it.
fd = reduction.recv_handle(conn)
os.write(fd, b'written by python')
os.close(fd)

# 3. Three at once, both ways (sendfds / recvfds on the connection's socket).
with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as s:
    fds = reduction.recvfds(s, 3)
    assert len(fds) == 3
    for i, fd in enumerate(fds):
        os.write(fd, b'%d' % i)
        os.close(fd)
    pipes = [os.pipe() for _ in range(3)]
    reduction.sendfds(s, [pw for _, pw in pipes])
    for _, pw in pipes:
        os.close(pw)
    for i, (pr, _) in enumerate(pipes):
        assert os.read(pr, 100) == b'rust %d' % i
        os.close(pr)

# 4. A descriptor numbered above 255 (CPython's count byte is modulo 256).
r, w = os.pipe()
high = os.dup2(w, 300)
os.close(w)
reduction.send_handle(conn, high, None)
os.close(high)
assert os.read(r, 100) == b'high'
os.close(r)
conn.send_bytes(b'done')
assert conn.recv_bytes() == b'bye'
conn.close()
"#;

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn descriptors_pass_both_ways_with_python() {
    let _w = watchdog(240);
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        let listener: Listener = ListenerOptions::new()
            .allow_legacy_md5(is_legacy_python(&version))
            .accept_timeout(Some(Duration::from_secs(30)))
            .bind(Address::Unix(unique_path("pyfds")), KEY)
            .unwrap();
        let mut child = Command::new(&py)
            .arg("-c")
            .arg(PY_FDS)
            .args([&listener.address().to_string(), &hex(KEY)])
            .spawn()
            .unwrap();
        let mut conn = listener
            .accept()
            .unwrap_or_else(|e| panic!("python {version}: {e}"));

        assert_eq!(conn.recv_bytes().unwrap(), b"before", "python {version}");
        let mut fds = conn.recv_fds().unwrap();
        assert_eq!(fds.len(), 1, "python {version}");
        assert_eq!(conn.recv_bytes().unwrap(), b"after", "python {version}");
        std::fs::File::from(fds.pop().unwrap())
            .write_all(b"written by rust")
            .unwrap();

        let (r, w) = os_pipe();
        conn.send_fds(&[w.as_fd()]).unwrap();
        drop(w);
        assert_eq!(read_all(r), b"written by python", "python {version}");

        let pipes: Vec<_> = (0..3).map(|_| os_pipe()).collect();
        let ends: Vec<_> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
        conn.send_fds(&ends).unwrap();
        drop(ends);
        for (i, (r, w)) in pipes.into_iter().enumerate() {
            drop(w);
            assert_eq!(read_all(r), format!("{i}").as_bytes(), "python {version}");
        }
        let fds = conn.recv_fds().unwrap();
        assert_eq!(fds.len(), 3, "python {version}");
        for (i, fd) in fds.into_iter().enumerate() {
            std::fs::File::from(fd)
                .write_all(format!("rust {i}").as_bytes())
                .unwrap();
        }

        let mut high = conn.recv_fds().unwrap();
        assert_eq!(high.len(), 1, "python {version}");
        std::fs::File::from(high.pop().unwrap())
            .write_all(b"high")
            .unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"done", "python {version}");
        conn.send_bytes(b"bye").unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "python {version}: {status}");
    }
}

/// Python makes `Pipe(duplex=False)` and hands one end to an mpconn child
/// (this test binary again), which uses it as a connection.
const PY_SIMPLEX: &str = r#"
import os, subprocess, sys, json
from multiprocessing import Pipe
argv, role = json.loads(sys.argv[1]), sys.argv[2]
r, w = Pipe(duplex=False)
mine, theirs = (r, w) if role == 'writer' else (w, r)
env = dict(os.environ, MPCONN_TEST_ROLE=role, MPCONN_FD=str(theirs.fileno()))
child = subprocess.Popen(argv, env=env, pass_fds=[theirs.fileno()])
theirs.close()
big = bytes(range(256)) * 4096
if role == 'writer':
    assert r.recv_bytes() == b'', 'empty'
    assert r.recv_bytes() == b'from rust', 'short'
    assert r.recv_bytes() == big, 'big'
    try:
        r.recv_bytes()
        raise SystemExit('expected EOFError after the child closed its end')
    except EOFError:
        pass
else:
    w.send_bytes(b'')
    w.send_bytes(b'from python')
    w.send_bytes(big)
    w.close()
assert child.wait() == 0, 'child failed'
"#;

fn simplex_child() {
    let role = child_role().unwrap();
    let fd: RawFd = std::env::var("MPCONN_FD").unwrap().parse().unwrap();
    // SAFETY: Python passed this descriptor to us alone.
    let conn = Connection::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut conn = conn.dangerous_trust_without_authentication();
    let big: Vec<u8> = (0..4096).flat_map(|_| 0..=255u8).collect();
    if role == "writer" {
        conn.send_bytes(b"").unwrap();
        conn.send_bytes(b"from rust").unwrap();
        conn.send_bytes(&big).unwrap();
    } else {
        assert_eq!(conn.recv_bytes().unwrap(), b"");
        assert_eq!(conn.recv_bytes().unwrap(), b"from python");
        assert_eq!(conn.recv_bytes().unwrap(), big);
        assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
    }
}

fn child_command(test: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let argv = [
        exe.to_str().unwrap(),
        test,
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ];
    format!(
        "[{}]",
        argv.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn run_python(py: &Path, script: &str, args: &[&str]) -> bool {
    Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn either_end_of_a_python_simplex_pipe_works_in_an_mpconn_child() {
    if child_role().is_some() {
        return simplex_child();
    }
    let _w = watchdog(240);
    let argv = child_command("either_end_of_a_python_simplex_pipe_works_in_an_mpconn_child");
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        for role in ["writer", "reader"] {
            assert!(
                run_python(&py, PY_SIMPLEX, &[&argv, role]),
                "python {version}, mpconn child as the {role}"
            );
        }
    }
}

/// A Python child talks over a socket end its mpconn parent passed it and
/// then closed: CPython's close() leaves other holders working, and so
/// must mpconn's.
const PY_HOLDER: &str = r#"
import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
conn.send_bytes(b'the child still holds it')
assert conn.recv_bytes() == b'and the parent hears it'
"#;

#[test]
fn a_parent_closing_its_copy_leaves_a_python_child_connected() {
    let _w = watchdog(240);
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        let (mut ours, theirs) = mpconn::pipe().unwrap();
        // The child inherits a copy without close-on-exec.
        // SAFETY: F_DUPFD on an open descriptor gives a new one we own.
        let copy = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD, 3) };
        assert!(copy >= 0);
        // SAFETY: fcntl returned a fresh descriptor.
        let copy = unsafe { OwnedFd::from_raw_fd(copy) };
        let mut child = Command::new(&py)
            .arg("-c")
            .arg(PY_HOLDER)
            .arg(copy.as_raw_fd().to_string())
            .spawn()
            .unwrap();
        drop(copy);
        theirs.close().unwrap();
        assert_eq!(
            ours.recv_bytes().unwrap(),
            b"the child still holds it",
            "python {version}"
        );
        ours.send_bytes(b"and the parent hears it").unwrap();
        assert!(child.wait().unwrap().success(), "python {version}");
        assert!(matches!(ours.recv_bytes(), Err(Error::Eof)));
    }
}
