//! The listener process: binds with default options (or the flags given),
//! accepts in a loop and echoes one message on each connection, on a thread
//! each, or with `--async` as `mpconn::tokio::Listener` on a tokio runtime,
//! a task each. The measuring process starts it, samples it from /proc, and
//! ends it by closing its standard input.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mpconn::{Address, AuthKey, Listener, ListenerOptions};

use crate::cli::AnyResult;

/// Listener options the command line may change; unset means the default.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub max_pending: Option<usize>,
    pub backlog: Option<i32>,
    pub handshake_timeout: Option<Duration>,
    /// Run the async listener (`mpconn::tokio::Listener`) instead.
    pub async_listener: bool,
}

impl Flags {
    /// The same flags as arguments, for the child's command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.max_pending {
            args.extend(["--max-pending".into(), n.to_string()]);
        }
        if let Some(n) = self.backlog {
            args.extend(["--backlog".into(), n.to_string()]);
        }
        if let Some(t) = self.handshake_timeout {
            args.extend(["--handshake-timeout-ms".into(), t.as_millis().to_string()]);
        }
        if self.async_listener {
            args.push("--async".into());
        }
        args
    }

    /// What a report says of the listener's options.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_pending {
            parts.push(format!("max_pending_handshakes {n}"));
        }
        if let Some(n) = self.backlog {
            parts.push(format!("backlog {n}"));
        }
        if let Some(t) = self.handshake_timeout {
            parts.push(format!("handshake_timeout {t:?}"));
        }
        let options = if parts.is_empty() {
            "default options".into()
        } else {
            parts.join(", ")
        };
        match self.async_listener {
            true => format!("async, tokio; {options}"),
            false => options,
        }
    }
}

/// Runs the listener until standard input closes. Protocol on stdin: the
/// key in hex on the first line, then nothing until EOF. On stdout:
/// `LISTENING <address>` once bound, `STATS <accepted> <failed>` at the end.
pub fn run(address: &Address, flags: &Flags) -> AnyResult<()> {
    // As many descriptors as the hard limit allows: what the listener uses
    // is measured, not capped by a low soft limit.
    crate::probe::raise_descriptor_limit(u64::MAX)?;
    let mut hex = String::new();
    io::stdin().read_line(&mut hex)?;
    let key = AuthKey::from_hex(hex.trim()).ok_or("malformed key on stdin")?;
    let mut options = ListenerOptions::new();
    if let Some(n) = flags.max_pending {
        options = options.max_pending_handshakes(n);
    }
    if let Some(n) = flags.backlog {
        options = options.backlog(n);
    }
    if let Some(t) = flags.handshake_timeout {
        options = options.handshake_timeout(t);
    }
    let listener = options.bind(address, key.as_bytes())?;
    println!("LISTENING {}", listener.address());
    io::stdout().flush()?;
    let (accepted, failed) = match flags.async_listener {
        true => serve_async(listener)?,
        false => serve(listener),
    };
    println!("STATS {accepted} {failed}");
    Ok(())
}

/// Calls `close` once standard input closes.
fn close_at_eof(close: impl FnOnce() + Send + 'static) {
    thread::spawn(move || {
        let mut line = String::new();
        while io::stdin().lock().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
        close();
    });
}

/// Accepts on this thread and serves each client on a thread of its own.
/// Returns the listener's counts of accepted clients and failed handshakes.
fn serve(listener: Listener) -> (u64, u64) {
    let listener = Arc::new(listener);
    {
        let listener = listener.clone();
        close_at_eof(move || listener.close());
    }
    for conn in listener.incoming() {
        match conn {
            Ok(mut conn) => {
                thread::spawn(move || {
                    if let Ok(message) = conn.recv_bytes() {
                        let _ = conn.send_bytes(&message);
                    }
                });
            }
            // Out of descriptors, for one: reported once, then the listener
            // backs off by itself; the measurement shows the effect.
            Err(e) => eprintln!("flood listener: accept: {e}"),
        }
    }
    let stats = listener.stats();
    (stats.accepted, stats.failed_handshakes)
}

/// The same on a tokio runtime: the listener engine driven by the async
/// listener, each client served by a task.
#[cfg(feature = "tokio")]
fn serve_async(listener: Listener) -> AnyResult<(u64, u64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = Arc::new(mpconn::tokio::Listener::from_blocking(listener)?);
        {
            let listener = listener.clone();
            close_at_eof(move || listener.close());
        }
        loop {
            match listener.accept().await {
                Ok(mut conn) => {
                    tokio::spawn(async move {
                        if let Ok(message) = conn.recv_bytes().await {
                            let _ = conn.send_bytes(&message).await;
                        }
                    });
                }
                Err(mpconn::Error::Closed) => break,
                Err(e) => eprintln!("flood listener: accept: {e}"),
            }
        }
        let stats = listener.stats();
        Ok((stats.accepted, stats.failed_handshakes))
    })
}

#[cfg(not(feature = "tokio"))]
fn serve_async(_: Listener) -> AnyResult<(u64, u64)> {
    Err("--async needs the tokio feature: cargo run --example flood --features tokio".into())
}
