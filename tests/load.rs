//! Load: 32 and 64 pods ADDed at once and then DELeted at once, the way
//! kubelet starts pods together: one netns per pod, one `multimesh` process
//! per pod, all spawned before any is awaited. Zero failures, distinct
//! addresses, capture present in every pod (and working in one), zero leaks
//! after the DELs (the harness's checks: state, IPAM, host veths, rules).
//!
//! The same pods are also attached by the bare delegate (Debian's `bridge`
//! with host-local, exactly the config multimesh delegates to) and by
//! multimesh without capture, and the wall times are printed side by side
//! with the ratios. Nothing is asserted about time: the machine is shared.
//!
//! (This generalises the 32-pod test that used to live in tests/capture.rs.)

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const IN_PORT: u16 = 15006;

/// What attaches the pods in one phase.
struct Phase {
    name: &'static str,
    /// None: the bare bridge plugin; Some(capture): multimesh.
    capture: Option<Value>,
}

fn phases() -> Vec<Phase> {
    vec![
        Phase {
            name: "bare bridge+host-local",
            capture: None,
        },
        Phase {
            name: "multimesh, capture off",
            capture: Some(json!({"enabled": false})),
        },
        Phase {
            name: "multimesh, iptables-legacy",
            capture: Some(json!({"backend": "iptables", "iptablesVariant": "legacy"})),
        },
        Phase {
            name: "multimesh, iptables-nft",
            capture: Some(json!({"backend": "iptables", "iptablesVariant": "nft"})),
        },
        Phase {
            name: "multimesh, nftables",
            capture: Some(json!({"backend": "nftables"})),
        },
    ]
}

/// The pod's capture as its backend shows it, or "" when capture is off.
fn capture_of(pod: &Pod, cap: &Value) -> String {
    if cap["enabled"] == false {
        return String::new();
    }
    match (cap["backend"].as_str(), cap["iptablesVariant"].as_str()) {
        (Some("iptables"), Some(v)) => pod.exec_ok(&format!("iptables-{v}-save -t nat")),
        _ => pod.exec_ok("nft list ruleset"),
    }
}

fn assert_capture(pod: &Pod, cap: &Value, i: usize) {
    let r = capture_of(pod, cap);
    let want: &[&str] = if cap["backend"] == "iptables" {
        &[
            ":MULTIMESH_INBOUND",
            ":MULTIMESH_IN_REDIRECT",
            ":MULTIMESH_OUTPUT",
            ":MULTIMESH_REDIRECT",
            "-A PREROUTING -p tcp -j MULTIMESH_INBOUND",
            "-A OUTPUT -p tcp -j MULTIMESH_OUTPUT",
        ]
    } else {
        &["table inet multimesh", "chain inbound", "chain outbound"]
    };
    for c in want {
        assert!(r.contains(c), "pod {i}: {c} missing:\n{r}");
    }
}

fn no_capture_anywhere(pod: &Pod) -> bool {
    !mentions_multimesh(&pod.exec_ok(EVERY_RULESET))
}

struct Timing {
    name: &'static str,
    add: Duration,
    del: Duration,
}

/// ADD every pod at once, check, DEL every pod at once, check.
fn run_phase(node: &Node, pods: &[Pod], ph: &Phase, round: usize) -> Timing {
    let n = pods.len();
    let bridge = node.cluster_bridge();
    let (bin, stdin) = match &ph.capture {
        None => (
            format!("{REF_PLUGINS}/bridge"),
            serde_json::to_vec(&bridge).unwrap(),
        ),
        Some(cap) => {
            let mut conf = node.meta(vec![bridge], cap.clone());
            // Production logging: the timing is the point here.
            conf["logLevel"] = json!("error");
            (BIN.to_string(), serde_json::to_vec(&conf).unwrap())
        }
    };
    let calls = |cmd: &str| -> Vec<CallSpec> {
        pods.iter()
            .enumerate()
            .map(|(i, p)| {
                let cid = format!("load{round}-{i}");
                (
                    bin.clone(),
                    cni_env(cmd, &p.path, &cid, "eth0"),
                    stdin.clone(),
                )
            })
            .collect()
    };

    let (adds, add) = run_concurrently(&node.name, &calls("ADD"));
    let mut ips = Vec::new();
    for (i, out) in adds.iter().enumerate() {
        assert_eq!(
            out.code, 0,
            "[{}] ADD pod {i}: {}\n{}",
            ph.name, out.stdout, out.stderr
        );
        let ip = out.json["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("[{}] pod {i}: no address in {}", ph.name, out.stdout))
            .split('/')
            .next()
            .unwrap()
            .to_string();
        ips.push(ip);
    }
    let mut uniq = ips.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), n, "[{}] duplicate addresses: {ips:?}", ph.name);
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(pod.links(), ["eth0"], "[{}] pod {i}", ph.name);
    }
    if let Some(cap) = ph.capture.as_ref().filter(|c| c["enabled"] != false) {
        for (i, pod) in pods.iter().enumerate() {
            assert_capture(pod, cap, i);
        }
        // Capture works in the last pod with all the others there.
        let _proxy = Listener::start(&pods[n - 1].name, IN_PORT, false, 1);
        let a = connect(&node.name, &ips[n - 1], 8080, false, None)
            .unwrap_or_else(|e| panic!("[{}] inbound to the last pod: {e}", ph.name));
        assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{a}");
        assert_eq!(field(&a, "orig"), format!("{}:8080", ips[n - 1]), "{a}");
    }

    let (dels, del) = run_concurrently(&node.name, &calls("DEL"));
    for (i, out) in dels.iter().enumerate() {
        assert_eq!(
            out.code, 0,
            "[{}] DEL pod {i}: {}\n{}",
            ph.name, out.stdout, out.stderr
        );
        assert!(out.stdout.trim().is_empty(), "DEL printed {}", out.stdout);
    }
    for (i, pod) in pods.iter().enumerate() {
        assert!(
            pod.links().is_empty(),
            "[{}] pod {i}: {:?}",
            ph.name,
            pod.links()
        );
        if ph.capture.is_some() {
            assert!(
                no_capture_anywhere(pod),
                "[{}] pod {i}: capture left",
                ph.name
            );
        }
    }
    let leaks = node.leaks();
    assert!(leaks.is_empty(), "[{}] leaked: {leaks:#?}", ph.name);
    Timing {
        name: ph.name,
        add,
        del,
    }
}

/// The two sizes run one after the other: timings of one must not include
/// the other's processes.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn load(n: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = Node::new(&format!("load{n}"));
    let pods: Vec<Pod> = (0..n).map(|i| node.pod(&format!("p{i}"))).collect();
    let timings: Vec<Timing> = phases()
        .iter()
        .enumerate()
        .map(|(round, ph)| run_phase(&node, &pods, ph, round))
        .collect();
    let (base_add, base_del) = (timings[0].add.as_secs_f64(), timings[0].del.as_secs_f64());
    let mut table = format!(
        "\n{n} pods, all ADDs then all DELs spawned at once (wall time):\n\
         {:<28} {:>8} {:>7} {:>8} {:>7}\n",
        "", "ADD s", "x bare", "DEL s", "x bare"
    );
    for t in &timings {
        let (a, d) = (t.add.as_secs_f64(), t.del.as_secs_f64());
        table.push_str(&format!(
            "{:<28} {a:>8.2} {:>7.2} {d:>8.2} {:>7.2}\n",
            t.name,
            a / base_add,
            d / base_del
        ));
    }
    // Straight to stderr, past the test harness's capture: the numbers
    // belong in the suite's log.
    use std::io::Write;
    let _ = std::io::stderr().write_all(table.as_bytes());
}

#[test]
fn pods_32_at_once() {
    load(32);
}

#[test]
fn pods_64_at_once() {
    load(64);
}
