//! The encrypted-mode rows: the same connection with and without
//! `encrypted(true)` on both ends (`ListenerOptions` and `ClientOptions`,
//! blocking and `mpconn::tokio`), over TCP loopback, the mode's target
//! (crossing hosts), and over a Unix socket.
//!
//! Each system is a mode and a transport (`encrypted-tcp`, `plain-unix`,
//! ...). The peer is a listener child (`listener_child`) that accepts one
//! connection and echoes or sinks its messages; this process connects. The
//! ping-pongs run both processes on one CPU, as the async rows do (see
//! `on_one_cpu`); the 1 MiB stream runs them unpinned, each end on its own
//! CPU as across hosts, so that sealing and opening overlap; the
//! handshakes run client and listener in this process, as the main table's
//! do.

use mpconn::{Address, ClientOptions, Family, ListenerOptions};

use super::aio::{TokioConnection, echo_tokio, on_one_cpu, pingpong_tokio, runtime};
use super::{
    Better, KEY, Samples, Sizes, announce, check, echo, format_value, label, listener_child,
    median, met_text, mpconn_sequential_handshakes, pingpong_us, sink, spread, throughput_gbps,
};

/// The systems these rows take turns between, within each round.
pub(super) const SYSTEMS: [&str; 4] =
    ["plain-tcp", "encrypted-tcp", "plain-unix", "encrypted-unix"];

/// A system's transport and whether it is encrypted.
fn parse(system: &str) -> (&str, bool) {
    match system.split_once('-') {
        Some(("plain", transport)) => (transport, false),
        Some(("encrypted", transport)) => (transport, true),
        _ => {
            panic!("unknown system {system}: plain-tcp, encrypted-tcp, plain-unix, encrypted-unix")
        }
    }
}

/// One system's figures for one round.
pub(super) fn figures(system: &'static str, s: Sizes) -> Vec<(&'static str, f64)> {
    let mut out = vec![
        (
            "pingpong_64B_rtt_us",
            workload("pingpong", s.pingpong, system),
        ),
        (
            "throughput_1MiB_GBps",
            workload("throughput", s.big, system),
        ),
        (
            "tokio_pingpong_64B_rtt_us",
            workload("tokio-pingpong", s.pingpong, system),
        ),
    ];
    if parse(system).0 == "tcp" {
        out.push((
            "tcp_auth_handshakes_per_s",
            workload("handshakes", s.handshakes, system),
        ));
    }
    out
}

/// `--profile-encrypted WORKLOAD N [SYSTEM]`: one workload alone, for perf.
pub(super) fn profile(workload_name: &str, n: usize, system: &str) {
    let unit = match workload_name {
        "throughput" => "GB/s",
        "handshakes" => "conn/s",
        _ => "us",
    };
    println!("{:.3} {unit}", workload(workload_name, n, system));
}

/// One workload, `n` times, against a fresh peer of `system`.
fn workload(name: &str, n: usize, system: &str) -> f64 {
    let (transport, encrypted) = parse(system);
    let peer = |role| listener_child(role, &[&n.to_string(), system]);
    let connect = |address: &str| {
        ClientOptions::new()
            .encrypted(encrypted)
            .connect(address, KEY)
            .unwrap()
    };
    let (figure, mut peer) = match name {
        "pingpong" => on_one_cpu(|| {
            let (address, peer) = peer("encrypted-echo");
            (pingpong_us(&mut connect(&address), n), peer)
        }),
        "throughput" => {
            let (address, peer) = peer("encrypted-sink");
            (throughput_gbps(&mut connect(&address), n), peer)
        }
        "tokio-pingpong" => on_one_cpu(|| {
            let (address, peer) = peer("encrypted-tokio-echo");
            let options = ClientOptions::new().encrypted(encrypted);
            let rtt = runtime().block_on(async {
                let mut conn = mpconn::tokio::Client::connect_with(&options, address, KEY)
                    .await
                    .unwrap();
                pingpong_tokio(&mut conn, n).await
            });
            (rtt, peer)
        }),
        "handshakes" => {
            assert_eq!(transport, "tcp", "the handshake rows run over TCP");
            return mpconn_sequential_handshakes(n, encrypted);
        }
        other => {
            panic!("unknown workload {other}: pingpong, throughput, tokio-pingpong, handshakes")
        }
    };
    peer.wait().unwrap();
    figure
}

/// Runs a child role of these rows (`args`: the system); `false` when
/// `role` is not one.
pub(super) fn child(role: &str, n: usize, args: &[String]) -> bool {
    if !matches!(
        role,
        "encrypted-echo" | "encrypted-sink" | "encrypted-tokio-echo"
    ) {
        return false;
    }
    let (transport, encrypted) = parse(&args[0]);
    let address = match transport {
        "tcp" => "127.0.0.1:0".parse().unwrap(),
        _ => Address::arbitrary(Family::Unix).unwrap(),
    };
    let options = ListenerOptions::new().encrypted(encrypted);
    if role == "encrypted-tokio-echo" {
        runtime().block_on(async {
            let listener = mpconn::tokio::Listener::bind_with(options, address, KEY).unwrap();
            announce(listener.address());
            let mut conn: TokioConnection = listener.accept().await.unwrap();
            echo_tokio(&mut conn, n).await;
        });
    } else {
        let listener = options.bind(address, KEY).unwrap();
        announce(listener.address());
        let mut conn = listener.accept().unwrap();
        if role == "encrypted-echo" {
            echo(&mut conn, n);
        } else {
            sink(&mut conn, n);
        }
    }
    true
}

// -------------------------------------------------------------- the table

/// One row: a figure over one transport, encrypted against plain.
struct Row {
    name: &'static str,
    unit: &'static str,
    better: Better,
    /// The plain system and the encrypted one.
    systems: [&'static str; 2],
    /// The bound on encrypted / plain.
    ratio: Option<f64>,
    /// A floor on the encrypted figure itself, for a `Higher` row.
    at_least: Option<f64>,
}

const TCP: [&str; 2] = ["plain-tcp", "encrypted-tcp"];
const UNIX: [&str; 2] = ["plain-unix", "encrypted-unix"];

const fn row(
    name: &'static str,
    unit: &'static str,
    better: Better,
    systems: [&'static str; 2],
    ratio: Option<f64>,
    at_least: Option<f64>,
) -> Row {
    Row {
        name,
        unit,
        better,
        systems,
        ratio,
        at_least,
    }
}

const ROWS: &[Row] = &[
    row(
        "pingpong_64B_rtt_us",
        "us",
        Better::Lower,
        TCP,
        Some(1.2),
        None,
    ),
    row(
        "pingpong_64B_rtt_us",
        "us",
        Better::Lower,
        UNIX,
        Some(1.2),
        None,
    ),
    row(
        "throughput_1MiB_GBps",
        "GB/s",
        Better::Higher,
        TCP,
        Some(0.5),
        Some(1.0),
    ),
    row(
        "throughput_1MiB_GBps",
        "GB/s",
        Better::Higher,
        UNIX,
        Some(0.5),
        Some(1.0),
    ),
    row(
        "tokio_pingpong_64B_rtt_us",
        "us",
        Better::Lower,
        TCP,
        Some(1.2),
        None,
    ),
    row(
        "tokio_pingpong_64B_rtt_us",
        "us",
        Better::Lower,
        UNIX,
        Some(1.2),
        None,
    ),
    row(
        "tcp_auth_handshakes_per_s",
        "conn/s",
        Better::Higher,
        TCP,
        None,
        None,
    ),
];

pub(super) fn print_table(samples: &Samples, rounds: usize, quick: bool) {
    println!();
    println!(
        "Encrypted mode (AES-256-GCM records) against the plain connection: medians of {rounds} \
         interleaved round(s){}",
        if quick { ", QUICK mode" } else { "" }
    );
    println!();
    println!(
        "| {:<42} | {:<5} | {:>9} | {:>9} | {:>7} | {:<21} | {:<4} |",
        "figure", "over", "plain", "encrypted", "ratio", "target", "met"
    );
    println!(
        "|{:-<44}|{:-<7}|{:->11}|{:->11}|{:->9}|{:-<23}|{:-<6}|",
        "", "", "", "", "", "", ""
    );
    for row in ROWS {
        let value = |system: &str| samples.get(&(row.name, system)).and_then(|v| median(v));
        let show = |v: Option<f64>| v.map_or("-".to_string(), format_value);
        let (plain, sealed) = (value(row.systems[0]), value(row.systems[1]));
        let ratio = match (sealed, plain) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (mut bound, mut met) = row.ratio.map_or(("(info)".to_string(), None), |t| {
            check(t, row.better, ratio)
        });
        if let Some(floor) = row.at_least {
            bound = format!("{bound}, >= {floor} {}", row.unit);
            met = met.zip(sealed).map(|(m, v)| m && v >= floor);
        }
        println!(
            "| {:<42} | {:<5} | {:>9} | {:>9} | {:>7} | {:<21} | {:<4} |",
            label(row.name, row.unit, row.better),
            parse(row.systems[0]).0,
            show(plain),
            show(sealed),
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            bound,
            met_text(met),
        );
    }
    println!();
    println!(
        "Ratios are encrypted / plain. Ping-pongs: both processes on one CPU; the 1 MiB stream"
    );
    println!(
        "unpinned; handshakes: client and listener threads in one process. tokio: current_thread."
    );
    println!();
    println!("Noise: spread (max/min - 1) of each system over the rounds");
    for row in ROWS {
        let spreads: Vec<String> = row
            .systems
            .iter()
            .filter_map(|system| spread(samples, row.name, system))
            .collect();
        if !spreads.is_empty() {
            println!("  {:<42} {}", row.name, spreads.join(", "));
        }
    }
}
