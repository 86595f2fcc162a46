//! The prefork pattern: one process accepts and authenticates clients, and
//! hands each connection to a worker process, which serves the client
//! directly (Unix: the connection's descriptor travels with `SCM_RIGHTS`).
//!
//! The coordinator generates a key, starts worker processes (this binary
//! again; each reads the key on its standard input and connects to a
//! private listener), binds the public listener (a Unix socket in a private
//! directory, or TCP with `--tcp`), and starts clients. Every client sends
//! its requests right after connecting, before any worker has its
//! connection: the coordinator has read them ahead by the time it hands
//! the connection on, and `send_connection` carries them along, so the
//! worker answers every one. The coordinator never sees a request or a
//! reply after the handover.
//!
//! ```text
//! cargo run --example prefork -- [--workers N] [--clients N] [--tcp]
//! ```

#[cfg(not(unix))]
fn main() {
    eprintln!("prefork: descriptor passing is Unix only; nothing to show here");
}

#[cfg(unix)]
fn main() {
    let result = match std::env::var("MPCONN_PREFORK_ADDRESS") {
        Ok(address) => prefork::worker(&address),
        Err(_) => prefork::coordinator(),
    };
    if let Err(e) = result {
        eprintln!("prefork: {e}");
        std::process::exit(1);
    }
}

#[cfg(unix)]
mod prefork {
    use std::collections::{BTreeMap, HashSet};
    use std::io::{Read, Write};
    use std::process::{Child, Command, Stdio};
    use std::thread;

    use mpconn::{Address, AuthKey, Client, Connection, Error, Family, Listener, WaitSet};
    use serde::{Deserialize, Serialize};

    type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    const REQUESTS: u32 = 3;

    #[derive(Debug, Serialize, Deserialize)]
    struct Request {
        client: usize,
        seq: u32,
        text: String,
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Reply {
        seq: u32,
        shout: String,
        worker_pid: u32,
    }

    struct Options {
        workers: usize,
        clients: usize,
        tcp: bool,
    }

    fn parse_args() -> Result<Options, String> {
        let mut opts = Options {
            workers: 3,
            clients: 9,
            tcp: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<usize, String> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .ok_or(format!("{name} needs a number"))
            };
            match arg.as_str() {
                "--workers" => opts.workers = number("--workers")?.max(1),
                "--clients" => opts.clients = number("--clients")?,
                "--tcp" => opts.tcp = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(opts)
    }

    pub fn coordinator() -> AnyResult<()> {
        let opts = parse_args()?;
        let key = AuthKey::generate()?;
        let private = Listener::bind(Address::arbitrary(Family::Unix)?, key.as_bytes())?;
        let mut children = Vec::new();
        for _ in 0..opts.workers {
            children.push(spawn_worker(private.address(), &key)?);
        }
        let mut workers: Vec<Connection> = Vec::new();
        for _ in 0..opts.workers {
            workers.push(private.accept()?);
        }
        drop(private);

        let family = if opts.tcp { Family::Tcp } else { Family::Unix };
        let public = Listener::bind(Address::arbitrary(family)?, key.as_bytes())?;
        println!(
            "coordinator (pid {}): {} workers; clients connect to {}",
            std::process::id(),
            opts.workers,
            public.address()
        );
        let clients: Vec<_> = (0..opts.clients)
            .map(|i| {
                let address = public.address().clone();
                let key = key.clone();
                thread::spawn(move || client(i, &address, &key))
            })
            .collect();
        // Accept and authenticate here, serve there: round robin.
        for i in 0..opts.clients {
            let conn = public.accept()?;
            let n = workers.len();
            workers[i % n].send_connection(conn)?;
        }
        let mut served_by: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, c) in clients.into_iter().enumerate() {
            let pid = c.join().map_err(|_| "a client panicked")??;
            served_by.entry(pid).or_default().push(i);
        }
        // Closing the control connections tells the workers to finish.
        drop(workers);
        for mut child in children {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("worker {} failed: {status}", child.id()).into());
            }
        }
        for (pid, clients) in &served_by {
            println!("worker {pid} served clients {clients:?}");
        }
        let expected = opts.workers.min(opts.clients);
        if served_by.len() != expected {
            return Err(format!("{} workers served, expected {expected}", served_by.len()).into());
        }
        println!(
            "all {} clients got all {REQUESTS} replies, each from the worker it was handed to",
            opts.clients
        );
        Ok(())
    }

    fn spawn_worker(address: &Address, key: &AuthKey) -> AnyResult<Child> {
        let mut child = Command::new(std::env::current_exe()?)
            .env("MPCONN_PREFORK_ADDRESS", address.to_string())
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin.write_all(key.to_hex().as_bytes())?;
        Ok(child)
    }

    /// A client: sends every request at once, then reads the replies, which
    /// must all come from one worker. Returns that worker's pid.
    fn client(i: usize, address: &Address, key: &AuthKey) -> AnyResult<u32> {
        let mut conn = Client::connect(address, key.as_bytes())?;
        for seq in 0..REQUESTS {
            let text = format!("request {seq} of client {i}");
            conn.send(&Request {
                client: i,
                seq,
                text,
            })?;
        }
        let mut pids = HashSet::new();
        for seq in 0..REQUESTS {
            let reply: Reply = conn.recv()?;
            let want = format!("REQUEST {seq} OF CLIENT {i}");
            if reply.seq != seq || reply.shout != want {
                return Err(format!("client {i}: reply {reply:?} to request {seq}").into());
            }
            pids.insert(reply.worker_pid);
        }
        match pids.into_iter().collect::<Vec<_>>()[..] {
            [pid] => Ok(pid),
            ref many => Err(format!("client {i} was answered by workers {many:?}").into()),
        }
    }

    /// A worker: takes connections from the coordinator and serves them all
    /// at once with a `WaitSet`, until the coordinator is gone and every
    /// client has left.
    pub fn worker(address: &str) -> AnyResult<()> {
        let mut hex = String::new();
        std::io::stdin().read_to_string(&mut hex)?;
        let key = AuthKey::from_hex(hex.trim()).ok_or("malformed key on stdin")?;
        let control = Client::connect(address, key.as_bytes())?;
        let mut set: WaitSet<Connection> = WaitSet::new()?;
        let mut control = Some(set.insert(control)?);
        let pid = std::process::id();
        while control.is_some() || !set.is_empty() {
            for k in set.wait(None)? {
                let Some(conn) = set.get_mut(k) else { continue };
                if Some(k) == control {
                    // Over an authenticated connection, a handed-over
                    // connection arrives authenticated: the coordinator,
                    // which holds the key, vouches for it.
                    match conn.recv_connection() {
                        Ok(client) => {
                            set.insert(client)?;
                        }
                        Err(Error::Eof) => {
                            set.remove(k);
                            control = None;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    continue;
                }
                match conn.recv::<Request>() {
                    Ok(req) => conn.send(&Reply {
                        seq: req.seq,
                        shout: req.text.to_uppercase(),
                        worker_pid: pid,
                    })?,
                    Err(Error::Eof) => {
                        set.remove(k);
                    }
                    Err(e) => {
                        eprintln!("worker {pid}: dropping a client: {e}");
                        set.remove(k);
                    }
                }
            }
        }
        Ok(())
    }
}
