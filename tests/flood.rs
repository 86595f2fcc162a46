//! Admission control under a flood of silent connections: connections that
//! never send a byte, held open and opened again as soon as the listener
//! drops one, must not shut valid clients out, nor make the listener hold
//! descriptors without bound. `examples/flood` measures the same attack
//! (latency, memory, descriptors) from outside the listener process.

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
use mpconn::{Address, Client, DEFAULT_MAX_PENDING, Listener, ListenerOptions};

/// Well above the default cap on pending handshakes: with that cap alone,
/// most attackers wait in the backlog ahead of the valid clients.
const ATTACKERS: usize = 1000;
const CLIENTS: usize = 20;

/// The floods run one at a time: two at once on a small machine would
/// measure the machine.
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn valid_clients_get_through_a_flood_of_silent_tcp_connections() {
    valid_clients_get_through("127.0.0.1:0".parse().unwrap());
}

#[test]
fn valid_clients_get_through_a_flood_of_silent_unix_connections() {
    valid_clients_get_through(local_address("flood"));
}

/// A listener with default options, `ATTACKERS` silent connections held and
/// re-opened, and `CLIENTS` valid clients at once: every client must
/// authenticate within the client's default handshake deadline and be
/// served, and the process must not hold descriptors beyond what the
/// attackers, the clients and the pending handshakes account for.
fn valid_clients_get_through(address: Address) {
    let _one = ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let _w = watchdog(60);
    raise_descriptor_limit(2 * ATTACKERS);
    let listener = Arc::new(Listener::bind(address, KEY).unwrap());
    let address = listener.address().clone();
    let server = {
        let listener = listener.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                // Errors of accept (out of descriptors) are the listener's to
                // weather; the clients' verdicts below are what counts.
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    if let Ok(message) = conn.recv_bytes() {
                        let _ = conn.send_bytes(&message);
                    }
                });
            }
        })
    };
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
    listener.close();
    server.join().unwrap();

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
    let _w = watchdog(30);
    let listener = Arc::new(
        ListenerOptions::new()
            .max_pending_handshakes(1)
            .handshake_timeout(Duration::from_millis(500))
            .bind("127.0.0.1:0", KEY)
            .unwrap(),
    );
    let Address::Tcp(sa) = *listener.address() else {
        panic!()
    };
    let server = {
        let listener = listener.clone();
        thread::spawn(move || {
            let mut conn = listener.accept().unwrap();
            let message = conn.recv_bytes().unwrap();
            conn.send_bytes(&message).unwrap();
        })
    };
    // Takes the only slot until its deadline; never opened again.
    let silent = std::net::TcpStream::connect(sa).unwrap();
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let result = Client::connect(sa, KEY).and_then(|mut conn| {
        conn.send(&"queued")?;
        conn.recv::<String>()
    });
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Ok("queued".to_string()),
        "after {:?}",
        start.elapsed()
    );
    server.join().unwrap();
    drop(silent);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
