//! The worker-pool demos, run as a user runs them: a worker is killed in
//! the middle of a task and every task must still complete exactly once,
//! with the right answer; with the blocking coordinator (`worker_pool`) and
//! with the one on tokio (`worker_pool_tokio`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::watchdog;

/// The example binary `name`, built next to this test binary (with
/// `features`, when it needs some).
fn example(name: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .args(features.iter().flat_map(|f| ["--features", f]))
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

/// π(n) by a plain sieve, independent of the example's segmented one.
fn primes_below(n: usize) -> usize {
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            for j in (i * i..n).step_by(i) {
                composite[j] = true;
            }
        }
    }
    count
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> String {
    run_example(example("worker_pool", &[]), args, envs)
}

fn run_example(example: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(example)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_worker_killed_mid_task_loses_nothing() {
    let _w = watchdog(120);
    let expected = primes_below(24_000_000);
    for transport in [&[][..], &["--tcp"]] {
        let mut args = vec!["--workers", "3", "--tasks", "24", "--kill-task", "5"];
        args.extend_from_slice(transport);
        let out = run(&args, &[]);
        assert!(out.contains("killing worker"), "{out}");
        assert!(out.contains("died during task 5; re-queued it"), "{out}");
        assert!(
            out.contains("tasks: 24 completed, each exactly once: true"),
            "{out}"
        );
        assert!(
            out.contains(&format!("primes below 24000000: {expected}")),
            "{out}"
        );
    }
}

#[test]
fn an_impostor_worker_is_rejected_and_reported() {
    let _w = watchdog(120);
    let out = run(
        &["--workers", "2", "--tasks", "6", "--no-kill"],
        &[("MPCONN_POOL_IMPOSTOR", "1")],
    );
    assert!(out.contains("rejected handshakes: 1"), "{out}");
    assert!(out.contains("digest was wrong"), "{out}");
    assert!(
        out.contains("tasks: 6 completed, each exactly once: true"),
        "{out}"
    );
}

/// The coordinator on tokio, with the same blocking workers: the same
/// deterministic outcome over the local transport and TCP, and the async
/// listener rejects an impostor through the same failure hook.
#[cfg(feature = "tokio")]
#[test]
fn the_tokio_coordinator_loses_nothing_and_rejects_an_impostor() {
    let _w = watchdog(120);
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        run_example(example("worker_pool_tokio", &["tokio"]), args, envs)
    };
    let expected = primes_below(24_000_000);
    for transport in [&[][..], &["--tcp"]] {
        let mut args = vec!["--workers", "3", "--tasks", "24", "--kill-task", "5"];
        args.extend_from_slice(transport);
        let out = run(&args, &[]);
        assert!(out.contains("killing worker"), "{out}");
        assert!(out.contains("died during task 5; re-queued it"), "{out}");
        assert!(out.contains("4 workers started, 1 died"), "{out}");
        assert!(
            out.contains("tasks: 24 completed, each exactly once: true"),
            "{out}"
        );
        assert!(
            out.contains(&format!("primes below 24000000: {expected}")),
            "{out}"
        );
    }
    let out = run(
        &["--workers", "2", "--tasks", "6", "--no-kill"],
        &[("MPCONN_POOL_IMPOSTOR", "1")],
    );
    assert!(out.contains("rejected handshakes: 1"), "{out}");
    assert!(out.contains("digest was wrong"), "{out}");
    assert!(
        out.contains("tasks: 6 completed, each exactly once: true"),
        "{out}"
    );
}
