//! mpconn side by side with the raw socketpair floor, CPython's
//! multiprocessing.connection and ipc-channel, in one run; a second table
//! for the async connections (`mpconn::tokio`) against raw tokio framing
//! and the blocking server (see `compare/aio.rs`); and a third for the
//! encrypted mode against the plain connection, over TCP and a Unix socket
//! (see `compare/encrypted.rs`).
//!
//! ```text
//! cargo bench --manifest-path bench/Cargo.toml             # full: 7 interleaved rounds
//! cargo bench --manifest-path bench/Cargo.toml -- --quick  # a few seconds, for CI
//! cargo bench --manifest-path bench/Cargo.toml -- --only encrypted  # one table: main, async or encrypted
//! ```
//!
//! `--profile-stream N`, `--profile-big N`, `--profile-concurrent ADDRESS`,
//! `--profile-tokio WORKLOAD N` and `--profile-encrypted WORKLOAD N [SYSTEM]`
//! run one mpconn workload alone, for perf or strace.
//!
//! Every workload runs between two processes. The systems take turns within
//! each round, so that the machine's noise falls on all of them alike, and the
//! table shows medians over rounds and mpconn's ratio to each peer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use mpconn::{Address, Client, Connection, Listener, ListenerOptions, Unverified};
use serde::{Deserialize, Serialize};

#[path = "compare/aio.rs"]
mod aio;
#[path = "compare/encrypted.rs"]
mod encrypted;

const KEY: &[u8] = b"benchmark-key-0123456789abcdef";
const MIB: usize = 1 << 20;

/// Iteration counts; quick mode divides them.
#[derive(Clone, Copy)]
struct Sizes {
    pingpong: usize,
    stream: usize,
    big: usize,
    handshakes: usize,
    concurrent_per_client: usize,
    idle: usize,
    /// Ping-pongs on each of the 1,000 concurrent connections.
    conn_rounds: usize,
}

const FULL: Sizes = Sizes {
    pingpong: 20_000,
    stream: 200_000,
    big: 2_000,
    handshakes: 500,
    concurrent_per_client: 40,
    idle: 10_000,
    conn_rounds: 100,
};

const QUICK: Sizes = Sizes {
    pingpong: 2_000,
    stream: 20_000,
    big: 200,
    handshakes: 100,
    concurrent_per_client: 8,
    idle: 1_000,
    conn_rounds: 10,
};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Small {
    id: u64,
    x: f64,
    y: f64,
    tag: u32,
    flags: [u8; 8],
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        return child(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--profile-big") {
        let n: usize = args[i + 1].parse().unwrap();
        let (mut conn, mut child) = pipe_child("sink", n);
        let rate = throughput_gbps(&mut conn, n);
        child.wait().unwrap();
        return println!("{rate:.3} GB/s");
    }
    if let Some(i) = args.iter().position(|a| a == "--profile-concurrent") {
        // The 16-client handshake workload alone, against an mpconn listener
        // at the address given (start one with `--role mpconn-listener`).
        let rate = concurrent_clients(&args[i + 1], 200);
        return println!("{rate:.0} conn/s");
    }
    if let Some(i) = args.iter().position(|a| a == "--profile-tokio") {
        // An async workload alone: see aio::profile for the names.
        return aio::profile(&args[i + 1], args[i + 2].parse().unwrap());
    }
    if let Some(i) = args.iter().position(|a| a == "--profile-encrypted") {
        // An encrypted-table workload alone: see encrypted::profile.
        let system = args.get(i + 3).map_or("encrypted-tcp", |s| s.as_str());
        return encrypted::profile(&args[i + 1], args[i + 2].parse().unwrap(), system);
    }
    if let Some(i) = args.iter().position(|a| a == "--profile-stream") {
        // One workload alone, for perf and strace.
        let n: usize = args[i + 1].parse().unwrap();
        let (mut conn, mut child) = pipe_child("sink", n);
        let t = Instant::now();
        for _ in 0..n {
            conn.send_bytes(&[b'x'; 64]).unwrap();
        }
        conn.recv_bytes().unwrap();
        child.wait().unwrap();
        return println!("{:.0} msgs/s", n as f64 / t.elapsed().as_secs_f64());
    }
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("MPCONN_BENCH_QUICK").is_some();
    let sizes = if quick { QUICK } else { FULL };
    let rounds = if quick { 1 } else { 7 };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].as_str());
    run(sizes, rounds, quick, only);
}

// ---------------------------------------------------------------- the table

/// Lower is better for times; higher for rates.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

struct Figure {
    name: &'static str,
    unit: &'static str,
    better: Better,
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "pingpong_64B_rtt_us",
        unit: "us",
        better: Better::Lower,
    },
    Figure {
        name: "stream_64B_msgs_per_s",
        unit: "msg/s",
        better: Better::Higher,
    },
    Figure {
        name: "stream_64B_batched_msgs_per_s",
        unit: "msg/s",
        better: Better::Higher,
    },
    Figure {
        name: "throughput_1MiB_GBps",
        unit: "GB/s",
        better: Better::Higher,
    },
    Figure {
        name: "typed_pingpong_rtt_us",
        unit: "us",
        better: Better::Lower,
    },
    Figure {
        name: "tcp_auth_handshakes_per_s",
        unit: "conn/s",
        better: Better::Higher,
    },
    Figure {
        name: "tcp_auth_16_clients_per_s",
        unit: "conn/s",
        better: Better::Higher,
    },
    Figure {
        name: "idle_auth_conn_bytes",
        unit: "B",
        better: Better::Lower,
    },
];

const SYSTEMS: [&str; 4] = ["mpconn", "raw", "cpython", "ipc-channel"];

type Samples = BTreeMap<(&'static str, &'static str), Vec<f64>>;

fn record(samples: &mut Samples, system: &'static str, figures: Vec<(&str, f64)>) {
    for (name, value) in figures {
        if let Some(f) = FIGURES.iter().find(|f| f.name == name) {
            samples.entry((f.name, system)).or_default().push(value);
        }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// `only`: the one table to run, `main`, `async` or `encrypted`.
fn run(sizes: Sizes, rounds: usize, quick: bool, only: Option<&str>) {
    let wants = |table: &str| only.is_none_or(|t| t == table);
    let tables: [(&str, &[&'static str]); 3] = [
        ("main", &SYSTEMS),
        ("async", &aio::SYSTEMS),
        ("encrypted", &encrypted::SYSTEMS),
    ];
    let systems: Vec<&'static str> = tables
        .iter()
        .filter(|(table, _)| wants(table))
        .flat_map(|(_, systems)| systems.iter().copied())
        .collect();
    assert!(!systems.is_empty(), "--only takes main, async or encrypted");
    let raw = wants("main").then(build_raw_floor).flatten();
    let python = wants("main").then(newest_python).flatten();
    let mut samples = Samples::new();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        // Take turns in a different order each round.
        let mut order: Vec<usize> = (0..systems.len()).collect();
        order.rotate_left(round % systems.len());
        for i in order {
            match systems[i] {
                "mpconn" => record(&mut samples, "mpconn", mpconn_figures(sizes)),
                "raw" => {
                    if let Some(raw) = &raw {
                        record(&mut samples, "raw", run_printing_peer(Command::new(raw)));
                    }
                }
                "cpython" => {
                    if let Some(py) = &python {
                        let mut figures = run_printing_peer(python_bench(py));
                        figures.push(("tcp_auth_16_clients_per_s", python_concurrent(py, sizes)));
                        record(&mut samples, "cpython", figures);
                    }
                }
                "ipc-channel" => record(&mut samples, "ipc-channel", ipc_figures(sizes)),
                system => {
                    let figures = if encrypted::SYSTEMS.contains(&system) {
                        encrypted::figures(system, sizes)
                    } else {
                        aio::figures(system, sizes)
                    };
                    for (name, value) in figures {
                        samples.entry((name, system)).or_default().push(value);
                    }
                }
            }
        }
    }
    if wants("main") {
        print_table(&samples, rounds, quick, python.as_deref());
    }
    if wants("async") {
        aio::print_table(&samples);
    }
    if wants("encrypted") {
        encrypted::print_table(&samples, rounds, quick);
    }
    if let Some(raw) = raw {
        let _ = std::fs::remove_file(raw);
    }
}

fn print_table(samples: &Samples, rounds: usize, quick: bool, python: Option<&Path>) {
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let ncpu = thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "mpconn side-by-side benchmark: medians of {rounds} interleaved round(s){}",
        if quick {
            ", QUICK mode (small counts, not for conclusions)"
        } else {
            ""
        }
    );
    println!(
        "machine: {cpus}, {ncpu} cpus; python: {}",
        python.map_or("not found".into(), |p| p.display().to_string())
    );
    println!();
    println!(
        "| {:<30} | {:>12} | {:>12} | {:>12} | {:>12} | {:>9} | {:>9} | {:>9} |",
        "figure", "mpconn", "raw floor", "cpython", "ipc-channel", "vs raw", "vs cpython", "vs ipc"
    );
    println!(
        "|{:-<32}|{:->14}|{:->14}|{:->14}|{:->14}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    for f in FIGURES {
        let value = |system: &str| samples.get(&(f.name, system)).and_then(|v| median(v));
        let show = |v: Option<f64>| v.map_or("-".to_string(), format_value);
        let ours = value("mpconn");
        let ratio = |peer: &str| match (ours, value(peer)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "| {:<30} | {:>12} | {:>12} | {:>12} | {:>12} | {:>9} | {:>9} | {:>9} |",
            label(f.name, f.unit, f.better),
            show(ours),
            show(value("raw")),
            show(value("cpython")),
            show(value("ipc-channel")),
            ratio("raw"),
            ratio("cpython"),
            ratio("ipc-channel"),
        );
    }
    println!();
    println!("Ratios are mpconn / peer: below 1 wins for 'lower' rows, above 1 for 'higher' rows.");
    println!();
    println!("Noise: spread (max/min - 1) of each system over the rounds");
    for f in FIGURES {
        let spreads: Vec<String> = SYSTEMS
            .iter()
            .filter_map(|system| spread(samples, f.name, system))
            .collect();
        if !spreads.is_empty() {
            println!("  {:<30} {}", f.name, spreads.join(", "));
        }
    }
}

/// A row's first cell: the figure, its unit and which way is better.
fn label(name: &str, unit: &str, better: Better) -> String {
    let way = if better == Better::Lower {
        "lower"
    } else {
        "higher"
    };
    format!("{name} ({unit}, {way})")
}

/// `system N%`: the spread (max/min - 1) of its samples of `name` over the
/// rounds, if it has more than one.
fn spread(samples: &Samples, name: &str, system: &str) -> Option<String> {
    let v = samples.get(&(name, system))?;
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (v.len() > 1 && lo > 0.0).then(|| format!("{system} {:.0}%", (hi / lo - 1.0) * 100.0))
}

/// A bound on a ratio: its text, and whether `ratio` keeps within it.
fn check(target: f64, better: Better, ratio: Option<f64>) -> (String, Option<bool>) {
    match better {
        Better::Lower => (format!("<= {target:.2}x"), ratio.map(|r| r <= target)),
        Better::Higher => (format!(">= {target:.2}x"), ratio.map(|r| r >= target)),
    }
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

fn format_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

// --------------------------------------------------------- peers that print

/// Under CI a peer that cannot run fails the benchmark instead of leaving
/// its column empty.
fn missing_peer(what: &str) {
    eprintln!("{what}; its column stays empty");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        eprintln!("CI=true: a missing peer fails the run");
        std::process::exit(1);
    }
}

/// Compiles ../shared/bench/raw_limit.c with gcc -O2 into a temporary file.
fn build_raw_floor() -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/raw_limit.c");
    let out = std::env::temp_dir().join(format!("mpconn-raw-limit-{}", std::process::id()));
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        _ => {
            eprintln!(
                "raw floor: cannot build {} with gcc; its column stays empty",
                source.display()
            );
            None
        }
    }
}

/// The newest CPython in pyenv.
fn newest_python() -> Option<PathBuf> {
    let found = find_newest_python();
    if found.is_none() {
        missing_peer("cpython: no interpreter found in pyenv");
    }
    found
}

fn find_newest_python() -> Option<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let exe = e.path().join("bin/python3");
            (version.first() == Some(&3) && exe.exists()).then_some((version, exe))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn python_bench(py: &Path) -> Command {
    let mut cmd = Command::new(py);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/py_peer_bench.py"));
    cmd
}

/// Runs a peer that prints `name value` lines and parses them.
fn run_printing_peer(mut cmd: Command) -> Vec<(&'static str, f64)> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("peer benchmark did not start");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            let figure = FIGURES.iter().find(|f| f.name == name)?;
            Some((figure.name, value.trim().parse().ok()?))
        })
        .collect()
}

// ------------------------------------------------------------------ mpconn

fn this_exe() -> Command {
    Command::new(std::env::current_exe().unwrap())
}

/// Starts a child in `role` that owns the other end of a fresh pipe().
fn pipe_child(role: &str, n: usize) -> (Connection, Child) {
    let (ours, theirs) = mpconn::pipe().unwrap();
    let fd = OwnedFd::try_from(theirs).map_err(|(e, _)| e).unwrap();
    let child = this_exe()
        .args(["--role", role, &n.to_string()])
        .stdin(Stdio::from(fd))
        .spawn()
        .unwrap();
    (ours, child)
}

fn inherited() -> Connection {
    let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    Connection::<Unverified>::from(fd).dangerous_trust_without_authentication()
}

fn mpconn_figures(s: Sizes) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let msg = [b'x'; 64];
    let mut buf = vec![0u8; MIB];

    let (mut conn, mut child) = pipe_child("echo", s.pingpong);
    out.push(("pingpong_64B_rtt_us", pingpong_us(&mut conn, s.pingpong)));
    child.wait().unwrap();

    let (mut conn, mut child) = pipe_child("sink", s.stream);
    let t = Instant::now();
    for _ in 0..s.stream {
        conn.send_bytes(&msg).unwrap();
    }
    conn.recv_bytes_into(&mut buf).unwrap();
    out.push((
        "stream_64B_msgs_per_s",
        s.stream as f64 / t.elapsed().as_secs_f64(),
    ));
    child.wait().unwrap();

    let batched = s.stream * 10;
    let (mut conn, mut child) = pipe_child("sink", batched);
    let t = Instant::now();
    {
        let mut batch = conn.batch();
        for _ in 0..batched {
            batch.send_bytes(&msg).unwrap();
        }
        batch.flush().unwrap();
    }
    conn.recv_bytes_into(&mut buf).unwrap();
    out.push((
        "stream_64B_batched_msgs_per_s",
        batched as f64 / t.elapsed().as_secs_f64(),
    ));
    child.wait().unwrap();

    let (mut conn, mut child) = pipe_child("sink", s.big);
    out.push(("throughput_1MiB_GBps", throughput_gbps(&mut conn, s.big)));
    child.wait().unwrap();

    let small = Small {
        id: 7,
        x: 1.5,
        y: -2.25,
        tag: 42,
        flags: [1; 8],
    };
    let (mut conn, mut child) = pipe_child("typed-echo", s.pingpong);
    let t = Instant::now();
    for _ in 0..s.pingpong {
        conn.send(&small).unwrap();
        let back: Small = conn.recv().unwrap();
        debug_assert_eq!(back, small);
    }
    out.push((
        "typed_pingpong_rtt_us",
        t.elapsed().as_secs_f64() / s.pingpong as f64 * 1e6,
    ));
    child.wait().unwrap();

    out.push((
        "tcp_auth_handshakes_per_s",
        mpconn_sequential_handshakes(s.handshakes, false),
    ));
    let (address, mut server) = listener_child("mpconn-listener", &[]);
    out.push((
        "tcp_auth_16_clients_per_s",
        concurrent_clients(&address, s.concurrent_per_client),
    ));
    server.kill().ok();
    server.wait().ok();
    out.push((
        "idle_auth_conn_bytes",
        idle_memory("idle-listener", s.idle, &[]),
    ));
    out
}

/// Mean round trip, in microseconds, of `n` 64-byte ping-pongs with a peer
/// that echoes them.
fn pingpong_us(conn: &mut Connection, n: usize) -> f64 {
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    for _ in 0..n {
        conn.send_bytes(&[b'x'; 64]).unwrap();
        conn.recv_bytes_into(&mut buf).unwrap();
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

/// GB/s of `n` 1 MiB messages to a sink, counted up to its reply.
fn throughput_gbps(conn: &mut Connection, n: usize) -> f64 {
    let big = vec![b'x'; MIB];
    let t = Instant::now();
    for _ in 0..n {
        conn.send_bytes(&big).unwrap();
    }
    conn.recv_bytes().unwrap();
    (n * MIB) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Client and listener in one process, like py_peer_bench's handshakes(),
/// in the encrypted mode or not.
fn mpconn_sequential_handshakes(n: usize, encrypted: bool) -> f64 {
    let listener = Arc::new(
        ListenerOptions::new()
            .encrypted(encrypted)
            .bind("127.0.0.1:0", KEY)
            .unwrap(),
    );
    let address = listener.address().clone();
    let server = {
        let listener = listener.clone();
        thread::spawn(move || {
            for _ in 0..n {
                listener.accept().unwrap().close().unwrap();
            }
        })
    };
    let t = Instant::now();
    let options = Client::builder().encrypted(encrypted);
    for _ in 0..n {
        options.connect(&address, KEY).unwrap().close().unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    server.join().unwrap();
    rate
}

/// Starts a listener child and reads the address it prints.
fn listener_child(role: &str, extra: &[&str]) -> (String, Child) {
    let mut child = this_exe()
        .args(["--role", role])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    (read_address(&mut child), child)
}

/// A listener child's first line: the address it listens on.
fn announce(address: &Address) {
    println!("{address}");
    std::io::stdout().flush().unwrap();
}

/// The first line a child prints: the address it listens on.
fn read_address(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

/// 16 client threads connecting, authenticating and closing in a loop;
/// the same clients for every listener under test.
fn concurrent_clients(address: &str, per_client: usize) -> f64 {
    const CLIENTS: usize = 16;
    let go = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (address, go) = (address.to_string(), go.clone());
            thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                for _ in 0..per_client {
                    let conn = Client::builder()
                        .handshake_timeout(Duration::from_secs(30))
                        .connect(address.as_str(), KEY)
                        .expect("concurrent client");
                    drop(conn);
                }
            })
        })
        .collect();
    let t = Instant::now();
    go.store(true, Ordering::Release);
    for th in threads {
        th.join().unwrap();
    }
    (CLIENTS * per_client) as f64 / t.elapsed().as_secs_f64()
}

/// Bytes of listener-process memory per idle authenticated connection, with
/// `n` of them open at once, each having exchanged a few messages; the
/// listener is the child `role` (with `extra` arguments).
fn idle_memory(role: &str, n: usize, extra: &[&str]) -> f64 {
    let n_arg = n.to_string();
    let args: Vec<&str> = std::iter::once(n_arg.as_str())
        .chain(extra.iter().copied())
        .collect();
    let (address, mut server) = listener_child(role, &args);
    let mut clients = Vec::with_capacity(n);
    let per_thread = n / 8;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let address = address.clone();
            thread::spawn(move || {
                (0..per_thread)
                    .map(|_| {
                        let mut conn = Client::connect(address.as_str(), KEY).unwrap();
                        conn.send_bytes(&[b'x'; 64]).unwrap();
                        conn.recv_bytes().unwrap();
                        conn.send_bytes(&[b'y'; 64]).unwrap();
                        conn
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        clients.extend(t.join().unwrap());
    }
    let mut out = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    server.wait().unwrap();
    drop(clients);
    out.trim().parse().unwrap_or(f64::NAN)
}

/// Bytes the allocator has handed out and not taken back (glibc's
/// `mallinfo2`): counts buffers whether or not their pages were touched.
fn heap_bytes() -> f64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks as f64
}

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb * 1024.0)
}

// ------------------------------------------------------------- ipc-channel

#[derive(Serialize, Deserialize)]
struct IpcBootstrap {
    to_child: IpcBytesSender,
    typed_to_child: IpcSender<Small>,
    reply: IpcSender<(IpcBytesSender, IpcSender<Small>)>,
}

struct IpcPeer {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
    typed_tx: IpcSender<Small>,
    typed_rx: IpcReceiver<Small>,
    child: Child,
}

fn ipc_child(role: &str, n: usize) -> IpcPeer {
    let (server, name) = IpcOneShotServer::<IpcBootstrap>::new().unwrap();
    let child = this_exe()
        .args(["--role", role, &n.to_string(), &name])
        .spawn()
        .unwrap();
    let (_, boot) = server.accept().unwrap();
    let (tx, rx) = ipc::bytes_channel().unwrap();
    let (typed_tx, typed_rx) = ipc::channel::<Small>().unwrap();
    boot.reply.send((tx, typed_tx)).unwrap();
    IpcPeer {
        tx: boot.to_child,
        rx,
        typed_tx: boot.typed_to_child,
        typed_rx,
        child,
    }
}

fn ipc_figures(s: Sizes) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let msg = [b'x'; 64];

    let mut p = ipc_child("ipc-echo", s.pingpong);
    let t = Instant::now();
    for _ in 0..s.pingpong {
        p.tx.send(&msg).unwrap();
        p.rx.recv().unwrap();
    }
    out.push((
        "pingpong_64B_rtt_us",
        t.elapsed().as_secs_f64() / s.pingpong as f64 * 1e6,
    ));
    p.child.wait().unwrap();

    let mut p = ipc_child("ipc-sink", s.stream);
    let t = Instant::now();
    for _ in 0..s.stream {
        p.tx.send(&msg).unwrap();
    }
    p.rx.recv().unwrap();
    out.push((
        "stream_64B_msgs_per_s",
        s.stream as f64 / t.elapsed().as_secs_f64(),
    ));
    p.child.wait().unwrap();

    let big = vec![b'x'; MIB];
    let mut p = ipc_child("ipc-sink", s.big);
    let t = Instant::now();
    for _ in 0..s.big {
        p.tx.send(&big).unwrap();
    }
    p.rx.recv().unwrap();
    out.push((
        "throughput_1MiB_GBps",
        (s.big * MIB) as f64 / t.elapsed().as_secs_f64() / 1e9,
    ));
    p.child.wait().unwrap();

    let small = Small {
        id: 7,
        x: 1.5,
        y: -2.25,
        tag: 42,
        flags: [1; 8],
    };
    let mut p = ipc_child("ipc-typed-echo", s.pingpong);
    let t = Instant::now();
    for _ in 0..s.pingpong {
        p.typed_tx.send(small).unwrap();
        p.typed_rx.recv().unwrap();
    }
    out.push((
        "typed_pingpong_rtt_us",
        t.elapsed().as_secs_f64() / s.pingpong as f64 * 1e6,
    ));
    p.child.wait().unwrap();
    out
}

// ------------------------------------------------------------------ CPython

const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
# A generous backlog, so that only the one-by-one handshakes are measured.
with Listener(('127.0.0.1', 0), authkey=bytes.fromhex(sys.argv[1]), backlog=128) as l:
    print('%s:%d' % l.address, flush=True)
    while True:
        l.accept().close()
"#;

/// The same 16 Rust clients against a CPython listener.
fn python_concurrent(py: &Path, s: Sizes) -> f64 {
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(py)
        .args(["-c", PY_LISTENER, &hex])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let address = read_address(&mut child);
    let rate = concurrent_clients(&address, s.concurrent_per_client);
    child.kill().ok();
    child.wait().ok();
    rate
}

// ------------------------------------------------------------ child roles

fn child(args: &[String]) {
    let role = args[0].as_str();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut buf = vec![0u8; MIB];
    match role {
        "echo" => echo(&mut inherited(), n),
        "sink" => sink(&mut inherited(), n),
        "typed-echo" => {
            let mut conn = inherited();
            for _ in 0..n {
                let v: Small = conn.recv().unwrap();
                conn.send(&v).unwrap();
            }
        }
        "mpconn-listener" => {
            let listener = ListenerOptions::new().bind("127.0.0.1:0", KEY).unwrap();
            announce(listener.address());
            loop {
                drop(listener.accept().unwrap());
            }
        }
        "idle-listener" => {
            // `shrink`: each connection's buffers are freed before it idles.
            let shrink = args.get(2).is_some_and(|a| a == "shrink");
            let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
            let before = (heap_bytes(), rss_bytes());
            announce(listener.address());
            // Each connection has been used (two messages in, one out; the
            // second read goes through the read buffer), then sits idle.
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                let mut conn = listener.accept().unwrap();
                conn.recv_bytes_into(&mut buf).unwrap();
                conn.send_bytes(b"ok").unwrap();
                conn.recv_bytes_into(&mut buf).unwrap();
                if shrink {
                    conn.shrink_buffers();
                }
                conns.push(conn);
            }
            let after = (heap_bytes(), rss_bytes());
            let per = |a: f64, b: f64| (a - b) / n as f64;
            eprintln!(
                "idle connections: {:.0} B heap, {:.0} B resident each",
                per(after.0, before.0),
                per(after.1, before.1)
            );
            // The larger of the two is the figure.
            println!("{}", per(after.0, before.0).max(per(after.1, before.1)));
            drop(conns);
        }
        "ipc-echo" | "ipc-sink" | "ipc-typed-echo" => ipc_role(role, n, &args[2]),
        other => assert!(
            aio::child(other, n) || encrypted::child(other, n, &args[2..]),
            "unknown role {other}"
        ),
    }
}

/// Echoes `n` messages back.
fn echo(conn: &mut Connection, n: usize) {
    let mut buf = vec![0u8; MIB];
    for _ in 0..n {
        let len = conn.recv_bytes_into(&mut buf).unwrap();
        conn.send_bytes(&buf[..len]).unwrap();
    }
}

/// Takes `n` messages, then says `done`.
fn sink(conn: &mut Connection, n: usize) {
    let mut buf = vec![0u8; MIB];
    for _ in 0..n {
        conn.recv_bytes_into(&mut buf).unwrap();
    }
    conn.send_bytes(b"done").unwrap();
}

fn ipc_role(role: &str, n: usize, name: &str) {
    let boot = IpcSender::<IpcBootstrap>::connect(name.to_string()).unwrap();
    let (to_child, rx) = ipc::bytes_channel().unwrap();
    let (typed_to_child, typed_rx) = ipc::channel::<Small>().unwrap();
    let (reply, reply_rx) = ipc::channel().unwrap();
    boot.send(IpcBootstrap {
        to_child,
        typed_to_child,
        reply,
    })
    .unwrap();
    let (tx, typed_tx): (IpcBytesSender, IpcSender<Small>) = reply_rx.recv().unwrap();
    match role {
        "ipc-echo" => {
            for _ in 0..n {
                let m = rx.recv().unwrap();
                tx.send(&m).unwrap();
            }
        }
        "ipc-sink" => {
            for _ in 0..n {
                rx.recv().unwrap();
            }
            tx.send(b"done").unwrap();
        }
        _ => {
            for _ in 0..n {
                let v = typed_rx.recv().unwrap();
                typed_tx.send(v).unwrap();
            }
        }
    }
}
