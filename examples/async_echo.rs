//! The echo server and client on tokio (feature `tokio`): every message a
//! client sends comes back.
//!
//! ```text
//! MPCONN_AUTHKEY=... cargo run --features tokio --example async_echo -- serve [ADDRESS]
//! MPCONN_AUTHKEY=... cargo run --features tokio --example async_echo -- ask ADDRESS MESSAGE...
//! ```
//!
//! `serve` answers every client on a task of its own, on one thread;
//! `ask` sends each message and prints its echo with its length. ADDRESS
//! defaults to `127.0.0.1:6000`; any spelling `mpconn::Address` accepts
//! works (`/tmp/echo.sock`, `\\.\pipe\echo` on Windows, ...). The key
//! comes from the environment variable MPCONN_AUTHKEY (at least 16 bytes).
//! CPython's `multiprocessing.connection` is a peer of either side.

use mpconn::Error;
use mpconn::tokio::{Client, Listener};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "serve".into());
    let address = args.next().unwrap_or_else(|| "127.0.0.1:6000".into());
    let messages: Vec<String> = args.collect();
    let key = std::env::var("MPCONN_AUTHKEY")
        .map_err(|_| "set MPCONN_AUTHKEY to the shared key (16 bytes or more)")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    match mode.as_str() {
        "serve" => local.block_on(&runtime, serve(&address, key.as_bytes())),
        "ask" => runtime.block_on(ask(&address, key.as_bytes(), &messages)),
        other => Err(format!("unknown mode {other}: serve or ask").into()),
    }
}

async fn serve(address: &str, key: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    let listener = Listener::bind_with(
        mpconn::ListenerOptions::new().on_handshake_failure(|f| {
            let peer = f.peer.as_ref().map_or("?".into(), |p| p.to_string());
            eprintln!("rejected {peer}: {}", f.error);
        }),
        address,
        key,
    )?;
    println!("async echo server listening on {}", listener.address());
    loop {
        let mut conn = listener.accept().await?;
        let peer = conn
            .peer_address()
            .map_or("a local client".into(), |a| a.to_string());
        println!("accepted {peer}");
        tokio::task::spawn_local(async move {
            loop {
                match conn.recv_bytes().await {
                    Ok(message) => {
                        if let Err(e) = conn.send_bytes(&message).await {
                            return eprintln!("{peer}: {e}");
                        }
                    }
                    Err(Error::Eof) => return println!("{peer} left"),
                    Err(e) => return eprintln!("{peer}: {e}"),
                }
            }
        });
    }
}

async fn ask(
    address: &str,
    key: &[u8],
    messages: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = Client::connect(address, key).await?;
    for message in messages {
        conn.send_bytes(message.as_bytes()).await?;
        let echo = conn.recv_bytes().await?;
        println!("{} ({} bytes)", String::from_utf8_lossy(&echo), echo.len());
    }
    Ok(())
}
