//! An authenticated echo server: every message a client sends comes back.
//!
//! ```text
//! MPCONN_AUTHKEY=... cargo run --example echo_server -- [ADDRESS]
//! ```
//!
//! ADDRESS defaults to `127.0.0.1:6000`; any spelling `mpconn::Address`
//! accepts works (`/tmp/echo.sock`, `[::1]:6000`, ...). The key comes from the
//! environment variable MPCONN_AUTHKEY (at least 16 bytes), never from the
//! command line, where other users could read it. A Python client can talk
//! to it too; see the README.

use std::thread;

use mpconn::{Error, Listener};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6000".into());
    let key = std::env::var("MPCONN_AUTHKEY")
        .map_err(|_| "set MPCONN_AUTHKEY to the shared key (16 bytes or more)")?;
    let listener = Listener::builder()
        .on_handshake_failure(|f| {
            let peer = f.peer.as_ref().map_or("?".into(), |p| p.to_string());
            eprintln!("rejected {peer}: {}", f.error);
        })
        .bind(address.as_str(), key.as_bytes())?;
    println!("echo server listening on {}", listener.address());
    for conn in listener.incoming() {
        let mut conn = conn?;
        let peer = listener
            .last_accepted()
            .map_or("a local client".into(), |a| a.to_string());
        println!("accepted {peer}");
        thread::spawn(move || {
            loop {
                match conn.recv_bytes() {
                    Ok(message) => {
                        if let Err(e) = conn.send_bytes(&message) {
                            eprintln!("{peer}: {e}");
                            return;
                        }
                    }
                    Err(Error::Eof) => return println!("{peer} left"),
                    Err(e) => return eprintln!("{peer}: {e}"),
                }
            }
        });
    }
    Ok(())
}
