//! The async rows (issue 14): `mpconn::tokio` against raw tokio framing,
//! the blocking `WaitSet` server and the blocking idle connection.
//!
//! Every async process and thread here runs tokio's current-thread
//! scheduler, one runtime each. The two-process workloads (ping-pong,
//! stream) have the same system at both ends, as the table above does, and
//! run both processes on one CPU (see `on_one_cpu`; one unpinned ping-pong
//! row shows why); the 1,000-connection workload runs in this process over
//! socket pairs, a server thread and a client thread, so that it measures
//! the transport and its event loop rather than handshakes.

use std::io::IoSlice;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use mpconn::{Error, WaitSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{
    Better, KEY, MIB, Samples, Sizes, announce, check, format_value, heap_bytes, idle_memory,
    inherited, label, median, met_text, pipe_child, rss_bytes, spread, this_exe,
};

pub(super) type TokioConnection = mpconn::tokio::Connection;

/// The runtime of every async row, in each process and thread.
const RUNTIME: &str =
    "tokio current_thread, one per process (per thread for the 1,000 connections)";

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The systems these rows take turns between, within each round.
pub(super) const SYSTEMS: [&str; 3] = ["mpconn-tokio", "tokio-raw", "mpconn-blocking"];

/// One row: mpconn's tokio figure against a baseline system, with the
/// issue's target for the ratio, if it sets one.
struct Row {
    name: &'static str,
    unit: &'static str,
    better: Better,
    base: &'static str,
    base_label: &'static str,
    /// The bound on mpconn-tokio / baseline: at most this for a `Lower`
    /// row, at least this for a `Higher` one.
    target: Option<f64>,
}

const ROWS: &[Row] = &[
    Row {
        name: "tokio_pingpong_64B_rtt_us",
        unit: "us",
        better: Better::Lower,
        base: "tokio-raw",
        base_label: "raw tokio UnixStream",
        target: Some(1.10),
    },
    Row {
        name: "tokio_pingpong_64B_unpinned_rtt_us",
        unit: "us",
        better: Better::Lower,
        base: "tokio-raw",
        base_label: "raw tokio UnixStream",
        target: None,
    },
    Row {
        name: "tokio_stream_64B_msgs_per_s",
        unit: "msg/s",
        better: Better::Higher,
        base: "tokio-raw",
        base_label: "raw tokio UnixStream",
        target: Some(0.90),
    },
    Row {
        name: "conns_1000_pingpong_msgs_per_s",
        unit: "msg/s",
        better: Better::Higher,
        base: "mpconn-blocking",
        base_label: "blocking WaitSet server",
        target: Some(0.90),
    },
    Row {
        name: "conns_1000_pingpong_msgs_per_s",
        unit: "msg/s",
        better: Better::Higher,
        base: "tokio-raw",
        base_label: "raw tokio UnixStream",
        target: None,
    },
    Row {
        name: "idle_auth_conn_shrunk_bytes",
        unit: "B",
        better: Better::Lower,
        base: "mpconn-blocking",
        base_label: "blocking mpconn",
        target: Some(1.00),
    },
    Row {
        name: "idle_auth_conn_shrunk_bytes",
        unit: "B",
        better: Better::Lower,
        base: "tokio-raw",
        base_label: "tokio registration",
        target: None,
    },
];

/// One system's figures for one round.
pub(super) fn figures(system: &str, s: Sizes) -> Vec<(&'static str, f64)> {
    match system {
        "mpconn-tokio" => vec![
            (
                "tokio_pingpong_64B_rtt_us",
                on_one_cpu(|| pingpong_mpconn(s.pingpong)),
            ),
            (
                "tokio_pingpong_64B_unpinned_rtt_us",
                pingpong_mpconn(s.pingpong),
            ),
            (
                "tokio_stream_64B_msgs_per_s",
                on_one_cpu(|| stream_mpconn(s.stream)),
            ),
            (
                "conns_1000_pingpong_msgs_per_s",
                conns_tokio(CONNS, s.conn_rounds),
            ),
            (
                "idle_auth_conn_shrunk_bytes",
                idle_memory("tokio-idle-listener", s.idle, &[]),
            ),
        ],
        "tokio-raw" => vec![
            (
                "tokio_pingpong_64B_rtt_us",
                on_one_cpu(|| pingpong_raw(s.pingpong)),
            ),
            (
                "tokio_pingpong_64B_unpinned_rtt_us",
                pingpong_raw(s.pingpong),
            ),
            (
                "tokio_stream_64B_msgs_per_s",
                on_one_cpu(|| stream_raw(s.stream)),
            ),
            (
                "conns_1000_pingpong_msgs_per_s",
                conns_raw(CONNS, s.conn_rounds),
            ),
            ("idle_auth_conn_shrunk_bytes", idle_registration(s.idle)),
        ],
        _ => vec![
            (
                "conns_1000_pingpong_msgs_per_s",
                conns_waitset(CONNS, s.conn_rounds),
            ),
            (
                "idle_auth_conn_shrunk_bytes",
                idle_memory("idle-listener", s.idle, &["shrink"]),
            ),
        ],
    }
}

/// `--profile-tokio WORKLOAD N`: one workload alone, for perf and callgrind.
pub(super) fn profile(workload: &str, n: usize) {
    match workload {
        "pingpong" => println!("{:.2} us", on_one_cpu(|| pingpong_mpconn(n))),
        "raw-pingpong" => println!("{:.2} us", on_one_cpu(|| pingpong_raw(n))),
        "unpinned-pingpong" => println!("{:.2} us", pingpong_mpconn(n)),
        "unpinned-raw-pingpong" => println!("{:.2} us", pingpong_raw(n)),
        "stream" => println!("{:.0} msgs/s", on_one_cpu(|| stream_mpconn(n))),
        "raw-stream" => println!("{:.0} msgs/s", on_one_cpu(|| stream_raw(n))),
        "conns" => println!("{:.0} msgs/s", conns_tokio(CONNS, n)),
        "conns-waitset" => println!("{:.0} msgs/s", conns_waitset(CONNS, n)),
        "raw-conns" => println!("{:.0} msgs/s", conns_raw(CONNS, n)),
        "idle" => println!("{:.0} B", idle_memory("tokio-idle-listener", n, &[])),
        "idle-blocking" => println!("{:.0} B", idle_memory("idle-listener", n, &["shrink"])),
        "idle-registration" => println!("{:.0} B", idle_registration(n)),
        other => panic!(
            "unknown workload {other}: pingpong, raw-pingpong, unpinned-pingpong, \
             unpinned-raw-pingpong, stream, raw-stream, conns, conns-waitset, raw-conns, idle, \
             idle-blocking, idle-registration"
        ),
    }
}

// ------------------------------------------------------- two processes

/// Runs `f` with this thread, and so the child processes it starts, on the
/// CPU it is on now. The two-process rows run both their processes on one
/// CPU: in a virtual machine, waking a process that waits on another, idle
/// CPU can cost tens of microseconds (on a quiet machine the main table's
/// ping-pong shows it too, for every system), which would drown what these
/// rows compare. The unpinned ping-pong shows that cost.
pub(super) fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is a plain bit set, valid when zeroed; the calls
    // read and write exactly `size` bytes of the sets passed.
    let saved = unsafe {
        let mut saved: libc::cpu_set_t = std::mem::zeroed();
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu();
        if cpu < 0 || libc::sched_getaffinity(0, size, &mut saved) != 0 {
            return f();
        }
        libc::CPU_SET(cpu as usize, &mut one);
        libc::sched_setaffinity(0, size, &one);
        saved
    };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::sched_setaffinity(0, size, &saved) };
    out
}

const MSG: [u8; 64] = [b'x'; 64];

fn pingpong_mpconn(n: usize) -> f64 {
    let (conn, mut child) = pipe_child("tokio-echo", n);
    let per = runtime().block_on(async {
        pingpong_tokio(&mut TokioConnection::from_blocking(conn).unwrap(), n).await
    });
    child.wait().unwrap();
    per
}

/// Mean round trip, in microseconds, of `n` 64-byte ping-pongs with a peer
/// that echoes them.
pub(super) async fn pingpong_tokio(conn: &mut TokioConnection, n: usize) -> f64 {
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    for _ in 0..n {
        conn.send_bytes(&MSG).await.unwrap();
        conn.recv_bytes_into(&mut buf).await.unwrap();
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

/// Echoes `n` messages back.
pub(super) async fn echo_tokio(conn: &mut TokioConnection, n: usize) {
    let mut buf = vec![0u8; MIB];
    for _ in 0..n {
        let len = conn.recv_bytes_into(&mut buf).await.unwrap();
        conn.send_bytes(&buf[..len]).await.unwrap();
    }
}

fn stream_mpconn(n: usize) -> f64 {
    let (conn, mut child) = pipe_child("tokio-sink", n);
    let rate = runtime().block_on(async {
        let mut conn = TokioConnection::from_blocking(conn).unwrap();
        let mut buf = vec![0u8; MIB];
        let t = Instant::now();
        for _ in 0..n {
            conn.send_bytes(&MSG).await.unwrap();
        }
        conn.recv_bytes_into(&mut buf).await.unwrap();
        n as f64 / t.elapsed().as_secs_f64()
    });
    child.wait().unwrap();
    rate
}

/// Starts a child in `role` on the other end of a plain socketpair.
fn raw_child(role: &str, n: usize) -> (StdUnixStream, Child) {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let child = this_exe()
        .args(["--role", role, &n.to_string()])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    (ours, child)
}

fn pingpong_raw(n: usize) -> f64 {
    let (stream, mut child) = raw_child("tokio-raw-echo", n);
    let per = runtime().block_on(async {
        let mut conn = RawFramed::new(stream);
        let mut buf = vec![0u8; MIB];
        let t = Instant::now();
        for _ in 0..n {
            conn.send(&MSG).await;
            conn.recv_into(&mut buf).await;
        }
        t.elapsed().as_secs_f64() / n as f64 * 1e6
    });
    child.wait().unwrap();
    per
}

fn stream_raw(n: usize) -> f64 {
    let (stream, mut child) = raw_child("tokio-raw-sink", n);
    let rate = runtime().block_on(async {
        let mut conn = RawFramed::new(stream);
        let mut buf = vec![0u8; MIB];
        let t = Instant::now();
        for _ in 0..n {
            conn.send(&MSG).await;
        }
        conn.recv_into(&mut buf).await;
        n as f64 / t.elapsed().as_secs_f64()
    });
    child.wait().unwrap();
    rate
}

/// The floor: CPython's framing written by hand over a tokio `UnixStream`,
/// as `raw_limit.c` does over a blocking socket: a 4-byte big-endian length
/// and the payload in one vectored write per message; reads through a
/// 64 KiB buffer, so one read can carry many frames.
struct RawFramed {
    stream: UnixStream,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl RawFramed {
    /// Must run inside the runtime.
    fn new(stream: StdUnixStream) -> Self {
        stream.set_nonblocking(true).unwrap();
        RawFramed {
            stream: UnixStream::from_std(stream).unwrap(),
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }

    async fn send(&mut self, payload: &[u8]) {
        let header = (payload.len() as u32).to_be_bytes();
        let mut slices = [IoSlice::new(&header), IoSlice::new(payload)];
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            let n = self.stream.write_vectored(bufs).await.unwrap();
            assert!(n > 0, "write returned zero");
            IoSlice::advance_slices(&mut bufs, n);
        }
    }

    /// Reads more bytes behind those buffered; `false` at the end of the stream.
    async fn fill(&mut self) -> bool {
        if self.pos == self.len {
            (self.pos, self.len) = (0, 0);
        } else if self.len == self.buf.len() {
            self.buf.copy_within(self.pos..self.len, 0);
            (self.pos, self.len) = (0, self.len - self.pos);
        }
        let n = self.stream.read(&mut self.buf[self.len..]).await.unwrap();
        self.len += n;
        n > 0
    }

    /// Receives one message into `out` (64 KiB at most) and returns its length.
    async fn recv_into(&mut self, out: &mut [u8]) -> usize {
        self.try_recv_into(out).await.expect("the peer closed")
    }

    /// As `recv_into`; `None` when the peer closed between messages.
    async fn try_recv_into(&mut self, out: &mut [u8]) -> Option<usize> {
        while self.len - self.pos < 4 {
            if !self.fill().await {
                assert_eq!(self.len, self.pos, "the peer closed inside a header");
                return None;
            }
        }
        let header: [u8; 4] = self.buf[self.pos..self.pos + 4].try_into().unwrap();
        let len = u32::from_be_bytes(header) as usize;
        self.pos += 4;
        let mut got = 0;
        while got < len {
            if self.pos == self.len {
                assert!(self.fill().await, "the peer closed inside a message");
            }
            let take = (len - got).min(self.len - self.pos);
            out[got..got + take].copy_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            got += take;
        }
        Some(len)
    }
}

// ---------------------------------------------- 1,000 connections at once

const CONNS: usize = 1000;

/// Aggregate messages per second (both directions) of `conns` connections,
/// each doing `rounds` 64-byte ping-pongs: a current-thread runtime in one
/// thread serves them, one echo task per connection, while another
/// runtime in this thread runs one client task per connection.
fn conns_tokio(conns: usize, rounds: usize) -> f64 {
    let (servers, clients): (Vec<_>, Vec<_>) = (0..conns).map(|_| mpconn::pipe().unwrap()).unzip();
    let go = Arc::new(Barrier::new(2));
    let server = {
        let go = go.clone();
        thread::spawn(move || {
            let rt = runtime();
            let tasks: Vec<_> = servers
                .into_iter()
                .map(|conn| {
                    let _in = rt.enter();
                    let mut conn = TokioConnection::from_blocking(conn).unwrap();
                    rt.spawn(async move {
                        let mut buf = [0u8; 256];
                        loop {
                            match conn.recv_bytes_into(&mut buf).await {
                                Ok(n) => conn.send_bytes(&buf[..n]).await.unwrap(),
                                Err(Error::Eof) => break,
                                Err(e) => panic!("echo: {e}"),
                            }
                        }
                    })
                })
                .collect();
            go.wait();
            rt.block_on(async {
                for task in tasks {
                    task.await.unwrap();
                }
            });
        })
    };
    let rt = runtime();
    let clients: Vec<_> = {
        let _in = rt.enter();
        clients
            .into_iter()
            .map(|c| TokioConnection::from_blocking(c).unwrap())
            .collect()
    };
    go.wait();
    let t = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    for _ in 0..rounds {
                        conn.send_bytes(&MSG).await.unwrap();
                        conn.recv_bytes_into(&mut buf).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let rate = (2 * conns * rounds) as f64 / t.elapsed().as_secs_f64();
    server.join().unwrap();
    rate
}

/// The same over the raw tokio floor: `RawFramed` on plain socketpairs.
fn conns_raw(conns: usize, rounds: usize) -> f64 {
    let (servers, clients): (Vec<_>, Vec<_>) =
        (0..conns).map(|_| StdUnixStream::pair().unwrap()).unzip();
    let go = Arc::new(Barrier::new(2));
    let server = {
        let go = go.clone();
        thread::spawn(move || {
            let rt = runtime();
            let tasks: Vec<_> = servers
                .into_iter()
                .map(|stream| {
                    let _in = rt.enter();
                    let mut conn = RawFramed::new(stream);
                    rt.spawn(async move {
                        let mut buf = [0u8; 256];
                        while let Some(n) = conn.try_recv_into(&mut buf).await {
                            conn.send(&buf[..n]).await;
                        }
                    })
                })
                .collect();
            go.wait();
            rt.block_on(async {
                for task in tasks {
                    task.await.unwrap();
                }
            });
        })
    };
    let rt = runtime();
    let clients: Vec<_> = {
        let _in = rt.enter();
        clients.into_iter().map(RawFramed::new).collect()
    };
    go.wait();
    let t = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    for _ in 0..rounds {
                        conn.send(&MSG).await;
                        conn.recv_into(&mut buf).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let rate = (2 * conns * rounds) as f64 / t.elapsed().as_secs_f64();
    server.join().unwrap();
    rate
}

/// The same with blocking connections: one thread serves them all from a
/// `WaitSet`, and this thread drives the clients from another.
fn conns_waitset(conns: usize, rounds: usize) -> f64 {
    let (servers, clients): (Vec<_>, Vec<_>) = (0..conns).map(|_| mpconn::pipe().unwrap()).unzip();
    let go = Arc::new(Barrier::new(2));
    let server = {
        let go = go.clone();
        thread::spawn(move || {
            let mut set = WaitSet::new().unwrap();
            for conn in servers {
                set.insert(conn).unwrap();
            }
            go.wait();
            let mut buf = [0u8; 256];
            while !set.is_empty() {
                for key in set.wait(None).unwrap() {
                    let conn = set.get_mut(key).unwrap();
                    match conn.recv_bytes_into(&mut buf) {
                        Ok(n) => conn.send_bytes(&buf[..n]).unwrap(),
                        Err(Error::Eof) => drop(set.remove(key)),
                        Err(e) => panic!("echo: {e}"),
                    }
                }
            }
        })
    };
    let mut set = WaitSet::new().unwrap();
    let mut left = vec![rounds; conns];
    for conn in clients {
        let key = set.insert(conn).unwrap();
        assert!(key < conns);
    }
    go.wait();
    let t = Instant::now();
    let keys: Vec<usize> = set.keys().collect();
    for key in keys {
        set.get_mut(key).unwrap().send_bytes(&MSG).unwrap();
    }
    let mut buf = [0u8; 256];
    while !set.is_empty() {
        for key in set.wait(None).unwrap() {
            let conn = set.get_mut(key).unwrap();
            conn.recv_bytes_into(&mut buf).unwrap();
            left[key] -= 1;
            if left[key] == 0 {
                drop(set.remove(key));
            } else {
                conn.send_bytes(&MSG).unwrap();
            }
        }
    }
    let rate = (2 * conns * rounds) as f64 / t.elapsed().as_secs_f64();
    server.join().unwrap();
    rate
}

// ------------------------------------------------------------ child roles

/// Runs a child role of these rows; `false` when `role` is not one.
pub(super) fn child(role: &str, n: usize) -> bool {
    let mut buf = vec![0u8; MIB];
    let rt = runtime();
    match role {
        "tokio-echo" => rt.block_on(async {
            echo_tokio(&mut TokioConnection::from_blocking(inherited()).unwrap(), n).await
        }),
        "tokio-sink" => rt.block_on(async {
            let mut conn = TokioConnection::from_blocking(inherited()).unwrap();
            for _ in 0..n {
                conn.recv_bytes_into(&mut buf).await.unwrap();
            }
            conn.send_bytes(b"done").await.unwrap();
        }),
        "tokio-raw-echo" => rt.block_on(async {
            let mut conn = RawFramed::new(inherited_stream());
            for _ in 0..n {
                let len = conn.recv_into(&mut buf).await;
                conn.send(&buf[..len]).await;
            }
        }),
        "tokio-raw-sink" => rt.block_on(async {
            let mut conn = RawFramed::new(inherited_stream());
            for _ in 0..n {
                conn.recv_into(&mut buf).await;
            }
            conn.send(b"done").await;
        }),
        "tokio-idle-listener" => rt.block_on(idle_listener(n)),
        "tokio-idle-registration" => rt.block_on(idle_registrations(n)),
        _ => return false,
    }
    true
}

fn inherited_stream() -> StdUnixStream {
    use std::os::fd::AsFd;
    StdUnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap())
}

/// The blocking `idle-listener shrink` role on tokio: `n` connections
/// accepted by an async listener, used as there, shrunk and kept idle.
async fn idle_listener(n: usize) {
    let mut buf = [0u8; 256];
    let listener = mpconn::tokio::Listener::bind("127.0.0.1:0", KEY).unwrap();
    let before = (heap_bytes(), rss_bytes());
    announce(listener.address());
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = listener.accept().await.unwrap();
        conn.recv_bytes_into(&mut buf).await.unwrap();
        conn.send_bytes(b"ok").await.unwrap();
        conn.recv_bytes_into(&mut buf).await.unwrap();
        conn.shrink_buffers();
        conns.push(conn);
    }
    let after = (heap_bytes(), rss_bytes());
    let per = |a: f64, b: f64| (a - b) / n as f64;
    eprintln!(
        "idle tokio connections: {:.0} B heap, {:.0} B resident each",
        per(after.0, before.0),
        per(after.1, before.1)
    );
    println!("{}", per(after.0, before.0).max(per(after.1, before.1)));
    drop(conns);
}

/// What tokio alone keeps for each idle stream: bytes per `UnixStream`
/// registered with the reactor, measured as the idle connections are (in
/// a child, the larger of heap and resident growth).
fn idle_registration(n: usize) -> f64 {
    let out = this_exe()
        .args(["--role", "tokio-idle-registration", &n.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN)
}

async fn idle_registrations(n: usize) {
    // Made first: the socket pairs themselves are the kernel's memory.
    let mut streams: Vec<StdUnixStream> = (0..n)
        .map(|_| {
            let (ours, theirs) = StdUnixStream::pair().unwrap();
            drop(theirs);
            ours.set_nonblocking(true).unwrap();
            ours
        })
        .collect();
    let before = (heap_bytes(), rss_bytes());
    let mut registered = Vec::with_capacity(n);
    for stream in streams.drain(..) {
        registered.push(UnixStream::from_std(stream).unwrap());
    }
    let after = (heap_bytes(), rss_bytes());
    let per = |a: f64, b: f64| (a - b) / n as f64;
    eprintln!(
        "tokio registrations: {:.0} B heap, {:.0} B resident each",
        per(after.0, before.0),
        per(after.1, before.1)
    );
    println!("{}", per(after.0, before.0).max(per(after.1, before.1)));
}

// -------------------------------------------------------------- the table

pub(super) fn print_table(samples: &Samples) {
    println!();
    println!("Async (issue 14): mpconn::tokio against its floors; runtime: {RUNTIME}");
    println!();
    println!(
        "| {:<38} | {:>12} | {:<23} | {:>12} | {:>7} | {:>8} | {:<4} |",
        "figure", "mpconn tokio", "baseline", "baseline val", "ratio", "target", "met"
    );
    println!(
        "|{:-<40}|{:->14}|{:-<25}|{:->14}|{:->9}|{:->10}|{:-<6}|",
        "", "", "", "", "", "", ""
    );
    for row in ROWS {
        let value = |system: &str| samples.get(&(row.name, system)).and_then(|v| median(v));
        let show = |v: Option<f64>| v.map_or("-".to_string(), format_value);
        let (ours, base) = (value("mpconn-tokio"), value(row.base));
        let ratio = match (ours, base) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (bound, met) = row.target.map_or(("(info)".to_string(), None), |t| {
            check(t, row.better, ratio)
        });
        println!(
            "| {:<38} | {:>12} | {:<23} | {:>12} | {:>7} | {:>8} | {:<4} |",
            label(row.name, row.unit, row.better),
            show(ours),
            row.base_label,
            show(base),
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            bound,
            met_text(met),
        );
    }
    println!();
    println!(
        "Ratios are mpconn tokio / baseline. Ping-pong and stream: both processes on one CPU, but the"
    );
    println!(
        "unpinned row. Messages/s of the 1,000 connections count both directions. Idle bytes are"
    );
    println!("after shrink_buffers() on both sides.");
    println!();
    println!("Noise: spread (max/min - 1) of each system over the rounds");
    let mut shown = std::collections::BTreeSet::new();
    for row in ROWS {
        let spreads: Vec<String> = ["mpconn-tokio", row.base]
            .iter()
            .filter(|system| shown.insert((row.name, **system)))
            .filter_map(|system| spread(samples, row.name, system))
            .collect();
        if !spreads.is_empty() {
            println!("  {:<38} {}", row.name, spreads.join(", "));
        }
    }
}
