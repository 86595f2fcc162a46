//! A TCP relay that delays: the latency that netem would add, which this
//! kernel lacks. Each chunk read from one side is held for the delay
//! (counted from when it was read) before it is written to the other, in
//! both directions and in order. Reading goes on while chunks wait, so the
//! delay adds latency without limiting throughput.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Relays every connection made to `listen` to `target`, holding each
/// chunk for `delay` in each direction. Runs until the process ends.
pub fn serve(listen: &str, target: &str, delay: Duration, ready: impl FnOnce()) {
    let listener = TcpListener::bind(listen).unwrap();
    ready();
    for inbound in listener.incoming() {
        let inbound = inbound.unwrap();
        let outbound = TcpStream::connect(target).unwrap();
        for stream in [&inbound, &outbound] {
            stream.set_nodelay(true).unwrap();
        }
        forward(
            inbound.try_clone().unwrap(),
            outbound.try_clone().unwrap(),
            delay,
        );
        forward(outbound, inbound, delay);
    }
}

/// Copies `from` to `to` with `delay`, then passes the end of stream on.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                // An empty chunk stands for the end of stream.
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now(), Vec::new()));
                    return;
                }
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (read_at, chunk) in rx {
            let due = read_at + delay;
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if chunk.is_empty() {
                break;
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
