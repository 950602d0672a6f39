//! Faults: processes killed midway, a read-only or full state directory,
//! stale and corrupt state, ADD racing DEL, capture tools missing or
//! failing, the pod netns vanishing mid-ADD. Every case must end in a clear
//! CNI error on stdout (right code, non-zero exit) or success, and whatever
//! is left must be removed by the runtime's DEL, after which the harness's
//! leak checks (state, IPAM, recorder markers, host veths) and the pod's
//! rules are clean.
//!
//! Mount tricks (read-only bind, tiny tmpfs, a tool hidden) happen in a
//! private mount namespace held by a `sleep` this test starts (`unshare -m
//! --propagation private`), and only the multimesh calls run in it: nothing
//! is mounted on the host, and the namespace dies with that process.
//!
//! Covered elsewhere, not repeated here: a delegate failing or crashing at
//! each position (core.rs rollback_at_each_position_leaves_nothing), a
//! truncated record on DEL (core.rs), a fabricated incomplete record
//! (core.rs stale_state_from_a_crashed_add_is_cleaned_by_the_next_add), and
//! capture tools exiting 1 on ADD for every backend (capture.rs
//! capture_failure_rolls_back_delegates).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LEGACY: fn() -> Value = || json!({"backend": "iptables", "iptablesVariant": "legacy"});

/// Poll `f` until it gives Some, at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (pid, state, cmdline) of the live children of `pid`.
fn children(pid: u32) -> Vec<(u32, char, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[1] == pid.to_string() {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((p, f[0].chars().next().unwrap_or('?'), cmd));
        }
    }
    out
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a pid this test started (or its direct child).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A private mount namespace (see the module comment).
struct PrivateMounts {
    holder: Child,
}

impl PrivateMounts {
    fn new() -> PrivateMounts {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = holder.id();
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        wait_for(
            "the private mount namespace",
            Duration::from_secs(10),
            || {
                std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                    .ok()
                    .filter(|ns| *ns != ours)
            },
        );
        PrivateMounts { holder }
    }
    fn prefix(&self) -> String {
        format!("nsenter --mount=/proc/{}/ns/mnt", self.holder.id())
    }
    /// Run a shell command inside the namespace.
    fn sh(&self, cmd: &str) -> String {
        sh_ok(&format!("{} sh -c {}", self.prefix(), shell_quote(cmd)))
    }
    /// Files under `dir` as the namespace sees it (locks excluded).
    fn files(&self, dir: &Path) -> Vec<String> {
        self.sh(&format!(
            "find {} -type f ! -name lock ! -name xtables.lock",
            dir.display()
        ))
        .lines()
        .map(String::from)
        .collect()
    }
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A CNI call in flight (multimesh in the node netns, optionally in a
/// private mount namespace).
struct Call {
    child: Child,
}

impl Call {
    fn start(
        node: &Node,
        mounts: Option<&PrivateMounts>,
        cmd: &str,
        conf: &Value,
        netns: &str,
        cid: &str,
        extra_env: &[(&str, &str)],
    ) -> Call {
        let mut env = cni_env(cmd, netns, cid, "eth0");
        for (k, v) in extra_env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let stdin = serde_json::to_vec(conf).unwrap();
        let child = match mounts {
            None => spawn_in(&node.name, BIN, &env, &stdin),
            Some(m) => {
                use std::io::Write;
                // nsenter, not `ip netns exec`: that would copy the mounts
                // into a namespace of its own, and a remount made while the
                // call runs would not reach it.
                let mut c = Command::new("nsenter")
                    .arg(format!("--mount=/proc/{}/ns/mnt", m.holder.id()))
                    .arg(format!("--net=/run/netns/{}", node.name))
                    .arg(BIN)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                c.stdin.take().unwrap().write_all(&stdin).unwrap();
                c
            }
        };
        Call { child }
    }
    /// The multimesh process (nsenter and ip exec into it, keeping the pid).
    fn pid(&self) -> u32 {
        let pid = self.child.id();
        wait_for("multimesh to start", Duration::from_secs(10), || {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .filter(|e| e.to_string_lossy().ends_with("/multimesh"))
                .map(|_| pid)
        })
    }
    fn finish(self) -> CniOut {
        finish(self.child, Duration::from_secs(120))
    }
}

fn run(
    node: &Node,
    m: Option<&PrivateMounts>,
    cmd: &str,
    conf: &Value,
    pod: &Pod,
    cid: &str,
) -> CniOut {
    Call::start(node, m, cmd, conf, &pod.path, cid, &[]).finish()
}

fn ipam_count(node: &Node) -> usize {
    node.leaks()
        .iter()
        .filter(|l| l.starts_with("ipam:"))
        .count()
}

/// The final word on every case: the runtime's DEL succeeds and nothing of
/// the pod is left anywhere.
fn del_leaves_nothing(node: &Node, conf: &Value, pod: &Pod, cid: &str, ctx: &str) {
    let out = node.cni("DEL", conf, &pod.path, cid, "eth0");
    assert_eq!(
        out.code, 0,
        "{ctx}: DEL failed: {}\n{}",
        out.stdout, out.stderr
    );
    if Path::new(&pod.path).exists() {
        assert!(pod.links().is_empty(), "{ctx}: {:?}", pod.links());
        pod.assert_no_capture(ctx);
    }
    node.assert_no_leaks_within(Duration::from_secs(5));
}

/// Wait until the recorder named `name` is running (it records its call,
/// then sleeps) and return its pid, a child of multimesh `mm`.
fn sleeping_recorder(node: &Node, mm: u32, ifname: &str) -> u32 {
    wait_for("the slow delegate's ADD", Duration::from_secs(20), || {
        node.calls()
            .iter()
            .any(|c| c["command"] == "ADD" && c["ifname"] == ifname)
            .then_some(())
    });
    wait_for(
        "the slow delegate's process",
        Duration::from_secs(10),
        || {
            children(mm)
                .into_iter()
                .find(|(_, st, cmd)| *st != 'Z' && cmd.contains("mm-recorder"))
                .map(|(p, _, _)| p)
        },
    )
}

/// A conflist delegate: the cluster bridge followed by a slow recorder.
fn bridge_then(node: &Node, then: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [node.cluster_bridge(), then]})
}

// 1. A delegate SIGKILLed mid-ADD: code 100 naming it, everything rolled
// back, then DEL. The delegate is the second network, the first one, and
// the second plugin of a conflist whose bridge already ran.
#[test]
fn delegate_killed_mid_add() {
    let node = Node::new("fkdel");
    let slow = || node.recorder("slow", json!({"sleepMs": 20000, "sleepOn": "ADD"}));
    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        (
            "second delegate",
            vec![node.cluster_bridge(), slow()],
            "net1",
        ),
        ("first delegate", vec![slow(), node.second_bridge()], "eth0"),
        (
            "after bridge in a conflist",
            vec![bridge_then(&node, slow())],
            "eth0",
        ),
    ];
    for (k, (what, delegates, ifname)) in cases.into_iter().enumerate() {
        let _ = std::fs::remove_file(node.record_file());
        let pod = node.pod(&format!("k{k}"));
        let cid = format!("fkdel{k}");
        let conf = node.meta(delegates, LEGACY());
        let call = Call::start(&node, None, "ADD", &conf, &pod.path, &cid, &[]);
        let mm = call.pid();
        let victim = sleeping_recorder(&node, mm, ifname);
        sigkill(victim);
        let out = call.finish();
        let msg = out.err(100);
        assert!(
            msg.contains("mm-recorder") && msg.contains(ifname),
            "{what}: {msg}"
        );
        assert!(pod.links().is_empty(), "{what}: {:?}", pod.links());
        pod.assert_no_capture(what);
        node.assert_no_leaks();
        // The rollback DELeted the killed delegate too (it had started).
        assert_eq!(
            node.call_list(),
            [format!("ADD {ifname}"), format!("DEL {ifname}")],
            "{what}"
        );
        del_leaves_nothing(&node, &conf, &pod, &cid, what);
    }
}

/// A meta config with capture whose middle delegate sleeps: [bridge mm0,
/// slow recorder, macvlan].
fn slow_middle(node: &Node, sleep_ms: u64) -> Value {
    node.meta(
        vec![
            node.cluster_bridge(),
            node.recorder("slow", json!({"sleepMs": sleep_ms, "sleepOn": "ADD"})),
            node.macvlan(),
        ],
        LEGACY(),
    )
}

/// Kill multimesh while its second delegate sleeps; wait for the orphaned
/// delegate to finish (it writes its marker: it did attach). Returns what
/// the crash left.
fn crash_mid_add(node: &Node, conf: &Value, pod: &Pod, cid: &str) -> Vec<String> {
    let call = Call::start(node, None, "ADD", conf, &pod.path, cid, &[]);
    let mm = call.pid();
    let orphan = sleeping_recorder(node, mm, "net1");
    sigkill(mm);
    let out = call.finish();
    assert_eq!(out.code, -1, "multimesh was not killed: {}", out.stdout);
    assert!(
        out.stdout.is_empty(),
        "half an answer on stdout: {}",
        out.stdout
    );
    wait_for("the orphaned delegate", Duration::from_secs(20), || {
        process_gone(orphan).then_some(())
    });
    let left = node.leaks();
    assert!(
        left.iter().any(|l| l.starts_with("state:")) && ipam_count(node) == 1,
        "expected the crash to leave state and the eth0 address: {left:#?}"
    );
    let rec: Value =
        serde_json::from_slice(&std::fs::read(node.cni_dir().join(cid).join("eth0.json")).unwrap())
            .unwrap();
    assert_eq!(rec["complete"], false, "{rec}");
    left
}

// 2. multimesh SIGKILLed mid-ADD (a delegate sleeping), then the runtime's
// DEL: it finds the incomplete record and undoes what was done, including
// the delegate that finished after multimesh died.
#[test]
fn multimesh_killed_mid_add_then_del() {
    let node = Node::new("fkmm");
    let pod = node.pod("p");
    let conf = slow_middle(&node, 1500);
    let left = crash_mid_add(&node, &conf, &pod, "fkmm");
    assert!(
        left.iter().any(|l| l.contains("delegate still attached")),
        "{left:#?}"
    );
    assert_eq!(pod.links(), ["eth0"]);
    del_leaves_nothing(&node, &conf, &pod, "fkmm", "DEL after a killed ADD");
    assert_eq!(
        node.call_list(),
        ["ADD net1", "DEL net1"],
        "the record said net1 had started: DEL must undo it"
    );
}

// 3. A stale record from a crashed ADD, then a new ADD for the same
// container (a runtime retrying): the crashed one is undone first, the new
// one attaches exactly once, DEL removes it.
#[test]
fn multimesh_killed_mid_add_then_add_again() {
    let node = Node::new("fkre");
    let pod = node.pod("p");
    let conf = slow_middle(&node, 1500);
    crash_mid_add(&node, &conf, &pod, "fkre");
    let out = node.cni("ADD", &conf, &pod.path, "fkre", "eth0");
    out.ok();
    // (The recorder on net1 makes no interface.)
    let mut links = pod.links();
    links.sort();
    assert_eq!(links, ["eth0", "net2"]);
    assert_eq!(
        ipam_count(&node),
        2,
        "eth0 and net2 once each: {:#?}",
        node.leaks()
    );
    assert_eq!(node.call_list(), ["ADD net1", "DEL net1", "ADD net1"]);
    node.cni("CHECK", &conf, &pod.path, "fkre", "eth0").ok();
    del_leaves_nothing(&node, &conf, &pod, "fkre", "DEL after the retried ADD");
}

// 4. multimesh SIGKILLed while iptables-restore runs (a wrapper that sleeps
// first); the orphaned restore programs the rules after multimesh died.
// The record holds the capture intent, so DEL removes them.
#[test]
fn multimesh_killed_while_programming_capture() {
    let node = Node::new("fkcap");
    let pod = node.pod("p");
    let fake = node.dir.join("slowbin");
    std::fs::create_dir_all(&fake).unwrap();
    let marker = node.dir.join("restore-started");
    let w = fake.join("iptables-legacy-restore");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\ntouch {}\nsleep 1\nexec /usr/sbin/iptables-legacy-restore \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    sh_ok(&format!("chmod 755 {}", w.display()));
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display());
    let conf = node.meta(vec![node.cluster_bridge(), node.second_bridge()], LEGACY());
    let call = Call::start(
        &node,
        None,
        "ADD",
        &conf,
        &pod.path,
        "fkcap",
        &[("PATH", &path)],
    );
    let mm = call.pid();
    wait_for("iptables-restore to start", Duration::from_secs(20), || {
        marker.exists().then_some(())
    });
    let tools: Vec<u32> = children(mm).into_iter().map(|(p, _, _)| p).collect();
    sigkill(mm);
    assert_eq!(call.finish().code, -1);
    for t in tools {
        wait_for(
            "the orphaned iptables-restore",
            Duration::from_secs(20),
            || process_gone(t).then_some(()),
        );
    }
    let rules = pod.exec_ok("iptables-legacy-save -t nat");
    assert!(
        rules.contains(":MULTIMESH_OUTPUT"),
        "the orphan did not program:\n{rules}"
    );
    let rec: Value = serde_json::from_slice(
        &std::fs::read(node.cni_dir().join("fkcap").join("eth0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["complete"], false);
    assert!(
        rec["capture"].is_object(),
        "capture intent not recorded: {rec}"
    );
    del_leaves_nothing(
        &node,
        &conf,
        &pod,
        "fkcap",
        "DEL after a kill during capture",
    );
}

// 5a. cniDir read-only (a read-only bind mount): ADD fails with 102 before
// any delegate runs; DEL on the read-only dir is a clear 102 too (it cannot
// take the container's lock), and once writable DEL succeeds.
#[test]
fn state_dir_read_only() {
    let node = Node::new("fro");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.recorder("rec", json!({}))],
        LEGACY(),
    );
    let cni = node.cni_dir().display().to_string();
    let m = PrivateMounts::new();
    m.sh(&format!(
        "mount --bind {cni} {cni} && mount -o remount,bind,ro {cni}"
    ));
    let msg = run(&node, Some(&m), "ADD", &conf, &pod, "fro").err(102);
    assert!(
        msg.contains("Read-only file system") && msg.contains(&cni),
        "{msg}"
    );
    assert!(
        node.calls().is_empty(),
        "a delegate ran: {:?}",
        node.call_list()
    );
    assert!(pod.links().is_empty());
    node.assert_no_leaks();
    let msg = run(&node, Some(&m), "DEL", &conf, &pod, "fro").err(102);
    assert!(msg.contains("Read-only file system"), "{msg}");
    m.sh(&format!("mount -o remount,bind,rw {cni}"));
    let o = run(&node, Some(&m), "DEL", &conf, &pod, "fro");
    o.ok();
    drop(m);
    del_leaves_nothing(&node, &conf, &pod, "fro", "read-only cniDir");
}

// 5b. cniDir becomes read-only mid-ADD (while a delegate sleeps): the next
// state write fails, ADD rolls the delegates back and answers 102; the
// record it could not delete is finished by DEL once the dir is writable.
#[test]
fn state_dir_read_only_during_add() {
    let node = Node::new("frox");
    let pod = node.pod("p");
    let conf = slow_middle(&node, 1000);
    let cni = node.cni_dir().display().to_string();
    let m = PrivateMounts::new();
    m.sh(&format!("mount --bind {cni} {cni}"));
    let call = Call::start(&node, Some(&m), "ADD", &conf, &pod.path, "frox", &[]);
    sleeping_recorder(&node, call.pid(), "net1");
    m.sh(&format!("mount -o remount,bind,ro {cni}"));
    let out = call.finish();
    let msg = out.err(102);
    assert!(msg.contains("Read-only file system"), "{msg}");
    assert!(pod.links().is_empty(), "not rolled back: {:?}", pod.links());
    let left = node.leaks();
    assert!(
        left.iter().all(|l| l.starts_with("state:")),
        "the rollback left more than the record it could not delete: {left:#?}"
    );
    assert_eq!(node.call_list(), ["ADD net1", "DEL net1"]);
    // DEL on the still read-only dir: the delegates' DEL runs (idempotent),
    // removing the record cannot: a clear 102, nothing else left.
    run(&node, Some(&m), "DEL", &conf, &pod, "frox").err(102);
    m.sh(&format!("mount -o remount,bind,rw {cni}"));
    drop(m);
    del_leaves_nothing(&node, &conf, &pod, "frox", "cniDir read-only mid-ADD");
}

/// cniDir on a tiny tmpfs in the private namespace, filled when `fill`.
fn tiny_tmpfs(m: &PrivateMounts, dir: &str, fill: bool) {
    m.sh(&format!(
        "mount -t tmpfs -o size=256k,mode=0700 mmfull {dir}"
    ));
    if fill {
        fill_up(m, dir);
    }
}

fn fill_up(m: &PrivateMounts, dir: &str) {
    m.sh(&format!(
        "dd if=/dev/zero of={dir}/filler bs=4k 2>/dev/null; test \"$(df --output=avail {dir} | tail -1)\" -eq 0"
    ));
}

// 6a. cniDir full: ADD fails with 102 ("No space left on device") before
// any delegate runs and leaves no file; DEL works on the full dir (it only
// removes), and after space is freed ADD + DEL work.
#[test]
fn state_dir_full() {
    let node = Node::new("ffull");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.recorder("rec", json!({}))],
        LEGACY(),
    );
    let cni = node.cni_dir().display().to_string();
    let m = PrivateMounts::new();
    tiny_tmpfs(&m, &cni, true);
    let msg = run(&node, Some(&m), "ADD", &conf, &pod, "ffull").err(102);
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        node.calls().is_empty(),
        "a delegate ran: {:?}",
        node.call_list()
    );
    assert_eq!(m.files(node.cni_dir().as_path()), [format!("{cni}/filler")]);
    node.assert_no_leaks();
    run(&node, Some(&m), "DEL", &conf, &pod, "ffull").ok();
    m.sh(&format!("rm {cni}/filler"));
    run(&node, Some(&m), "ADD", &conf, &pod, "ffull").ok();
    run(&node, Some(&m), "DEL", &conf, &pod, "ffull").ok();
    assert!(m.files(node.cni_dir().as_path()).is_empty());
    drop(m);
    del_leaves_nothing(&node, &conf, &pod, "ffull", "full cniDir");
}

// 6b. cniDir fills up mid-ADD (while a delegate sleeps): the next state
// write fails, ADD rolls back completely (removing a file works on a full
// filesystem) and answers 102.
#[test]
fn state_dir_full_during_add() {
    let node = Node::new("ffullx");
    let pod = node.pod("p");
    let conf = slow_middle(&node, 1000);
    let cni = node.cni_dir().display().to_string();
    let m = PrivateMounts::new();
    tiny_tmpfs(&m, &cni, false);
    let call = Call::start(&node, Some(&m), "ADD", &conf, &pod.path, "ffullx", &[]);
    sleeping_recorder(&node, call.pid(), "net1");
    fill_up(&m, &cni);
    let msg = call.finish().err(102);
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(pod.links().is_empty(), "not rolled back: {:?}", pod.links());
    assert_eq!(m.files(node.cni_dir().as_path()), [format!("{cni}/filler")]);
    node.assert_no_leaks();
    assert_eq!(node.call_list(), ["ADD net1", "DEL net1"]);
    run(&node, Some(&m), "DEL", &conf, &pod, "ffullx").ok();
    drop(m);
    del_leaves_nothing(&node, &conf, &pod, "ffullx", "cniDir full mid-ADD");
}

// 7. Leftovers of crashes in the state dir: a temp file from an
// interrupted write (ignored, removed with the directory) and a record
// truncated by a power loss (ADD refuses it with 102, the runtime's DEL
// falls back to the config, then ADD works again).
#[test]
fn stale_and_corrupt_files_in_the_state_dir() {
    let node = Node::new("fstale");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge(), node.second_bridge()], LEGACY());
    let dir = node.cni_dir().join("fst");
    // A crashed write left its temp file: ADD and DEL do not mind.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".eth0.json.4242.tmp"), b"{\"half\": ").unwrap();
    node.cni("ADD", &conf, &pod.path, "fst", "eth0").ok();
    node.cni("CHECK", &conf, &pod.path, "fst", "eth0").ok();
    del_leaves_nothing(&node, &conf, &pod, "fst", "temp file");
    assert!(!dir.exists(), "the state dir (and its temp file) stayed");

    // An attached pod whose record is then truncated to nothing.
    node.cni("ADD", &conf, &pod.path, "fst", "eth0").ok();
    std::fs::write(dir.join("eth0.json"), b"").unwrap();
    let msg = node.cni("ADD", &conf, &pod.path, "fst", "eth0").err(102);
    assert!(msg.contains("corrupt state"), "{msg}");
    assert_eq!(pod.links().len(), 2, "the refused ADD touched the pod");
    // Not a JSON object at all.
    std::fs::write(dir.join("eth0.json"), b"[1,2,3]").unwrap();
    node.cni("CHECK", &conf, &pod.path, "fst", "eth0").err(102);
    // DEL of an unreadable record releases the IPs through the config's
    // delegates but, knowing nothing, leaves the interfaces to the netns.
    node.cni("DEL", &conf, &pod.path, "fst", "eth0").ok();
    assert_eq!(pod.links().len(), 2);
    pod.exec_ok("ip link del eth0 && ip link del net1");
    del_leaves_nothing(&node, &conf, &pod, "fst", "truncated record");
    node.cni("ADD", &conf, &pod.path, "fst", "eth0").ok();
    del_leaves_nothing(&node, &conf, &pod, "fst", "ADD after the truncated record");
}

// 8. ADD and DEL of one container racing (a runtime giving up on a slow
// ADD), repeated with different orders and gaps, plus three ADDs racing:
// every answer is a success or a CNI error, at most one ADD wins, and
// after the final DEL nothing is left.
#[test]
fn concurrent_add_and_del_of_one_container() {
    let node = Node::new("frace");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge(), node.second_bridge()], LEGACY());
    let rounds: Vec<(Vec<&str>, u64)> = vec![
        (vec!["ADD", "DEL"], 0),
        (vec!["DEL", "ADD"], 0),
        (vec!["ADD", "DEL"], 5),
        (vec!["ADD", "DEL"], 20),
        (vec!["DEL", "ADD"], 10),
        (vec!["ADD", "ADD", "ADD", "DEL"], 0),
        (vec!["ADD", "ADD", "DEL", "ADD"], 3),
    ];
    for (r, (cmds, gap_ms)) in rounds.iter().enumerate() {
        let cid = format!("race{r}");
        let calls: Vec<(&str, Call)> = cmds
            .iter()
            .map(|c| {
                let call = Call::start(&node, None, c, &conf, &pod.path, &cid, &[]);
                std::thread::sleep(Duration::from_millis(*gap_ms));
                (*c, call)
            })
            .collect();
        let mut added = 0;
        for (c, call) in calls {
            let out = call.finish();
            assert!(
                out.code == 0 || out.code == 1,
                "round {r} {c}: exit {}: {}",
                out.code,
                out.stderr
            );
            if out.code == 0 {
                if c == "ADD" {
                    added += 1;
                    assert!(out.json["ips"].is_array(), "round {r}: {}", out.stdout);
                } else {
                    assert!(out.stdout.trim().is_empty());
                }
            } else {
                let code = out.json["code"].as_u64();
                assert!(
                    c == "ADD" && code == Some(106),
                    "round {r} {c}: unexpected error {}\n{}",
                    out.stdout,
                    out.stderr
                );
            }
        }
        assert!(added >= 1, "round {r}: no ADD succeeded");
        let links = pod.links();
        assert!(
            links.is_empty() || links.len() == 2,
            "round {r}: a half-attached pod {links:?}"
        );
        del_leaves_nothing(&node, &conf, &pod, &cid, &format!("race round {r}"));
    }
}

/// Hide a tool (all its names) in the private namespace: /dev/null bound
/// over the binary its symlinks point to, so neither PATH nor multimesh's
/// fallback directories find a runnable file.
fn hide(m: &PrivateMounts, tool: &str) {
    m.sh(&format!(
        "t=$(readlink -f /usr/sbin/{tool}) && mount --bind /dev/null \"$t\""
    ));
}

// 9. The capture tool missing (iptables backends): ADD answers 103 naming
// it and rolls the delegates back; DEL without a record does not fail on
// the missing tool (nothing says capture was programmed, and the rules
// would live in the pod netns, which goes away with the pod); with a
// record saying capture was programmed, DEL answers 103 until the tool is
// back. The nftables backend needs no tool for ADD and DEL (it speaks
// netlink itself): with `nft` hidden they work, and only CHECK, which
// lists the table with `nft`, answers 103.
#[test]
fn capture_tool_missing() {
    for (cap, tool, name) in [
        (LEGACY(), "xtables-legacy-multi", "iptables-legacy-restore"),
        (
            json!({"backend": "iptables", "iptablesVariant": "nft"}),
            "xtables-nft-multi",
            "iptables-nft-restore",
        ),
    ] {
        let node = Node::new("fmiss");
        let pod = node.pod("p");
        let conf = node.meta(
            vec![node.cluster_bridge(), node.second_bridge()],
            cap.clone(),
        );
        let m = PrivateMounts::new();
        hide(&m, tool);
        let msg = run(&node, Some(&m), "ADD", &conf, &pod, "fmiss").err(103);
        assert!(
            msg.contains(name) && msg.contains("not found"),
            "{cap}: {msg}"
        );
        assert!(
            pod.links().is_empty(),
            "{cap}: not rolled back: {:?}",
            pod.links()
        );
        node.assert_no_leaks();
        let o = run(&node, Some(&m), "DEL", &conf, &pod, "fmiss");
        assert_eq!(
            o.code, 0,
            "{cap}: DEL without a record failed: {}",
            o.stdout
        );

        // Setup while the tool was there, DEL while it is missing:
        // legacy answers 103 until the tool is back; iptables-nft's tables
        // are nf_tables tables, which DEL clears over netlink without it.
        node.cni("ADD", &conf, &pod.path, "fmiss2", "eth0").ok();
        if name.contains("legacy") {
            let msg = run(&node, Some(&m), "DEL", &conf, &pod, "fmiss2").err(103);
            assert!(msg.contains("not found"), "{cap}: {msg}");
            assert!(node.cni_dir().join("fmiss2").join("eth0.json").exists());
            drop(m);
            del_leaves_nothing(&node, &conf, &pod, "fmiss2", &format!("{cap}: tool back"));
        } else {
            run(&node, Some(&m), "DEL", &conf, &pod, "fmiss2").ok();
            drop(m);
            pod.assert_no_capture("iptables-nft DEL without the tool");
            node.assert_no_leaks();
        }
    }

    let node = Node::new("fmissn");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.second_bridge()],
        json!({"backend": "nftables"}),
    );
    let m = PrivateMounts::new();
    hide(&m, "nft");
    run(&node, Some(&m), "ADD", &conf, &pod, "fmissn").ok();
    let table = pod.exec_ok("nft list table inet multimesh");
    assert!(table.contains("redirect to :15006"), "{table}");
    let msg = run(&node, Some(&m), "CHECK", &conf, &pod, "fmissn").err(103);
    assert!(msg.contains("nft not found"), "{msg}");
    run(&node, Some(&m), "DEL", &conf, &pod, "fmissn").ok();
    pod.assert_no_capture("nftables DEL without the nft tool");
    drop(m);
    node.assert_no_leaks();
}

/// A PATH whose first directory holds `tools` as scripts exiting 1.
fn failing_tools(node: &Node, tools: &[&str]) -> String {
    let fake = node.dir.join("failbin");
    std::fs::create_dir_all(&fake).unwrap();
    for t in tools {
        let p = fake.join(t);
        std::fs::write(
            &p,
            "#!/bin/sh\necho \"injected failure of $0\" >&2\nexit 1\n",
        )
        .unwrap();
        sh_ok(&format!("chmod 755 {}", p.display()));
    }
    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display())
}

// 10. Only ip6tables-restore fails, on a dual-stack pod: the IPv4 family
// was already applied and must be undone with the delegates (103).
#[test]
fn ip6tables_failing_after_ipv4_applied() {
    let node = Node::new("fip6");
    let pod = node.pod("p");
    let path = failing_tools(&node, &["ip6tables-legacy-restore"]);
    let conf = node.meta(vec![node.dual_stack_bridge()], LEGACY());
    let out = Call::start(
        &node,
        None,
        "ADD",
        &conf,
        &pod.path,
        "fip6",
        &[("PATH", &path)],
    )
    .finish();
    let msg = out.err(103);
    assert!(msg.contains("ip6tables-legacy-restore"), "{msg}");
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    pod.assert_no_capture("IPv4 rules after the IPv6 failure");
    node.assert_no_leaks();
    del_leaves_nothing(&node, &conf, &pod, "fip6", "ip6tables failing");
}

// 11. The capture tool failing on DEL: 103 and the record kept (delegates
// are DELeted all the same), so the next DEL with a working tool finishes.
// Without a record, a failing tool does not fail DEL. (iptables-legacy:
// the nftables backend and iptables-nft's DEL need no tool; their kernel
// refusals are in tests/capture.rs.)
#[test]
fn capture_tool_failing_on_del() {
    let node = Node::new("fdelf");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], LEGACY());
    node.cni("ADD", &conf, &pod.path, "fdelf", "eth0").ok();
    let path = failing_tools(&node, &["iptables-legacy-restore", "iptables-legacy-save"]);
    let del = |cid: &str| {
        Call::start(
            &node,
            None,
            "DEL",
            &conf,
            &pod.path,
            cid,
            &[("PATH", &path)],
        )
        .finish()
    };
    let msg = del("fdelf").err(103);
    assert!(msg.contains("injected failure"), "{msg}");
    let rec: Value = serde_json::from_slice(
        &std::fs::read(node.cni_dir().join("fdelf").join("eth0.json")).unwrap(),
    )
    .unwrap();
    assert!(rec["capture"].is_object(), "{rec}");
    assert_eq!(
        rec["attachments"],
        json!([]),
        "delegates not DELeted: {rec}"
    );
    assert_eq!(ipam_count(&node), 0);
    del("never-added").ok();
    del_leaves_nothing(
        &node,
        &conf,
        &pod,
        "fdelf",
        "iptables-nft-restore failing on DEL",
    );
}

// 12. The pod's netns deleted while ADD runs (a pod killed during setup):
// the next delegate fails, ADD answers its error and rolls back, DEL with
// the netns gone succeeds, and the kernel takes the veths.
#[test]
fn pod_netns_deleted_mid_add() {
    let node = Node::new("fnsdel");
    let pod = node.pod("p");
    let conf = slow_middle(&node, 1000);
    let call = Call::start(&node, None, "ADD", &conf, &pod.path, "fnsdel", &[]);
    sleeping_recorder(&node, call.pid(), "net1");
    node.remove_pod_netns(&pod);
    let out = call.finish();
    assert_ne!(
        out.code, 0,
        "ADD succeeded without its netns: {}",
        out.stdout
    );
    let code = out.json["code"].as_u64().unwrap_or(0);
    assert!(code > 0, "not a CNI error: {}", out.stdout);
    assert!(
        out.json["msg"].as_str().unwrap_or("").contains("net2"),
        "{}",
        out.stdout
    );
    del_leaves_nothing(&node, &conf, &pod, "fnsdel", "netns deleted mid-ADD");
    node.cni_env("DEL", &conf, "", "fnsdel", "eth0", &[("CNI_NETNS", "")])
        .ok();
}

// 13. A delegate answers success with a result multimesh cannot read (an
// old or bogus cniVersion, a malformed ips list). Before the fix the ADD
// failed only after recording the attachment as complete, with nothing
// rolled back: the delegates stayed attached and a retried ADD got 106.
// Now: code 100 naming the delegate, rollback, nothing left.
#[test]
fn delegate_result_multimesh_cannot_read() {
    let node = Node::new("fbadres");
    let pod = node.pod("p");
    let bin = node.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let results = [
        (
            "oldver",
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"198.51.100.9/24"}}"#,
        ),
        ("numver", r#"{"cniVersion":7,"ips":[]}"#),
        ("badips", r#"{"cniVersion":"1.0.0","ips":[1]}"#),
    ];
    for (name, result) in results {
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && echo '{result}'\nexit 0\n"),
        )
        .unwrap();
        sh_ok(&format!("chmod 755 {}", p.display()));
    }
    for (k, (name, _)) in results.iter().enumerate() {
        for first in [true, false] {
            let bad = json!({"cniVersion": "1.0.0", "name": "bad", "type": name});
            let delegates = if first {
                vec![bad, node.second_bridge()]
            } else {
                vec![node.cluster_bridge(), bad]
            };
            let mut conf = node.meta(delegates, LEGACY());
            conf["binDir"] = json!(bin.display().to_string());
            let cid = format!("bad{k}{first}");
            let msg = node.cni("ADD", &conf, &pod.path, &cid, "eth0").err(100);
            assert!(
                msg.contains("invalid result") && msg.contains(name),
                "{msg}"
            );
            assert!(
                pod.links().is_empty(),
                "{name}: not rolled back: {:?}",
                pod.links()
            );
            pod.assert_no_capture(name);
            node.assert_no_leaks();
            del_leaves_nothing(&node, &conf, &pod, &cid, name);
        }
    }
}
