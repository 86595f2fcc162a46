//! Measures whether valid clients get through while silent connections
//! flood a listener, and what the flood costs the listener. Linux only: the
//! listener is sampled through /proc.
//!
//! ```text
//! cargo run --release --example flood -- --family tcp|unix --attackers 1000 --clients 200 [--seconds 10]
//! cargo run --release --example flood -- --all     # tcp and unix, 300 and 1000 attackers: a table
//! cargo run --release --example flood --features tokio -- --all --async   # the same, async listener
//! ```
//!
//! The program starts itself again as the listener process, which binds
//! (TCP on 127.0.0.1, or a Unix socket in a directory of this run's own)
//! with default options, unless `--max-pending N`, `--backlog N` or
//! `--handshake-timeout-ms N` say otherwise, accepts in a loop and echoes
//! one message on each connection, a thread each; with `--async`, it runs
//! the listener as `mpconn::tokio::Listener` on a multi-threaded tokio
//! runtime instead, a task each (the same engine and admission policy,
//! driven by the runtime). Then, from this process:
//!
//! - the attackers open `--attackers` connections that never send a byte,
//!   and open each again as soon as the listener closes or resets it, so
//!   that this many are always held;
//! - once they have all connected (and half a second more, for the listener
//!   to take its fill), `--clients` valid clients start, evenly spread over
//!   `--seconds`, each on a thread of its own, and run `Client::connect`
//!   with the key and a generous deadline (`--client-timeout`, default
//!   20 s, for the connection and again for the handshake), so that a slow
//!   handshake is measured rather than cut. A client's latency runs from the
//!   start of its connection to the authenticated connection; it then checks
//!   one echoed message;
//! - a sampler reads the listener's VmRSS and counts /proc/<pid>/fd every
//!   10 ms; VmHWM gives its peak resident memory at the end. Reconnects per
//!   second count the attackers' connections the listener dropped while the
//!   clients ran.
//!
//! Percentiles are over every client, successful or not: a failed client
//! ranks after every success, and a percentile that falls among failures
//! prints as `fail`.

#[cfg(target_os = "linux")]
mod attack;
#[cfg(target_os = "linux")]
mod cli;
#[cfg(target_os = "linux")]
mod listener;
#[cfg(target_os = "linux")]
mod measure;
#[cfg(target_os = "linux")]
mod probe;
#[cfg(target_os = "linux")]
mod report;

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = cli::run(std::env::args().skip(1)) {
        eprintln!("flood: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("flood: runs on Linux only: it samples the listener through /proc");
    std::process::exit(1);
}
