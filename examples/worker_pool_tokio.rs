//! The worker-pool demo with its coordinator on tokio.
//!
//! The same demo as `worker_pool.rs`, with the same workers (this binary
//! run again, plain blocking processes), protocol, options and summary
//! (`pool/mod.rs`); only the coordinator differs. It accepts the workers on
//! an async [`mpconn::tokio::Listener`] and gives each connection a task of
//! its own, which takes jobs from a shared channel, sends them to its
//! worker and awaits the result. The main task gathers results and deaths
//! from a second channel, re-queues the job of a worker that died and
//! starts a replacement. By default one worker is killed as soon as it has
//! been handed task 3: its task then counts the job as lost without reading
//! anything more from it, so the demo runs the same way whatever the timing,
//! and every task still completes exactly once.
//!
//! ```text
//! cargo run --features tokio --example worker_pool_tokio -- [--workers N] [--tasks N] [--tcp] [--kill-task ID | --no-kill]
//! ```

#[path = "pool/mod.rs"]
mod pool;

fn main() {
    pool::main("worker_pool_tokio", coordinator::run);
}

mod coordinator {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use mpconn::tokio::{Connection, Listener};
    use mpconn::{AuthKey, Error};
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    use super::pool::{self, AnyResult, FromWorker, Options, Pool, Summary, ToWorker};

    /// What a worker's task tells the main task.
    enum Event {
        Hello {
            pid: u32,
        },
        Done {
            id: usize,
            primes: u64,
            micros: u64,
        },
        /// The worker is gone (`pid` when it had said hello), with the job
        /// it held, if any.
        Died {
            pid: Option<u32>,
            job: Option<usize>,
        },
    }

    /// The jobs, shared by the workers' tasks: each takes the next one when
    /// its worker is idle.
    type Jobs = Arc<tokio::sync::Mutex<UnboundedReceiver<usize>>>;

    /// What every worker's task shares.
    #[derive(Clone)]
    struct Shared {
        jobs: Jobs,
        events: UnboundedSender<Event>,
        pool: Arc<Mutex<Pool>>,
        /// The job whose worker is killed once it has it; `usize::MAX`: none.
        kill: Arc<AtomicUsize>,
    }

    pub fn run(opts: &Options) -> AnyResult<()> {
        // One thread is plenty: the coordinator only waits, the work is in
        // the worker processes.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(coordinate(opts))
    }

    async fn coordinate(opts: &Options) -> AnyResult<()> {
        let start = Instant::now();
        let key = AuthKey::generate()?;
        let (options, address, rejections) = pool::listener_setup(opts)?;
        let listener = Listener::bind_with(options, address, key.as_bytes())?;
        println!(
            "coordinator: listening on {} with a fresh 32-byte key; starting {} workers",
            listener.address(),
            opts.workers
        );
        let pool = Arc::new(Mutex::new(Pool::new(key, listener.address())));
        pool.lock().unwrap().start(opts.workers)?;

        let (queue, jobs) = unbounded_channel();
        for id in 0..opts.tasks {
            queue.send(id)?;
        }
        let (events, mut gathered) = unbounded_channel();
        let shared = Shared {
            jobs: Arc::new(tokio::sync::Mutex::new(jobs)),
            events,
            pool: pool.clone(),
            kill: Arc::new(AtomicUsize::new(
                opts.kill_task
                    .filter(|&t| t < opts.tasks)
                    .unwrap_or(usize::MAX),
            )),
        };

        let mut summary = Summary::new(opts.tasks);
        let mut tasks = Vec::new();
        let mut queue = Some(queue);
        let mut greeted = HashSet::new();
        let (mut finished, mut alive) = (0, 0);
        let mut shown = (usize::MAX, 0);
        // Once every job is done, workers still on their way in are
        // accepted all the same and told to shut down, so that every worker
        // ends cleanly; this looks now and then for any still to come.
        let mut look = tokio::time::interval(Duration::from_millis(10));
        loop {
            let draining = finished == opts.tasks;
            if draining {
                // No more jobs: each task tells its worker to shut down.
                queue = None;
                if !pool.lock().unwrap().any_coming(&greeted) {
                    break;
                }
            }
            tokio::select! {
                accepted = listener.accept() => {
                    tasks.push(tokio::spawn(serve(accepted?, shared.clone())));
                    alive += 1;
                }
                Some(event) = gathered.recv() => match event {
                    Event::Hello { pid } => {
                        greeted.insert(pid);
                    }
                    Event::Done { id, primes, micros } => {
                        summary.done(id, primes, micros);
                        finished += 1;
                    }
                    Event::Died { pid, job } => {
                        alive -= 1;
                        summary.crashes += 1;
                        if let (Some(job), Some(queue)) = (job, &queue) {
                            println!(
                                "\ncoordinator: worker {} died during task {job}; re-queued it",
                                pid.unwrap_or(0)
                            );
                            queue.send(job)?;
                        }
                        let mut pool = pool.lock().unwrap();
                        if let Some(pid) = pid {
                            pool.reap(pid);
                        }
                        if !draining {
                            pool.spawn()?;
                        }
                    }
                },
                _ = look.tick(), if draining => {}
            }
            if (finished, alive) != shown {
                shown = (finished, alive);
                pool::progress(finished, opts.tasks, alive, start);
            }
        }

        for task in tasks {
            if let Some(done) = task.await? {
                summary.per_worker.push(done);
            }
        }
        drop(shared);
        let mut pool = Arc::into_inner(pool)
            .ok_or("a worker's task still holds the pool")?
            .into_inner()?;
        pool.wait_all(&rejections)?;
        summary.elapsed = start.elapsed();
        summary.started = pool.started;
        eprintln!();
        summary.report(&rejections)
    }

    /// One worker's task: its hello, then jobs until the channel is empty
    /// and closed. The number of jobs it completed, or `None` when the
    /// worker died (the main task has been told).
    async fn serve(mut conn: Connection, shared: Shared) -> Option<usize> {
        let died = |pid, job| {
            let _ = shared.events.send(Event::Died { pid, job });
            None
        };
        let pid = match conn.recv::<FromWorker>().await {
            Ok(FromWorker::Hello { pid }) => {
                let _ = shared.events.send(Event::Hello { pid });
                pid
            }
            Ok(other) => {
                eprintln!("\ncoordinator: a worker began with {other:?}");
                return died(None, None);
            }
            Err(e) => {
                report(&e);
                return died(None, None);
            }
        };
        let mut done = 0;
        loop {
            // The lock is held while waiting: one idle task waits for the
            // next job, the others for their turn.
            let Some(id) = shared.jobs.lock().await.recv().await else {
                let _ = conn.send(&ToWorker::Shutdown).await;
                return Some(done);
            };
            if let Err(e) = conn.send(&ToWorker::task(id)).await {
                report(&e);
                return died(Some(pid), Some(id));
            }
            let killed = shared
                .kill
                .compare_exchange(id, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if killed {
                // Whatever the worker managed before the signal is not read:
                // the job is lost with it.
                if let Err(e) = shared.pool.lock().unwrap().kill(pid, id) {
                    eprintln!("\ncoordinator: cannot kill worker {pid}: {e}");
                }
                return died(Some(pid), Some(id));
            }
            match conn.recv::<FromWorker>().await {
                Ok(FromWorker::Done {
                    id: finished,
                    primes,
                    micros,
                }) if finished == id => {
                    done += 1;
                    let _ = shared.events.send(Event::Done { id, primes, micros });
                }
                Ok(other) => {
                    eprintln!("\ncoordinator: worker {pid} answered task {id} with {other:?}");
                    return died(Some(pid), Some(id));
                }
                Err(e) => {
                    report(&e);
                    return died(Some(pid), Some(id));
                }
            }
        }
    }

    /// A worker's connection failed: say why, unless it simply ended.
    fn report(e: &Error) {
        if !matches!(e, Error::Eof) {
            eprintln!("\ncoordinator: worker failed: {e}");
        }
    }
}
