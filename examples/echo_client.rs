//! A client for `echo_server`: sends each argument as a message and prints
//! the echo.
//!
//! ```text
//! MPCONN_AUTHKEY=... cargo run --example echo_client -- ADDRESS hello world
//! ```

use std::time::Instant;

use mpconn::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .ok_or("usage: echo_client ADDRESS [MESSAGE...]")?;
    let key = std::env::var("MPCONN_AUTHKEY")
        .map_err(|_| "set MPCONN_AUTHKEY to the shared key (16 bytes or more)")?;
    let start = Instant::now();
    let mut conn = Client::connect(address.as_str(), key.as_bytes())?;
    println!("connected and authenticated in {:?}", start.elapsed());
    let messages: Vec<String> = args.collect();
    let messages = if messages.is_empty() {
        vec!["hello".to_string()]
    } else {
        messages
    };
    for message in messages {
        let start = Instant::now();
        conn.send_bytes(message.as_bytes())?;
        let echo = conn.recv_bytes()?;
        println!("{} ({:?})", String::from_utf8_lossy(&echo), start.elapsed());
    }
    Ok(())
}
