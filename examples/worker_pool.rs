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
//! exactly once. `worker_pool_tokio.rs` is the same demo with its
//! coordinator on tokio; the workers, the protocol and the summary live in
//! `pool/mod.rs`.
//!
//! ```text
//! cargo run --example worker_pool -- [--workers N] [--tasks N] [--tcp] [--kill-task ID | --no-kill]
//! MPCONN_POOL_IMPOSTOR=1 cargo run --example worker_pool   # one extra worker with a wrong key
//! ```
//!
//! Workers receive the key on their standard input, never on the command line
//! or in the environment, where other local users could read it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mpconn::{AuthKey, Connection, Error, Waitable};

#[path = "pool/mod.rs"]
mod pool;

use pool::{AnyResult, FromWorker, Options, Pool, Summary, ToWorker};

fn main() {
    pool::main("worker_pool", coordinator);
}

struct Worker {
    conn: Connection,
    pid: Option<u32>,
    task: Option<usize>,
    done: usize,
}

fn coordinator(opts: &Options) -> AnyResult<()> {
    let start = Instant::now();
    let key = AuthKey::generate()?;
    let (options, address, rejections) = pool::listener_setup(opts)?;
    let listener = options.bind(address, key.as_bytes())?;
    println!(
        "coordinator: listening on {} with a fresh 32-byte key; starting {} workers",
        listener.address(),
        opts.workers
    );
    let mut pool = Pool::new(key, listener.address());
    pool.start(opts.workers)?;

    let mut queue: VecDeque<usize> = (0..opts.tasks).collect();
    let mut summary = Summary::new(opts.tasks);
    let mut workers: Vec<Worker> = Vec::new();
    let mut kill_pending = opts.kill_task.filter(|&t| t < opts.tasks);
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
                let child = w.pid.and_then(|pid| pool.child(pid));
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
                    summary.done(id, primes, micros);
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
            summary.crashes += 1;
            if let Some(task) = w.task {
                println!(
                    "\ncoordinator: worker {} died during task {task}; re-queued it",
                    w.pid.unwrap_or(0)
                );
                queue.push_front(task);
            }
            if let Some(pid) = w.pid {
                pool.reap(pid);
            }
            pool.spawn()?;
        }
        // Hand out work to idle workers that said hello.
        for w in workers
            .iter_mut()
            .filter(|w| w.task.is_none() && w.pid.is_some())
        {
            let Some(id) = queue.pop_front() else { break };
            w.conn.send(&ToWorker::task(id))?;
            w.task = Some(id);
            if kill_pending == Some(id) {
                kill_pending = None;
                if let Some(pid) = w.pid {
                    pool.kill(pid, id)?;
                }
            }
        }
        if (finished, workers.len()) != shown {
            shown = (finished, workers.len());
            pool::progress(finished, opts.tasks, workers.len(), start);
        }
    }

    for w in &mut workers {
        let _ = w.conn.send(&ToWorker::Shutdown);
    }
    pool.wait_all(&rejections)?;
    summary.elapsed = start.elapsed();
    summary.started = pool.started;
    summary.per_worker = workers.iter().map(|w| w.done).collect();
    eprintln!();
    summary.report(&rejections)
}
