//! What a measurement found, as a paragraph and as a row of a table.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mpconn::Family;

use crate::cli::Config;
use crate::measure::Outcome;

/// The figures of one configuration.
pub struct Report {
    pub config: Config,
    pub outcomes: Vec<Outcome>,
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub peak_descriptors: usize,
    /// Connections the listener dropped during the clients' window, per second.
    pub reconnects_per_s: f64,
    pub attackers_open_at_end: usize,
    pub refused_connects: u64,
    pub listener_stats: String,
    pub window: Duration,
}

impl Report {
    fn successes(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// The nearest-rank percentile over every client; failures rank last.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut times: Vec<Duration> = self.outcomes.iter().flatten().copied().collect();
        times.sort();
        let rank = ((p / 100.0) * self.outcomes.len() as f64).ceil().max(1.0) as usize;
        times.get(rank - 1).copied()
    }

    fn max(&self) -> Option<Duration> {
        self.outcomes.iter().flatten().max().copied()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "\n{} listener ({}), {} silent attackers, {} valid clients over {} s \
             (client deadline {:?})",
            family_name(c.family),
            c.flags.describe(),
            c.attackers,
            c.clients,
            c.seconds,
            c.client_timeout,
        )?;
        let ok = self.successes();
        writeln!(
            f,
            "  authenticated  {ok}/{} ({:.1} %)",
            self.outcomes.len(),
            percent(ok, self.outcomes.len())
        )?;
        let mut errors = BTreeMap::<&str, usize>::new();
        for e in self.outcomes.iter().filter_map(|o| o.as_ref().err()) {
            *errors.entry(e.as_str()).or_default() += 1;
        }
        for (error, n) in errors {
            writeln!(f, "  failed         {n} x {error}")?;
        }
        writeln!(
            f,
            "  latency        p50 {}  p90 {}  p99 {}  max {} (max of the successes)",
            show(self.percentile(50.0)),
            show(self.percentile(90.0)),
            show(self.percentile(99.0)),
            show(self.max())
        )?;
        writeln!(
            f,
            "  listener       RSS {} idle, {} peak (VmHWM); peak {} descriptors; {}",
            mib(self.idle_rss_kib),
            mib(self.peak_rss_kib),
            self.peak_descriptors,
            self.listener_stats
        )?;
        writeln!(
            f,
            "  attackers      {:.1} reconnects/s over {:.1} s; {} open at the end; \
             {} connects refused at once",
            self.reconnects_per_s,
            self.window.as_secs_f64(),
            self.attackers_open_at_end,
            self.refused_connects
        )
    }
}

pub fn print_table(reports: &[Report]) {
    if let Some(c) = reports.first().map(|r| &r.config) {
        println!(
            "Listener with {}; {} valid clients over {} s, client deadline {:?}; \
             percentiles over all clients, failures last.\n",
            c.flags.describe(),
            c.clients,
            c.seconds,
            c.client_timeout
        );
    }
    println!(
        "| family | attackers | clients ok | success | p50 | p90 | p99 | max | \
         listener peak RSS | listener peak fds | attacker reconnects/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {} | {} | {}/{} | {:.1} % | {} | {} | {} | {} | {} | {} | {:.0} |",
            family_name(r.config.family),
            r.config.attackers,
            r.successes(),
            r.outcomes.len(),
            percent(r.successes(), r.outcomes.len()),
            show(r.percentile(50.0)),
            show(r.percentile(90.0)),
            show(r.percentile(99.0)),
            show(r.max()),
            mib(r.peak_rss_kib),
            r.peak_descriptors,
            r.reconnects_per_s
        );
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Tcp => "tcp",
        _ => "unix",
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn show(d: Option<Duration>) -> String {
    match d {
        None => "fail".into(),
        Some(d) if d < Duration::from_millis(10) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
        Some(d) if d < Duration::from_secs(1) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
