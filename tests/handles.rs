//! Windows: handles passed to another process, duplicated into it as
//! CPython's `DupHandle` does. Runs under Wine.

#![cfg(windows)]

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::windows::io::{AsHandle, OwnedHandle};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{KEY, child_role, expect_success, local_address, spawn_child, watchdog};
use mpconn::{Client, Error, Listener};

/// The child: receives a file handle and the writing end of an anonymous
/// pipe, and copies what the file holds into the pipe, with its pid.
fn run_receiving_child() {
    let address = std::env::var("MPCONN_TEST_ADDRESS").unwrap();
    let mut conn = Client::connect(address.as_str(), KEY).unwrap();
    let mut file = File::from(conn.recv_handle().unwrap());
    let mut pipe = File::from(conn.recv_handle().unwrap());
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_string(&mut text).unwrap();
    write!(pipe, "{text} / copied by {}", std::process::id()).unwrap();
    conn.send(&"done").unwrap();
}

#[test]
fn handles_passed_to_a_child_work_there() {
    if child_role().as_deref() == Some("receive") {
        return run_receiving_child();
    }
    let _w = watchdog(60);
    let listener = Listener::bind(local_address("handles"), KEY).unwrap();
    let address = listener.address().to_string();
    let child = spawn_child(
        "handles_passed_to_a_child_work_there",
        "receive",
        Stdio::null(),
        &[("MPCONN_TEST_ADDRESS", &address)],
    );
    let child_pid = child.id();
    let mut conn = listener.accept_timeout(Duration::from_secs(30)).unwrap();

    let dir = std::env::temp_dir().join(format!("mpconn-handles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passed.txt");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(b"written by the parent").unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();

    // The named pipe names the child, which opened its end: the default.
    conn.send_handle_to_peer(file.as_handle()).unwrap();
    conn.send_handle(writer.as_handle(), child_pid).unwrap();
    // The child's duplicate is now the pipe's only writer: the end of
    // what it writes comes when the child's copy closes.
    drop(writer);
    let mut copied = String::new();
    reader.read_to_string(&mut copied).unwrap();
    assert_eq!(
        copied,
        format!("written by the parent / copied by {child_pid}")
    );
    assert_eq!(conn.recv::<String>().unwrap(), "done");
    expect_success(child);
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A handle message, as `send_handle` makes it.
fn handle_message(pid: u32, value: u64) -> Vec<u8> {
    [
        b"#MPCONN-HANDLE#".as_slice(),
        &pid.to_le_bytes(),
        &value.to_le_bytes(),
    ]
    .concat()
}

fn invalid_data(result: mpconn::Result<OwnedHandle>) -> String {
    match result {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => e.to_string(),
        other => panic!("expected an InvalidData error, got {other:?}"),
    }
}

#[test]
fn a_malformed_handle_message_is_a_clear_error() {
    let _w = watchdog(30);
    let (mut a, mut b) = mpconn::pipe().unwrap();
    let me = std::process::id();

    a.send_bytes(b"not a handle").unwrap();
    let e = invalid_data(b.recv_handle());
    assert!(e.contains("not a handle message"), "{e}");

    let mut cut = handle_message(me, 4);
    cut.pop();
    a.send_bytes(&cut).unwrap();
    let e = invalid_data(b.recv_handle());
    assert!(e.contains("26 bytes, not 27"), "{e}");

    a.send_bytes(&handle_message(me.wrapping_add(4), 4))
        .unwrap();
    let e = invalid_data(b.recv_handle());
    assert!(e.contains("not this one"), "{e}");

    // A value that no handle of this process has.
    a.send_bytes(&handle_message(me, 0x7fff_fff0)).unwrap();
    let e = invalid_data(b.recv_handle());
    assert!(e.contains("not an open handle"), "{e}");

    // The connection goes on: a real handle still arrives.
    let (mut reader, writer) = std::io::pipe().unwrap();
    a.send_handle(writer.as_handle(), me).unwrap();
    drop(writer);
    let mut copy = File::from(b.recv_handle().unwrap());
    copy.write_all(b"through the copy").unwrap();
    drop(copy);
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "through the copy");
}

#[test]
fn a_failed_send_closes_the_duplicate() {
    let _w = watchdog(30);
    let (mut a, b) = mpconn::pipe().unwrap();
    drop(b);
    let (mut reader, writer) = std::io::pipe().unwrap();
    // Duplicated into this very process, whose handles the test can
    // watch; the message cannot leave, the peer being gone.
    let sent = a.send_handle(writer.as_handle(), std::process::id());
    assert!(sent.is_err(), "a send to a closed pipe succeeded");
    drop(writer);
    // Had the duplicate been left open, it would be a writer still, and
    // this read would never see the end.
    let (done, ended) = mpsc::channel();
    thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = done.send(reader.read_to_end(&mut rest).map(|_| rest));
    });
    let rest = ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the duplicate leaked: the pipe has a writer still")
        .unwrap();
    assert!(rest.is_empty());
}

#[test]
fn handle_passing_needs_a_live_process() {
    let _w = watchdog(30);
    let (mut a, _b) = mpconn::pipe().unwrap();
    let file = File::open(std::env::current_exe().unwrap()).unwrap();
    // Process ids are multiples of 4 on Windows: 3 names no process.
    match a.send_handle(file.as_handle(), 3) {
        Err(Error::Io(_)) => {}
        other => panic!("a send to no process: {other:?}"),
    }
}
