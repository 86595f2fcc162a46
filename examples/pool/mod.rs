//! What the two worker-pool demos share: the protocol, the worker process,
//! the options, starting workers, and the summary. `worker_pool.rs` (a
//! blocking coordinator on `mpconn::wait`) and `worker_pool_tokio.rs` (a
//! coordinator on tokio) differ only in their coordinators; their workers
//! are the same blocking processes, the same binary run again.
//!
//! Workers receive the key on their standard input, never on the command line
//! or in the environment, where other local users could read it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpconn::{Address, AuthKey, Client, Error, Family, ListenerOptions};
use serde::{Deserialize, Serialize};

/// The numbers each task sieves: task `id` covers `[id * RANGE, (id + 1) * RANGE)`.
pub const RANGE: u64 = 1_000_000;

#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Task { id: usize, lo: u64, hi: u64 },
    Shutdown,
}

impl ToWorker {
    /// Task `id`.
    pub fn task(id: usize) -> ToWorker {
        let lo = id as u64 * RANGE;
        ToWorker::Task {
            id,
            lo,
            hi: lo + RANGE,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Hello { pid: u32 },
    Done { id: usize, primes: u64, micros: u64 },
}

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

pub struct Options {
    pub workers: usize,
    pub tasks: usize,
    pub tcp: bool,
    pub kill_task: Option<usize>,
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

/// The demo's `main`: a worker when started by a coordinator, otherwise
/// `coordinator` with the command line's options.
pub fn main(name: &str, coordinator: fn(&Options) -> AnyResult<()>) {
    let result = match std::env::var("MPCONN_POOL_ADDRESS") {
        Ok(address) => worker(&address),
        Err(_) => parse_args()
            .map_err(Into::into)
            .and_then(|opts| coordinator(&opts)),
    };
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

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

/// Handshakes the listener rejected, counted and explained by its failure
/// hook.
#[derive(Clone, Default)]
pub struct Rejections {
    count: Arc<AtomicUsize>,
    reasons: Arc<Mutex<Vec<String>>>,
}

impl Rejections {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// The listener's options (with a failure hook feeding `Rejections`) and a
/// fresh address: a Unix socket in a private temporary directory, a
/// randomly named pipe on Windows, or TCP with `--tcp`.
pub fn listener_setup(opts: &Options) -> AnyResult<(ListenerOptions, Address, Rejections)> {
    let family = if opts.tcp {
        Family::Tcp
    } else {
        Address::default_family()
    };
    let rejections = Rejections::default();
    let hook = rejections.clone();
    let options = ListenerOptions::new().on_handshake_failure(move |f| {
        hook.count.fetch_add(1, Ordering::SeqCst);
        hook.reasons.lock().unwrap().push(f.error.to_string());
    });
    Ok((options, Address::arbitrary(family)?, rejections))
}

/// The worker processes, by process id.
pub struct Pool {
    pub key: AuthKey,
    address: String,
    children: HashMap<u32, Child>,
    /// Workers taken out of the pool, to be waited for at the end.
    dead: Vec<Child>,
    pub started: usize,
}

impl Pool {
    pub fn new(key: AuthKey, address: &Address) -> Pool {
        Pool {
            key,
            address: address.to_string(),
            children: HashMap::new(),
            dead: Vec::new(),
            started: 0,
        }
    }

    /// Starts `workers` workers, and an impostor with a wrong key when
    /// `MPCONN_POOL_IMPOSTOR` is set.
    pub fn start(&mut self, workers: usize) -> AnyResult<()> {
        for _ in 0..workers {
            self.spawn()?;
        }
        if std::env::var_os("MPCONN_POOL_IMPOSTOR").is_some() {
            println!("coordinator: starting one impostor worker with a wrong key");
            self.spawn_with(&AuthKey::generate()?)?;
        }
        Ok(())
    }

    /// Starts one more worker (this same binary) with the pool's key.
    pub fn spawn(&mut self) -> AnyResult<()> {
        let key = self.key.clone();
        self.spawn_with(&key)
    }

    fn spawn_with(&mut self, key: &AuthKey) -> AnyResult<()> {
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

    /// The worker process `pid`, while it is in the pool.
    #[allow(dead_code, reason = "only worker_pool.rs looks at a worker's process")]
    pub fn child(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.get_mut(&pid)
    }

    /// Kills worker `pid` in the middle of task `id`.
    pub fn kill(&mut self, pid: u32, id: usize) -> AnyResult<()> {
        if let Some(child) = self.children.get_mut(&pid) {
            println!("\ncoordinator: killing worker {pid} in the middle of task {id}");
            child.kill()?;
        }
        Ok(())
    }

    /// Whether a worker process that has not said hello (its pid is not in
    /// `greeted`) is still running, and so may still connect.
    #[allow(dead_code, reason = "only worker_pool_tokio.rs waits for late workers")]
    pub fn any_coming(&mut self, greeted: &HashSet<u32>) -> bool {
        self.children
            .iter_mut()
            .any(|(pid, child)| !greeted.contains(pid) && matches!(child.try_wait(), Ok(None)))
    }

    /// Takes a dead worker out of the pool, without waiting for its
    /// process: `wait_all` does, and does not complain about it.
    pub fn reap(&mut self, pid: u32) {
        if let Some(child) = self.children.remove(&pid) {
            self.dead.push(child);
        }
    }

    /// Waits for every worker process to end; complains about failures
    /// unless some handshake was rejected (the impostor fails on purpose).
    pub fn wait_all(&mut self, rejections: &Rejections) -> AnyResult<()> {
        for mut child in self.dead.drain(..) {
            let _ = child.wait();
        }
        for (_, mut child) in self.children.drain() {
            let status = child.wait()?;
            if !status.success() && rejections.count() == 0 {
                eprintln!("coordinator: a worker exited with {status}");
            }
        }
        Ok(())
    }
}

/// What a coordinator gathered, for the summary.
pub struct Summary {
    pub results: Vec<Option<(u64, u64)>>,
    pub completions: Vec<usize>,
    pub elapsed: Duration,
    pub started: usize,
    pub crashes: usize,
    pub per_worker: Vec<usize>,
}

impl Summary {
    /// No task done yet, of `tasks`.
    pub fn new(tasks: usize) -> Summary {
        Summary {
            results: vec![None; tasks],
            completions: vec![0; tasks],
            elapsed: Duration::ZERO,
            started: 0,
            crashes: 0,
            per_worker: Vec::new(),
        }
    }

    /// Task `id` found `primes` in `micros` of worker time.
    pub fn done(&mut self, id: usize, primes: u64, micros: u64) {
        self.results[id] = Some((primes, micros));
        self.completions[id] += 1;
    }

    /// Prints the summary; an error unless every task completed exactly once.
    pub fn report(&self, rejections: &Rejections) -> AnyResult<()> {
        let tasks = self.completions.len();
        let exactly_once = self.completions.iter().all(|&c| c == 1);
        let primes: u64 = self.results.iter().flatten().map(|r| r.0).sum();
        let busy: u64 = self.results.iter().flatten().map(|r| r.1).sum();
        println!("summary:");
        println!(
            "  tasks: {} completed, each exactly once: {exactly_once}",
            self.completions.iter().filter(|&&c| c > 0).count()
        );
        println!("  primes below {}: {primes}", tasks as u64 * RANGE);
        println!(
            "  wall time {:.2} s, worker time {:.2} s, {} workers started, {} died",
            self.elapsed.as_secs_f64(),
            busy as f64 / 1e6,
            self.started,
            self.crashes
        );
        println!("  tasks per surviving worker: {:?}", self.per_worker);
        println!("  rejected handshakes: {}", rejections.count());
        for reason in rejections.reasons.lock().unwrap().iter() {
            println!("    - {reason}");
        }
        if !exactly_once {
            return Err("some task did not complete exactly once".into());
        }
        Ok(())
    }
}

pub fn progress(done: usize, total: usize, workers: usize, start: Instant) {
    const WIDTH: usize = 30;
    let filled = done * WIDTH / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} tasks, {workers} workers, {:.1} s ",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        start.elapsed().as_secs_f64()
    );
}
