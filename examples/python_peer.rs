//! A Rust program and a Python script exchanging typed messages through the
//! pickle codec.
//!
//! ```text
//! cargo run --features pickle --example python_peer
//! ```
//!
//! The Rust side binds an authenticated listener with `Codec::Pickle`, starts
//! `python3 examples/python_peer.py` (override with MPCONN_PYTHON), hands it
//! the key on its standard input, and then both sides `send` and `recv`
//! ordinary values: a Python dict arrives as a Rust struct, a Rust struct
//! arrives as a Python dict.

use std::io::Write;
use std::process::{Command, Stdio};

use mpconn::{AuthKey, Codec, Listener};
use serde::{Deserialize, Serialize};

/// Arrives from Python as `{"id": 1, "name": ..., "sizes": [...], "urgent": True}`.
#[derive(Debug, Deserialize)]
struct Job {
    id: u32,
    name: String,
    sizes: Vec<u32>,
    urgent: bool,
}

/// Leaves for Python as a dict with these keys.
#[derive(Debug, Serialize)]
struct Done {
    id: u32,
    pixels: u64,
    note: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::var("MPCONN_PYTHON").unwrap_or_else(|_| "python3".into());
    let version = Command::new(&python)
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()?;
    let minor: u32 = String::from_utf8_lossy(&version.stdout).trim().parse()?;

    let key = AuthKey::generate()?;
    let listener = Listener::builder()
        .codec(Codec::Pickle)
        .allow_legacy_md5(minor <= 11)
        .bind("127.0.0.1:0", key.as_bytes())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_peer.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(listener.address().to_string())
        .stdin(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(key.to_hex().as_bytes())?;

    let mut conn = listener.accept()?;
    let job: Job = conn.recv()?;
    println!("rust received {job:?}");
    let pixels = job.sizes.iter().map(|&s| u64::from(s)).product();
    conn.send(&Done {
        id: job.id,
        pixels,
        note: job.urgent.then(|| format!("{} done first", job.name)),
    })?;
    // A shape with no fixed Rust type (and an integer beyond 64 bits).
    let value = conn.recv_pickle_value()?;
    println!("rust received {value:?}");
    if !child.wait()?.success() {
        return Err("the python side failed".into());
    }
    Ok(())
}
