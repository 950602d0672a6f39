//! Mesh capture end to end: real pod network namespaces, real bridges and
//! macvlan from Debian's reference plugins, real iptables (legacy and nft
//! variants) and nftables, and real TCP/UDP traffic through mm-probe.
//!
//! Every scenario runs for each capture backend (see `backends()`), each in
//! a fresh node netns; a failure names the backend. The probe listener
//! answers "served_by=PORT orig=ORIGDST peer=PEER", orig being
//! SO_ORIGINAL_DST when the connection was redirected and "-" otherwise.
//!
//! Address plan (documentation ranges, see tests/common/mod.rs):
//!   cluster bridge mm0 198.51.100.0/25, node gateway 198.51.100.1
//!   second bridge  mm1 198.51.100.128/25, node gateway 198.51.100.129
//!   macvlan on mmv0    203.0.113.0/25, node peer mmv0p 203.0.113.126

mod common;
use common::*;
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

const IN_PORT: u16 = 15006;
const OUT_PORT: u16 = 15001;

/// The capture configs under test: (name, capture object).
fn backends() -> Vec<(&'static str, Value)> {
    vec![
        (
            "iptables-legacy",
            json!({"backend": "iptables", "iptablesVariant": "legacy"}),
        ),
        (
            "iptables-nft",
            json!({"backend": "iptables", "iptablesVariant": "nft"}),
        ),
        ("nftables", json!({"backend": "nftables"})),
    ]
}

/// Run `f` for every backend; report every backend that failed, not just
/// the first.
fn for_each_backend(f: impl Fn(&str, &Value)) {
    let mut failed = Vec::new();
    for (name, cap) in backends() {
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| f(name, &cap)));
        eprintln!("[{name}] took {:.1}s", t.elapsed().as_secs_f64());
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            failed.push(format!("[{name}] {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "failed for {} backend(s):\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// `base` with the keys of `extra` set.
fn with(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// "legacy" / "nft" for the iptables backend, None for nftables.
fn variant(cap: &Value) -> Option<&str> {
    match cap["backend"].as_str() {
        Some("iptables") => cap["iptablesVariant"].as_str(),
        _ => None,
    }
}

/// Drop comment lines and zero packet/byte counters, so two listings of the
/// same rules compare equal.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut l = line.to_string();
        // iptables-save chain counters: ":CHAIN POLICY [p:b]".
        if l.starts_with(':') {
            if let Some(i) = l.rfind(" [") {
                l.truncate(i);
                l.push_str(" [0:0]");
            }
        }
        // nft: "counter packets N bytes M".
        let words: Vec<&str> = l.split(' ').collect();
        let mut w2 = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if (words[i] == "packets" || words[i] == "bytes") && i + 1 < words.len() {
                w2.push(words[i].to_string());
                w2.push("N".into());
                i += 2;
            } else {
                w2.push(words[i].to_string());
                i += 1;
            }
        }
        out.push_str(&w2.join(" "));
        out.push('\n');
    }
    out
}

/// The pod's NAT rules as the backend shows them (IPv4 nat table for
/// iptables, the whole ruleset for nftables), normalized.
fn nat_rules(pod: &Pod, cap: &Value) -> String {
    normalize(&match variant(cap) {
        Some(v) => pod.exec_ok(&format!("iptables-{v}-save -t nat")),
        None => pod.exec_ok("nft list ruleset"),
    })
}

/// Every table the backend shows in the pod, normalized.
fn all_rules(pod: &Pod, cap: &Value) -> String {
    normalize(&match variant(cap) {
        Some(v) => pod.exec_ok(&format!("iptables-{v}-save; ip6tables-{v}-save")),
        None => pod.exec_ok("nft list ruleset"),
    })
}

/// An independent oracle for the iptables-nft variant: the `iptables`
/// crate asks `iptables -C` (the tool's own rule parser and matcher, not
/// multimesh's save-text diff) for each `-A` line of a golden file.
/// Returns the lines whose presence is not `present`.
fn xt_oracle(pod: &Pod, golden: &str, present: bool) -> Vec<String> {
    let text = std::fs::read_to_string(format!("tests/golden/{golden}")).unwrap();
    let path = pod.path.clone();
    std::thread::spawn(move || {
        // setns changes this thread only; the tool runs in the pod netns.
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let ipt = iptables::new(false).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("-A "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(chain, rule)| ipt.exists("nat", chain, rule).unwrap() != present)
            .map(|(chain, rule)| format!("-A {chain} {rule}"))
            .collect()
    })
    .join()
    .unwrap()
}

/// Does the backend show multimesh's capture in the pod?
fn has_capture(pod: &Pod, cap: &Value) -> bool {
    match variant(cap) {
        Some(_) => nat_rules(pod, cap).contains(":MULTIMESH_OUTPUT"),
        None => nat_rules(pod, cap).contains("table inet multimesh"),
    }
}

/// The address (no prefix length) of a pod interface, IPv4 or IPv6.
fn addr_of(pod: &Pod, ifname: &str, v6: bool) -> String {
    let a = pod.addrs(ifname);
    a.iter()
        .find(|x| x.contains(':') == v6)
        .unwrap_or_else(|| {
            panic!(
                "no {} address on {ifname}: {a:?}",
                if v6 { "v6" } else { "v4" }
            )
        })
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The first address of a CNI result (no prefix length), of one family.
fn result_addr(res: &Value, v6: bool) -> String {
    res["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {res}"))
        .iter()
        .filter_map(|i| i["address"].as_str())
        .find(|a| a.contains(':') == v6)
        .unwrap_or_else(|| panic!("no address in {res}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Connect and require an answer.
fn answer(ns: &str, addr: &str, port: u16, udp: bool, uid: Option<u32>) -> String {
    connect(ns, addr, port, udp, uid).unwrap_or_else(|e| {
        panic!("connect from {ns} to {addr}:{port} (udp={udp}, uid={uid:?}) failed: {e}")
    })
}

fn sock(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// Assert an answer came from `served_by` with original destination `orig`
/// ("-" for not redirected).
fn assert_served(line: &str, served_by: u16, orig: &str, what: &str) {
    assert_eq!(
        field(line, "served_by"),
        served_by.to_string(),
        "{what}: wrong listener: {line}"
    );
    assert_eq!(field(line, "orig"), orig, "{what}: wrong orig: {line}");
}

/// Short node tags: netns names stay readable.
fn tag(test: &str, backend: &str) -> String {
    let b = match backend {
        "iptables-legacy" => "ipl",
        "iptables-nft" => "ipn",
        _ => "nft",
    };
    format!("{test}-{b}")
}

// a. Inbound TCP on every pod interface goes to the proxy's inbound port.
#[test]
fn inbound_redirected_on_every_interface() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("in", name));
        let pod = node.pod("p");
        let conf = node.meta(
            vec![node.cluster_bridge(), node.second_bridge(), node.macvlan()],
            cap.clone(),
        );
        let res = node.cni("ADD", &conf, &pod.path, "cin", "eth0");
        let ip0 = result_addr(res.ok(), false);
        assert_eq!(addr_of(&pod, "eth0", false), ip0);
        let mut links = pod.links();
        links.sort();
        assert_eq!(links, ["eth0", "net1", "net2"]);
        assert!(has_capture(&pod, cap), "{}", nat_rules(&pod, cap));

        let proxy = Listener::start(&pod.name, IN_PORT, false, 3);
        let _app = Listener::start(&pod.name, 8080, false, 3);
        for (ifname, peer) in [
            ("eth0", "198.51.100.1"),
            ("net1", "198.51.100.129"),
            ("net2", "203.0.113.126"),
        ] {
            let ip = addr_of(&pod, ifname, false);
            let a = answer(&node.name, &ip, 8080, false, None);
            assert_served(
                &a,
                IN_PORT,
                &sock(&ip, 8080),
                &format!("inbound via {ifname}"),
            );
            // The source is not rewritten.
            assert!(
                field(&a, "peer").starts_with(&format!("{peer}:")),
                "inbound via {ifname}: {a}"
            );
        }
        drop(proxy);
        node.cni("CHECK", &conf, &pod.path, "cin", "eth0").ok();
        node.cni("DEL", &conf, &pod.path, "cin", "eth0").ok();
        assert!(pod.links().is_empty(), "{:?}", pod.links());
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// b. Outbound TCP the app opens goes to the proxy's outbound port.
#[test]
fn outbound_redirected() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("out", name));
        let pod = node.pod("p");
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        node.cni("ADD", &conf, &pod.path, "cout", "eth0").ok();
        let _proxy = Listener::start(&pod.name, OUT_PORT, false, 2);
        // Nothing listens on the node: only the redirect can answer.
        let a = answer(&pod.name, "198.51.100.1", 80, false, None);
        assert_served(&a, OUT_PORT, "198.51.100.1:80", "outbound to the gateway");
        // An address off the pod's subnets, through the default route.
        let a = answer(&pod.name, "203.0.113.200", 443, false, None);
        assert_served(&a, OUT_PORT, "203.0.113.200:443", "outbound off-subnet");
        let oracle = name == "iptables-nft";
        if oracle {
            let golden = "istio_defaults.iptables.golden";
            let missing = xt_oracle(&pod, golden, true);
            assert!(missing.is_empty(), "iptables -C misses {missing:?}");
            // The oracle can say no: a rule with another port is absent.
            let ipt_no = {
                let path = pod.path.clone();
                std::thread::spawn(move || {
                    let ns = std::fs::File::open(&path).unwrap();
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    iptables::new(false)
                        .unwrap()
                        .exists(
                            "nat",
                            "MULTIMESH_REDIRECT",
                            "-p tcp -j REDIRECT --to-ports 15002",
                        )
                        .unwrap()
                })
                .join()
                .unwrap()
            };
            assert!(
                !ipt_no,
                "iptables -C found a rule that was never programmed"
            );
        }
        node.cni("DEL", &conf, &pod.path, "cout", "eth0").ok();
        if oracle {
            let left = xt_oracle(&pod, "istio_defaults.iptables.golden", false);
            assert!(
                left.is_empty(),
                "iptables -C still finds {left:?} after DEL"
            );
        }
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// c. The proxy's own traffic (uid/gid 1337) is never captured.
#[test]
fn proxy_uid_not_captured() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("uid", name));
        let pod = node.pod("p");
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        node.cni("ADD", &conf, &pod.path, "cuid", "eth0").ok();
        let _upstream = Listener::start(&node.name, 9090, false, 3);
        let _proxy = Listener::start(&pod.name, OUT_PORT, false, 2);
        let a = answer(&pod.name, "198.51.100.1", 9090, false, Some(1337));
        assert_served(&a, 9090, "-", "uid 1337 to the node");
        // uid and gid each exempt on their own (istio matches both).
        for (uid, gid) in [(1337, 1000), (1000, 1337)] {
            let a = sh_ok(&format!(
                "ip netns exec {} {PROBE} connect --addr 198.51.100.1 --port 9090 \
                 --timeout 5 --uid {uid} --gid {gid}",
                pod.name
            ));
            assert_served(
                a.trim(),
                9090,
                "-",
                &format!("uid {uid} gid {gid} to the node"),
            );
        }
        for uid in [1000, 0] {
            let a = answer(&pod.name, "198.51.100.1", 9090, false, Some(uid));
            assert_served(
                &a,
                OUT_PORT,
                "198.51.100.1:9090",
                &format!("uid {uid} to the node"),
            );
        }
        node.cni("DEL", &conf, &pod.path, "cuid", "eth0").ok();
        node.assert_no_leaks();
    });
}

// d. UDP is never touched, in either direction.
#[test]
fn udp_untouched() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("udp", name));
        let pod = node.pod("p");
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        let res = node.cni("ADD", &conf, &pod.path, "cudp", "eth0");
        let ip = result_addr(res.ok(), false);
        // TCP listeners on the capture ports would answer a wrong redirect.
        let _tin = Listener::start(&pod.name, IN_PORT, false, 1);
        let _app = Listener::start(&pod.name, 8080, true, 1);
        let a = answer(&node.name, &ip, 8080, true, None);
        assert_served(&a, 8080, "-", "inbound UDP");
        let _upstream = Listener::start(&node.name, 9090, true, 1);
        let a = answer(&pod.name, "198.51.100.1", 9090, true, None);
        assert_served(&a, 9090, "-", "outbound UDP");
        let rules = nat_rules(&pod, cap).to_lowercase();
        assert!(has_capture(&pod, cap));
        for bad in ["udp", "icmp"] {
            assert!(!rules.contains(bad), "{bad} in the rules:\n{rules}");
        }
        node.cni("DEL", &conf, &pod.path, "cudp", "eth0").ok();
        node.assert_no_leaks();
    });
}

// e. excludeInboundPorts, excludeOutboundCIDRs and excludeInterfaces.
#[test]
fn exclusions() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("excl", name));
        let pod = node.pod("p");
        let cap = with(
            cap,
            json!({"excludeInboundPorts": [8081], "excludeOutboundCIDRs": ["198.51.100.0/25"],
                   "excludeInterfaces": ["net1"]}),
        );
        let conf = node.meta(
            vec![node.cluster_bridge(), node.second_bridge()],
            cap.clone(),
        );
        node.cni("ADD", &conf, &pod.path, "cexcl", "eth0").ok();
        let eth0 = addr_of(&pod, "eth0", false);
        let net1 = addr_of(&pod, "net1", false);

        let _tin = Listener::start(&pod.name, IN_PORT, false, 2);
        let _app = Listener::start(&pod.name, 8080, false, 2);
        let _app2 = Listener::start(&pod.name, 8081, false, 1);
        let _tout = Listener::start(&pod.name, OUT_PORT, false, 2);
        let _upstream = Listener::start(&node.name, 9090, false, 2);

        // Inbound: the excluded port is direct, others redirected.
        let a = answer(&node.name, &eth0, 8081, false, None);
        assert_served(&a, 8081, "-", "inbound to excluded port 8081");
        let a = answer(&node.name, &eth0, 8080, false, None);
        assert_served(&a, IN_PORT, &sock(&eth0, 8080), "inbound via eth0");
        // The excluded interface is direct.
        let a = answer(&node.name, &net1, 8080, false, None);
        assert_served(&a, 8080, "-", "inbound via excluded net1");

        // Outbound: the excluded CIDR is direct, others redirected.
        let a = answer(&pod.name, "198.51.100.1", 9090, false, None);
        assert_served(&a, 9090, "-", "outbound to excluded 198.51.100.0/25");
        let a = answer(&pod.name, "203.0.113.200", 80, false, None);
        assert_served(&a, OUT_PORT, "203.0.113.200:80", "outbound elsewhere");
        // Out of the excluded interface (net1's subnet is not excluded).
        let a = answer(&pod.name, "198.51.100.129", 9090, false, None);
        assert_served(&a, 9090, "-", "outbound via excluded net1");
        // Nothing listens on port 80 of the node: not redirected means refused.
        assert!(
            connect(&pod.name, "198.51.100.129", 80, false, None).is_err(),
            "outbound via excluded net1 to port 80 was answered"
        );
        let rules = nat_rules(&pod, &cap);
        match variant(&cap) {
            Some(_) => {
                assert!(
                    rules.contains("-A MULTIMESH_INBOUND -i net1 -j RETURN"),
                    "{rules}"
                );
                assert!(
                    rules.contains("-A MULTIMESH_OUTPUT -o net1 -j RETURN"),
                    "{rules}"
                );
            }
            None => {
                assert!(rules.contains("iifname \"net1\" return"), "{rules}");
                assert!(rules.contains("oifname \"net1\" return"), "{rules}");
            }
        }
        node.cni("CHECK", &conf, &pod.path, "cexcl", "eth0").ok();
        node.cni("DEL", &conf, &pod.path, "cexcl", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// f. IPv6: a dual-stack cluster network is captured in both families.
#[test]
fn ipv6_inbound_and_outbound() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("v6", name));
        no_dad(&node.name);
        let pod = node.pod("p");
        no_dad(&pod.name);
        let conf = node.meta(vec![node.dual_stack_bridge()], cap.clone());
        let res = node.cni("ADD", &conf, &pod.path, "cv6", "eth0");
        let res = res.ok().clone();
        let ip6 = result_addr(&res, true);
        let ip4 = result_addr(&res, false);
        assert!(ip6.starts_with("2001:db8:1::"), "{res}");
        assert_eq!(addr_of(&pod, "eth0", true), ip6);
        wait_v6_ready(&node.name, "mm0");
        wait_v6_ready(&pod.name, "eth0");

        let _tin = Listener::start(&pod.name, IN_PORT, false, 2);
        let _app = Listener::start(&pod.name, 8080, false, 2);
        let _tout = Listener::start(&pod.name, OUT_PORT, false, 1);
        let a = answer(&node.name, &ip6, 8080, false, None);
        assert_served(&a, IN_PORT, &format!("[{ip6}]:8080"), "inbound IPv6");
        assert!(field(&a, "peer").starts_with("[2001:db8:1::1]:"), "{a}");
        let a = answer(&node.name, &ip4, 8080, false, None);
        assert_served(&a, IN_PORT, &sock(&ip4, 8080), "inbound IPv4 (dual stack)");
        let a = answer(&pod.name, "2001:db8:1::1", 80, false, None);
        assert_served(&a, OUT_PORT, "[2001:db8:1::1]:80", "outbound IPv6");

        match variant(cap) {
            Some(v) => {
                let s = pod.exec_ok(&format!("ip6tables-{v}-save -t nat"));
                for c in [
                    ":MULTIMESH_INBOUND",
                    ":MULTIMESH_IN_REDIRECT",
                    ":MULTIMESH_OUTPUT",
                    ":MULTIMESH_REDIRECT",
                    "-A MULTIMESH_OUTPUT -d ::1/128 -j RETURN",
                ] {
                    assert!(s.contains(c), "{c} missing in ip6tables:\n{s}");
                }
            }
            None => {
                let s = nat_rules(&pod, cap);
                assert!(
                    !s.contains("nfproto"),
                    "IPv6 skipped on a dual-stack pod:\n{s}"
                );
                assert!(s.contains("ip6 daddr ::1 return"), "{s}");
            }
        }
        node.cni("CHECK", &conf, &pod.path, "cv6", "eth0").ok();
        node.cni("DEL", &conf, &pod.path, "cv6", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// g. A second ADD (chained, same pod) converges to the same rules; DEL of
// one attachment keeps the rules the other still uses.
#[test]
fn add_is_idempotent_and_shared() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("idem", name));
        let pod = node.pod("p");
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        let res = node
            .cni("ADD", &conf, &pod.path, "cidem", "eth0")
            .ok()
            .clone();
        let before = nat_rules(&pod, cap);
        assert!(has_capture(&pod, cap), "{before}");

        let chained = json!({
            "cniVersion": "1.0.0", "name": "chained", "type": "multimesh",
            "cniDir": node.cni_dir().display().to_string(),
            "capture": cap, "prevResult": res,
        });
        let out = node.cni("ADD", &chained, &pod.path, "cidem", "net9");
        assert_eq!(
            out.ok()["ips"],
            res["ips"],
            "chained ADD passes prevResult on"
        );
        let after = nat_rules(&pod, cap);
        assert_eq!(before, after, "second ADD changed the rules");
        let (hook, n) = match variant(cap) {
            Some(_) => ("-j MULTIMESH_OUTPUT", 1),
            None => ("table inet multimesh", 1),
        };
        assert_eq!(after.matches(hook).count(), n, "{after}");
        node.cni("CHECK", &chained, &pod.path, "cidem", "net9").ok();
        node.cni("CHECK", &conf, &pod.path, "cidem", "eth0").ok();

        // DEL of the chained attachment: the meta one still wants capture.
        node.cni("DEL", &chained, &pod.path, "cidem", "net9").ok();
        assert_eq!(
            nat_rules(&pod, cap),
            before,
            "DEL of one attachment removed shared rules"
        );
        node.cni("CHECK", &conf, &pod.path, "cidem", "eth0").ok();
        let _tout = Listener::start(&pod.name, OUT_PORT, false, 1);
        let a = answer(&pod.name, "198.51.100.1", 80, false, None);
        assert_served(&a, OUT_PORT, "198.51.100.1:80", "after chained DEL");

        node.cni("DEL", &conf, &pod.path, "cidem", "eth0").ok();
        pod.assert_no_capture("after the last DEL");
        assert!(pod.links().is_empty(), "{:?}", pod.links());
        node.assert_no_leaks();
    });
}

// g2. Capture belongs to the netns: a later ADD whose plan has fewer modes
// converges the netns to its plan, with nothing of the other modes left
// (no stale chain that CHECK would call drift).
#[test]
fn a_later_add_with_fewer_modes_converges() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("fewer", name));
        let pod = node.pod("p");
        let rich = with(cap, json!({"dnsCapture": true, "dropInvalid": true}));
        let conf = node.meta(vec![node.cluster_bridge()], rich);
        let res = node
            .cni("ADD", &conf, &pod.path, "cfew", "eth0")
            .ok()
            .clone();
        let all = all_rules(&pod, cap);
        let (dns, mangle) = match variant(cap) {
            Some(_) => ("MULTIMESH_DNS", "MULTIMESH_MANGLE_IN"),
            None => ("chain dns_redirect", "chain mangle_inbound"),
        };
        assert!(all.contains(dns) && all.contains(mangle), "{all}");
        let chained = json!({
            "cniVersion": "1.0.0", "name": "chained", "type": "multimesh",
            "cniDir": node.cni_dir().display().to_string(),
            "capture": cap, "prevResult": res,
        });
        node.cni("ADD", &chained, &pod.path, "cfew", "net9").ok();
        let all = all_rules(&pod, cap);
        assert!(!all.contains(dns) && !all.contains(mangle), "{all}");
        node.cni("CHECK", &chained, &pod.path, "cfew", "net9").ok();
        node.cni("DEL", &chained, &pod.path, "cfew", "net9").ok();
        node.cni("DEL", &conf, &pod.path, "cfew", "eth0").ok();
        pod.assert_no_capture("after both DELs");
        node.assert_no_leaks();
    });
}

// h. CHECK notices rules changed behind multimesh's back; DEL still cleans up.
#[test]
fn check_detects_drift() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("drift", name));
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        let drifts: Vec<String> = match variant(cap) {
            Some(v) => vec![
                format!("iptables-{v} -t nat -F MULTIMESH_OUTPUT"),
                format!("iptables-{v} -t nat -D OUTPUT -p tcp -j MULTIMESH_OUTPUT"),
                format!("iptables-{v} -t nat -I MULTIMESH_INBOUND -p tcp --dport 9 -j RETURN"),
            ],
            None => vec![
                "nft flush chain inet multimesh outbound".into(),
                "nft flush chain inet multimesh output".into(),
                "nft insert rule inet multimesh inbound tcp dport 9 return".into(),
            ],
        };
        for (i, drift) in drifts.iter().enumerate() {
            let pod = node.pod(&format!("p{i}"));
            let cid = format!("cdrift{i}");
            node.cni("ADD", &conf, &pod.path, &cid, "eth0").ok();
            node.cni("CHECK", &conf, &pod.path, &cid, "eth0").ok();
            pod.exec_ok(drift);
            let msg = node.cni("CHECK", &conf, &pod.path, &cid, "eth0").err(104);
            assert!(msg.contains("capture rules changed"), "{drift}: {msg}");
            node.cni("DEL", &conf, &pod.path, &cid, "eth0").ok();
            pod.assert_no_capture(&format!("DEL after {drift:?}"));
            assert!(pod.links().is_empty(), "{:?}", pod.links());
        }
        node.assert_no_leaks();
    });
}

// i. ADD + DEL leave everything else in the pod's tables exactly as it was.
#[test]
fn del_restores_foreign_rules() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("foreign", name));
        let pod = node.pod("p");
        let (setup, marker) = match variant(cap) {
            Some(v) => (
                format!(
                    "iptables-{v} -t nat -A OUTPUT -p udp --dport 53 -j RETURN && \
                     iptables-{v} -t nat -A PREROUTING -p udp --dport 5353 -j RETURN && \
                     iptables-{v} -t nat -N FOREIGN && iptables-{v} -t nat -A FOREIGN -j RETURN && \
                     iptables-{v} -A INPUT -p tcp --dport 22 -j ACCEPT && \
                     ip6tables-{v} -A INPUT -p tcp --dport 22 -j ACCEPT"
                ),
                "--dport 53",
            ),
            None => (
                "nft add table inet other && \
                 nft add chain inet other out '{ type nat hook output priority 0; }' && \
                 nft add rule inet other out udp dport 53 return && \
                 nft add chain inet other in '{ type filter hook input priority 0; }' && \
                 nft add rule inet other in tcp dport 22 accept"
                    .to_string(),
                "udp dport 53",
            ),
        };
        pod.exec_ok(&setup);
        let before = all_rules(&pod, cap);
        assert!(before.contains(marker), "{before}");

        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        node.cni("ADD", &conf, &pod.path, "cfor", "eth0").ok();
        let during = all_rules(&pod, cap);
        assert!(has_capture(&pod, cap), "{during}");
        assert!(
            during.contains(marker),
            "foreign rule lost on ADD:\n{during}"
        );
        node.cni("CHECK", &conf, &pod.path, "cfor", "eth0").ok();
        node.cni("DEL", &conf, &pod.path, "cfor", "eth0").ok();
        let after = all_rules(&pod, cap);
        assert_eq!(before, after, "tables differ after ADD + DEL");
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// j. Bad capture values are refused before anything is created.
#[test]
fn bad_capture_values_refused() {
    let bad = [
        (json!({"inboundPort": 70000}), "capture.inboundPort"),
        (
            json!({"excludeOutboundCIDRs": ["10.0.0.0/8 -j ACCEPT"]}),
            "capture.excludeOutboundCIDRs",
        ),
        (
            json!({"excludeInterfaces": ["has space"]}),
            "capture.excludeInterfaces",
        ),
        (
            json!({"excludeInterfaces": ["sixteen-bytes-xx"]}),
            "capture.excludeInterfaces",
        ),
    ];
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("bad", name));
        let pod = node.pod("p");
        for (i, (extra, field_name)) in bad.iter().enumerate() {
            let conf = node.meta(vec![node.cluster_bridge()], with(cap, extra.clone()));
            let msg = node
                .cni("ADD", &conf, &pod.path, &format!("cbad{i}"), "eth0")
                .err(7);
            assert!(msg.contains(field_name), "{extra}: {msg}");
            assert!(pod.links().is_empty(), "{extra}: {:?}", pod.links());
            pod.assert_no_capture(&extra.to_string());
            node.assert_no_leaks();
        }
    });
}

// k. When programming capture fails, ADD undoes the delegates it ran. The
// iptables backends fail through a failing restore tool; the nftables
// backend (netlink, no tool) through the kernel refusing the transaction:
// the pod netns already has a `prerouting` chain of another type in the
// table. A refused transaction changes nothing, so the netns is left
// exactly as it was.
#[test]
fn capture_failure_rolls_back_delegates() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("fail", name));
        let pod = node.pod("p");
        let fake = node.dir.join("fakebin");
        std::fs::create_dir_all(&fake).unwrap();
        let tools: &[&str] = match variant(cap) {
            Some("legacy") => &["iptables-legacy-restore", "iptables-legacy-save"],
            Some(_) => &["iptables-nft-restore", "iptables-nft-save"],
            None => &[],
        };
        for t in tools {
            let p = fake.join(t);
            std::fs::write(&p, "#!/bin/bash\necho 'fake failure' >&2\nexit 1\n").unwrap();
            sh_ok(&format!("chmod 755 {}", p.display()));
        }
        let nftables = variant(cap).is_none();
        if nftables {
            pod.exec_ok(
                "nft 'add table inet multimesh; add chain inet multimesh prerouting \
                 { type filter hook prerouting priority 0; policy accept; }'",
            );
        }
        let before = pod.exec_ok("nft list ruleset");
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display());
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        let out = node.cni_env(
            "ADD",
            &conf,
            &pod.path,
            "cfail",
            "eth0",
            &[("PATH", path.as_str())],
        );
        let msg = out.err(103);
        if nftables {
            assert!(msg.contains("add chain prerouting"), "{msg}");
        } else {
            assert!(
                msg.contains("fake failure") || msg.contains("failed"),
                "{msg}"
            );
        }
        assert!(
            pod.links().is_empty(),
            "delegate not rolled back: {:?}",
            pod.links()
        );
        if nftables {
            assert_eq!(
                pod.exec_ok("nft list ruleset"),
                before,
                "a refused transaction changed the ruleset"
            );
        } else {
            pod.assert_no_capture("after the failed ADD");
        }
        let leaks = node.leaks();
        let state: Vec<String> = walk(&node.cni_dir())
            .iter()
            .filter(|f| f.ends_with(".json"))
            .map(|f| format!("{f}: {}", std::fs::read_to_string(f).unwrap_or_default()))
            .collect();
        // A runtime DELs after a failed ADD; with working tools that must
        // finish any leftover job (for nftables: the table named multimesh
        // is multimesh's, and DEL removes it).
        node.cni("DEL", &conf, &pod.path, "cfail", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
        assert!(
            leaks.is_empty(),
            "the failed ADD itself left {leaks:#?}\nstate: {state:#?}\nmultimesh stderr:\n{}",
            out.stderr
        );
    });
}

// k2. Capture is programmed alongside the delegates (its own thread); a
// delegate that fails after it is in place undoes it with everything else,
// and the error is the delegate's.
#[test]
fn delegate_failure_undoes_capture_programmed_alongside() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("dfail", name));
        let pod = node.pod("p");
        // The failing delegate sleeps first: capture has long been
        // programmed when it fails (and the assertions hold either way).
        let failing = node.recorder(
            "late-fail",
            json!({"failOn": "ADD", "failCode": 11, "sleepMs": 400, "sleepOn": "ADD"}),
        );
        let mut conf = node.meta(vec![node.cluster_bridge(), failing], cap.clone());
        conf["logLevel"] = json!("debug");
        let out = node.cni("ADD", &conf, &pod.path, "dfail", "eth0");
        let msg = out.err(11);
        assert!(msg.contains("late-fail"), "{msg}");
        assert!(
            pod.links().is_empty(),
            "delegate not rolled back: {:?}",
            pod.links()
        );
        pod.assert_no_capture("after the delegate failed");
        // It was in place (and then removed by the rollback).
        assert!(
            out.stderr.contains("capture: programmed") && out.stderr.contains("capture: removed"),
            "{}",
            out.stderr
        );
        node.assert_no_leaks();
        // A runtime DELs after a failed ADD: nothing to do, no error.
        node.cni("DEL", &conf, &pod.path, "dfail", "eth0").ok();
        node.assert_no_leaks();
    });
}

// l. Many pods at once: tests/load.rs (32 and 64 pods, every backend).

// m. interceptionMode TPROXY: inbound TCP on every interface reaches the
// proxy's IP_TRANSPARENT listener with the client's source address and
// the original destination as the socket's own address (no NAT), IPv4 and
// IPv6; the policy routing is there, CHECK sees it go, DEL removes it.
#[test]
fn tproxy_keeps_source_and_destination() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("tpx", name));
        no_dad(&node.name);
        let pod = node.pod("p");
        no_dad(&pod.name);
        let cap = with(cap, json!({"interceptionMode": "TPROXY"}));
        let conf = node.meta(
            vec![node.dual_stack_bridge(), node.second_bridge()],
            cap.clone(),
        );
        let res = node
            .cni("ADD", &conf, &pod.path, "ctpx", "eth0")
            .ok()
            .clone();
        let ip4 = result_addr(&res, false);
        let ip6 = result_addr(&res, true);
        let net1 = addr_of(&pod, "net1", false);
        wait_v6_ready(&node.name, "mm0");
        wait_v6_ready(&pod.name, "eth0");
        let rules = pod.exec_ok("ip -4 rule; ip -6 rule");
        assert_eq!(
            rules.matches("fwmark 0x539 lookup 133").count(),
            2,
            "{rules}"
        );
        // inspect shows the mangle capture and the routing.
        let ins = sh_ok(&format!("{BIN} inspect --netns {}", pod.path));
        let chain = if variant(&cap).is_some() {
            "MULTIMESH_TPROXY"
        } else {
            "tproxy_redirect"
        };
        for want in [chain, "TPROXY routing (IPv4)", "TPROXY routing (IPv6)"] {
            assert!(ins.contains(want), "inspect lacks {want:?}:\n{ins}");
        }
        let proxy = Listener::start_with(&pod.name, IN_PORT, false, 3, &["--transparent"]);
        for (what, client, to, peer) in [
            (
                "IPv4 via eth0",
                &node.name,
                sock(&ip4, 8080),
                "198.51.100.1:",
            ),
            (
                "IPv6 via eth0",
                &node.name,
                sock(&ip6, 8080),
                "[2001:db8:1::1]:",
            ),
            (
                "IPv4 via net1",
                &node.name,
                sock(&net1, 8080),
                "198.51.100.129:",
            ),
        ] {
            let (addr, port) = to.rsplit_once(':').unwrap();
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            let a = answer(client, addr, port.parse().unwrap(), false, None);
            assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{what}: {a}");
            assert_eq!(field(&a, "local"), to, "{what}: destination lost: {a}");
            assert_eq!(field(&a, "orig"), "-", "{what}: NAT'ed: {a}");
            assert!(
                field(&a, "peer").starts_with(peer),
                "{what}: source lost: {a}"
            );
        }
        drop(proxy);
        // Outbound is REDIRECT as before.
        let _tout = Listener::start(&pod.name, OUT_PORT, false, 1);
        let a = answer(&pod.name, "203.0.113.200", 443, false, None);
        assert_served(&a, OUT_PORT, "203.0.113.200:443", "outbound in TPROXY mode");
        node.cni("CHECK", &conf, &pod.path, "ctpx", "eth0").ok();
        // A deleted routing rule is drift; so is a deleted route (on a
        // second pod); DEL removes what is left of either.
        pod.exec_ok("ip -6 rule del fwmark 0x539 lookup 133");
        let msg = node.cni("CHECK", &conf, &pod.path, "ctpx", "eth0").err(104);
        assert!(msg.contains("TPROXY routing (IPv6)"), "{msg}");
        let pod2 = node.pod("q");
        node.cni("ADD", &conf, &pod2.path, "ctpx2", "eth0").ok();
        node.cni("CHECK", &conf, &pod2.path, "ctpx2", "eth0").ok();
        pod2.exec_ok("ip -4 route del local default dev lo table 133");
        let msg = node
            .cni("CHECK", &conf, &pod2.path, "ctpx2", "eth0")
            .err(104);
        assert!(msg.contains("TPROXY routing (IPv4)"), "{msg}");
        node.cni("DEL", &conf, &pod2.path, "ctpx2", "eth0").ok();
        pod2.assert_no_capture("after DEL");
        node.cni("DEL", &conf, &pod.path, "ctpx", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// n. dnsCapture: the app's DNS over UDP and TCP to a TEST-NET resolver
// lands on the proxy's DNS port (the UDP answer comes back from the
// resolver's address: conntrack matched it through the zones; TCP keeps
// the original destination); the proxy's own DNS goes to the resolver.
// Other UDP stays untouched.
#[test]
fn dns_captured_but_not_the_proxys() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("dns", name));
        no_dad(&node.name);
        let pod = node.pod("p");
        no_dad(&pod.name);
        let cap = with(cap, json!({"dnsCapture": true}));
        let conf = node.meta(vec![node.dual_stack_bridge()], cap.clone());
        node.cni("ADD", &conf, &pod.path, "cdns", "eth0").ok();
        wait_v6_ready(&node.name, "mm0");
        wait_v6_ready(&pod.name, "eth0");
        // The proxy's DNS server, as Istio's: on localhost (both
        // families), as the proxy.
        let proxy_id = ["--uid", "1337", "--gid", "1337"];
        let _udp = Listener::start_with(
            &pod.name,
            15053,
            true,
            1,
            &[&["--bind", "127.0.0.1"][..], &proxy_id].concat(),
        );
        let _udp6 = Listener::start_with(
            &pod.name,
            15053,
            true,
            1,
            &[&["--bind", "::1"][..], &proxy_id].concat(),
        );
        let _tcp = Listener::start_with(&pod.name, 15053, false, 2, &proxy_id);
        for (resolver, from) in [
            ("203.0.113.53", "203.0.113.53:53"),
            ("2001:db8:53::53", "[2001:db8:53::53]:53"),
        ] {
            let a = answer(&pod.name, resolver, 53, true, None);
            assert_eq!(field(&a, "served_by"), "15053", "UDP DNS: {a}");
            assert_eq!(field(&a, "from"), from, "UDP DNS answer's source: {a}");
            let a = answer(&pod.name, resolver, 53, false, None);
            assert_served(&a, 15053, from, "TCP DNS");
        }
        // The proxy's own queries reach the resolver (the node).
        let _res_udp = Listener::start(&node.name, 53, true, 1);
        let _res_tcp = Listener::start(&node.name, 53, false, 1);
        let a = answer(&pod.name, "198.51.100.1", 53, true, Some(1337));
        assert_eq!(field(&a, "served_by"), "53", "proxy's UDP DNS: {a}");
        assert_eq!(field(&a, "from"), "198.51.100.1:53", "{a}");
        let a = answer(&pod.name, "198.51.100.1", 53, false, Some(1337));
        assert_served(&a, 53, "-", "proxy's TCP DNS");
        // Other UDP is untouched.
        let _other = Listener::start(&node.name, 9090, true, 1);
        let a = answer(&pod.name, "198.51.100.1", 9090, true, None);
        assert_served(&a, 9090, "-", "UDP to another port");
        node.cni("CHECK", &conf, &pod.path, "cdns", "eth0").ok();
        let drift = match variant(&cap) {
            Some(v) => format!("iptables-{v} -t raw -F MULTIMESH_DNS_ZONE_OUT"),
            None => "nft flush chain inet multimesh dns_zone_out".into(),
        };
        pod.exec_ok(&drift);
        let msg = node.cni("CHECK", &conf, &pod.path, "cdns", "eth0").err(104);
        assert!(msg.contains("capture rules changed"), "{msg}");
        node.cni("DEL", &conf, &pod.path, "cdns", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

/// Send one TCP segment with SYN and FIN set (a flag combination conntrack
/// marks INVALID) from netns `from` to `dst:port`, and report whether a
/// RST came back within a second (the pod's TCP stack answers it when
/// nothing drops it).
fn syn_fin_answered(from: &str, src: &str, dst: &str, port: u16) -> bool {
    let py = format!(
        r#"
import socket, struct, time
src, dst, port = "{src}", "{dst}", {port}
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
sport = 40000 + int(time.time() * 1000) % 20000
hdr = struct.pack("!HHIIBBHHH", sport, port, 1, 0, 5 << 4, 0x03, 1024, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
hdr = hdr[:16] + struct.pack("!H", csum(pseudo + hdr)) + hdr[18:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.settimeout(0.2)
s.sendto(hdr, (dst, 0))
end = time.time() + 1.0
while time.time() < end:
    try:
        pkt, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    ihl = (pkt[0] & 15) * 4
    sp, dp = struct.unpack("!HH", pkt[ihl:ihl + 4])
    flags = pkt[ihl + 13]
    if addr[0] == dst and sp == port and dp == sport and flags & 0x04:
        print("rst"); break
else:
    print("none")
"#
    );
    let out = ns_exec_ok(from, &format!("python3 -c {}", shell_quote(&py)));
    out.trim() == "rst"
}

// o. dropInvalid: a packet conntrack marks INVALID (SYN+FIN) is dropped on
// the way in; without dropInvalid the pod's stack answers it with a RST.
#[test]
fn invalid_packets_dropped() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("inv", name));
        let plain = node.pod("plain");
        let dropping = node.pod("drop");
        let conf = node.meta(vec![node.cluster_bridge()], cap.clone());
        let conf_drop = node.meta(
            vec![node.cluster_bridge()],
            with(cap, json!({"dropInvalid": true})),
        );
        let a = result_addr(
            node.cni("ADD", &conf, &plain.path, "cinv0", "eth0").ok(),
            false,
        );
        let b = result_addr(
            node.cni("ADD", &conf_drop, &dropping.path, "cinv1", "eth0")
                .ok(),
            false,
        );
        // Valid TCP still passes where invalid packets are dropped.
        let _tin = Listener::start(&dropping.name, IN_PORT, false, 1);
        let r = answer(&node.name, &b, 8080, false, None);
        assert_served(&r, IN_PORT, &sock(&b, 8080), "valid TCP with dropInvalid");
        assert!(
            syn_fin_answered(&node.name, "198.51.100.1", &a, 8081),
            "control: the pod without dropInvalid did not answer SYN+FIN"
        );
        assert!(
            !syn_fin_answered(&node.name, "198.51.100.1", &b, 8081),
            "an INVALID packet reached the pod's stack despite dropInvalid"
        );
        node.cni("CHECK", &conf_drop, &dropping.path, "cinv1", "eth0")
            .ok();
        let drift = match variant(cap) {
            Some(v) => format!("iptables-{v} -t mangle -F MULTIMESH_MANGLE_IN"),
            None => "nft flush chain inet multimesh mangle_inbound".into(),
        };
        dropping.exec_ok(&drift);
        let msg = node
            .cni("CHECK", &conf_drop, &dropping.path, "cinv1", "eth0")
            .err(104);
        assert!(msg.contains("capture rules changed"), "{msg}");
        node.cni("DEL", &conf_drop, &dropping.path, "cinv1", "eth0")
            .ok();
        node.cni("DEL", &conf, &plain.path, "cinv0", "eth0").ok();
        dropping.assert_no_capture("after DEL");
        plain.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// p. rerouteInterfaces: TCP entering a rerouted interface (a VM's bridge)
// goes to the outbound port with its original destination; other
// interfaces stay inbound.
#[test]
fn rerouted_interface_reaches_outbound_port() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("rr", name));
        let pod = node.pod("p");
        let cap = with(cap, json!({"rerouteInterfaces": ["net1"]}));
        let conf = node.meta(
            vec![node.cluster_bridge(), node.second_bridge()],
            cap.clone(),
        );
        node.cni("ADD", &conf, &pod.path, "crr", "eth0").ok();
        let eth0 = addr_of(&pod, "eth0", false);
        let net1 = addr_of(&pod, "net1", false);
        let _tout = Listener::start(&pod.name, OUT_PORT, false, 1);
        let _tin = Listener::start(&pod.name, IN_PORT, false, 1);
        let a = answer(&node.name, &net1, 8080, false, None);
        assert_served(&a, OUT_PORT, &sock(&net1, 8080), "TCP entering net1");
        let a = answer(&node.name, &eth0, 8080, false, None);
        assert_served(&a, IN_PORT, &sock(&eth0, 8080), "TCP entering eth0");
        node.cni("CHECK", &conf, &pod.path, "crr", "eth0").ok();
        let drift = match variant(&cap) {
            Some(v) => {
                format!("iptables-{v} -t nat -D MULTIMESH_INBOUND -i net1 -j MULTIMESH_REDIRECT")
            }
            None => "nft flush chain inet multimesh inbound".into(),
        };
        pod.exec_ok(&drift);
        let msg = node.cni("CHECK", &conf, &pod.path, "crr", "eth0").err(104);
        assert!(msg.contains("capture rules changed"), "{msg}");
        node.cni("DEL", &conf, &pod.path, "crr", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}

// q. Every mode at once (TPROXY, DNS capture, invalid-drop, a rerouted
// interface), dual-stack: programmed, CHECK clean, traffic of each kind
// where it belongs, DEL leaves nothing.
#[test]
fn all_modes_together() {
    for_each_backend(|name, cap| {
        let node = Node::new(&tag("all", name));
        no_dad(&node.name);
        let pod = node.pod("p");
        no_dad(&pod.name);
        let cap = with(
            cap,
            json!({"interceptionMode": "TPROXY", "dnsCapture": true, "dropInvalid": true,
                   "rerouteInterfaces": ["net1"]}),
        );
        let conf = node.meta(
            vec![node.dual_stack_bridge(), node.second_bridge()],
            cap.clone(),
        );
        let res = node
            .cni("ADD", &conf, &pod.path, "call", "eth0")
            .ok()
            .clone();
        let ip6 = result_addr(&res, true);
        let net1 = addr_of(&pod, "net1", false);
        wait_v6_ready(&node.name, "mm0");
        wait_v6_ready(&pod.name, "eth0");
        node.cni("CHECK", &conf, &pod.path, "call", "eth0").ok();
        let _tin = Listener::start_with(&pod.name, IN_PORT, false, 1, &["--transparent"]);
        let _tout = Listener::start(&pod.name, OUT_PORT, false, 1);
        let _dns = Listener::start_with(
            &pod.name,
            15053,
            true,
            1,
            &["--bind", "127.0.0.1", "--uid", "1337", "--gid", "1337"],
        );
        let a = answer(&node.name, &ip6, 8080, false, None);
        assert_eq!(field(&a, "local"), format!("[{ip6}]:8080"), "TPROXY: {a}");
        let a = answer(&node.name, &net1, 8080, false, None);
        assert_served(&a, OUT_PORT, &sock(&net1, 8080), "rerouted net1");
        let a = answer(&pod.name, "203.0.113.53", 53, true, None);
        assert_eq!(field(&a, "from"), "203.0.113.53:53", "DNS: {a}");
        node.cni("DEL", &conf, &pod.path, "call", "eth0").ok();
        pod.assert_no_capture("after DEL");
        node.assert_no_leaks();
    });
}
