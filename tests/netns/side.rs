//! The processes on each host: this test binary started again in a role
//! inside a host's namespace (`ip netns exec`), the markers a child prints
//! when it reaches a point, and the words the parent sends it on stdin.

use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::net::{Host, Net};

/// What a child prints before a marker word, so that the parent finds it
/// among libtest's own output.
const MARK: &str = "@@netns ";
/// How long a side may take to reach a marker or to exit.
const SIDE_TIMEOUT: Duration = Duration::from_secs(50);

impl Net {
    /// Starts this test binary again on `host`, running only `test`, in
    /// `role`, with `envs` set. The side is killed if it is dropped while
    /// running; [`Side::finish`] waits for it to succeed.
    pub fn spawn(&self, host: Host, test: &str, role: &str, envs: &[(&str, &str)]) -> Side<'_> {
        // The command common/ builds to re-run this binary in a role, run
        // through `ip netns exec`.
        let inner = crate::common::child_command(test, role);
        let mut cmd = Command::new(self.ip());
        cmd.args(["netns", "exec", &self.namespace(host)])
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("starting ip netns exec");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let name = format!("{}/{role}", host.name());
        let label = name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // Shown when the test fails, with the side it came from.
                eprintln!("[{label}] {line}");
                if let Some(at) = line.find(MARK) {
                    let _ = tx.send(line[at + MARK.len()..].trim().to_string());
                }
            }
        });
        Side {
            name,
            child,
            stdin,
            lines,
            _net: PhantomData,
        }
    }
}

/// A process running on one host. It borrows the `Net`, so it ends before
/// the namespaces are deleted.
pub struct Side<'n> {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    _net: PhantomData<&'n Net>,
}

impl Side<'_> {
    /// Waits until the side announces `word` (with [`announce`]).
    ///
    /// # Panics
    /// If the side exits or stays silent for `SIDE_TIMEOUT` first.
    pub fn wait_for(&self, word: &str) {
        let end = Instant::now() + SIDE_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(w) if w == word => return,
                Ok(_) => {}
                Err(e) => panic!("{} did not announce {word:?}: {e}", self.name),
            }
        }
    }

    /// Sends `word` to the side, which waits for it with [`await_signal`].
    pub fn signal(&mut self, word: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the side to exit, and asserts that it succeeded.
    ///
    /// # Panics
    /// If it fails, or is still running after `SIDE_TIMEOUT` (it is then
    /// killed).
    pub fn finish(mut self) {
        let end = Instant::now() + SIDE_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} failed: {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < end,
                "{} still running after {SIDE_TIMEOUT:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Side<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a child: tells the parent that this side reached `word`.
pub fn announce(word: &str) {
    println!("{MARK}{word}");
}

/// In a child: waits for the parent to [`signal`](Side::signal) `word`.
pub fn await_signal(word: &str) {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), word, "unexpected signal from the parent");
}
