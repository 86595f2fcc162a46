//! The listener process: binds with default options (or the flags given),
//! accepts in a loop and echoes one message on each connection. The
//! measuring process starts it, samples it from /proc, and ends it by
//! closing its standard input.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mpconn::{Address, AuthKey, ListenerOptions};

use crate::cli::AnyResult;

/// Listener options the command line may change; unset means the default.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub max_pending: Option<usize>,
    pub backlog: Option<i32>,
    pub handshake_timeout: Option<Duration>,
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
        if parts.is_empty() {
            "default options".into()
        } else {
            parts.join(", ")
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
    let listener = Arc::new(options.bind(address, key.as_bytes())?);
    println!("LISTENING {}", listener.address());
    io::stdout().flush()?;
    {
        let listener = listener.clone();
        thread::spawn(move || {
            let mut line = String::new();
            while io::stdin().lock().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            listener.close();
        });
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
    println!("STATS {} {}", stats.accepted, stats.failed_handshakes);
    Ok(())
}
