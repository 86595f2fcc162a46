//! Hostile peers and faults: floods, descriptor exhaustion and leaks, peers
//! that die or reset, SIGPIPE.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{KEY, child_role, expect_success, spawn_child, watchdog};
use mpconn::{Address, Client, Connection, Error, Listener, ListenerOptions, Unverified, pipe};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_flood_of_hostile_and_valid_clients_at_once() {
    let _w = watchdog(60);
    let failures = Arc::new(AtomicUsize::new(0));
    let counted = failures.clone();
    let listener = Arc::new(
        ListenerOptions::new()
            .handshake_timeout(Duration::from_millis(800))
            .on_handshake_failure(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .bind("127.0.0.1:0", KEY)
            .unwrap(),
    );
    let Address::Tcp(sa) = *listener.address() else {
        panic!()
    };
    let mut threads = Vec::new();
    for i in 0..60 {
        threads.push(thread::spawn(move || -> bool {
            match i % 4 {
                // Valid clients.
                0 => {
                    let mut conn = Client::connect(sa, KEY).unwrap();
                    conn.send(&i).unwrap();
                    conn.recv::<i32>().unwrap() == i
                }
                // Silent until the deadline has passed.
                1 => {
                    let s = TcpStream::connect(sa).unwrap();
                    thread::sleep(Duration::from_millis(1500));
                    drop(s);
                    true
                }
                // Garbage.
                2 => {
                    let mut s = TcpStream::connect(sa).unwrap();
                    let _ = s.write_all(&[0xde; 700]);
                    true
                }
                // Wrong key.
                _ => Client::connect(sa, b"a wrong key, but long enough").is_err(),
            }
        }));
    }
    let server = {
        let listener = listener.clone();
        thread::spawn(move || {
            for _ in 0..15 {
                let mut conn = listener.accept().unwrap();
                let i: i32 = conn.recv().unwrap();
                conn.send(&i).unwrap();
            }
        })
    };
    for t in threads {
        assert!(t.join().unwrap());
    }
    server.join().unwrap();
    assert_eq!(listener.stats().accepted, 15);
    // The listener still serves after the flood.
    let client = thread::spawn(move || Client::connect(sa, KEY).map(drop));
    listener.accept_timeout(Duration::from_secs(5)).unwrap();
    client.join().unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures.load(Ordering::SeqCst) < 45 && Instant::now() < deadline {
        let _ = listener.accept_timeout(Duration::from_millis(100));
    }
    assert_eq!(failures.load(Ordering::SeqCst), 45);
}

#[test]
fn no_descriptor_leaks_across_thousands_of_connections() {
    // Alone in a process of its own: other tests' descriptors would blur the count.
    if child_role().as_deref() != Some("fd-count") {
        let _w = watchdog(180);
        let child = spawn_child(
            "no_descriptor_leaks_across_thousands_of_connections",
            "fd-count",
            Stdio::null(),
            &[],
        );
        return expect_success(child);
    }
    // Everything is counted with the listener gone: it may still hold
    // handshakes it accepted when nobody is left to drive them.
    let before = open_fds();
    let listener = Arc::new(Listener::bind("127.0.0.1:0", KEY).unwrap());
    let Address::Tcp(sa) = *listener.address() else {
        panic!()
    };
    let server = {
        let listener = listener.clone();
        thread::spawn(move || {
            for _ in 0..1000 {
                let mut conn = listener.accept().unwrap();
                let _ = conn.recv_bytes();
            }
        })
    };
    // The wrong key first in each pair: once the server has accepted its
    // 1000 clients nobody is inside accept() to send a challenge, and a
    // client waits for one as long as it takes.
    for i in 0..2000 {
        if i % 2 == 1 {
            let mut conn = Client::connect(sa, KEY).unwrap();
            conn.send_bytes(b"bye").unwrap();
        } else {
            assert!(Client::connect(sa, b"the wrong key, long enough").is_err());
        }
    }
    server.join().unwrap();
    for _ in 0..1000 {
        let (a, b) = pipe().unwrap();
        let (tx, rx) = a.split();
        drop((tx, rx, b));
    }
    drop(listener);
    assert_eq!(open_fds(), before);
}

#[test]
fn a_peer_killed_while_we_send_is_an_error_not_sigpipe() {
    if child_role().as_deref() == Some("sigpipe") {
        // SAFETY: restores the default action, which kills the process on
        // SIGPIPE: only MSG_NOSIGNAL can keep this child alive.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (mut a, b) = pipe().unwrap();
        drop(b);
        let err = a.send_bytes(&[0u8; 1 << 20]).unwrap_err();
        println!("survived: {err}");
        return;
    }
    let _w = watchdog(30);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_peer_killed_while_we_send_is_an_error_not_sigpipe",
            "--exact",
            "--nocapture",
        ])
        .env("MPCONN_TEST_ROLE", "sigpipe")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child died: {:?}\n{text}", out.status);
    assert!(text.contains("survived"), "{text}");

    // A real process killed in the middle of our send.
    let (ours, theirs) = pipe().unwrap();
    let fd = OwnedFd::try_from(theirs).map_err(|(e, _)| e).unwrap();
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::from(fd))
        .spawn()
        .unwrap();
    let mut ours = ours;
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
    });
    let big = vec![1u8; 64 << 20];
    let err = ours.send_bytes(&big).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err}");
    killer.join().unwrap();
}

#[test]
fn a_reset_connection_is_an_error() {
    let _w = watchdog(20);
    let listener = Listener::bind_unauthenticated("127.0.0.1:0").unwrap();
    let Address::Tcp(sa) = *listener.address() else {
        panic!()
    };
    let client = thread::spawn(move || {
        let s = socket2::Socket::from(TcpStream::connect(sa).unwrap());
        s.set_linger(Some(Duration::ZERO)).unwrap();
        let mut s = TcpStream::from(s);
        s.write_all(&[0, 0, 0, 100, 1, 2]).unwrap();
        thread::sleep(Duration::from_millis(100));
        drop(s); // RST, not FIN
    });
    let mut conn: Connection<Unverified> = listener.accept().unwrap();
    client.join().unwrap();
    let err = conn.recv_bytes().unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
}

#[test]
fn descriptor_exhaustion_backs_off_and_recovers() {
    if child_role().as_deref() == Some("emfile") {
        return emfile_child();
    }
    let _w = watchdog(60);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "descriptor_exhaustion_backs_off_and_recovers",
            "--exact",
            "--nocapture",
        ])
        .env("MPCONN_TEST_ROLE", "emfile")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(a) = line.strip_prefix("LISTENING ") {
            break a.to_string();
        }
    };
    // Connect while the child has no descriptor left to accept with.
    let mut conn = Client::connect(address.as_str(), KEY).unwrap();
    conn.send(&"after the shortage").unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "served");
    assert!(child.wait().unwrap().success());
}

fn emfile_child() {
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    // SAFETY: lowers this process's descriptor limit; nothing else runs here.
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: 64,
            rlim_max: 64,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let mut hoard = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hoard.push(f);
    }
    println!("LISTENING {}", listener.address());
    std::io::stdout().flush().unwrap();
    let err = listener.accept().map(drop).unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.raw_os_error() == Some(libc::EMFILE)),
        "{err}"
    );
    // A second call backs off instead of spinning, and still fails.
    let start = Instant::now();
    assert!(listener.accept_timeout(Duration::from_millis(5)).is_err());
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(hoard);
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "after the shortage");
    conn.send(&"served").unwrap();
}

#[test]
fn a_decoder_bomb_from_an_authenticated_peer_leaves_the_next_message_intact() {
    let _w = watchdog(20);
    let (mut a, mut b) = pipe().unwrap();
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    enum Nest {
        End,
        More(Box<Nest>),
    }
    let sender = thread::spawn(move || {
        // A Vec<String> claiming 2^62 elements, a String claiming 2^62 bytes,
        // and a value nested a million levels deep.
        let mut bomb = vec![0xfd];
        bomb.extend_from_slice(&(1u64 << 62).to_le_bytes());
        a.send_bytes(&bomb).unwrap();
        a.send_bytes(&bomb).unwrap();
        let mut deep = vec![1u8; 1_000_000];
        deep.push(0);
        a.send_bytes(&deep).unwrap();
        a.send(&"intact").unwrap();
        a
    });
    assert!(matches!(b.recv::<Vec<String>>(), Err(Error::Codec(_))));
    assert!(matches!(b.recv::<String>(), Err(Error::Codec(_))));
    assert!(matches!(b.recv::<Nest>(), Err(Error::Codec(_))));
    assert_eq!(b.recv::<String>().unwrap(), "intact");
    drop(sender.join().unwrap());
}

#[test]
fn spawned_children_do_not_inherit_connections() {
    if child_role().as_deref() == Some("inherit") {
        // Count the sockets this process holds beyond stdin, stdout, stderr.
        let mut found = 0;
        for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
            let name = entry.unwrap().file_name();
            let fd: i32 = name.to_string_lossy().parse().unwrap();
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            if target.to_string_lossy().starts_with("socket:") && fd > 2 {
                found += 1;
            }
        }
        println!("SOCKETS {found}");
        return;
    }
    let _w = watchdog(30);
    // One of everything that holds a socket.
    let (_a, _b) = pipe().unwrap();
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let unix = Listener::bind(common::unique_path("inherit"), KEY).unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || Client::connect(&address, KEY).unwrap());
    let _server_side = listener.accept().unwrap();
    let _client_side = client.join().unwrap();
    let _set = mpconn::WaitSet::<Connection>::new().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "spawned_children_do_not_inherit_connections",
            "--exact",
            "--nocapture",
        ])
        .env("MPCONN_TEST_ROLE", "inherit")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SOCKETS 0"), "{text}");
    drop((listener, unix));
}
