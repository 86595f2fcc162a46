//! One measurement: the listener process, the attack, the valid clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::{Address, AuthKey, ClientOptions, Family};

use crate::attack::{Attack, Target};
use crate::cli::{AnyResult, Config, listener_command};
use crate::probe;
use crate::report::Report;

/// One client's fate: its handshake latency, or what went wrong.
pub type Outcome = Result<Duration, String>;

/// Runs one configuration: starts the listener process, opens the
/// attackers, and once they are all open, runs the valid clients while the
/// listener is sampled; then stops everything and gathers the figures.
pub fn measure(config: &Config) -> AnyResult<Report> {
    let key = AuthKey::generate()?;
    let place = Place::new(config.family)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(listener_command(&place.address, &config.flags))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "{}", key.to_hex().as_str())?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let address: Address = loop {
        let line = lines.next().ok_or("the listener exited")??;
        if let Some(a) = line.strip_prefix("LISTENING ") {
            break a.parse()?;
        }
    };
    let target = match &address {
        Address::Tcp(sa) => Target::Tcp(*sa),
        Address::Unix(path) => Target::Unix(path.clone()),
        other => return Err(format!("cannot flood {other}").into()),
    };
    let idle = probe::memory(pid)?;
    let sampler = probe::Sampler::start(pid, Duration::from_millis(10));
    let attack = Attack::start(target.clone(), config.attackers)?;
    let counters = attack.counters.clone();
    let all_open = Instant::now() + Duration::from_secs(5);
    while counters.started.load(Relaxed) < config.attackers && Instant::now() < all_open {
        thread::sleep(Duration::from_millis(10));
    }
    let started = counters.started.load(Relaxed);
    if started < config.attackers {
        eprintln!(
            "flood: only {started} of {} attackers could connect",
            config.attackers
        );
    }
    thread::sleep(Duration::from_millis(500));
    let dropped_before = counters.dropped.load(Relaxed);
    let start = Instant::now();
    let outcomes = run_clients(config, &address, &key);
    let window = start.elapsed();
    let dropped = counters.dropped.load(Relaxed) - dropped_before;
    let attackers_open_at_end = counters.open.load(Relaxed);
    let refused_connects = counters.refused.load(Relaxed);
    // Something that cleans the temporary directory would void the run:
    // clients would fail for want of a file, not for the flood.
    if let Target::Unix(path) = &target
        && !path.exists()
    {
        return Err(format!("{} was removed during the run", path.display()).into());
    }
    attack.stop()?;
    let peak = probe::memory(pid)?;
    let peaks = sampler.stop();
    drop(stdin);
    let listener_stats = lines
        .find_map(|line| line.ok()?.strip_prefix("STATS ").map(str::to_owned))
        .map(|s| {
            let mut it = s.split_whitespace();
            let accepted = it.next().unwrap_or("?");
            let failed = it.next().unwrap_or("?");
            format!("accepted {accepted}, failed or abandoned handshakes {failed}")
        })
        .unwrap_or_else(|| "no statistics".into());
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the listener process failed: {status}").into());
    }
    Ok(Report {
        config: config.clone(),
        outcomes,
        idle_rss_kib: idle.rss_kib,
        peak_rss_kib: peak.hwm_kib.max(peaks.rss_kib),
        peak_descriptors: peaks.descriptors,
        reconnects_per_s: dropped as f64 / window.as_secs_f64(),
        attackers_open_at_end,
        refused_connects,
        listener_stats,
        window,
    })
}

/// Where the listener binds: TCP port 0 on loopback, or a socket in a
/// directory of this run's own, removed when done.
struct Place {
    address: Address,
    dir: Option<PathBuf>,
}

impl Place {
    fn new(family: Family) -> AnyResult<Place> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if family == Family::Tcp {
            return Ok(Place {
                address: "127.0.0.1:0".parse()?,
                dir: None,
            });
        }
        let n = NEXT.fetch_add(1, Relaxed);
        let dir = std::env::temp_dir().join(format!("flood-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Place {
            address: Address::Unix(dir.join("listener.sock")),
            dir: Some(dir),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts the valid clients, evenly spread over the window, each on a thread
/// of its own, and waits for all of them.
fn run_clients(config: &Config, address: &Address, key: &AuthKey) -> Vec<Outcome> {
    let start = Instant::now();
    let spacing = Duration::from_secs_f64(config.seconds / config.clients as f64);
    // A client waits for the challenge without a limit by default: under a
    // flood that measures service, one that is never served must give up.
    let options = ClientOptions::new()
        .connect_timeout(Some(config.client_timeout))
        .challenge_timeout(Some(config.client_timeout))
        .handshake_timeout(config.client_timeout);
    let threads: Vec<_> = (0..config.clients)
        .map(|i| {
            let (options, address, key) = (options.clone(), address.clone(), key.clone());
            let at = start + spacing * i as u32;
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || -> Outcome {
                    thread::sleep(at.saturating_duration_since(Instant::now()));
                    let begin = Instant::now();
                    let mut conn = options
                        .connect(&address, key.as_bytes())
                        .map_err(|e| e.to_string())?;
                    let latency = begin.elapsed();
                    let probe = format!("client {i}");
                    conn.send_bytes(probe.as_bytes())
                        .and_then(|()| conn.recv_bytes())
                        .map_err(|e| format!("after the handshake: {e}"))
                        .and_then(|echo| match echo == probe.as_bytes() {
                            true => Ok(latency),
                            false => Err("after the handshake: a wrong echo".into()),
                        })
                })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| match t {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err("client thread panicked".into())),
            Err(e) => Err(format!("starting a client thread: {e}")),
        })
        .collect()
}
