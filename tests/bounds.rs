//! Delegates are bounded while they run (contract §6): a delegate printing
//! without end on stdout or stderr, one that hangs with a background
//! grandchild, and delegates that together outlast the ADD budget. Each is
//! a real plugin (a `#!/bin/sh` script on CNI_PATH, or mm-recorder) run by
//! the real binary; each ends in a clear code-100 error, quickly, with
//! rollback done and nothing left behind.
//!
//! The case of a delegate that exits cleanly while its grandchild keeps
//! the pipes open (not waited for) is the unit test
//! `netns::tests::a_cleanly_exiting_child_leaves_its_grandchild_alone`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OFF: fn() -> Value = || json!({"enabled": false});

/// Write an executable `#!/bin/sh` plugin `name` into the node's script
/// directory (put on CNI_PATH by `cni_path`). `add` runs on ADD, after the
/// config is read; every other command exits 0 quietly.
fn script(node: &Node, name: &str, add: &str) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let dir = scripts(node);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n{add}\nfi\nexit 0\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    json!({"cniVersion": "1.0.0", "name": name, "type": name})
}

fn scripts(node: &Node) -> PathBuf {
    node.dir.join("scripts")
}

/// CNI_PATH with the node's scripts first (binDir is searched before it).
fn cni_path(node: &Node) -> String {
    format!("{}:{REF_PLUGINS}", scripts(node).display())
}

/// Largest resident set (KiB) of any process this test process has reaped,
/// their descendants included (getrusage RUSAGE_CHILDREN).
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid rusage.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru), 0);
        ru.ru_maxrss
    }
}

/// ADD, which must fail with code 100 within `within` and roll back; then
/// the runtime's DEL, which succeeds, and nothing of the pod is left.
/// Returns the message, how long ADD took and the recorder's calls up to
/// the end of the ADD (rollback included).
fn add_fails(
    node: &Node,
    conf: &Value,
    pod: &Pod,
    cid: &str,
    within: Duration,
) -> (String, Duration, Vec<String>) {
    let path = cni_path(node);
    let env = [("CNI_PATH", path.as_str())];
    let t = Instant::now();
    let out = node.cni_env("ADD", conf, &pod.path, cid, "eth0", &env);
    let took = t.elapsed();
    let msg = out.err(100);
    eprintln!("{cid}: ADD failed after {took:?}: {msg}");
    assert!(took < within, "ADD took {took:?}: {msg}");
    // Rollback ran: nothing attached, nothing recorded.
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    node.assert_no_leaks();
    let calls = node.call_list();
    let del = node.cni_env("DEL", conf, &pod.path, cid, "eth0", &env);
    assert_eq!(del.code, 0, "DEL: {}\n{}", del.stdout, del.stderr);
    node.assert_no_leaks();
    (msg, took, calls)
}

// (a) A delegate printing without end on stdout: killed at 1 MiB, within a
// second or so, multimesh itself stays small (it grew to 7 GB before).
#[test]
fn endless_stdout_is_cut_at_one_mib() {
    let node = Node::new("bout");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![
            node.recorder("first", json!({})),
            script(&node, "mm-flood-out", "exec yes"),
        ],
        OFF(),
    );
    let (msg, _, calls) = add_fails(&node, &conf, &pod, "bout", Duration::from_secs(10));
    assert!(
        msg.contains("\"mm-flood-out\" printed more than 1 MiB on stdout") && msg.contains("net1"),
        "{msg}"
    );
    assert_eq!(calls, ["ADD eth0", "DEL eth0"]);
    let rss = children_max_rss_kib();
    eprintln!("largest child RSS {rss} KiB");
    assert!(rss < 64 * 1024, "a child grew to {rss} KiB");
}

// (b) Endless stderr at logLevel debug with a logFile: killed at 64 KiB,
// and the log (every line cut at 4 KiB) stays small. Before: 18.5 GB and
// a 6 GB log line.
#[test]
fn endless_stderr_is_cut_and_the_log_stays_small() {
    let node = Node::new("berr");
    let pod = node.pod("p");
    let log = node.dir.join("multimesh.log");
    let mut conf = node.meta(
        vec![
            node.recorder("first", json!({})),
            // Some stdout too, so the stderr limit is what stops it.
            script(
                &node,
                "mm-flood-err",
                "echo starting\nexec yes flooding-stderr >&2",
            ),
        ],
        OFF(),
    );
    conf["logFile"] = json!(log.display().to_string());
    conf["logToStderr"] = json!(false);
    assert_eq!(conf["logLevel"], "debug");
    let (msg, _, calls) = add_fails(&node, &conf, &pod, "berr", Duration::from_secs(10));
    assert!(
        msg.contains("\"mm-flood-err\" printed more than 64 KiB on stderr"),
        "{msg}"
    );
    assert_eq!(calls, ["ADD eth0", "DEL eth0"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() < 1 << 20, "log is {} bytes", text.len());
    // Records (a plugin's stderr spans several lines): each one at most
    // 4 KiB, the stderr one cut with the marker.
    let mut records: Vec<String> = Vec::new();
    for l in text.lines() {
        let starts_record = l
            .split_once(' ')
            .is_some_and(|(ts, rest)| ts.parse::<f64>().is_ok() && rest.starts_with("multimesh["));
        match records.last_mut() {
            Some(r) if !starts_record => {
                r.push('\n');
                r.push_str(l);
            }
            _ => records.push(l.to_string()),
        }
    }
    let longest = records.iter().map(String::len).max().unwrap_or(0);
    assert!(longest <= 4096, "a log record of {longest} bytes");
    assert!(
        records.iter().any(
            |r| r.contains("plugin mm-flood-err stderr: flooding-stderr")
                && r.ends_with(" bytes cut]")
        ),
        "no cut stderr record in the log:\n{}",
        &text[..text.len().min(8192)]
    );
    eprintln!("log: {} bytes, {} records", text.len(), records.len());
}

// (c) A delegate that starts a background grandchild, then hangs: with
// `delegateTimeout: 1` its whole process group is killed after a second,
// the grandchild too (before, it survived, reparented to init).
#[test]
fn hung_delegate_and_its_grandchild_are_killed_at_delegate_timeout() {
    let node = Node::new("bhang");
    let pod = node.pod("p");
    let pidfile = node.dir.join("grandchild.pid");
    let hang = script(
        &node,
        "mm-hang",
        &format!("sleep 300 &\necho $! > {}\nsleep 300", pidfile.display()),
    );
    let mut conf = node.meta(vec![node.recorder("first", json!({})), hang], OFF());
    conf["delegateTimeout"] = json!(1);
    let (msg, took, calls) = add_fails(&node, &conf, &pod, "bhang", Duration::from_secs(5));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        msg.contains("\"mm-hang\" timed out after 1 s (delegateTimeout)"),
        "{msg}"
    );
    assert_eq!(calls, ["ADD eth0", "DEL eth0"]);
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    while !process_gone(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        process_gone(pid),
        "the delegate's grandchild {pid} survived"
    );
}

// The bounds are checked like every other field: code 7 naming it.
#[test]
fn timeouts_out_of_range_are_refused() {
    let node = Node::new("bconf");
    let pod = node.pod("p");
    for (field, bad) in [
        ("delegateTimeout", json!(0)),
        ("delegateTimeout", json!("120")),
        ("addTimeout", json!(3601)),
        ("addTimeout", json!(2.5)),
    ] {
        let mut conf = node.meta(vec![node.recorder("first", json!({}))], OFF());
        conf[field] = bad.clone();
        let msg = node.cni("ADD", &conf, &pod.path, "bconf", "eth0").err(7);
        assert!(msg.starts_with(field), "{field}={bad}: {msg}");
    }
    assert!(node.calls().is_empty());
    node.assert_no_leaks();
}

// (d) Two slow delegates, each well under delegateTimeout, together over
// `addTimeout`: the second is killed when the budget runs out, the ADD
// fails with the budget message, and the rollback's DELs (slow too) still
// get delegateTimeout each, not the spent budget: both are undone.
#[test]
fn add_budget_is_shared_by_the_delegates_and_rollback_still_runs() {
    let node = Node::new("bbudget");
    let pod = node.pod("p");
    let slow =
        |name: &str| node.recorder(name, json!({"sleepMs": 1500, "sleepOn": ["ADD", "DEL"]}));
    let mut conf = node.meta(vec![slow("one"), slow("two")], OFF());
    conf["addTimeout"] = json!(2);
    let (msg, took, calls) = add_fails(&node, &conf, &pod, "bbudget", Duration::from_secs(15));
    assert!(
        msg.contains("ADD budget exhausted")
            && msg.contains("addTimeout (2 s)")
            && msg.contains("\"mm-recorder\" was killed")
            && msg.contains("net1"),
        "{msg}"
    );
    // 2 s of ADDs, then two 1.5 s DELs.
    assert!(took >= Duration::from_secs(4), "{took:?}");
    // Rollback: both DELs ran to completion (their markers are gone, which
    // add_fails checked before the runtime's DEL).
    assert_eq!(calls, ["ADD eth0", "ADD net1", "DEL net1", "DEL eth0"]);
    assert!(Path::new(&pod.path).exists());
}
