//! The command line, and the two roles of the program.

use std::time::Duration;

use mpconn::{Address, Family};

use crate::listener;
use crate::measure::measure;
use crate::probe;
use crate::report::print_table;

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

const LISTENER_ROLE: &str = "--listener-process";

#[derive(Debug, Clone)]
pub struct Config {
    pub family: Family,
    pub attackers: usize,
    pub clients: usize,
    pub seconds: f64,
    pub client_timeout: Duration,
    pub flags: listener::Flags,
}

fn usage() -> &'static str {
    "usage: flood [--family tcp|unix] [--attackers N] [--clients N] [--seconds N] \
     [--client-timeout SECONDS] [--max-pending N] [--backlog N] [--handshake-timeout-ms N] \
     [--async] [--all]"
}

/// The configuration, and whether to run the four standard ones.
fn parse_args(mut args: impl Iterator<Item = String>) -> AnyResult<(Config, bool)> {
    let mut config = Config {
        family: Family::Tcp,
        attackers: 1000,
        clients: 200,
        seconds: 10.0,
        client_timeout: Duration::from_secs(20),
        flags: listener::Flags::default(),
    };
    let mut all = false;
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or(format!("{arg} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--family" => {
                config.family = match value()?.as_str() {
                    "tcp" => Family::Tcp,
                    "unix" => Family::Unix,
                    other => return Err(format!("unknown family {other:?}").into()),
                }
            }
            "--attackers" => config.attackers = value()?.parse()?,
            "--clients" => config.clients = value()?.parse::<usize>()?.max(1),
            "--seconds" => config.seconds = value()?.parse::<f64>()?.max(0.0),
            "--client-timeout" => {
                config.client_timeout = Duration::try_from_secs_f64(value()?.parse()?)?
            }
            "--max-pending" => config.flags.max_pending = Some(value()?.parse()?),
            "--backlog" => config.flags.backlog = Some(value()?.parse()?),
            "--handshake-timeout-ms" => {
                config.flags.handshake_timeout = Some(Duration::from_millis(value()?.parse()?))
            }
            "--async" => config.flags.async_listener = true,
            "--all" => all = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
        }
    }
    Ok((config, all))
}

/// Runs the program: measuring, or as the listener process when the first
/// argument says so.
pub fn run(args: impl Iterator<Item = String>) -> AnyResult<()> {
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some(LISTENER_ROLE) {
        args.next();
        listener_process(args)
    } else {
        parse_args(args).and_then(|(config, all)| coordinate(config, all))
    }
}

/// The command line of the listener process, the flags included.
pub fn listener_command(address: &Address, flags: &listener::Flags) -> Vec<String> {
    let mut args = vec![LISTENER_ROLE.to_string(), address.to_string()];
    args.extend(flags.to_args());
    args
}

/// The listener process: `--listener-process ADDRESS [listener flags]`.
fn listener_process(mut args: impl Iterator<Item = String>) -> AnyResult<()> {
    let address: Address = args.next().ok_or("no address")?.parse()?;
    let (config, _) = parse_args(args)?;
    listener::run(&address, &config.flags)
}

/// Measures one configuration, or the four standard ones, and prints the
/// figures.
fn coordinate(config: Config, all: bool) -> AnyResult<()> {
    let configs: Vec<Config> = if all {
        [(Family::Tcp, 300), (Family::Tcp, 1000)]
            .into_iter()
            .chain([(Family::Unix, 300), (Family::Unix, 1000)])
            .map(|(family, attackers)| Config {
                family,
                attackers,
                ..config.clone()
            })
            .collect()
    } else {
        vec![config]
    };
    let wanted = configs.iter().map(|c| c.attackers + c.clients).max();
    let wanted = wanted.unwrap_or(0) as u64 + 256;
    let limit = probe::raise_descriptor_limit(wanted)?;
    if limit < wanted {
        eprintln!("flood: only {limit} descriptors (hard limit); {wanted} wanted");
    }
    let mut reports = Vec::new();
    for config in &configs {
        let report = measure(config)?;
        print!("{report}");
        reports.push(report);
    }
    println!();
    print_table(&reports);
    Ok(())
}
