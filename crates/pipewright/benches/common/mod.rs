//! What the server benchmarks share: a real `pipewright serve` on a loopback port, its admin password set.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The admin's password in the benchmarks.
pub const PASSWORD: &str = "bench-password-1";

/// Start a server on a state directory with `extra` flags; returns the process and its base URL.
#[allow(dead_code)]
pub fn serve(state: &Path, extra: &[&str]) -> (Child, String) {
    serve_env(state, extra, &[])
}

/// As [`serve`], with environment variables set for the server.
pub fn serve_env(state: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let pw = state.with_extension("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .arg("--admin-password-file")
        .arg(&pw)
        .env("RUST_LOG", "error")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("listening on ").unwrap().to_string();
    std::thread::spawn(move || lines.map_while(Result::ok).count());
    (child, url)
}
