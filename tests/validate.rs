//! `multimesh validate` in real pod network namespaces: capture set up by
//! the real binary's ADD (Debian's bridge plugin for the cluster network)
//! with each backend (iptables legacy, iptables nft, nftables) and each
//! profile, the validator run inside the pod as an ordinary user (setpriv),
//! its exit status and its stderr line checked.
//!
//! Address plan: tests/common/mod.rs (cluster bridge mm0 198.51.100.0/25,
//! 2001:db8:1::/64). The validator dials 198.51.100.254:20001 and
//! [2001:db8::254]:20001, which nothing in the node answers.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An ordinary pod user: neither profile's proxy UID/GID.
const APP: u32 = 1000;

const BACKENDS: [(&str, &str); 3] = [
    (
        "ipl",
        r#"{"backend": "iptables", "iptablesVariant": "legacy"}"#,
    ),
    (
        "ipn",
        r#"{"backend": "iptables", "iptablesVariant": "nft"}"#,
    ),
    ("nft", r#"{"backend": "nftables"}"#),
];

/// (profile, outbound port, proxy UID)
const PROFILES: [(&str, u16, u32); 2] = [("istio", 15001, 1337), ("linkerd", 4140, 2102)];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:?}\nstdout: {}\nstderr: {}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Run `multimesh validate ARGS` in netns `ns` as `uid`:`gid` (no
/// supplementary groups), bounded.
fn validate(ns: &str, uid: u32, gid: u32, args: &[&str]) -> Run {
    let start = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "setpriv"])
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .args(["--clear-groups", BIN, "validate"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn validate");
    let o = wait_output(child, Duration::from_secs(60));
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// Assert exit 95 with exactly one stderr line starting with `prefix`.
fn assert_missing(r: &Run, prefix: &str, ctx: &str) {
    assert_eq!(r.code, 95, "{ctx}: {r}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{ctx}: one line on stderr: {r}");
    assert!(
        lines[0].starts_with(&format!("multimesh validate: {prefix}")),
        "{ctx}: expected {prefix:?}: {r}"
    );
    assert!(r.stdout.is_empty(), "{ctx}: {r}");
}

/// A pod on the dual-stack cluster bridge, attached by multimesh with
/// `capture`; returns (node, pod, config) for DEL.
fn captured_pod(tag: &str, capture: Value) -> (Node, Pod, Value) {
    let node = Node::new(tag);
    no_dad(&node.name);
    let pod = node.pod("p");
    no_dad(&pod.name);
    let conf = node.meta(vec![node.dual_stack_bridge()], capture);
    node.cni("ADD", &conf, &pod.path, "cval", "eth0").ok();
    wait_v6_ready(&pod.name, "eth0");
    (node, pod, conf)
}

fn del(node: &Node, pod: &Pod, conf: &Value) {
    node.cni("DEL", conf, &pod.path, "cval", "eth0").ok();
    pod.assert_no_capture("after DEL");
    node.assert_no_leaks();
}

fn capture(backend: &str, profile: &str) -> Value {
    let mut c: Value = serde_json::from_str(backend).unwrap();
    c["profile"] = json!(profile);
    c
}

// Captured, for every profile and backend: an ordinary user passes in both
// families; the proxy UID (and for istio the proxy GID) is refused.
#[test]
fn passes_when_captured_refuses_the_proxy_user() {
    let mut failed = Vec::new();
    for (b, backend) in BACKENDS {
        for (profile, port, proxy) in PROFILES {
            let ctx = format!("[{profile} {b}]");
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (node, pod, conf) = captured_pod(
                    &format!("ok-{}-{b}", &profile[..1]),
                    capture(backend, profile),
                );
                let r = validate(&pod.name, APP, APP, &["--profile", profile]);
                assert_eq!(r.code, 0, "{ctx}: {r}");
                assert_eq!(
                    r.stdout.trim(),
                    format!(
                        "multimesh validate: captured: 198.51.100.254:20001 and \
                         [2001:db8::254]:20001 reached the {profile} listener \
                         127.0.0.1:{port} and [::1]:{port} with its original destination"
                    ),
                    "{ctx}: {r}"
                );
                assert!(r.stderr.is_empty(), "{ctx}: {r}");
                // As root it also dials as the proxy, which must bypass.
                let r = validate(&pod.name, 0, 0, &["--profile", profile]);
                assert_eq!(r.code, 0, "{ctx}: {r}");
                assert!(
                    r.stdout.trim().ends_with(&format!(
                        "with its original destination; the proxy's UID {proxy} bypasses capture"
                    )),
                    "{ctx}: {r}"
                );

                let r = validate(&pod.name, proxy, APP, &["--profile", profile]);
                assert_missing(&r, "proxy UID: running as UID", &ctx);
                assert!(r.stderr.contains("bypassed"), "{ctx}: {r}");
                if profile == "istio" {
                    let r = validate(&pod.name, APP, 1337, &["--profile", profile]);
                    assert_missing(&r, "proxy UID: running as GID 1337", &ctx);
                } else {
                    // linkerd exempts no GID: 1337 is an ordinary group.
                    let r = validate(&pod.name, APP, 1337, &["--profile", profile]);
                    assert_eq!(r.code, 0, "{ctx}: {r}");
                }
                // The other profile's port is not where capture goes.
                let other = if profile == "istio" {
                    "linkerd"
                } else {
                    "istio"
                };
                let r = validate(&pod.name, APP, APP, &["--profile", other]);
                assert_missing(&r, "no redirect: the connection to", &ctx);
                del(&node, &pod, &conf);
            }));
            if let Err(e) = r {
                failed.push(
                    e.downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| format!("{ctx} panic")),
                );
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

// Run as root, the validator checks the proxy's exemption too: a capture
// that exempts another UID/GID than the profile's is caught; without
// CAP_SETUID the check cannot run (exit 1, not a verdict).
#[test]
fn proxy_bypass_checked_as_root() {
    for (b, backend) in BACKENDS {
        let mut cap = capture(backend, "istio");
        cap["proxyUID"] = json!(1500);
        cap["proxyGID"] = json!(1500);
        let (node, pod, conf) = captured_pod(&format!("val-px-{b}"), cap);
        let r = validate(&pod.name, 0, 0, &[]);
        assert_missing(
            &r,
            "proxy UID not bypassed: a connection of the istio proxy's UID 1337 and GID 1337 \
             to 198.51.100.254:20001 was redirected to 127.0.0.1:15001",
            b,
        );
        // Told the pod's real proxy identity, it passes.
        let r = validate(&pod.name, 0, 0, &["--proxy-uid=1500", "--proxy-gid=1500"]);
        assert_eq!(r.code, 0, "{b}: {r}");
        assert!(
            r.stdout.contains("the proxy's UID 1500 bypasses capture"),
            "{b}: {r}"
        );
        // Root without capabilities: the first check passes, the second
        // cannot switch identity.
        let o = Command::new("ip")
            .args(["netns", "exec", &pod.name, "setpriv"])
            .args(["--bounding-set=-all", "--inh-caps=-all", BIN, "validate"])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{b}: {e}");
        assert!(
            e.starts_with(
                "multimesh validate: running as root, but cannot switch to the proxy's UID 1337"
            ),
            "{b}: {e}"
        );
        del(&node, &pod, &conf);
    }
}

// Not captured: a pod attached without capture, and a pod with no route at
// all. Both profiles; --timeout bounds the wait.
#[test]
fn exits_95_without_capture() {
    let node = Node::new("val-none");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], json!({"enabled": false}));
    node.cni("ADD", &conf, &pod.path, "cval", "eth0").ok();
    pod.assert_no_capture("capture disabled");
    let bare = node.pod("bare");
    for (profile, port, _) in PROFILES {
        // The node answers "unreachable" (it forwards, with no route there).
        let r = validate(&pod.name, APP, APP, &["--profile", profile]);
        assert_missing(
            &r,
            &format!(
                "no redirect: the connection to 198.51.100.254:20001 is unreachable; \
                 it was not redirected to 127.0.0.1:{port}"
            ),
            profile,
        );
        let r = validate(&bare.name, APP, APP, &["--profile", profile]);
        assert_missing(
            &r,
            "no redirect: no route to 198.51.100.254 or 2001:db8::254",
            profile,
        );
    }
    // The node drops it silently: --timeout bounds the wait.
    node.exec_ok("ip route add blackhole 198.51.100.254/32");
    for (profile, port, _) in PROFILES {
        let r = validate(
            &pod.name,
            APP,
            APP,
            &["--profile", profile, "--timeout", "2"],
        );
        assert_missing(
            &r,
            &format!(
                "no redirect: the connection to 198.51.100.254:20001 timed out (--timeout 2s); \
                 it was not redirected to 127.0.0.1:{port}"
            ),
            profile,
        );
        assert!(
            r.took >= Duration::from_secs(2) && r.took < Duration::from_secs(4),
            "{profile}: not bounded by --timeout: {r}"
        );
    }
    node.cni("DEL", &conf, &pod.path, "cval", "eth0").ok();
    node.assert_no_leaks();
}

// Redirected somewhere else: to the inbound port, to a port where another
// listener answers, to a port nothing listens on. And a destination the
// pod's capture leaves out, found with the default target and passed with
// --connect.
#[test]
fn wrong_port_and_excluded_destination() {
    let (b, backend) = BACKENDS[0];
    let mut cap = capture(backend, "istio");
    cap["outboundPort"] = json!(15006);
    let (node, pod, conf) = captured_pod(&format!("val-in-{b}"), cap);
    let r = validate(&pod.name, APP, APP, &[]);
    assert_missing(
        &r,
        "wrong port: 198.51.100.254:20001 was redirected to 127.0.0.1:15006, \
         the istio inbound port, not to the outbound port 15001",
        "outbound redirected to the inbound port",
    );
    del(&node, &pod, &conf);

    for (b, backend) in BACKENDS {
        let mut cap = capture(backend, "istio");
        cap["excludeOutboundCIDRs"] = json!(["198.51.100.254/32", "2001:db8::254/128"]);
        let (node, pod, conf) = captured_pod(&format!("val-wp-{b}"), cap);
        // Capture goes to 15001, where something else answers.
        {
            let _other = Listener::start(&pod.name, 15001, false, 2);
            let r = validate(
                &pod.name,
                APP,
                APP,
                &["--port", "15011", "--connect", "203.0.113.200:443"],
            );
            assert_missing(
                &r,
                "wrong port: 203.0.113.200:443 was answered, but not by the listener on 127.0.0.1:15011",
                b,
            );
            // Its arrival is awaited 2 s (validate::ARRIVAL_WAIT), not --timeout.
            assert!(
                r.took >= Duration::from_secs(2) && r.took < Duration::from_secs(4),
                "{b}: {r}"
            );
            // Its own port taken: the check cannot run (not a verdict).
            let r = validate(&pod.name, APP, APP, &["--connect", "203.0.113.200:443"]);
            assert_eq!(r.code, 1, "{b}: {r}");
            assert!(
                r.stderr
                    .starts_with("multimesh validate: cannot listen on 127.0.0.1:15001"),
                "{b}: {r}"
            );
        }
        // Nothing listens where capture sends it.
        let r = validate(
            &pod.name,
            APP,
            APP,
            &["--port", "15011", "--connect", "203.0.113.200:443"],
        );
        assert_missing(
            &r,
            "no redirect: the connection to 203.0.113.200:443 was refused; \
             it was not redirected to 127.0.0.1:15011",
            b,
        );
        // The default targets are excluded from this pod's capture.
        let r = validate(&pod.name, APP, APP, &["--timeout", "2"]);
        assert_missing(
            &r,
            "no redirect: the connection to 198.51.100.254:20001 is unreachable",
            b,
        );
        let r = validate(
            &pod.name,
            APP,
            APP,
            &["--connect", "[2001:db8::254]:20001", "--timeout", "2"],
        );
        assert_missing(
            &r,
            "no redirect: the connection to [2001:db8::254]:20001 ",
            b,
        );
        // A destination it covers passes, in either family.
        for to in ["203.0.113.200:443", "[2001:db8:5::1]:8443"] {
            let r = validate(&pod.name, APP, APP, &["--connect", to]);
            assert_eq!(r.code, 0, "{b} {to}: {r}");
            assert!(
                r.stdout.contains(&format!("captured: {to} reached")),
                "{b}: {r}"
            );
        }
        del(&node, &pod, &conf);
    }
}

// The command line: strict options, --help, bad values exit 1 before
// anything is opened.
#[test]
fn command_line() {
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("validate")
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--profile",
        "--timeout",
        "--port",
        "--connect",
        "--proxy-uid",
        "95",
    ] {
        assert!(help.contains(opt), "{help}");
    }
    for (args, msg) in [
        (&["--bogus"][..], "unknown option --bogus"),
        (&["--timeout"], "missing argument"),
        (
            &["--timeout", "0"],
            "--timeout: \"0\" is not a number from 1 to 300",
        ),
        (
            &["--profile", "consul"],
            "--profile: \"consul\" is not istio or linkerd",
        ),
        (
            &["--connect", "127.0.0.1:15001"],
            "not an address outbound capture applies to",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.starts_with("multimesh validate: ") && e.contains(msg),
            "{args:?}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // Listed in the top-level help.
    let o = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("multimesh validate"));
}
