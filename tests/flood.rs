//! Admission control under a flood of silent connections: connections that
//! never send a byte, held open and opened again as soon as the listener
//! drops one, must not shut valid clients out, nor make the listener hold
//! descriptors without bound; and a mix of hostile clients (silent, slow,
//! garbage, wrong keys) must not keep valid ones from being served. Each
//! runs against the blocking listener and against the async one
//! (`mpconn::tokio::Listener`), which drives the same engine.
//! `examples/flood` measures the silent flood (latency, memory,
//! descriptors) from outside the listener process, `--async` for the
//! async listener.

#![cfg(unix)]

mod common;
// The attackers of `examples/flood`, shared rather than written twice.
#[allow(dead_code)]
#[path = "../examples/flood/attack.rs"]
mod attack;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use attack::{Attack, Target};
use common::{KEY, local_address, raise_descriptor_limit, watchdog};
use mpconn::{Address, Client, DEFAULT_MAX_PENDING, ListenerOptions, ListenerStats};

/// Well above the default cap on pending handshakes: with that cap alone,
/// most attackers wait in the backlog ahead of the valid clients.
const ATTACKERS: usize = 1000;
const CLIENTS: usize = 20;

/// The floods run one at a time: two at once on a small machine would
/// measure the machine.
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn valid_clients_get_through_a_flood_of_silent_tcp_connections() {
    valid_clients_get_through("127.0.0.1:0".parse().unwrap(), blocking_server);
}

#[test]
fn valid_clients_get_through_a_flood_of_silent_unix_connections() {
    valid_clients_get_through(local_address("flood"), blocking_server);
}

#[cfg(feature = "tokio")]
#[test]
fn valid_clients_get_through_a_flood_of_silent_tcp_connections_to_an_async_listener() {
    valid_clients_get_through("127.0.0.1:0".parse().unwrap(), async_server);
}

#[cfg(feature = "tokio")]
#[test]
fn valid_clients_get_through_a_flood_of_silent_unix_connections_to_an_async_listener() {
    valid_clients_get_through(local_address("flood"), async_server);
}

/// A listener that echoes one message on each connection it accepts, until
/// stopped.
struct Server {
    address: Address,
    stats: Box<dyn Fn() -> ListenerStats>,
    stop: Box<dyn FnOnce()>,
}

/// The blocking listener: a thread accepts, a thread each serves.
fn blocking_server(options: ListenerOptions, address: Address) -> Server {
    let listener = Arc::new(options.bind(address, KEY).unwrap());
    let server = {
        let listener = listener.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                // Errors of accept (out of descriptors) are the listener's to
                // weather; the clients' verdicts are what counts.
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    if let Ok(message) = conn.recv_bytes() {
                        let _ = conn.send_bytes(&message);
                    }
                });
            }
        })
    };
    Server {
        address: listener.address().clone(),
        stats: Box::new({
            let listener = listener.clone();
            move || listener.stats()
        }),
        stop: Box::new(move || {
            listener.close();
            server.join().unwrap();
        }),
    }
}

/// The async listener on a multi-threaded tokio runtime: a task accepts, a
/// task each serves.
#[cfg(feature = "tokio")]
fn async_server(options: ListenerOptions, address: Address) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = {
        let _in = runtime.enter();
        Arc::new(mpconn::tokio::Listener::bind_with(options, address, KEY).unwrap())
    };
    let server = {
        let listener = listener.clone();
        runtime.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok(mut conn) => {
                        tokio::spawn(async move {
                            if let Ok(message) = conn.recv_bytes().await {
                                let _ = conn.send_bytes(&message).await;
                            }
                        });
                    }
                    Err(mpconn::Error::Closed) => return,
                    Err(_) => continue,
                }
            }
        })
    };
    Server {
        address: listener.address().clone(),
        stats: Box::new({
            let listener = listener.clone();
            move || listener.stats()
        }),
        stop: Box::new(move || {
            listener.close();
            runtime.block_on(server).unwrap();
        }),
    }
}

/// A listener with default options, `ATTACKERS` silent connections held and
/// re-opened, and `CLIENTS` valid clients at once: every client must
/// authenticate within the client's default handshake deadline and be
/// served, and the process must not hold descriptors beyond what the
/// attackers, the clients and the pending handshakes account for.
fn valid_clients_get_through(address: Address, serve: fn(ListenerOptions, Address) -> Server) {
    let _one = ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(60);
    raise_descriptor_limit(2 * ATTACKERS);
    let server = serve(ListenerOptions::new(), address);
    let address = server.address.clone();
    let base_fds = open_fds();
    let target = match &address {
        Address::Tcp(sa) => Target::Tcp(*sa),
        Address::Unix(path) => Target::Unix(path.clone()),
        other => panic!("no flood over {other}"),
    };
    let flood = Attack::start(target, ATTACKERS).unwrap();
    let started = &flood.counters.started;
    let all_in = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < ATTACKERS && Instant::now() < all_in {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        ATTACKERS,
        "the attackers could not all connect"
    );
    // Let the listener take its fill of them first.
    thread::sleep(Duration::from_millis(300));

    let peak_fds = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak_fds.clone(), sampling.clone());
        thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(open_fds(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let address = address.clone();
            thread::spawn(move || -> Result<(), String> {
                let start = Instant::now();
                let failed = |e: mpconn::Error| format!("{e} (after {:?})", start.elapsed());
                let mut conn = Client::connect(&address, KEY).map_err(failed)?;
                conn.send(&i).map_err(failed)?;
                match conn.recv::<usize>().map_err(failed)? {
                    echo if echo == i => Ok(()),
                    echo => Err(format!("echoed {echo}")),
                }
            })
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| match t.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("client {i}: {e}")),
            Err(_) => Some(format!("client {i} panicked")),
        })
        .collect();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let dropped = flood.counters.dropped.load(Ordering::SeqCst);
    flood.stop().unwrap();
    (server.stop)();

    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} valid clients failed while {ATTACKERS} silent connections \
         were held ({dropped} dropped by the listener and opened again):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Each client holds two descriptors at most (its end and the accepted
    // one), each pending handshake one; a little slack for threads' and the
    // poller's own.
    let bound = base_fds + ATTACKERS + 2 * CLIENTS + DEFAULT_MAX_PENDING + 64;
    let peak = peak_fds.load(Ordering::SeqCst);
    assert!(
        peak <= bound,
        "{peak} descriptors open at the peak, more than {bound}"
    );
}

/// A client that arrives while the pending handshakes are full, behind
/// silent connections that are not opened again, is served once they expire,
/// even though nothing else arrives to wake the listener.
#[test]
fn a_client_queued_behind_expiring_handshakes_is_served_when_they_expire() {
    queued_behind_expiring_handshakes(blocking_server);
}

/// The same for the async listener, which must wake on its own timer for
/// the engine's deadlines.
#[cfg(feature = "tokio")]
#[test]
fn a_client_queued_behind_expiring_handshakes_is_served_by_an_async_listener() {
    queued_behind_expiring_handshakes(async_server);
}

fn queued_behind_expiring_handshakes(serve: fn(ListenerOptions, Address) -> Server) {
    let _w = watchdog(30);
    let options = ListenerOptions::new()
        .max_pending_handshakes(1)
        .handshake_timeout(Duration::from_millis(500));
    let server = serve(options, "127.0.0.1:0".parse().unwrap());
    let Address::Tcp(sa) = server.address else {
        panic!()
    };
    // Takes the only slot until its deadline; never opened again. Once it
    // has its challenge, it holds the slot: the client below comes within
    // the grace period before it may be evicted, so nothing but the
    // listener's own timer can make room.
    let mut silent = std::net::TcpStream::connect(sa).unwrap();
    common::read_frame(&mut silent);
    let start = Instant::now();
    // Bounded, so that a listener that never wakes fails the test.
    let options = mpconn::ClientOptions::new().challenge_timeout(Some(Duration::from_secs(10)));
    let result = options.connect(sa, KEY).and_then(|mut conn| {
        conn.send(&"queued")?;
        conn.recv::<String>()
    });
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Ok("queued".to_string()),
        "after {:?}",
        start.elapsed()
    );
    (server.stop)();
    drop(silent);
}

/// Valid clients among silent ones, slow ones (slowloris: an answer
/// dribbled a byte at a time, then left unfinished), garbage and wrong
/// keys, all at once: every valid client is served, every other is counted
/// as a failed handshake (the silent and slow ones on the listener's own
/// timer, as they hold their connections open), and the listener serves on
/// afterwards.
#[test]
fn a_flood_of_hostile_and_valid_clients() {
    hostile_and_valid_clients(blocking_server);
}

#[cfg(feature = "tokio")]
#[test]
fn a_flood_of_hostile_and_valid_clients_on_an_async_listener() {
    hostile_and_valid_clients(async_server);
}

fn hostile_and_valid_clients(serve: fn(ListenerOptions, Address) -> Server) {
    use std::io::Write;
    use std::net::TcpStream;
    const EACH: usize = 15;
    let _one = ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(60);
    let failures = Arc::new(AtomicUsize::new(0));
    let counted = failures.clone();
    let options = ListenerOptions::new()
        .handshake_timeout(Duration::from_millis(800))
        .on_handshake_failure(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
    let server = serve(options, "127.0.0.1:0".parse().unwrap());
    let Address::Tcp(sa) = server.address else {
        panic!()
    };
    let clients: Vec<_> = (0..5 * EACH)
        .map(|i| {
            // What a client holds open until the end: only the listener's
            // own timer can tell it has passed its deadline.
            thread::spawn(move || -> Result<Option<TcpStream>, String> {
                match i % 5 {
                    0 => {
                        let mut conn = Client::connect(sa, KEY).map_err(|e| e.to_string())?;
                        conn.send(&i).map_err(|e| e.to_string())?;
                        match conn.recv::<usize>().map_err(|e| e.to_string())? {
                            echo if echo == i => Ok(None),
                            echo => Err(format!("echoed {echo}")),
                        }
                    }
                    // Silent, and held open past the deadline.
                    1 => Ok(Some(TcpStream::connect(sa).unwrap())),
                    // Garbage: a frame header no handshake message has.
                    2 => {
                        let mut s = TcpStream::connect(sa).unwrap();
                        let _ = s.write_all(&[0xde; 700]);
                        Ok(None)
                    }
                    // Slowloris: reads the challenge, dribbles the first
                    // bytes of an answer a byte every 100 ms, then stalls
                    // in the middle of it, held open past the deadline.
                    3 => {
                        let mut s = TcpStream::connect(sa).unwrap();
                        common::read_frame(&mut s);
                        for byte in &common::frame(&[b'x'; 40])[..5] {
                            // On a busy machine the deadline may come first.
                            if s.write_all(&[*byte]).is_err() {
                                break;
                            }
                            thread::sleep(Duration::from_millis(100));
                        }
                        Ok(Some(s))
                    }
                    _ => match Client::connect(sa, b"a wrong key, but long enough") {
                        Err(mpconn::Error::Auth(_)) => Ok(None),
                        other => Err(format!("a wrong key: {:?}", other.map(drop))),
                    },
                }
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut errors = Vec::new();
    for (i, t) in clients.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(socket)) => held.extend(socket),
            Ok(Err(e)) => errors.push(format!("client {i}: {e}")),
            Err(_) => errors.push(format!("client {i} panicked")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // Every hostile client is counted once its deadline has passed, though
    // nothing arrives any more to wake the listener.
    let hostile = 4 * EACH;
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures.load(Ordering::SeqCst) < hostile && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(failures.load(Ordering::SeqCst), hostile);
    // The listener still serves after the flood.
    let mut conn = Client::connect(sa, KEY).unwrap();
    conn.send(&"after").unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "after");
    let stats = (server.stats)();
    (server.stop)();
    drop(held);
    assert_eq!(
        (stats.accepted, stats.failed_handshakes),
        (EACH as u64 + 1, hostile as u64)
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
