//! A server and a client for two hosts.
//!
//! ```text
//! host A$ MPCONN_AUTHKEY=... cargo run --example cross_host -- server 0.0.0.0:6000 --encrypted
//! host B$ MPCONN_AUTHKEY=... cargo run --example cross_host -- client hostA:6000 --encrypted
//! ```
//!
//! The client sends its host name and a batch of numbers; the server replies
//! with their sum and how long the round trip took on its side.
//!
//! SECURITY: with `--encrypted` (both ends), the connection runs mpconn's
//! encrypted mode: every message is sealed with keys that only these two
//! processes have, and a relay or an attacker on the path can neither read
//! nor alter them. Without it, the handshake proves that both ends held the
//! key when the connection was made, and nothing more: on a network you do
//! not control, anyone on the path can read and alter every message, and
//! can relay a handshake between two key holders. Without `--encrypted` the
//! peer may be CPython's `multiprocessing.connection`. See SECURITY.md.

use std::time::Instant;

use mpconn::{ClientOptions, Error, Listener};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    from: String,
    numbers: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    sum: i64,
    server_micros: u64,
}

const WARNING: &str = "note: without --encrypted, mpconn authenticates the connection but \
                       does not encrypt it; on untrusted networks use --encrypted on both ends \
                       (see SECURITY.md)";

fn main() -> std::process::ExitCode {
    // Errors as their messages, which say what to do, not as Debug.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (role, address) = match (args.next(), args.next()) {
        (Some(r), Some(a)) => (r, a),
        _ => return Err("usage: cross_host (server|client) ADDRESS [--encrypted]".into()),
    };
    let encrypted = match args.next().as_deref() {
        None => false,
        Some("--encrypted") => true,
        Some(other) => return Err(format!("unknown option {other:?}").into()),
    };
    let key = std::env::var("MPCONN_AUTHKEY")
        .map_err(|_| "set MPCONN_AUTHKEY to the shared key (16 bytes or more)")?;
    if !encrypted {
        eprintln!("{WARNING}");
    }
    match role.as_str() {
        "server" => server(&address, key.as_bytes(), encrypted),
        "client" => client(&address, key.as_bytes(), encrypted),
        other => Err(format!("unknown role {other:?}").into()),
    }
}

fn server(address: &str, key: &[u8], encrypted: bool) -> Result<(), Box<dyn std::error::Error>> {
    let listener = Listener::builder()
        .encrypted(encrypted)
        .on_handshake_failure(|f| {
            let peer = f.peer.as_ref().map_or("?".into(), ToString::to_string);
            eprintln!("rejected {peer}: {}", f.error);
        })
        .bind(address, key)?;
    let mode = if encrypted { "encrypted" } else { "plain" };
    println!("serving on {} ({mode})", listener.address());
    for conn in listener.incoming() {
        let mut conn = conn?;
        let peer = listener
            .last_accepted()
            .map_or("?".into(), |a| a.to_string());
        std::thread::spawn(move || {
            loop {
                let start = Instant::now();
                match conn.recv::<Batch>() {
                    Ok(batch) => {
                        let reply = Reply {
                            sum: batch.numbers.iter().sum(),
                            server_micros: start.elapsed().as_micros() as u64,
                        };
                        println!("{peer} ({}): {} numbers", batch.from, batch.numbers.len());
                        if conn.send(&reply).is_err() {
                            return;
                        }
                    }
                    Err(Error::Eof) => return,
                    Err(e) => return eprintln!("{peer}: {e}"),
                }
            }
        });
    }
    Ok(())
}

fn client(address: &str, key: &[u8], encrypted: bool) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut conn = ClientOptions::new()
        .encrypted(encrypted)
        .connect(address, key)?;
    let mode = if encrypted { "encrypted" } else { "plain" };
    println!(
        "connected and authenticated in {:?} ({mode})",
        start.elapsed()
    );
    let from = std::env::var("HOSTNAME").unwrap_or_else(|_| "client".into());
    for round in 1..=3i64 {
        let batch = Batch {
            from: from.clone(),
            numbers: (0..1000 * round).collect(),
        };
        let start = Instant::now();
        conn.send(&batch)?;
        let reply: Reply = conn.recv()?;
        println!(
            "round {round}: sum {} in {:?} (server side {} us)",
            reply.sum,
            start.elapsed(),
            reply.server_micros
        );
    }
    Ok(())
}
