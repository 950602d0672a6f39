//! Golden-file tests of the rendered capture rules.
//!
//! Each case is a network config in `tests/golden/<case>.json`. Its
//! `capture` object is rendered with `multimesh::capture::render` for both
//! backends and compared with `tests/golden/<case>.<backend>.golden`
//! (IPv4 only) and `tests/golden/<case>.<backend>.v6.golden` (IPv4 + IPv6).
//!
//! After an intended change to the rules, regenerate the files with
//!
//!     UPDATE_GOLDEN=1 cargo test --test golden
//!
//! and review the diff (`git diff tests/golden`) before committing it.
//!
//! Besides the golden comparison, this file asserts properties that must hold
//! for every case (TCP only, exclusions before redirects, ...) and that bad
//! values are refused with CNI error 7 naming the field.

use multimesh::capture::{Backend, CaptureConfig};
use multimesh::config::NetConf;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (case, render without IPv6, render with IPv6)
const CASES: &[(&str, bool, bool)] = &[
    ("istio_defaults", true, true),
    ("linkerd_defaults", true, false),
    ("custom_ports", true, false),
    ("include_inbound_ports", true, false),
    ("inbound_off", true, false),
    ("exclude_ports", true, false),
    ("include_outbound_cidrs", true, true),
    ("exclude_outbound_cidrs", true, true),
    ("exclude_interfaces", true, false),
    ("include_outbound_ports", true, false),
    ("tproxy", true, true),
    ("tproxy_include_ports", true, false),
    ("dns_capture", true, true),
    ("dns_capture_linkerd", true, false),
    ("drop_invalid", true, true),
    ("reroute_interfaces", true, true),
    ("all_modes", true, true),
];

const BACKENDS: [Backend; 2] = [Backend::Iptables, Backend::Nftables];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

fn load(case: &str) -> CaptureConfig {
    let p = golden_dir().join(format!("{case}.json"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    NetConf::parse(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .capture
}

fn golden_name(case: &str, backend: Backend, ipv6: bool) -> String {
    format!(
        "{case}.{}{}.golden",
        backend.name(),
        if ipv6 { ".v6" } else { "" }
    )
}

fn render_with(case: &str, backend: Backend, ipv6: bool) -> String {
    let mut cfg = load(case);
    cfg.backend = backend;
    multimesh::capture::render(&cfg, ipv6)
}

/// Every (case, backend, ipv6) rendering this file covers.
fn all_renderings() -> Vec<(String, Backend, bool, String)> {
    let mut out = Vec::new();
    for &(case, v4, v6) in CASES {
        for backend in BACKENDS {
            for (want, ipv6) in [(v4, false), (v6, true)] {
                if want {
                    out.push((
                        case.to_string(),
                        backend,
                        ipv6,
                        render_with(case, backend, ipv6),
                    ));
                }
            }
        }
    }
    out
}

/// A short line diff for failure messages.
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut s = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            s.push_str(&format!(
                "  line {}:\n    golden: {}\n    actual: {}\n",
                i + 1,
                x.unwrap_or(&"<none>"),
                y.unwrap_or(&"<none>")
            ));
        }
    }
    s
}

#[test]
fn golden_files() {
    let dir = golden_dir();
    let mut failures = Vec::new();
    for (case, backend, ipv6, actual) in all_renderings() {
        let path = dir.join(golden_name(&case, backend, ipv6));
        if updating() {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{} differs:\n{}",
                path.display(),
                diff(&expected, &actual)
            )),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (if intended: UPDATE_GOLDEN=1 cargo test --test golden, then review git diff)\n{}",
        failures.join("\n")
    );
}

/// No stray golden files: each one belongs to a case and rendering above.
#[test]
fn golden_files_are_all_used() {
    let mut expected: Vec<String> = Vec::new();
    for &(case, v4, v6) in CASES {
        expected.push(format!("{case}.json"));
        for backend in BACKENDS {
            if v4 {
                expected.push(golden_name(case, backend, false));
            }
            if v6 {
                expected.push(golden_name(case, backend, true));
            }
        }
    }
    if updating() {
        return;
    }
    let mut present: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(present, expected);
}

/// The `multimesh rules` command prints exactly what `capture::render` renders.
#[test]
fn rules_command_matches_render() {
    for (case, backend, ipv6, rendered) in all_renderings() {
        let conf = golden_dir().join(format!("{case}.json"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_multimesh"));
        cmd.args(["rules", "--config"])
            .arg(&conf)
            .args(["--backend", backend.name()]);
        if ipv6 {
            cmd.arg("--ipv6");
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            rendered,
            "{case} {} v6={ipv6}",
            backend.name()
        );
    }
}

/// The command line is strict: an unknown flag, a stray argument, a
/// missing or repeated value is an error (exit 1, nothing on stdout);
/// every subcommand answers `--help`.
#[test]
fn command_line_is_strict() {
    let conf = golden_dir().join("custom_ports.json");
    let conf = conf.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_multimesh"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for (args, want) in [
        (
            vec!["rules", "--config", conf, "--bogus"],
            "unknown option --bogus",
        ),
        (vec!["rules", "--config", conf, "stray"], "stray"),
        (vec!["rules", "--config"], "missing argument"),
        (
            vec!["rules", "--config", conf, "--config", conf],
            "given twice",
        ),
        (vec!["rules", "--config", conf, "-x"], "-x"),
        (vec!["inspect", "--netns"], "missing argument"),
        (
            vec!["inspect", "--netns", "/proc/self/ns/net", "--all"],
            "unknown option --all",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    for sub in ["rules", "inspect"] {
        let o = run(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with(&format!("Usage: multimesh {sub}")),
            "{sub}"
        );
    }
}

/// Capture is TCP only: nothing ever matches UDP or ICMP, and every
/// redirect is restricted to TCP.
#[test]
fn only_tcp_is_captured() {
    for (case, backend, ipv6, text) in all_renderings() {
        let cfg = load(&case);
        let lower = text.to_lowercase();
        for bad in ["icmp", "sctp", "-p all", "l4proto 1 "] {
            assert!(
                !lower.contains(bad),
                "{case} {} v6={ipv6}: {bad:?} in\n{text}",
                backend.name()
            );
        }
        // UDP only with dnsCapture, and then only port 53 (the app's
        // queries, the proxy's upstream ones and their replies) and the
        // proxy's DNS port.
        for l in lower.lines().filter(|l| l.contains("udp")) {
            assert!(cfg.dns_capture, "{case}: UDP without dnsCapture: {l}");
            let port = [" 53 ", &format!(" {} ", cfg.dns_port)]
                .iter()
                .any(|p| format!("{l} ").contains(p));
            let zone_jump = l.contains("-j multimesh_dns_zone") || l.contains("jump dns_zone");
            assert!(port || zone_jump, "{case}: UDP beyond DNS: {l}");
        }
        for l in text.lines() {
            let redirect = l.contains("-j REDIRECT") || l.contains("redirect to");
            if !redirect {
                continue;
            }
            let tcp = match backend {
                Backend::Iptables => l.contains("-p tcp"),
                Backend::Nftables => l.contains("meta l4proto tcp") || l.contains("tcp dport"),
            };
            let dns = cfg.dns_capture
                && (l.contains("-p udp -m udp --dport 53 ") || l.contains("udp dport 53 "));
            assert!(tcp || dns, "{case}: redirect not limited to TCP: {l}");
        }
        // The built-in hooks only ever jump for TCP, DNS (UDP port 53, in
        // nat and raw) and, with dropInvalid, to the invalid-drop.
        for l in text.lines() {
            if l.starts_with("-A PREROUTING") || l.starts_with("-A OUTPUT") {
                let ok = l.contains("-p tcp")
                    || (cfg.dns_capture && l.contains("-p udp"))
                    || (cfg.drop_invalid && l == "-A PREROUTING -j MULTIMESH_MANGLE_IN");
                assert!(ok, "{case}: {l}");
            }
        }
    }
}

fn iptables_lines(cfg_case: &str, ipv6: bool) -> Vec<String> {
    render_with(cfg_case, Backend::Iptables, ipv6)
        .lines()
        .map(String::from)
        .collect()
}

/// The lines of one nft chain body (without the braces), trimmed.
fn nft_chain(text: &str, chain: &str) -> Vec<String> {
    let head = format!("chain {chain} {{");
    let mut out = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        let t = l.trim();
        if t == head {
            inside = true;
        } else if inside && t == "}" {
            return out;
        } else if inside {
            out.push(t.to_string());
        }
    }
    panic!("chain {chain} not found in\n{text}");
}

fn pos(lines: &[String], want: &str) -> usize {
    lines
        .iter()
        .position(|l| l == want)
        .unwrap_or_else(|| panic!("{want:?} not found in\n{}", lines.join("\n")))
}

#[test]
fn excluded_interfaces_return_first() {
    for ipv6 in [false, true] {
        let l = iptables_lines("exclude_interfaces", ipv6);
        for i in ["net1", "net2"] {
            let ret_in = pos(&l, &format!("-A MULTIMESH_INBOUND -i {i} -j RETURN"));
            let ret_out = pos(&l, &format!("-A MULTIMESH_OUTPUT -o {i} -j RETURN"));
            // Before anything that could redirect in the same chain.
            let first_in_jump = pos(&l, "-A MULTIMESH_INBOUND -p tcp -j MULTIMESH_IN_REDIRECT");
            assert!(ret_in < first_in_jump, "{l:#?}");
            let first_out = l
                .iter()
                .position(|x| x.starts_with("-A MULTIMESH_OUTPUT"))
                .unwrap();
            assert!(ret_out <= first_out + 1, "{l:#?}");
        }
        // An exclusion never matches by output interface in the inbound
        // chain, nor by input interface in the output chain.
        assert!(!l.iter().any(|x| x.starts_with("-A MULTIMESH_INBOUND -o")));
        assert!(!l.iter().any(|x| x.starts_with("-A MULTIMESH_OUTPUT -i")));

        let t = render_with("exclude_interfaces", Backend::Nftables, ipv6);
        let inb = nft_chain(&t, "inbound");
        let outb = nft_chain(&t, "outbound");
        assert_eq!(inb[0], "iifname \"net1\" return", "{t}");
        assert_eq!(inb[1], "iifname \"net2\" return", "{t}");
        assert_eq!(outb[0], "oifname \"net1\" return", "{t}");
        assert_eq!(outb[1], "oifname \"net2\" return", "{t}");
    }
    // Without the option no interface but lo is named.
    let l = iptables_lines("istio_defaults", true);
    for x in &l {
        for w in [" -i ", " -o "] {
            if let Some(rest) = x.split(w).nth(1) {
                assert!(rest.starts_with("lo "), "{x}");
            }
        }
    }
}

/// Semantics spelled out on the default istio rules (iptables form).
#[test]
fn istio_defaults_semantics() {
    let l = iptables_lines("istio_defaults", false);
    let has = |s: &str| l.iter().any(|x| x == s);
    // Both hooks jump to our chains for TCP.
    assert!(has("-A PREROUTING -p tcp -j MULTIMESH_INBOUND"));
    assert!(has("-A OUTPUT -p tcp -j MULTIMESH_OUTPUT"));
    // Inbound to everything but the proxy's own ports goes to 15006.
    for p in [15008, 15020, 15021, 15090] {
        assert!(
            has(&format!(
                "-A MULTIMESH_INBOUND -p tcp -m tcp --dport {p} -j RETURN"
            )),
            "{l:#?}"
        );
    }
    assert!(has(
        "-A MULTIMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"
    ));
    assert!(has(
        "-A MULTIMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001"
    ));
    // The proxy (uid and gid 1337) is never captured.
    assert!(has(
        "-A MULTIMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN"
    ));
    assert!(has(
        "-A MULTIMESH_OUTPUT -m owner --gid-owner 1337 -j RETURN"
    ));
    // Everything else is redirected, last.
    let last_out = l
        .iter()
        .rev()
        .find(|x| x.starts_with("-A MULTIMESH_OUTPUT"))
        .unwrap();
    assert_eq!(last_out, "-A MULTIMESH_OUTPUT -j MULTIMESH_REDIRECT");
    // No IPv6 section without --ipv6, one with.
    assert!(!l.iter().any(|x| x.contains("::")));
    let t6 = render_with("istio_defaults", Backend::Iptables, true);
    assert!(t6.contains("# ip6tables-restore --noflush (IPv6)"));
    assert!(t6.contains("-A MULTIMESH_OUTPUT -d ::1/128 -j RETURN"));
    assert_eq!(t6.matches("COMMIT").count(), 2);
    // nftables leaves IPv6 alone on a v4-only pod.
    let n4 = render_with("istio_defaults", Backend::Nftables, false);
    assert_eq!(n4.matches("meta nfproto ipv6 return").count(), 2, "{n4}");
    let n6 = render_with("istio_defaults", Backend::Nftables, true);
    assert!(!n6.contains("nfproto"), "{n6}");
}

#[test]
fn inbound_off_has_no_inbound_jump() {
    let l = iptables_lines("inbound_off", false);
    assert!(!l.iter().any(|x| x.starts_with("-A PREROUTING")), "{l:#?}");
    assert!(
        !l.iter().any(|x| x.starts_with("-A MULTIMESH_INBOUND")),
        "{l:#?}"
    );
    // Outbound capture is still on.
    assert!(l
        .iter()
        .any(|x| x == "-A OUTPUT -p tcp -j MULTIMESH_OUTPUT"));
    let t = render_with("inbound_off", Backend::Nftables, false);
    assert!(!nft_chain(&t, "prerouting")
        .iter()
        .any(|x| x.contains("jump")));
    assert!(nft_chain(&t, "inbound").is_empty(), "{t}");
}

#[test]
fn cidrs_go_to_their_own_family() {
    for case in ["include_outbound_cidrs", "exclude_outbound_cidrs"] {
        let t = render_with(case, Backend::Iptables, true);
        let (v4, v6) = t.split_once("# ip6tables-restore").unwrap();
        for l in v4.lines().filter(|l| l.contains(" -d ")) {
            assert!(
                !l.contains(':'),
                "{case}: IPv6 address in the IPv4 payload: {l}"
            );
        }
        for l in v6.lines().filter(|l| l.contains(" -d ")) {
            assert!(
                l.contains(':'),
                "{case}: IPv4 address in the IPv6 payload: {l}"
            );
        }
        // v4-only rendering drops the IPv6 prefixes entirely.
        let t4 = render_with(case, Backend::Iptables, false);
        assert!(!t4.contains("2001:db8"), "{case}: {t4}");
        let n4 = render_with(case, Backend::Nftables, false);
        assert!(!n4.contains("2001:db8"), "{case}: {n4}");
        let n6 = render_with(case, Backend::Nftables, true);
        assert!(n6.contains("ip6 daddr 2001:db8"), "{case}: {n6}");
    }
    // Include list: no catch-all redirect, one redirect per prefix.
    let t = render_with("include_outbound_cidrs", Backend::Iptables, true);
    assert!(
        !t.contains("-A MULTIMESH_OUTPUT -j MULTIMESH_REDIRECT"),
        "{t}"
    );
    for want in [
        "-A MULTIMESH_OUTPUT -d 198.51.100.0/24 -j MULTIMESH_REDIRECT",
        "-A MULTIMESH_OUTPUT -d 203.0.113.7/32 -j MULTIMESH_REDIRECT",
        "-A MULTIMESH_OUTPUT -d 2001:db8:1::/64 -j MULTIMESH_REDIRECT",
        "-A MULTIMESH_OUTPUT -d 2001:db8::5/128 -j MULTIMESH_REDIRECT",
    ] {
        assert!(t.lines().any(|l| l == want), "{want} missing in\n{t}");
    }
    // Exclude list: RETURN before the catch-all redirect.
    let l = iptables_lines("exclude_outbound_cidrs", false);
    let ret = pos(&l, "-A MULTIMESH_OUTPUT -d 198.51.100.0/25 -j RETURN");
    let all = pos(&l, "-A MULTIMESH_OUTPUT -j MULTIMESH_REDIRECT");
    assert!(ret < all);
}

/// Bad values are refused with CNI error 7 and a message naming the field.
#[test]
fn bad_values_are_refused() {
    let cases: &[(&str, serde_json::Value)] = &[
        (
            "capture.inboundPort",
            serde_json::json!({"inboundPort": 70000}),
        ),
        ("capture.inboundPort", serde_json::json!({"inboundPort": 0})),
        (
            "capture.outboundPort",
            serde_json::json!({"outboundPort": "70000"}),
        ),
        (
            "capture.excludeInboundPorts",
            serde_json::json!({"excludeInboundPorts": [80, 70000]}),
        ),
        (
            "capture.includeInboundPorts",
            serde_json::json!({"includeInboundPorts": "80,-1"}),
        ),
        (
            "capture.excludeOutboundPorts",
            serde_json::json!({"excludeOutboundPorts": ["53 -j ACCEPT"]}),
        ),
        (
            "capture.includeOutboundPorts",
            serde_json::json!({"includeOutboundPorts": [65536]}),
        ),
        (
            "capture.excludeOutboundCIDRs",
            serde_json::json!({"excludeOutboundCIDRs": ["10.0.0.0/8 -j ACCEPT"]}),
        ),
        (
            "capture.includeOutboundCIDRs",
            serde_json::json!({"includeOutboundCIDRs": ["198.51.100.0/24; flush ruleset"]}),
        ),
        (
            "capture.excludeInterfaces",
            serde_json::json!({"excludeInterfaces": ["a b"]}),
        ),
        (
            "capture.excludeInterfaces",
            serde_json::json!({"excludeInterfaces": ["sixteen-bytes-xx"]}),
        ),
        (
            "capture.excludeInterfaces",
            serde_json::json!({"excludeInterfaces": ["net1\" accept"]}),
        ),
        ("capture.proxyUID", serde_json::json!({"proxyUID": -1})),
        (
            "capture.proxyGID",
            serde_json::json!({"proxyGID": "1337 -j ACCEPT"}),
        ),
        (
            "capture.interceptionMode",
            serde_json::json!({"interceptionMode": "tproxy"}),
        ),
        (
            "capture.interceptionMode",
            serde_json::json!({"interceptionMode": "TPROXY --on-port 22"}),
        ),
        (
            "capture.interceptionMode",
            serde_json::json!({"interceptionMode": 1}),
        ),
        (
            "capture.dnsCapture",
            serde_json::json!({"dnsCapture": "yes"}),
        ),
        ("capture.dnsPort", serde_json::json!({"dnsPort": 0})),
        (
            "capture.dnsPort",
            serde_json::json!({"dnsPort": "53; flush"}),
        ),
        ("capture.dropInvalid", serde_json::json!({"dropInvalid": 1})),
        (
            "capture.rerouteInterfaces",
            serde_json::json!({"rerouteInterfaces": ["eth0\" accept"]}),
        ),
        (
            "capture.rerouteInterfaces",
            serde_json::json!({"rerouteInterfaces": ["sixteen-bytes-xx"]}),
        ),
    ];
    for (field, capture) in cases {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "bad", "type": "multimesh",
            "capture": capture});
        let bytes = serde_json::to_vec(&conf).unwrap();
        let e = match NetConf::parse(&bytes) {
            Ok(c) => panic!(
                "{capture} accepted; would render:\n{}",
                multimesh::capture::render(&c.capture, true)
            ),
            Err(e) => e,
        };
        assert_eq!(e.code, 7, "{capture}: {e}");
        assert!(
            e.msg.contains(field),
            "{capture}: {:?} lacks {field}",
            e.msg
        );

        // The `rules` command refuses it too and prints no rules.
        let mut child = Command::new(env!("CARGO_BIN_EXE_multimesh"))
            .args(["rules", "--config", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{capture}");
        assert!(out.stdout.is_empty(), "{capture}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(field),
            "{capture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The limits themselves are accepted.
    let ok = serde_json::json!({"cniVersion": "1.0.0", "capture": {
        "inboundPort": 65535, "outboundPort": 1, "excludeInterfaces": ["fifteen-bytes-x"]}});
    let c = NetConf::parse(&serde_json::to_vec(&ok).unwrap()).unwrap();
    assert_eq!(c.capture.inbound_port, 65535);
    assert_eq!(c.capture.exclude_interfaces, ["fifteen-bytes-x"]);
}

/// `enabled: false` renders no rules at all.
#[test]
fn disabled_renders_nothing() {
    let conf = br#"{"cniVersion": "1.0.0", "capture": {"enabled": false}}"#;
    let mut c = NetConf::parse(conf).unwrap().capture;
    for b in BACKENDS {
        c.backend = b;
        let t = multimesh::capture::render(&c, true);
        assert!(!t.contains("MULTIMESH") && !t.contains("table"), "{t}");
    }
}

/// `rules --pod` / `--annotations`: the pod is read as the API server's
/// answer is (annotations are strings); a pod of another shape, or a bad
/// mesh annotation, is refused naming where, and prints no rules.
#[test]
fn rules_for_a_pod_document() {
    let dir = std::env::temp_dir().join(format!("mm-golden-pod-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = golden_dir().join("istio_defaults.json");
    let run = |flag: &str, doc: &str| {
        let f = dir.join("doc.yaml");
        std::fs::write(&f, doc).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_multimesh"))
            .args(["rules", "--config"])
            .arg(&conf)
            .arg(flag)
            .arg(&f)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(
        "--annotations",
        "traffic.sidecar.istio.io/excludeInboundPorts: \"8080\"\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("--dport 8080 -j RETURN"), "{out}");
    let pod = "metadata:\n  namespace: apps\n  annotations:\n    sidecar.istio.io/status: '{}'\n\
               spec:\n  containers:\n  - name: app\n  - name: istio-proxy\n";
    let (ok, out, err) = run("--pod", pod);
    assert!(ok && out.contains("MULTIMESH_INBOUND"), "{out}{err}");
    for (flag, doc, want) in [
        (
            "--annotations",
            "traffic.sidecar.istio.io/excludeInboundPorts: 8080\n",
            "metadata.annotations.traffic.sidecar.istio.io/excludeInboundPorts: invalid type: integer `8080`, expected a string",
        ),
        (
            "--pod",
            "metadata:\n  annotations: [a]\n",
            "metadata.annotations: invalid type: sequence",
        ),
        (
            "--pod",
            "spec:\n  containers: [[istio-proxy]]\n",
            "spec.containers[0]: invalid type: sequence, expected an object",
        ),
        (
            "--annotations",
            "traffic.sidecar.istio.io/excludeInboundPorts: \"80 -j ACCEPT\"\n",
            "traffic.sidecar.istio.io/excludeInboundPorts: \"80 -j ACCEPT\" is not a port",
        ),
    ] {
        let (ok, out, err) = run(flag, doc);
        assert!(!ok && out.is_empty(), "{doc}: {out}");
        assert!(err.contains(want), "{doc}: {err:?} lacks {want:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
