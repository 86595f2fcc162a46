//! Peer credentials: who is at the other end of a Unix socket or a named
//! pipe, and listeners that refuse peers of another user before the
//! handshake. The refusal is shown with a real other user on Linux: a
//! child process started as `nobody`.

mod common;

use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::{KEY, child_role, expect_success, local_address, spawn_child, watchdog};
use mpconn::{Client, Error, Listener, ListenerOptions, PeerUser};

/// Connects to the address in `MPCONN_TEST_ADDRESS`, checks that the
/// peer is the process in `MPCONN_TEST_PARENT`, and echoes one message.
fn run_connecting_child() {
    let address = std::env::var("MPCONN_TEST_ADDRESS").unwrap();
    let parent: u32 = std::env::var("MPCONN_TEST_PARENT")
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = Client::connect(address.as_str(), KEY).unwrap();
    let creds = conn.peer_credentials().unwrap();
    assert_eq!(creds.pid(), Some(parent), "the listener's process");
    assert_eq!(creds.is_same_user(), Some(true));
    let n: u32 = conn.recv().unwrap();
    conn.send(&(n + 1)).unwrap();
}

/// A listener on a fresh local address, a child connected to it, and the
/// accepted connection's peer credentials checked against the child.
fn credentials_of_a_child(test: &str) {
    let _w = watchdog(60);
    let listener = Listener::bind(local_address("child-creds"), KEY).unwrap();
    let address = listener.address().to_string();
    let parent = std::process::id().to_string();
    let child = spawn_child(
        test,
        "connect",
        Stdio::null(),
        &[
            ("MPCONN_TEST_ADDRESS", &address),
            ("MPCONN_TEST_PARENT", &parent),
        ],
    );
    let mut conn = listener.accept_timeout(Duration::from_secs(30)).unwrap();
    let creds = conn.peer_credentials().unwrap();
    assert_eq!(creds.pid(), Some(child.id()), "the child's pid: {creds}");
    assert_eq!(creds.is_same_user(), Some(true), "{creds}");
    #[cfg(unix)]
    {
        assert_eq!(creds.uid(), Some(me::uid()));
        assert_eq!(creds.gid(), Some(me::gid()));
    }
    #[cfg(windows)]
    assert_eq!((creds.uid(), creds.gid()), (None, None));
    conn.send(&41u32).unwrap();
    assert_eq!(conn.recv::<u32>().unwrap(), 42);
    expect_success(child);
}

#[test]
fn credentials_of_a_child_process() {
    if child_role().as_deref() == Some("connect") {
        return run_connecting_child();
    }
    credentials_of_a_child("credentials_of_a_child_process");
}

#[test]
fn credentials_of_a_peer_in_this_process() {
    let _w = watchdog(30);
    let listener = Listener::bind(local_address("own-creds"), KEY).unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || Client::connect(address, KEY).unwrap());
    let server = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    let client = client.join().unwrap();
    let me = std::process::id();
    for creds in [
        server.peer_credentials().unwrap(),
        client.peer_credentials().unwrap(),
    ] {
        assert_eq!(creds.pid(), Some(me), "{creds}");
        assert_eq!(creds.is_same_user(), Some(true), "{creds}");
        #[cfg(unix)]
        assert_eq!(
            (creds.uid(), creds.gid()),
            (Some(me::uid()), Some(me::gid()))
        );
    }
    // Each half answers as the connection does.
    let (tx, rx) = server.split();
    assert_eq!(tx.peer_credentials().unwrap().pid(), Some(me));
    assert_eq!(rx.peer_credentials().unwrap().pid(), Some(me));
    // A pipe() pair's peer is this process.
    let (a, b) = mpconn::pipe().unwrap();
    assert_eq!(a.peer_credentials().unwrap().pid(), Some(me));
    assert_eq!(b.peer_credentials().unwrap().pid(), Some(me));
}

#[test]
fn tcp_has_no_credentials_and_a_tcp_listener_cannot_check_them() {
    let _w = watchdog(30);
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || Client::connect(address, KEY).unwrap());
    let server = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    let client = client.join().unwrap();
    for result in [server.peer_credentials(), client.peer_credentials()] {
        match result {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
                assert!(e.to_string().contains("TCP"), "{e}");
            }
            other => panic!("TCP credentials: {other:?}"),
        }
    }
    for policy in [PeerUser::Same, PeerUser::Uids(vec![0])] {
        match ListenerOptions::new()
            .peer_user(policy.clone())
            .bind("127.0.0.1:0", KEY)
        {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
                assert!(e.to_string().contains("TCP"), "{e}");
            }
            other => panic!("a TCP listener with {policy:?}: {other:?}"),
        }
    }
}

#[test]
fn a_same_user_policy_admits_our_own_clients() {
    let _w = watchdog(30);
    let listener = ListenerOptions::new()
        .peer_user(PeerUser::Same)
        .bind(local_address("same-admits"), KEY)
        .unwrap();
    let address = listener.address().clone();
    let client = thread::spawn(move || {
        let mut conn = Client::connect(address, KEY).unwrap();
        conn.send(&7u8).unwrap();
    });
    let mut conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 7);
    client.join().unwrap();
    let stats = listener.stats();
    assert_eq!((stats.accepted, stats.refused_peers), (1, 0));
    // Windows has no uids to list: a named-pipe listener refuses the policy.
    #[cfg(windows)]
    match ListenerOptions::new()
        .peer_user(PeerUser::Uids(vec![0]))
        .bind(local_address("uids-pipe"), KEY)
    {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}"),
        other => panic!("a named pipe with a uid list: {other:?}"),
    }
}

#[cfg(unix)]
mod me {
    pub fn uid() -> u32 {
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() }
    }

    pub fn gid() -> u32 {
        // SAFETY: getgid has no preconditions and cannot fail.
        unsafe { libc::getgid() }
    }
}

/// The refusal, with a real peer of another user: a child started as
/// `nobody` (65534), which needs this test to run as root.
#[cfg(target_os = "linux")]
mod other_user {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Stdio};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::common::{KEY, child_command, child_role, watchdog};
    use super::me;
    use mpconn::{AuthError, Client, Error, Listener, ListenerOptions, PeerCredentials, PeerUser};

    const NOBODY: u32 = 65534;

    /// Whether this process may start one as another user; under CI it
    /// must, and a test that could not run fails instead of passing.
    fn can_switch_users(test: &str) -> bool {
        if me::uid() == 0 {
            return true;
        }
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{test}: CI=true, but not root: no peer of another user"
        );
        eprintln!("SKIPPED {test}: not root, so no peer of another user can be started");
        false
    }

    /// A Linux abstract socket name (`unix:@...`): no directory for
    /// `nobody` to be kept out of.
    fn abstract_name(tag: &str) -> String {
        format!("mpconn-test-{tag}-{}", std::process::id())
    }

    /// This test binary again, as `nobody`, in `role`.
    fn spawn_as_nobody(test: &str, role: &str, name: &str) -> Child {
        child_command(test, role)
            .env("MPCONN_TEST_ABSTRACT", name)
            .stdin(Stdio::null())
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .expect("starting a child as nobody")
    }

    /// Keeps the listener's engine moving until `child` exits; its status.
    fn serve_until_exit<T: mpconn::Trust>(
        listener: &Listener<T>,
        child: &mut Child,
    ) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the child did not finish");
            match listener.accept_timeout(Duration::from_millis(50)) {
                Err(Error::Timeout) => {}
                other => panic!("nothing should be accepted here: {other:?}"),
            }
        }
    }

    fn refusals(listener: ListenerOptions) -> (ListenerOptions, Arc<Mutex<Vec<Error>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = seen.clone();
        let listener = listener.on_handshake_failure(move |f| {
            let copy = match &f.error {
                Error::Auth(e) => Error::Auth(e.clone()),
                other => Error::Io(std::io::Error::other(other.to_string())),
            };
            hook.lock().unwrap().push(copy);
        });
        (listener, seen)
    }

    fn refused_credentials(errors: &[Error]) -> PeerCredentials {
        match errors {
            [Error::Auth(AuthError::PeerRefused(creds))] => *creds,
            other => panic!("expected one PeerRefused, got {other:?}"),
        }
    }

    #[test]
    fn a_peer_of_another_user_is_refused_before_the_handshake() {
        const TEST: &str = "other_user::a_peer_of_another_user_is_refused_before_the_handshake";
        if child_role().as_deref() == Some("nobody-raw") {
            // As nobody: connect and read. A listener that ran the
            // handshake would send its challenge first; a refused peer
            // sees the end of the stream with no byte at all.
            assert_eq!(me::uid(), NOBODY);
            assert_eq!(me::gid(), NOBODY);
            let name = std::env::var("MPCONN_TEST_ABSTRACT").unwrap();
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let mut s = UnixStream::connect_addr(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got)
                .expect("end of stream, not a timeout");
            assert!(got.is_empty(), "the refused peer received {got:02x?}");
            return;
        }
        if !can_switch_users(TEST) {
            return;
        }
        let _w = watchdog(60);
        let name = abstract_name("refuse");
        let (opts, seen) = refusals(ListenerOptions::new().peer_user(PeerUser::Same));
        let listener = opts.bind(format!("unix:@{name}"), KEY).unwrap();
        let mut child = spawn_as_nobody(TEST, "nobody-raw", &name);
        let status = serve_until_exit(&listener, &mut child);
        assert!(status.success(), "the nobody child failed: {status}");
        let stats = listener.stats();
        assert_eq!(stats.refused_peers, 1, "{stats:?}");
        assert_eq!(stats.failed_handshakes, 1, "{stats:?}");
        assert_eq!(stats.accepted, 0, "{stats:?}");
        let creds = refused_credentials(&seen.lock().unwrap());
        assert_eq!(creds.uid(), Some(NOBODY), "{creds}");
        assert_eq!(creds.gid(), Some(NOBODY), "{creds}");
        assert_eq!(creds.pid(), Some(child.id()), "{creds}");
        assert_eq!(creds.is_same_user(), Some(false), "{creds}");

        // A client of our own user is admitted and served.
        let address = listener.address().clone();
        let client = thread::spawn(move || {
            let mut conn = Client::connect(address, KEY).unwrap();
            conn.send(&1u8).unwrap();
        });
        let mut conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(conn.recv::<u8>().unwrap(), 1);
        client.join().unwrap();
        let stats = listener.stats();
        assert_eq!((stats.accepted, stats.refused_peers), (1, 1), "{stats:?}");
    }

    #[test]
    fn a_listener_without_a_handshake_refuses_other_users_too() {
        const TEST: &str = "other_user::a_listener_without_a_handshake_refuses_other_users_too";
        if child_role().as_deref() == Some("nobody-raw") {
            // As nobody: admitted, the connection would stay open (this
            // listener sends nothing) until the parent gave up on it.
            let name = std::env::var("MPCONN_TEST_ABSTRACT").unwrap();
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let mut s = UnixStream::connect_addr(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got)
                .expect("end of stream, not a timeout");
            assert!(got.is_empty());
            return;
        }
        if !can_switch_users(TEST) {
            return;
        }
        let _w = watchdog(60);
        let name = abstract_name("refuse-unverified");
        let (opts, seen) = refusals(ListenerOptions::new().peer_user(PeerUser::Same));
        let listener = opts.bind_unauthenticated(format!("unix:@{name}")).unwrap();
        let mut child = spawn_as_nobody(TEST, "nobody-raw", &name);
        let status = serve_until_exit(&listener, &mut child);
        assert!(status.success(), "the nobody child failed: {status}");
        let creds = refused_credentials(&seen.lock().unwrap());
        assert_eq!(creds.uid(), Some(NOBODY), "{creds}");
        let stats = listener.stats();
        assert_eq!((stats.accepted, stats.refused_peers), (0, 1), "{stats:?}");
    }

    #[test]
    fn a_uid_list_admits_its_users_and_refuses_the_rest() {
        const TEST: &str = "other_user::a_uid_list_admits_its_users_and_refuses_the_rest";
        if child_role().as_deref() == Some("nobody-client") {
            // As nobody, a client that holds the key: admitted, served.
            assert_eq!(me::uid(), NOBODY);
            let name = std::env::var("MPCONN_TEST_ABSTRACT").unwrap();
            let mut conn = Client::connect(format!("unix:@{name}"), KEY).unwrap();
            let n: u32 = conn.recv().unwrap();
            conn.send(&(n * 2)).unwrap();
            return;
        }
        if !can_switch_users(TEST) {
            return;
        }
        let _w = watchdog(60);
        let name = abstract_name("uids");
        let (opts, seen) = refusals(ListenerOptions::new().peer_user(PeerUser::Uids(vec![NOBODY])));
        let listener = opts.bind(format!("unix:@{name}"), KEY).unwrap();
        let child = spawn_as_nobody(TEST, "nobody-client", &name);
        let mut conn = listener.accept_timeout(Duration::from_secs(30)).unwrap();
        let creds = conn.peer_credentials().unwrap();
        assert_eq!((creds.uid(), creds.pid()), (Some(NOBODY), Some(child.id())));
        conn.send(&21u32).unwrap();
        assert_eq!(conn.recv::<u32>().unwrap(), 42);
        super::expect_success(child);

        // This process's user (root) is not on the list.
        let address = listener.address().clone();
        let client = thread::spawn(move || Client::connect(address, KEY).map(drop));
        match listener.accept_timeout(Duration::from_secs(2)) {
            Err(Error::Timeout) => {}
            other => panic!("root was admitted: {other:?}"),
        }
        let refused = client.join().unwrap();
        assert!(refused.is_err(), "the refused client connected");
        let creds = refused_credentials(&seen.lock().unwrap());
        assert_eq!(creds.uid(), Some(0), "{creds}");
        let stats = listener.stats();
        assert_eq!((stats.accepted, stats.refused_peers), (1, 1), "{stats:?}");
    }
}
