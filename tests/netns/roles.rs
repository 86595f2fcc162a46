//! What the processes on each host do. A test starts them with
//! [`Net::spawn`](crate::net::Net::spawn) and hands them their parameters in
//! `MPCONN_NETNS_*` variables; every listener and client comes from the
//! test's [`Mode`].

use std::thread;
use std::time::{Duration, Instant};

use mpconn::Error;

use crate::common::{child_role, watchdog};
use crate::messages::{self, COUNT};
use crate::mode::Mode;
use crate::side::{announce, await_signal};

/// How long a receive waits in a test that expects its message: far more
/// than any retransmission at 1 % loss needs, far less than the watchdog.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs this process's role if it is a child, and says whether it was.
pub fn as_child() -> bool {
    let Some(role) = child_role() else {
        return false;
    };
    let _watchdog = watchdog(55);
    match role.as_str() {
        "relay" => crate::relay::serve(
            &param("LISTEN"),
            &param("TARGET"),
            Duration::from_millis(number("DELAY_MS")),
            || announce("ready"),
        ),
        "echo-server" => echo_server(),
        "handshake-client" => handshake_client(),
        "stream-client" => stream_client(),
        "partition-server" => partition_server(),
        "partition-client" => partition_client(),
        "bulk-server" => bulk_server(),
        "bulk-client" => bulk_client(),
        #[cfg(feature = "tokio")]
        "echo-server-tokio" => tokio_roles::echo_server(),
        #[cfg(feature = "tokio")]
        "stream-client-tokio" => tokio_roles::stream_client(),
        other => panic!("unknown role {other:?}"),
    }
    true
}

/// The parameter `MPCONN_NETNS_{name}`.
pub fn param(name: &str) -> String {
    let var = format!("MPCONN_NETNS_{name}");
    std::env::var(&var).unwrap_or_else(|_| panic!("{var} is not set"))
}

/// The number `MPCONN_NETNS_{name}`.
pub fn number(name: &str) -> u64 {
    param(name).parse().unwrap()
}

/// The number `MPCONN_NETNS_{name}`, or `default`.
fn number_or(name: &str, default: u64) -> u64 {
    std::env::var(format!("MPCONN_NETNS_{name}")).map_or(default, |v| v.parse().unwrap())
}

/// Accepts `CONNS` connections on `ADDR` and echoes each message on each,
/// checking that every connection's messages arrive in sequence and intact.
fn echo_server() {
    let listener = Mode::from_env().bind(&param("ADDR"));
    announce("ready");
    let mut handlers = Vec::new();
    for _ in 0..number("CONNS") {
        let mut conn = listener.accept().unwrap();
        handlers.push(thread::spawn(move || {
            let mut seq = 0;
            loop {
                match conn.recv_bytes_timeout(PATIENCE) {
                    Ok(msg) => {
                        messages::check(seq, &msg).unwrap();
                        conn.send_bytes(&msg).unwrap();
                        seq += 1;
                    }
                    Err(Error::Eof) => return seq,
                    Err(e) => panic!("receiving message {seq}: {e}"),
                }
            }
        }));
    }
    let echoed: u64 = handlers.into_iter().map(|h| h.join().unwrap()).sum();
    let stats = listener.stats();
    println!("echoed {echoed} messages; {stats:?}");
    assert_eq!(stats.failed_handshakes, 0, "{stats:?}");
}

/// `THREADS` threads each connect `PER_THREAD` times to `ADDR`, one after
/// the other, and exchange one message on each connection. With `MIN_MS`,
/// every handshake must take at least that long (the relay's delay shows).
fn handshake_client() {
    let mode = Mode::from_env();
    let addr = param("ADDR");
    let per_thread = number("PER_THREAD");
    let threads: Vec<_> = (0..number("THREADS"))
        .map(|t| {
            let addr = addr.clone();
            thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let start = Instant::now();
                        let mut conn = mode
                            .connect(&addr)
                            .unwrap_or_else(|e| panic!("thread {t}, handshake {i}: {e}"));
                        let took = start.elapsed();
                        conn.send_bytes(&messages::message(0)).unwrap();
                        let echo = conn.recv_bytes_timeout(PATIENCE).unwrap();
                        messages::check(0, &echo).unwrap();
                        took
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut took: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    took.sort();
    println!(
        "{} handshakes: fastest {:?}, median {:?}, slowest {:?}",
        took.len(),
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let floor = Duration::from_millis(number_or("MIN_MS", 0));
    assert!(
        took[0] >= floor,
        "a handshake took {:?}, less than {floor:?}",
        took[0]
    );
}

/// Sends `COUNT` messages to `ADDR` from one thread while another receives
/// their echoes, checking each.
fn stream_client() {
    let count = number_or("COUNT", COUNT);
    let start = Instant::now();
    let conn = Mode::from_env().connect(&param("ADDR")).unwrap();
    let (mut tx, mut rx) = conn.split();
    let sender = thread::spawn(move || {
        for seq in 0..count {
            tx.send_bytes(&messages::message(seq)).unwrap();
        }
        tx
    });
    for seq in 0..count {
        let echo = rx
            .recv_bytes_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("receiving the echo of message {seq}: {e}"));
        messages::check(seq, &echo).unwrap();
    }
    let _tx = sender.join().unwrap();
    println!("{count} messages sent and echoed in {:?}", start.elapsed());
}

/// How long each side of a partition waits for a message that cannot come.
fn partition_wait() -> Duration {
    Duration::from_millis(number("WAIT_MS"))
}

/// The receive that a partition must end in a timeout, within `wait` and
/// not long after it.
fn expect_timeout(result: mpconn::Result<Vec<u8>>, started: Instant, wait: Duration) {
    let took = started.elapsed();
    match result {
        Err(Error::Timeout) => {}
        Ok(msg) => panic!("a {}-byte message crossed the partition", msg.len()),
        Err(e) => panic!("the receive ended in {e:?}, not a timeout"),
    }
    assert!(
        took >= wait && took < wait + Duration::from_secs(1),
        "the receive timed out after {took:?}, not {wait:?}"
    );
    println!("timed out after {took:?}");
}

/// What the client sends while the link is cut.
const ACROSS: &[u8] = b"across the partition";

/// One connection on `ADDR`: an echo while the link is up, then, after the
/// parent's `go` (the partition is in place by then), a receive that must
/// time out (should a message arrive, it is echoed, so that the client
/// fails as well). After the parent's `healed`, the client's message
/// arrives after all and is echoed: the timeouts left the connection whole.
fn partition_server() {
    let listener = Mode::from_env().bind(&param("ADDR"));
    announce("ready");
    let mut conn = listener.accept().unwrap();
    let msg = conn.recv_bytes_timeout(PATIENCE).unwrap();
    conn.send_bytes(&msg).unwrap();
    announce("up");
    await_signal("go");
    let wait = partition_wait();
    let started = Instant::now();
    let result = conn.recv_bytes_timeout(wait);
    if let Ok(msg) = &result {
        conn.send_bytes(msg).unwrap();
    }
    expect_timeout(result, started, wait);
    announce("timed-out");
    await_signal("healed");
    let msg = conn.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(msg, ACROSS);
    conn.send_bytes(&msg).unwrap();
    // Until the client has the echo: closing now could reset the
    // connection before the echo's retransmission is acknowledged.
    assert!(matches!(conn.recv_bytes_timeout(PATIENCE), Err(Error::Eof)));
}

/// Connects to `ADDR` and exchanges a message while the link is up; after
/// the parent's `go`, sends a short message (it fits the socket buffer, so
/// the send returns) and waits for its echo, which must time out. After
/// the parent's `healed`, the echo arrives.
fn partition_client() {
    let mut conn = Mode::from_env().connect(&param("ADDR")).unwrap();
    conn.send_bytes(&messages::message(0)).unwrap();
    messages::check(0, &conn.recv_bytes_timeout(PATIENCE).unwrap()).unwrap();
    announce("up");
    await_signal("go");
    let wait = partition_wait();
    conn.send_bytes(ACROSS).unwrap();
    let started = Instant::now();
    expect_timeout(conn.recv_bytes_timeout(wait), started, wait);
    announce("timed-out");
    await_signal("healed");
    let started = Instant::now();
    let echo = conn.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(echo, ACROSS);
    println!(
        "the echo came {:?} after the link healed",
        started.elapsed()
    );
}

/// Receives one message of `SIZE` bytes on `ADDR` with short receives that
/// time out while it trickles in (each keeps what arrived), checks it and
/// acknowledges it.
fn bulk_server() {
    let size = number("SIZE") as usize;
    let listener = Mode::from_env().bind(&param("ADDR"));
    announce("ready");
    let mut conn = listener.accept().unwrap();
    let start = Instant::now();
    let mut timeouts = 0;
    let msg = loop {
        match conn.recv_bytes_timeout(Duration::from_millis(500)) {
            Ok(msg) => break msg,
            Err(Error::Timeout) => timeouts += 1,
            Err(e) => panic!("after {timeouts} timeouts: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "still no message"
        );
    };
    messages::check_sized(0, size, &msg).unwrap();
    conn.send_bytes(b"intact").unwrap();
    println!(
        "{size} bytes in {:?}, {timeouts} receives timed out on the way",
        start.elapsed()
    );
    assert!(
        timeouts >= 2,
        "the message came in {timeouts} timed-out receives: the link is not slow"
    );
}

/// Sends one message of `SIZE` bytes to `ADDR`, waits for the
/// acknowledgement, and checks that it took at least `MIN_MS`.
fn bulk_client() {
    let size = number("SIZE") as usize;
    let msg = messages::message_sized(0, size);
    let mut conn = Mode::from_env().connect(&param("ADDR")).unwrap();
    let start = Instant::now();
    conn.send_bytes(&msg).unwrap();
    let ack = conn.recv_bytes_timeout(Duration::from_secs(45)).unwrap();
    let took = start.elapsed();
    assert_eq!(ack, b"intact");
    println!("{size} bytes sent and acknowledged in {took:?}");
    let floor = Duration::from_millis(number("MIN_MS"));
    assert!(
        took >= floor,
        "{took:?}, less than the link allows ({floor:?})"
    );
}

/// The tokio counterparts of the echo server and the stream client.
#[cfg(feature = "tokio")]
mod tokio_roles {
    use std::time::Instant;

    use mpconn::Error;

    use super::{PATIENCE, number, number_or, param};
    use crate::messages::{self, COUNT};
    use crate::mode::Mode;
    use crate::side::announce;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// As the blocking `echo_server`, a task per connection.
    pub fn echo_server() {
        runtime().block_on(async {
            let listener = Mode::from_env().bind_tokio(&param("ADDR"));
            announce("ready");
            let mut handlers = Vec::new();
            for _ in 0..number("CONNS") {
                let mut conn = listener.accept().await.unwrap();
                handlers.push(tokio::spawn(async move {
                    let mut seq = 0;
                    loop {
                        match conn.recv_bytes_timeout(PATIENCE).await {
                            Ok(msg) => {
                                messages::check(seq, &msg).unwrap();
                                conn.send_bytes(&msg).await.unwrap();
                                seq += 1;
                            }
                            Err(Error::Eof) => return seq,
                            Err(e) => panic!("receiving message {seq}: {e}"),
                        }
                    }
                }));
            }
            let mut echoed = 0;
            for h in handlers {
                echoed += h.await.unwrap();
            }
            let stats = listener.stats();
            println!("echoed {echoed} messages; {stats:?}");
            assert_eq!(stats.failed_handshakes, 0, "{stats:?}");
        });
    }

    /// As the blocking `stream_client`: the halves of one connection send
    /// and receive at once.
    pub fn stream_client() {
        let count = number_or("COUNT", COUNT);
        runtime().block_on(async {
            let start = Instant::now();
            let conn = Mode::from_env()
                .connect_tokio(&param("ADDR"))
                .await
                .unwrap();
            let (mut tx, mut rx) = conn.split();
            let send = async move {
                for seq in 0..count {
                    tx.send_bytes(&messages::message(seq)).await.unwrap();
                }
                tx
            };
            let receive = async move {
                for seq in 0..count {
                    let echo = rx
                        .recv_bytes_timeout(PATIENCE)
                        .await
                        .unwrap_or_else(|e| panic!("receiving the echo of message {seq}: {e}"));
                    messages::check(seq, &echo).unwrap();
                }
            };
            let (_tx, ()) = tokio::join!(send, receive);
            println!("{count} messages sent and echoed in {:?}", start.elapsed());
        });
    }
}
