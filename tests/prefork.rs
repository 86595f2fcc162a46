//! The prefork example, run as a user runs it: a coordinator accepts and
//! authenticates clients and hands each to a worker process, which serves
//! it directly; every client gets every reply, each from one worker.

#![cfg(unix)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::watchdog;

/// The example binary, built next to this test binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join("prefork");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "prefork"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

fn run(args: &[&str]) -> String {
    let out = Command::new(example()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "prefork {args:?} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn workers_serve_the_clients_handed_to_them() {
    let _w = watchdog(60);
    for args in [
        &["--workers", "3", "--clients", "9"][..],
        &["--tcp", "--workers", "2", "--clients", "4"],
    ] {
        let out = run(args);
        let served = out.lines().filter(|l| l.starts_with("worker ")).count();
        assert_eq!(served, if args.contains(&"--tcp") { 2 } else { 3 }, "{out}");
        assert!(out.contains("got all 3 replies"), "{out}");
    }
}
