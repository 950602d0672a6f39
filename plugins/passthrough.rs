//! mm-passthrough: the smallest possible "meta plugin", for the benchmark.
//!
//! It reads its config from stdin, runs the plugin named by the environment
//! variable `MM_PASSTHROUGH` (an absolute path) with the same environment
//! and stdin, and hands back that plugin's stdout, stderr and exit status.
//! No state, no netns, no parsing: what is left is the price of one more
//! exec between the runtime and the delegate, spawned the way multimesh
//! spawns its delegates (std::process::Command, piped stdio). The benchmark
//! times the bare delegate, this, and multimesh side by side, which shows
//! how much of multimesh's overhead any exec-based meta plugin pays.
//!
//! Misconfigured (no MM_PASSTHROUGH, spawn failure) it answers CNI error
//! JSON with code 999 and exits 1.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn fail(msg: &str) -> ! {
    let e = serde_json::json!({"cniVersion": "1.0.0", "code": 999, "msg": msg});
    println!("{e}");
    std::process::exit(1);
}

fn main() {
    let Some(target) = std::env::var_os("MM_PASSTHROUGH").filter(|t| !t.is_empty()) else {
        fail("MM_PASSTHROUGH (the plugin to run) is not set");
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        fail(&format!("reading stdin: {e}"));
    }
    let mut child = match Command::new(&target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => fail(&format!("{}: {e}", target.to_string_lossy())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its stdin is its own answer.
        let _ = stdin.write_all(&input);
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => fail(&format!("waiting for {}: {e}", target.to_string_lossy())),
    };
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    std::process::exit(out.status.code().unwrap_or(1));
}
