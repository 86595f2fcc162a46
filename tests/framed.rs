//! `MessageCodec` against real CPython 3.8–3.13 peers: a Python child holds
//! one end of a socketpair as a `multiprocessing.connection.Connection` and
//! the test drives the other through `Framed<UnixStream, MessageCodec>`.

#![cfg(all(feature = "tokio", unix))]

mod common;

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{PYTHON_VERSIONS, interpreters, watchdog};
use futures_util::{SinkExt, StreamExt};
use mpconn::Error;
use mpconn::tokio::MessageCodec;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Echoes every message back, after checking that it has the length the
/// test announced on the command line, until the parent closes its end.
const PY_ECHO: &str = r#"
import sys
from multiprocessing.connection import Connection
conn = Connection(0)
for size in map(int, sys.argv[1:]):
    msg = conn.recv_bytes()
    assert len(msg) == size, (len(msg), size)
    conn.send_bytes(msg)
try:
    conn.recv_bytes()
    raise SystemExit('expected the end of the stream')
except EOFError:
    pass
"#;

/// Sends one message at the limit and one just past it.
const PY_TOO_LARGE: &str = r#"
import sys
from multiprocessing.connection import Connection
conn = Connection(0)
limit = int(sys.argv[1])
conn.send_bytes(b'a' * limit)
conn.send_bytes(b'b' * (limit + 1))
"#;

const SIZES: [usize; 5] = [0, 1, 1000, 70_000, 1 << 20];

/// Starts `py` running `script` with one end of a fresh socketpair as its
/// descriptor 0, and returns the child and the other end, framed.
fn python_peer(
    py: &Path,
    script: &str,
    args: &[String],
    codec: MessageCodec,
) -> (Child, Framed<UnixStream, MessageCodec>) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // The child's end goes in as its stdin: dup2'd in the child alone, so
    // children that other tests start meanwhile do not inherit it.
    let child = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    let ours = UnixStream::from_std(ours).unwrap();
    (child, Framed::new(ours, codec))
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + len / 7) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_echoes_what_the_codec_frames() {
    let _w = watchdog(60);
    let args: Vec<String> = SIZES.iter().map(|n| n.to_string()).collect();
    let mut runs = Vec::new();
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        let (child, mut framed) = python_peer(&py, PY_ECHO, &args, MessageCodec::new());
        let task = tokio::spawn(async move {
            for size in SIZES {
                let sent = payload(size);
                framed.send(sent.as_slice()).await?;
                let got = framed.next().await.ok_or(Error::Eof)??;
                assert_eq!(got.len(), size, "python {version}");
                assert!(got[..] == sent[..], "python {version}: {size} bytes differ");
            }
            Ok::<_, Error>(version)
        });
        runs.push((child, task));
    }
    for (mut child, task) in runs {
        // The framed stream is dropped with the task, which closes our end.
        let version = task.await.unwrap().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "python {version}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_message_over_the_limit_is_refused() {
    let _w = watchdog(60);
    const LIMIT: u64 = 5000;
    let mut runs = Vec::new();
    for (version, py) in interpreters(&PYTHON_VERSIONS) {
        let codec = MessageCodec::new().max_message_size(LIMIT);
        let (child, mut framed) = python_peer(&py, PY_TOO_LARGE, &[LIMIT.to_string()], codec);
        let task = tokio::spawn(async move {
            let at_limit = framed.next().await.expect("a message").unwrap();
            assert!(at_limit.iter().all(|&b| b == b'a'), "python {version}");
            assert_eq!(at_limit.len() as u64, LIMIT, "python {version}");
            match framed.next().await {
                Some(Err(Error::MessageTooLarge { len, max })) => {
                    assert_eq!((len, max), (LIMIT + 1, LIMIT), "python {version}")
                }
                other => panic!("python {version}: {other:?}"),
            }
            // Framed ends the stream after a decode error.
            assert!(framed.next().await.is_none(), "python {version}");
            version
        });
        runs.push((child, task));
    }
    for (mut child, task) in runs {
        let version = task.await.unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "python {version}: {status}");
    }
}
