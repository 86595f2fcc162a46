//! A secure worker pool: the crate's main demo.
//!
//! A coordinator binds an authenticated listener on a fresh address (a Unix
//! socket in a private temporary directory, a randomly named pipe on
//! Windows, or TCP with `--tcp`), generates
//! a random key, and starts worker processes (this same binary, run again)
//! that connect with the key. It hands out tasks (count the primes in a
//! range), collects results with `mpconn::wait`, and survives a worker that
//! dies mid-task: by default it kills one itself, re-queues the task and
//! starts a replacement. At the end it checks that every task completed
//! exactly once.
//!
//! ```text
//! cargo run --example worker_pool -- [--workers N] [--tasks N] [--tcp] [--kill-task ID | --no-kill]
//! MPCONN_POOL_IMPOSTOR=1 cargo run --example worker_pool   # one extra worker with a wrong key
//! ```
//!
//! Workers receive the key on their standard input, never on the command line
//! or in the environment, where other local users could read it.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpconn::{Address, AuthKey, Client, Connection, Error, Family, Listener, Waitable};
use serde::{Deserialize, Serialize};

const RANGE: u64 = 1_000_000;

#[derive(Debug, Serialize, Deserialize)]
enum ToWorker {
    Task { id: usize, lo: u64, hi: u64 },
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
enum FromWorker {
    Hello { pid: u32 },
    Done { id: usize, primes: u64, micros: u64 },
}

struct Options {
    workers: usize,
    tasks: usize,
    tcp: bool,
    kill_task: Option<usize>,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        workers: 4,
        tasks: 64,
        tcp: false,
        kill_task: Some(3),
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
            "--tasks" => opts.tasks = number("--tasks")?,
            "--kill-task" => opts.kill_task = Some(number("--kill-task")?),
            "--no-kill" => opts.kill_task = None,
            "--tcp" => opts.tcp = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

fn main() {
    let result = match std::env::var("MPCONN_POOL_ADDRESS") {
        Ok(address) => worker(&address),
        Err(_) => parse_args()
            .map_err(Into::into)
            .and_then(|opts| coordinator(&opts)),
    };
    if let Err(e) = result {
        eprintln!("worker_pool: {e}");
        std::process::exit(1);
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A worker process: read the key from stdin, connect, serve tasks.
fn worker(address: &str) -> AnyResult<()> {
    let mut hex = String::new();
    std::io::stdin().read_to_string(&mut hex)?;
    let key = AuthKey::from_hex(hex.trim()).ok_or("malformed key on stdin")?;
    let mut conn = Client::connect(address, key.as_bytes())?;
    conn.send(&FromWorker::Hello {
        pid: std::process::id(),
    })?;
    loop {
        match conn.recv::<ToWorker>() {
            Ok(ToWorker::Task { id, lo, hi }) => {
                let start = Instant::now();
                let primes = count_primes(lo, hi);
                let micros = start.elapsed().as_micros() as u64;
                conn.send(&FromWorker::Done { id, primes, micros })?;
            }
            Ok(ToWorker::Shutdown) | Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Primes in `[lo, hi)` by a segmented sieve.
fn count_primes(lo: u64, hi: u64) -> u64 {
    let root = (hi as f64).sqrt() as u64 + 1;
    let mut small = vec![true; root as usize + 1];
    let mut base = Vec::new();
    for i in 2..=root as usize {
        if small[i] {
            base.push(i as u64);
            for j in (i * i..=root as usize).step_by(i) {
                small[j] = false;
            }
        }
    }
    let mut segment = vec![true; (hi - lo) as usize];
    for &p in &base {
        let start = (lo.div_ceil(p) * p).max(p * p);
        for m in (start..hi).step_by(p as usize) {
            segment[(m - lo) as usize] = false;
        }
    }
    (lo..hi)
        .zip(&segment)
        .filter(|&(n, &is_prime)| is_prime && n >= 2)
        .count() as u64
}

struct Worker {
    conn: Connection,
    pid: Option<u32>,
    task: Option<usize>,
    done: usize,
}

struct Pool {
    key: AuthKey,
    address: String,
    children: HashMap<u32, Child>,
    started: usize,
}

impl Pool {
    fn spawn(&mut self, key: &AuthKey) -> AnyResult<()> {
        let mut child = Command::new(std::env::current_exe()?)
            .env("MPCONN_POOL_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin.write_all(key.to_hex().as_bytes())?;
        drop(stdin);
        self.children.insert(child.id(), child);
        self.started += 1;
        Ok(())
    }
}

fn coordinator(opts: &Options) -> AnyResult<()> {
    let start = Instant::now();
    let family = if opts.tcp {
        Family::Tcp
    } else {
        Address::default_family()
    };
    let key = AuthKey::generate()?;
    let rejected = Arc::new(AtomicUsize::new(0));
    let rejections = Arc::new(Mutex::new(Vec::new()));
    let listener = {
        let (count, log) = (rejected.clone(), rejections.clone());
        Listener::builder()
            .on_handshake_failure(move |f| {
                count.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(f.error.to_string());
            })
            .bind(Address::arbitrary(family)?, key.as_bytes())?
    };
    println!(
        "coordinator: listening on {} with a fresh 32-byte key; starting {} workers",
        listener.address(),
        opts.workers
    );
    let mut pool = Pool {
        key: key.clone(),
        address: listener.address().to_string(),
        children: HashMap::new(),
        started: 0,
    };
    for _ in 0..opts.workers {
        pool.spawn(&key)?;
    }
    if std::env::var_os("MPCONN_POOL_IMPOSTOR").is_some() {
        println!("coordinator: starting one impostor worker with a wrong key");
        pool.spawn(&AuthKey::generate()?)?;
    }

    let mut queue: VecDeque<usize> = (0..opts.tasks).collect();
    let mut results: Vec<Option<(u64, u64)>> = vec![None; opts.tasks];
    let mut completions = vec![0usize; opts.tasks];
    let mut workers: Vec<Worker> = Vec::new();
    let mut kill_pending = opts.kill_task.filter(|&t| t < opts.tasks);
    let mut crashes = 0;
    let mut finished = 0;
    let mut shown = (usize::MAX, 0);

    while finished < opts.tasks {
        let mut items: Vec<&dyn Waitable> = vec![&listener];
        items.extend(workers.iter().map(|w| &w.conn as &dyn Waitable));
        let ready = mpconn::wait(&items, Some(Duration::from_millis(200)))?;
        let mut dead = Vec::new();
        if ready.is_empty() {
            // Nothing to read anywhere, so no message of a dead worker is
            // left behind: a worker whose process has ended is dead even if
            // its connection still looks open. (A socket can outlive its
            // process when another process shares it; Wine's server
            // sometimes keeps a killed process's socket open.)
            for (index, w) in workers.iter().enumerate() {
                let child = w.pid.and_then(|pid| pool.children.get_mut(&pid));
                if child.is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                    dead.push(index);
                }
            }
        }
        for index in ready {
            if index == 0 {
                while let Some(conn) = listener.try_accept()? {
                    workers.push(Worker {
                        conn,
                        pid: None,
                        task: None,
                        done: 0,
                    });
                }
                continue;
            }
            let w = &mut workers[index - 1];
            match w.conn.recv::<FromWorker>() {
                Ok(FromWorker::Hello { pid }) => w.pid = Some(pid),
                Ok(FromWorker::Done { id, primes, micros }) => {
                    results[id] = Some((primes, micros));
                    completions[id] += 1;
                    finished += 1;
                    w.task = None;
                    w.done += 1;
                }
                Err(e) => {
                    dead.push(index - 1);
                    if !matches!(e, Error::Eof) {
                        eprintln!("\ncoordinator: worker failed: {e}");
                    }
                }
            }
        }
        // Dead workers: re-queue their task, reap them, start replacements.
        for index in dead.into_iter().rev() {
            let w = workers.remove(index);
            crashes += 1;
            if let Some(task) = w.task {
                println!(
                    "\ncoordinator: worker {} died during task {task}; re-queued it",
                    w.pid.unwrap_or(0)
                );
                queue.push_front(task);
            }
            if let Some(mut child) = w.pid.and_then(|pid| pool.children.remove(&pid)) {
                let _ = child.wait();
            }
            let key = pool.key.clone();
            pool.spawn(&key)?;
        }
        // Hand out work to idle workers that said hello.
        for w in workers
            .iter_mut()
            .filter(|w| w.task.is_none() && w.pid.is_some())
        {
            let Some(id) = queue.pop_front() else { break };
            let lo = id as u64 * RANGE;
            w.conn.send(&ToWorker::Task {
                id,
                lo,
                hi: lo + RANGE,
            })?;
            w.task = Some(id);
            if kill_pending == Some(id) {
                kill_pending = None;
                if let Some(child) = w.pid.and_then(|pid| pool.children.get_mut(&pid)) {
                    println!(
                        "\ncoordinator: killing worker {} in the middle of task {id}",
                        child.id()
                    );
                    child.kill()?;
                }
            }
        }
        if (finished, workers.len()) != shown {
            shown = (finished, workers.len());
            progress(finished, opts.tasks, workers.len(), start);
        }
    }

    for w in &mut workers {
        let _ = w.conn.send(&ToWorker::Shutdown);
    }
    for (_, mut child) in pool.children.drain() {
        let status = child.wait()?;
        if !status.success() && rejected.load(Ordering::SeqCst) == 0 {
            eprintln!("coordinator: a worker exited with {status}");
        }
    }
    let elapsed = start.elapsed();
    eprintln!();

    let exactly_once = completions.iter().all(|&c| c == 1);
    let primes: u64 = results.iter().flatten().map(|r| r.0).sum();
    let busy: u64 = results.iter().flatten().map(|r| r.1).sum();
    println!("summary:");
    println!(
        "  tasks: {} completed, each exactly once: {exactly_once}",
        completions.iter().filter(|&&c| c > 0).count()
    );
    println!("  primes below {}: {primes}", opts.tasks as u64 * RANGE);
    println!(
        "  wall time {:.2} s, worker time {:.2} s, {} workers started, {crashes} died",
        elapsed.as_secs_f64(),
        busy as f64 / 1e6,
        pool.started
    );
    let per_worker: Vec<usize> = workers.iter().map(|w| w.done).collect();
    println!("  tasks per surviving worker: {per_worker:?}");
    let rejected = rejected.load(Ordering::SeqCst);
    println!("  rejected handshakes: {rejected}");
    for reason in rejections.lock().unwrap().iter() {
        println!("    - {reason}");
    }
    if !exactly_once {
        return Err("some task did not complete exactly once".into());
    }
    Ok(())
}

fn progress(done: usize, total: usize, workers: usize, start: Instant) {
    const WIDTH: usize = 30;
    let filled = done * WIDTH / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} tasks, {workers} workers, {:.1} s ",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        start.elapsed().as_secs_f64()
    );
}
