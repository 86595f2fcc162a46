//! Two hosts in network namespaces joined by a veth pair, the faults that
//! nftables and tc put on the link between them, and the processes that
//! run on each host.
//!
//! Each `Net` has two namespaces of its own, named after this process and a
//! counter (`mpconn-netns-PID-N-server`, `...-client`), so tests run in
//! parallel; dropping it deletes both, which also removes the veth pair.
//! The first `Net` of a process deletes the namespaces that a test process
//! which no longer exists left behind (one that was killed or aborted by
//! its watchdog). What runs on the hosts is in `side.rs`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What every namespace this file creates is named with.
const PREFIX: &str = "mpconn-netns-";
/// Both ends of the veth pair: each lives in a namespace of its own, so
/// the same name serves both and no test's link clashes with another's.
pub const VETH: &str = "mpc0";
/// Where a server listens, on its host's address.
pub const PORT: u16 = 6000;
/// Where a relay listens, on the server host's address.
pub const RELAY_PORT: u16 = 7000;

/// One of the two hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Holds the listener (and the relay in front of it).
    Server,
    /// Holds the clients.
    Client,
}

impl Host {
    /// `server` or `client`.
    pub fn name(self) -> &'static str {
        match self {
            Host::Server => "server",
            Host::Client => "client",
        }
    }
}

/// The faults a link starts with. A partition is added later, while a
/// connection is up ([`Net::partition`]); asking for it here only makes
/// sure that nftables works.
#[derive(Clone, Copy, Debug, Default)]
pub struct Link {
    loss_percent: Option<u32>,
    tbf_rate: Option<&'static str>,
    nftables: bool,
}

impl Link {
    /// A link that loses nothing and is as fast as veth.
    pub fn clean() -> Self {
        Link::default()
    }

    /// Drops `percent` % of the packets each host sends, at random
    /// (nftables `numgen random`), in both directions. The rule sees what
    /// the stack hands the device, so a segmentation-offload burst of up to
    /// 64 KiB is one packet to it.
    pub fn loss(mut self, percent: u32) -> Self {
        self.loss_percent = Some(percent);
        self.nftables = true;
        self
    }

    /// Shapes what the client host sends to `rate` (a tc rate, `4mbit`)
    /// with a token bucket filter.
    pub fn slow(mut self, rate: &'static str) -> Self {
        self.tbf_rate = Some(rate);
        self
    }

    /// Makes ready for [`Net::partition`].
    pub fn partitionable(mut self) -> Self {
        self.nftables = true;
        self
    }
}

/// Two namespaces joined by a veth pair: the server host at
/// `10.77.N.1/24`, the client host at `10.77.N.2/24`.
#[derive(Debug)]
pub struct Net {
    id: usize,
    ip: PathBuf,
    nft: Option<PathBuf>,
    created: Vec<String>,
}

impl Net {
    /// Creates the two hosts and the link between them with `link`'s
    /// faults, or says why it cannot: `None` after printing the reason, or
    /// a panic when `CI=true` (CI runs as root and must not skip).
    pub fn new(link: Link) -> Option<Net> {
        let ip = match prerequisites() {
            Ok(ip) => ip,
            Err(reason) => return skip_or_fail(&reason),
        };
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(|| remove_leftovers(&ip));
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut net = Net {
            id: NEXT.fetch_add(1, Ordering::SeqCst),
            ip,
            nft: None,
            created: Vec::new(),
        };
        match net.build(link) {
            Ok(()) => Some(net),
            // Dropping `net` deletes what was made of it.
            Err(reason) => skip_or_fail(&reason),
        }
    }

    fn build(&mut self, link: Link) -> Result<(), String> {
        for host in [Host::Server, Host::Client] {
            let ns = self.namespace(host);
            run(&self.ip, &["netns", "add", &ns])?;
            self.created.push(ns);
        }
        let (server, client) = (self.namespace(Host::Server), self.namespace(Host::Client));
        let ip = self.ip.clone();
        run(
            &ip,
            &[
                "link", "add", VETH, "netns", &server, "type", "veth", "peer", "name", VETH,
                "netns", &client,
            ],
        )?;
        for host in [Host::Server, Host::Client] {
            let ns = self.namespace(host);
            let cidr = format!("{}/24", self.address(host));
            run(&ip, &["-n", &ns, "addr", "add", &cidr, "dev", VETH])?;
            run(&ip, &["-n", &ns, "link", "set", VETH, "up"])?;
            run(&ip, &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        if link.nftables {
            let nft = tool("nft").ok_or("no nft (nftables) on PATH, /usr/sbin or /sbin")?;
            self.nft = Some(nft);
            for host in [Host::Server, Host::Client] {
                self.nft(
                    host,
                    "table inet mpconn {\n\
                     chain out { type filter hook output priority 0; policy accept; }\n\
                     chain in { type filter hook input priority 0; policy accept; }\n\
                     }\n",
                )?;
                if let Some(percent) = link.loss_percent {
                    self.nft(
                        host,
                        &format!(
                            "add rule inet mpconn out oifname \"{VETH}\" \
                             numgen random mod 100 < {percent} counter drop\n"
                        ),
                    )?;
                }
            }
        }
        if let Some(rate) = link.tbf_rate {
            let tc = tool("tc").ok_or("no tc (iproute2) on PATH, /usr/sbin or /sbin")?;
            let ns = self.namespace(Host::Client);
            run(
                &ip,
                &[
                    "netns",
                    "exec",
                    &ns,
                    &tc.to_string_lossy(),
                    "qdisc",
                    "add",
                    "dev",
                    VETH,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    "32kbit",
                    "latency",
                    "400ms",
                ],
            )?;
        }
        Ok(())
    }

    /// iproute2's `ip`.
    pub fn ip(&self) -> &Path {
        &self.ip
    }

    /// The namespace of `host`.
    pub fn namespace(&self, host: Host) -> String {
        format!("{PREFIX}{}-{}-{}", std::process::id(), self.id, host.name())
    }

    /// The address of `host` on the link.
    pub fn address(&self, host: Host) -> String {
        let last = match host {
            Host::Server => 1,
            Host::Client => 2,
        };
        format!("10.77.{}.{last}", self.id % 250)
    }

    /// The server's listening address, `IP:PORT`.
    pub fn server_address(&self) -> String {
        format!("{}:{PORT}", self.address(Host::Server))
    }

    /// The relay's listening address on the server host, `IP:RELAY_PORT`.
    pub fn relay_address(&self) -> String {
        format!("{}:{RELAY_PORT}", self.address(Host::Server))
    }

    fn nft(&self, host: Host, script: &str) -> Result<(), String> {
        let nft = self
            .nft
            .as_ref()
            .ok_or("the link was made without nftables")?;
        let ns = self.namespace(host);
        let mut child = Command::new(&self.ip)
            .args(["netns", "exec", &ns])
            .arg(nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting nft: {e}"))?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft in {ns} failed ({}): {}\nscript:\n{script}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Cuts the link both ways from now on: the client host drops every
    /// packet it sends or receives on it. Nothing is refused or reset; the
    /// packets vanish, as behind a dead router.
    ///
    /// # Panics
    /// If the link was not made [`partitionable`](Link::partitionable).
    pub fn partition(&self) {
        self.nft(
            Host::Client,
            &format!(
                "add rule inet mpconn out oifname \"{VETH}\" counter drop\n\
                 add rule inet mpconn in iifname \"{VETH}\" counter drop\n"
            ),
        )
        .unwrap();
    }

    /// Ends a [`partition`](Self::partition): the client host's rules
    /// go, and TCP's retransmissions get through again.
    pub fn heal(&self) {
        self.nft(
            Host::Client,
            "flush chain inet mpconn out\nflush chain inet mpconn in\n",
        )
        .unwrap();
    }

    /// The packets the nftables rules dropped so far, on both hosts.
    pub fn dropped(&self) -> u64 {
        let nft = self.nft.as_ref().expect("the link was made with nftables");
        let mut total = 0;
        for host in [Host::Server, Host::Client] {
            let out = Command::new(&self.ip)
                .args(["netns", "exec", &self.namespace(host)])
                .arg(nft)
                .args(["list", "table", "inet", "mpconn"])
                .output()
                .unwrap();
            assert!(out.status.success(), "nft list: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines().filter(|l| l.contains(" drop")) {
                let mut words = line.split_whitespace();
                while let Some(word) = words.next() {
                    if word == "packets" {
                        total += words.next().and_then(|n| n.parse::<u64>().ok()).unwrap();
                    }
                }
            }
        }
        total
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it
        // the peer in the other.
        for ns in self.created.drain(..) {
            let _ = run(&self.ip, &["netns", "del", &ns]);
        }
    }
}

/// Root and iproute2's `ip`, or why not.
fn prerequisites() -> Result<PathBuf, String> {
    // /proc/self belongs to the effective user.
    let uid = std::fs::metadata("/proc/self")
        .map_err(|e| format!("cannot read /proc/self: {e}"))?
        .uid();
    if uid != 0 {
        return Err(format!(
            "network namespaces need root, and this runs as uid {uid}"
        ));
    }
    tool("ip").ok_or_else(|| "no ip (iproute2) on PATH, /usr/sbin or /sbin".to_string())
}

/// Where `name` is: on PATH, or in the sbin directories that a non-login
/// root shell may not have on it.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `program args`, or says how it failed.
fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes the namespaces of test processes that no longer exist.
fn remove_leftovers(ip: &Path) {
    let Ok(out) = Command::new(ip).args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "NAME" or "NAME (id: N)"
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {name}, left by process {pid}, which has ended");
            let _ = run(ip, &["netns", "del", name]);
        }
    }
}

/// Prints why the namespaces cannot be made and returns `None`, or fails
/// when `CI=true`: CI runs as root, so a missing capability there is a
/// broken setup, not a reason to skip.
fn skip_or_fail<T>(reason: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and network namespaces cannot be used: {reason}");
    }
    // Straight to the terminal: libtest captures `eprintln!` of a passing
    // test, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: network namespaces cannot be used: {reason}"
    );
    None
}
