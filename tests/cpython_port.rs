//! CPython's own connection tests, ported with mpconn as the far end:
//! tests/cpython/test_connection_port.py runs under every CPython 3.8 to
//! 3.13 found through pyenv (in parallel), starting
//! examples/cpython_far_end.rs wherever CPython's tests start a child
//! process. Any failure, error or unexpected success fails this test, with
//! the unittest output.

#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{PYTHON_VERSIONS, interpreters, watchdog};

/// The far-end example, built next to this test binary by `cargo test`.
fn far_end() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join("cpython_far_end");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "cpython_far_end"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

/// Runs the port under one interpreter: whether it passed, and its output.
fn run_port(py: &Path, far_end: &Path) -> (bool, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cpython/test_connection_port.py");
    let out = Command::new(py)
        .arg(&script)
        .env("MPCONN_FAR_END", far_end)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn cpython_connection_tests_pass_with_mpconn_as_the_far_end() {
    let _w = watchdog(240);
    let far_end = far_end();
    let started = Instant::now();
    let runs: Vec<_> = interpreters(&PYTHON_VERSIONS)
        .into_iter()
        .map(|(version, py)| {
            let far_end = far_end.clone();
            let run = std::thread::spawn(move || run_port(&py, &far_end));
            (version, run)
        })
        .collect();
    let mut failed = Vec::new();
    for (version, run) in runs {
        let (passed, output) = run.join().unwrap();
        let summary = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        eprintln!("python {version}: {summary}");
        for known in output.lines().filter(|l| l.starts_with("known difference")) {
            eprintln!("  {known}");
        }
        if !passed {
            eprintln!("--- python {version} ---\n{output}");
            failed.push(version);
        }
    }
    eprintln!("the port took {:.1} s", started.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "the port failed with python {failed:?}");
}
