//! Fuzzing with a deterministic generator (SplitMix64, no extra crate):
//! random bytes, truncations, mutated valid configs (type swaps, removed or
//! wrapped fields, junk keys), deep nesting and huge numbers and strings,
//! thrown at
//!
//! - the library's public parsers, in process: `NetConf::parse`,
//!   `Delegate::from_value`, `cni::convert_result` / `plugin_stdin` /
//!   `Env::from_env` / `parse_cni_args`, `CaptureConfig::from_json` (and
//!   the plan and both renderers for every config it accepts),
//!   `iptables::parse_save` / `diff`, `config::load_network`,
//!   `Record::from_slice`, `Setup::from_json`, `CniError::from_json`:
//!   never a panic, errors only with their documented codes, and
//!   round-trip / self-consistency properties where they exist;
//! - the Kubernetes API client's HTTP response parser
//!   (`k8s::client::read_response`) with random and mutated responses
//!   (chunked, Content-Length, close-delimited): never a panic, bounded
//!   time and body size;
//! - the real binary with random stdin (and sometimes a bad environment)
//!   for ADD/DEL/CHECK (and GC/STATUS/VERSION): never a signal or panic,
//!   exit 0 or 1, stdout nothing but one JSON document: the result, or a
//!   CNI error with code, msg and cniVersion.
//!
//! Bounded: a fixed number of cases and a time cap. `MM_FUZZ_SEED=N`
//! replays another sequence; a failure prints the seed, case and input.

mod common;
use common::rand::*;
use common::*;
use multimesh::capture::{self, iptables, nft, CaptureConfig, Plan, Setup};
use multimesh::cni::{self, Command, Env};
use multimesh::config::{self, NetConf};
use multimesh::delegate::Delegate;
use multimesh::error::CniError;
use multimesh::state::Record;
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// Apply one random change somewhere in `v`.
fn mutate(rng: &mut Rng, v: &mut Value) {
    // Walk down a random path, stopping at random (below the top: the
    // whole input replaced is what the other generators do).
    let mut cur = v;
    let mut top = true;
    loop {
        let go_deeper = top || rng.percent(65);
        top = false;
        let next_key = match &*cur {
            Value::Object(m) if !m.is_empty() && go_deeper => {
                Some(m.keys().nth(rng.below(m.len())).unwrap().clone())
            }
            Value::Array(a) if !a.is_empty() && go_deeper => Some(rng.below(a.len()).to_string()),
            _ => None,
        };
        let Some(k) = next_key else { break };
        cur = match cur {
            Value::Object(m) => m.get_mut(&k).unwrap(),
            Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    match rng.below(9) {
        // A value of another type (or another value of the same).
        0..=2 => *cur = rand_value(rng, 2),
        // Remove a field / an element.
        3 => match cur {
            Value::Object(m) if !m.is_empty() => {
                let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
                m.remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                a.remove(rng.below(a.len()));
            }
            _ => *cur = Value::Null,
        },
        // Wrap in a list or an object.
        4 => {
            *cur = if rng.percent(50) {
                json!([cur.take()])
            } else {
                json!({"v": cur.take()})
            }
        }
        // A number as a string and back, a string cut short.
        5 => {
            *cur = match cur.take() {
                Value::Number(n) => Value::String(n.to_string()),
                Value::String(s) => match s.parse::<u64>() {
                    Ok(n) => json!(n),
                    Err(_) => Value::String(s.chars().take(rng.below(s.len() + 1)).collect()),
                },
                other => other,
            }
        }
        // A junk key, a duplicate element.
        6 => match cur {
            Value::Object(m) => {
                m.insert(format!("x-{}", rand_string(rng)), rand_value(rng, 2));
            }
            Value::Array(a) if !a.is_empty() => {
                let x = a[rng.below(a.len())].clone();
                a.push(x);
            }
            _ => *cur = rand_value(rng, 1),
        },
        // Deep nesting (below serde_json's recursion limit once serialised
        // inside a config).
        7 => *cur = nest(rng.below(100), rng.percent(50)),
        _ => *cur = rand_number(rng),
    }
}

/// Deeply nested text, beyond any recursion limit.
fn deep_text(rng: &mut Rng) -> Vec<u8> {
    let n = *rng.pick(&[127usize, 128, 129, 1000, 100_000]);
    let (open, close) = if rng.percent(50) {
        ("[", "]")
    } else {
        ("{\"a\":", "}")
    };
    let mut s = open.repeat(n);
    if rng.percent(50) {
        s.push('1');
        s.push_str(&close.repeat(n));
    }
    s.into_bytes()
}

fn huge_numbers(rng: &mut Rng) -> Vec<u8> {
    let n = *rng.pick(&[
        "1e400",
        "-1e400",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.0000000000000000000000001",
        "1E+2",
        "-0",
        "NaN",
    ]);
    format!(r#"{{"cniVersion":"1.0.0","name":"n","capture":{{"inboundPort":{n},"proxyUID":{n}}},"delegates":[{{"type":"bridge","mtu":{n}}}]}}"#)
        .into_bytes()
}

/// Valid configs to mutate (for the in-process parsers; never executed).
fn base_confs(dir: &Path) -> Vec<Value> {
    let d = dir.display().to_string();
    vec![
        json!({"cniVersion": "1.0.0", "name": "mm", "type": "multimesh", "cniDir": d, "confDir": d, "binDir": d,
               "delegates": [
                   {"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "mm0", "isGateway": true,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.51.100.0/25"}]]}},
                   {"name": "list", "plugins": [{"type": "macvlan", "master": "mmv0"}, {"type": "tuning"}]}],
               "defaultNetworks": ["extra"], "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]},
               "logLevel": "debug", "logToStderr": false,
               "capture": {"profile": "istio", "backend": "iptables", "iptablesVariant": "legacy",
                           "inboundPort": 15006, "outboundPort": 15001, "proxyUID": 1337, "proxyGID": 1337,
                           "includeInboundPorts": "*", "excludeInboundPorts": "15008, 15020",
                           "excludeOutboundPorts": [15020], "includeOutboundPorts": ["443"],
                           "includeOutboundCIDRs": ["198.51.100.0/24", "2001:db8::/32"],
                           "excludeOutboundCIDRs": "203.0.113.0/24", "excludeInterfaces": ["net1"],
                           "excludeNamespaces": ["kube-system"], "interceptionMode": "TPROXY",
                           "dnsCapture": true, "dnsPort": 15053, "dropInvalid": true,
                           "rerouteInterfaces": ["net2"]}}),
        json!({"cniVersion": "0.4.0", "name": "chained", "type": "multimesh", "cniDir": d,
               "prevResult": {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                              "ips": [{"version": "4", "address": "198.51.100.2/25", "interface": 0},
                                      {"version": "6", "address": "2001:db8:1::2/64", "interface": 0}],
                              "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["198.51.100.1"]}},
               "capture": {"profile": "linkerd", "backend": "nftables", "includeInboundPorts": ""}}),
        json!({"cniVersion": "1.1.0", "name": "gc", "type": "multimesh", "cniDir": d, "clusterNetwork": "extra",
               "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
               "readinessindicatorfile": format!("{d}/ready"), "capture": {"enabled": false}}),
    ]
}

/// One generated input: raw bytes (usually a mutated base config).
fn gen_input(rng: &mut Rng, bases: &[Value]) -> Vec<u8> {
    match rng.below(20) {
        0 | 1 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        2..=4 => {
            let b = serde_json::to_vec(rng.pick(bases)).unwrap();
            let cut = rng.below(b.len());
            b[..cut].to_vec()
        }
        5 => deep_text(rng),
        6 => huge_numbers(rng),
        7 => serde_json::to_vec(&rand_value(rng, 4)).unwrap(),
        _ => {
            let mut v = rng.pick(bases).clone();
            for _ in 0..1 + rng.below(3) {
                mutate(rng, &mut v);
            }
            serde_json::to_vec(&v).unwrap()
        }
    }
}

fn show(input: &[u8]) -> String {
    let s = String::from_utf8_lossy(input);
    let s: String = s.chars().take(1500).collect();
    format!("{s:?} ({} bytes)", input.len())
}

const VERSIONS: &[&str] = &[
    "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "0.2.0", "", "x",
];

/// iptables-save's view of a plan as multimesh would program it.
fn as_saved(plan: &Plan, fam: capture::Family) -> String {
    let mut s = String::new();
    for t in plan.tables() {
        s.push_str(&format!(
            "*{}\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            iptables::table_name(t)
        ));
        for c in plan.own_chains(t) {
            s.push_str(&format!(":{} - [0:0]\n", iptables::chain_name(c)));
        }
        for l in iptables::rule_lines(plan, fam, t) {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// Every property of an accepted capture config.
fn check_capture(c: &CaptureConfig, rng: &mut Rng) {
    let back = CaptureConfig::from_json(Some(&c.to_json()));
    assert_eq!(back.as_ref(), Ok(c), "capture config does not round-trip");
    for ipv6 in [false, true] {
        let plan = Plan::new(c, ipv6);
        for fam in plan.families() {
            let rules = plan.rules(fam);
            for t in plan.tables() {
                for l in iptables::rule_lines(&plan, fam, t) {
                    assert!(
                        l.starts_with("-A ") && !l.contains(['\n', '\r', '\0']),
                        "{l:?}"
                    );
                }
            }
            let create = iptables::render_create(&plan, fam);
            let chains: usize = plan
                .tables()
                .iter()
                .map(|t| plan.own_chains(*t).len())
                .sum();
            assert_eq!(
                create.lines().count(),
                rules.len() + chains + 2 * plan.tables().len(),
                "{create}"
            );
            // CHECK logic: what multimesh programs, listed back, is no drift;
            // one rule removed is.
            let saved = as_saved(&plan, fam);
            assert_eq!(
                iptables::diff(&plan, fam, &iptables::parse_save(&saved)),
                None,
                "{saved}"
            );
            let lines: Vec<&str> = saved.lines().collect();
            let rule_idx: Vec<usize> = (0..lines.len())
                .filter(|i| lines[*i].starts_with("-A"))
                .collect();
            let drop = rule_idx[rng.below(rule_idx.len())];
            let fewer: String = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            assert!(iptables::diff(&plan, fam, &iptables::parse_save(&fewer)).is_some());
            let conv = iptables::render_converge(&plan, fam, &iptables::parse_save(&saved));
            assert!(conv.starts_with("*nat\n") && conv.ends_with("COMMIT\n"));
        }
        let table = nft::render_apply(&plan);
        assert_eq!(
            table.matches('{').count(),
            table.matches('}').count(),
            "{table}"
        );
        for l in table.lines() {
            assert_eq!(l.matches('"').count() % 2, 0, "unbalanced quotes: {l:?}");
            assert!(!l.contains(['\r', '\0']), "{l:?}");
        }
        let _ = multimesh::capture::render(c, ipv6);
    }
}

/// One in-process case; panics (caught by the caller) on a violation.
fn parsers_case(rng: &mut Rng, bases: &[Value], dir: &Path, input: &[u8]) {
    // NetConf.
    match NetConf::parse(input) {
        Err(e) => assert!(
            [1, 2, 6, 7].contains(&e.code),
            "NetConf::parse code {}: {}",
            e.code,
            e.msg
        ),
        Ok(c) => {
            check_capture(&c.capture, rng);
            if c.is_meta() {
                if let Err(e) = multimesh::networks::from_config(&c, "eth0") {
                    assert!(
                        [1, 7].contains(&e.code),
                        "networks::from_config code {}: {}",
                        e.code,
                        e.msg
                    );
                }
            }
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    // Delegates: the whole value, and each delegate of a config.
    let mut delegates = vec![v.clone()];
    if let Some(a) = v.get("delegates").and_then(Value::as_array) {
        delegates.extend(a.iter().cloned());
    }
    for d in &delegates {
        match Delegate::from_value(d, rng.pick::<&str>(VERSIONS)) {
            Err(e) => assert!(
                [1, 7].contains(&e.code),
                "Delegate code {}: {}",
                e.code,
                e.msg
            ),
            Ok(d) => {
                let rc = v.get("runtimeConfig").and_then(Value::as_object);
                for p in &d.plugins {
                    let _ = cni::plugin_stdin(p, &d.name, &d.version, rc, v.get("prevResult"));
                }
            }
        }
    }
    // Results.
    for r in [Some(&v), v.get("prevResult")].into_iter().flatten() {
        let to = *rng.pick(VERSIONS);
        let _ = cni::result_has_ipv6(r);
        if let Ok(out) = cni::convert_result(r, to) {
            assert_eq!(out["cniVersion"], to);
            assert_eq!(
                out.get("ips").and_then(Value::as_array).map(Vec::len),
                r.get("ips").and_then(Value::as_array).map(Vec::len)
            );
        }
    }
    // The capture object alone.
    for cap in [Some(&v), v.get("capture")].into_iter().flatten() {
        match CaptureConfig::from_json(Some(cap)) {
            Err(e) => assert!(
                [2, 7].contains(&e.code),
                "capture code {}: {}",
                e.code,
                e.msg
            ),
            Ok(c) => check_capture(&c, rng),
        }
        if let Some(o) = cap.as_object() {
            for x in o.values() {
                let _ = capture::parse_ports(x);
                let _ = capture::parse_cidrs(x);
                let _ = capture::parse_ifnames(x);
                if let Some(s) = x.as_str() {
                    let _ = capture::parse_port_str(s);
                }
            }
        }
    }
    // State and error objects.
    if let Ok(r) = Record::from_slice(&serde_json::to_vec(&v).unwrap()) {
        assert_eq!(
            Record::from_slice(&r.to_bytes().unwrap()).as_ref(),
            Ok(&r),
            "record round trip"
        );
    }
    let _ = Setup::from_json(&v);
    if let Some(e) = CniError::from_json(&v) {
        assert!(e.to_json("1.0.0")["code"].is_u64());
    }
    // Strings from the input as environment, CNI_ARGS, iptables-save text
    // and network names.
    let text = String::from_utf8_lossy(input).into_owned();
    let _ = cni::parse_cni_args(&text);
    let saved = iptables::parse_save(&text);
    let _ = iptables::render_cleanup(&saved);
    let strings: Vec<String> = (0..4).map(|_| rand_string(rng)).collect();
    for cmd in [Command::Add, Command::Del, Command::Check, Command::Gc] {
        let e = Env::from_env(cmd, |k| match k {
            "CNI_CONTAINERID" => Some(strings[0].clone()),
            "CNI_IFNAME" => Some(strings[1].clone()),
            "CNI_NETNS" => Some(strings[2].clone()),
            "CNI_ARGS" => Some(text.clone()),
            _ => None,
        });
        if let Err(e) = e {
            assert_eq!(e.code, 4, "{}", e.msg);
        }
    }
    let _ = Command::parse(&strings[3]);
    for key in [strings[0].as_str(), strings[3].as_str()] {
        match config::load_network(dir, key) {
            Ok(n) => assert!(n.is_object()),
            Err(e) => assert_eq!(e.code, 7, "{}", e.msg),
        }
        if !key.starts_with('/') && (key.contains('/') || key.contains("..")) {
            assert!(
                config::load_network(dir, key).is_err(),
                "{key:?} escaped confDir"
            );
        }
    }
    // Kubernetes mode: the networks annotation (short and JSON forms),
    // default-network, the mesh annotations, NAD annotations, network-status
    // building, the kubeconfig (YAML) loader. Ok, or an error with the
    // documented code naming what was wrong; never a panic, and whatever is
    // accepted renders into rules that pass the capture checks.
    k8s_case(rng, bases, &text, &v);
}

fn k8s_case(rng: &mut Rng, bases: &[Value], text: &str, v: &Value) {
    use multimesh::k8s::{self, kubeconfig, pod};
    let mut sels = vec![text.to_string(), v.to_string()];
    let mut list = serde_json::json!([{"name": "a", "namespace": "b", "interface": "net9",
        "ips": ["198.51.100.9/24"], "mac": "02:00:00:00:00:01", "default-route": ["198.51.100.1"],
        "portMappings": [{"hostPort": 1, "containerPort": 2}], "bandwidth": {"ingressRate": 1},
        "cni-args": {"x": 1}}]);
    mutate(rng, &mut list);
    sels.push(list.to_string());
    sels.push(format!(
        "{},{}@{}",
        rand_string(rng),
        rand_string(rng),
        rand_string(rng)
    ));
    for s in &sels {
        match pod::parse_networks(s) {
            Ok(l) => {
                for x in l {
                    assert!(pod::is_dns_subdomain(&x.name), "{:?}", x.name);
                    if let Some(i) = &x.interface {
                        assert!(multimesh::cni::validate_ifname(i).is_ok(), "{i:?}");
                    }
                    let _ = x.runtime_config();
                }
            }
            Err(e) => assert_eq!(e.code, 110, "{}", e.msg),
        }
        if let Err(e) = pod::parse_default_network(s) {
            assert_eq!(e.code, 110, "{}", e.msg);
        }
    }
    // Mesh annotations with random values on a meshed pod of each profile.
    const KEYS: &[&str] = &[
        "traffic.sidecar.istio.io/includeInboundPorts",
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "traffic.sidecar.istio.io/includeOutboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeInterfaces",
        "sidecar.istio.io/interceptionMode",
        "multimesh.io/dns-capture",
        "istio.io/reroute-virtual-interfaces",
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        "config.linkerd.io/skip-inbound-ports",
        "config.linkerd.io/skip-outbound-ports",
        "config.linkerd.io/skip-subnets",
        "config.linkerd.io/proxy-uid",
    ];
    for profile in ["istio", "linkerd"] {
        let mut ann = serde_json::Map::new();
        ann.insert("sidecar.istio.io/status".into(), "{}".into());
        for _ in 0..(1 + rng.below(3)) {
            let k = *rng.pick(KEYS);
            let val = match rng.below(3) {
                0 => rand_string(rng),
                1 => text.chars().take(64).collect(),
                _ => format!(
                    "{},{}-{}",
                    rng.below(70000),
                    rng.below(70000),
                    rng.below(70000)
                ),
            };
            ann.insert(k.into(), val.into());
        }
        let podv = serde_json::json!({"metadata": {"namespace": "default", "annotations": ann},
            "spec": {"containers": [{"name": "istio-proxy"}, {"name": "linkerd-proxy"}]}});
        let base =
            CaptureConfig::from_json(Some(&serde_json::json!({"profile": profile}))).unwrap();
        let podv = pod::Pod::from_json(&podv).unwrap();
        // The same random annotations on the namespace (linkerd reads them
        // when the pod has none of its own).
        let nsv = pod::Namespace::from_json(&serde_json::json!({"metadata": {"annotations": ann}}))
            .unwrap();
        let none = podv.annotation("sidecar.istio.io/interceptionMode") == Some("NONE");
        match pod::capture_for_pod(&base, &podv, Some(&nsv)) {
            Ok(Some(c)) => check_capture(&c, rng),
            Ok(None) => assert!(none, "a meshed pod was not captured"),
            Err(e) => {
                assert_eq!(e.code, 110, "{}", e.msg);
                assert!(KEYS.iter().any(|k| e.msg.contains(k)), "{}", e.msg);
            }
        }
    }
    if let Ok(nad) = pod::Nad::from_json(v) {
        let _ = pod::nad_capture(&nad);
    }
    let _ = pod::Pod::from_json(v).map(|p| p.check_annotation_sizes());
    let _ = pod::status_entry("a/b", "net1", Some(v), rng.below(2) == 0);
    // Kubeconfig documents: random text, and mutated valid ones.
    let _ = k8s::yaml_to_json(text);
    let mut kc = serde_json::json!({"clusters": [{"name": "c", "cluster": {"server": "https://198.51.100.1:6443",
        "certificate-authority-data": "aGVsbG8=", "insecure-skip-tls-verify": false}}],
        "users": [{"name": "u", "user": {"token": "t", "tokenFile": "f"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"});
    mutate(rng, &mut kc);
    let _ = kubeconfig::from_value(&kc, Path::new("/nonexistent"));
    let _ = kubeconfig::parse_server(&rand_string(rng));
    let _ = kubeconfig::base64_decode(text);
    let _ = bases;
}

#[test]
fn parsers_never_panic() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let dir = std::env::temp_dir().join(format!("mm-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A confDir for clusterNetwork / defaultNetworks lookups.
    std::fs::write(
        dir.join("10-extra.conf"),
        r#"{"cniVersion":"1.0.0","name":"extra","type":"macvlan"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("20-bad.conflist"), "{not json").unwrap();
    let bases = base_confs(&dir);
    // The bases themselves are accepted.
    for b in &bases {
        NetConf::parse(&serde_json::to_vec(b).unwrap()).unwrap_or_else(|e| panic!("base {b}: {e}"));
    }
    let start = Instant::now();
    let (mut cases, mut accepted) = (0usize, 0usize);
    while cases < 20_000 && start.elapsed() < Duration::from_secs(12) {
        let input = gen_input(&mut rng, &bases);
        let r = catch_unwind(AssertUnwindSafe(|| {
            parsers_case(&mut rng, &bases, &dir, &input)
        }));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("seed {seed} case {cases}: {msg}\ninput: {}", show(&input));
        }
        if NetConf::parse(&input).is_ok() {
            accepted += 1;
        }
        cases += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "fuzz parsers: seed {seed}, {cases} cases ({accepted} accepted configs) in {:.1}s\n",
        start.elapsed().as_secs_f64()
    );
    use std::io::Write;
    let _ = std::io::stderr().write_all(report.as_bytes());
    assert!(cases >= 1000, "too few cases: {report}");
    assert!(
        accepted > cases / 20,
        "the mutations rarely keep a config valid: {report}"
    );
}

/// Pin the directories a config could make multimesh touch to the test's:
/// a mutation may remove or retype them, but must never send state to the
/// host's /var/lib/cni/multimesh. (A retyped one is refused with code 7
/// before anything runs.)
fn pin_dirs(v: &mut Value, node: &Node) {
    if let Some(m) = v.as_object_mut() {
        for (k, d) in [
            ("cniDir", node.cni_dir()),
            ("confDir", node.dir.join("conf")),
            ("binDir", bin_dir()),
        ] {
            if m.get(k).is_none_or(Value::is_string) {
                m.insert(k.into(), Value::String(d.display().to_string()));
            }
        }
        m.remove("logFile");
        m.remove("kubeconfig");
    }
}

/// Configs the binary may really run: delegates are mm-recorder (no
/// kernel objects), capture goes to the test's pod netns.
fn runnable_bases(node: &Node) -> Vec<Value> {
    let mut meta = node.meta(
        vec![
            node.recorder("one", json!({})),
            json!({"cniVersion": "0.4.0", "name": "list", "plugins": [
                node.recorder("x", json!({})), node.recorder("x", json!({"address": "2001:db8::9/64"}))]}),
        ],
        json!({"backend": "iptables", "iptablesVariant": "legacy", "excludeInterfaces": ["net1"]}),
    );
    meta["logLevel"] = json!("error");
    let chained = json!({"cniVersion": "1.0.0", "name": "chained", "type": "multimesh",
        "cniDir": node.cni_dir().display().to_string(), "logLevel": "error",
        "capture": {"backend": "nftables", "excludeInboundPorts": "22"},
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                       "ips": [{"address": "198.51.100.2/25", "interface": 0}], "dns": {}}});
    let mut off = node.meta(
        vec![node.recorder("off", json!({}))],
        json!({"enabled": false}),
    );
    off["cniVersion"] = json!("0.3.1");
    vec![meta, chained, off]
}

#[test]
fn binary_answers_every_input_with_json() {
    let seed = seed() ^ 0xb1;
    let mut rng = Rng::new(seed);
    let node = Node::new("fuzz");
    let pod = node.pod("p");
    let bases = runnable_bases(&node);
    let start = Instant::now();
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut cases = 0usize;
    while cases < 400 && start.elapsed() < Duration::from_secs(40) {
        let mut input = gen_input(&mut rng, &bases);
        if let Ok(mut v) = serde_json::from_slice::<Value>(&input) {
            pin_dirs(&mut v, &node);
            input = serde_json::to_vec(&v).unwrap();
        }
        let cmd = *rng.pick(&[
            "ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "CHECK", "GC", "STATUS", "VERSION",
        ]);
        let cid = format!("fz{cases}");
        let mut env = cni_env(cmd, &pod.path, &cid, "eth0");
        if rng.percent(8) {
            // A bad or odd environment now and then.
            let k = *rng.pick(&[
                "CNI_CONTAINERID",
                "CNI_IFNAME",
                "CNI_NETNS",
                "CNI_ARGS",
                "CNI_PATH",
                "CNI_COMMAND",
            ]);
            env.retain(|(ek, _)| ek != k);
            if rng.percent(70) {
                env.push((k.to_string(), rand_string(&mut rng).replace('\0', "")));
            }
        }
        let out = finish(
            spawn_in(&node.name, BIN, &env, &input),
            Duration::from_secs(60),
        );
        let ctx = || {
            format!(
                "seed {seed} case {cases} {cmd} env {env:?}\ninput: {}\nexit {}\nstdout: {:?}\nstderr: {}",
                show(&input),
                out.code,
                out.stdout,
                out.stderr.chars().take(2000).collect::<String>()
            )
        };
        assert!(
            out.code == 0 || out.code == 1,
            "killed, panicked or odd exit: {}",
            ctx()
        );
        let body = out.stdout.trim();
        if out.code == 1 {
            assert_eq!(
                out.stdout.lines().count(),
                1,
                "more than the error on stdout: {}",
                ctx()
            );
            let e = &out.json;
            assert!(
                e["code"].is_u64() && e["msg"].is_string() && e["cniVersion"].is_string(),
                "not a CNI error: {}",
                ctx()
            );
            *codes.entry(e["code"].to_string()).or_default() += 1;
        } else {
            if body.is_empty() {
                assert!(cmd != "ADD" && cmd != "VERSION", "no result: {}", ctx());
            } else {
                assert!(
                    out.json.is_object() && out.json["cniVersion"].is_string(),
                    "not one JSON result: {}",
                    ctx()
                );
                assert_eq!(out.stdout.lines().count(), 1, "{}", ctx());
            }
            *codes.entry("ok".into()).or_default() += 1;
        }
        cases += 1;
    }
    let report = format!(
        "fuzz binary: seed {seed}, {cases} runs in {:.1}s, outcomes {codes:?}\n",
        start.elapsed().as_secs_f64()
    );
    use std::io::Write;
    let _ = std::io::stderr().write_all(report.as_bytes());
    assert!(cases >= 50, "too few runs: {report}");
    assert!(
        codes.get("ok").copied().unwrap_or(0) > 0,
        "nothing ever succeeded: {report}"
    );
}

/// What the fuzzer found, kept as plain cases. A chained ADD echoed a
/// prevResult without a usable cniVersion (null) as its own result (exit 0,
/// a result no runtime can parse); it now answers in the config's version
/// or refuses with code 1.
#[test]
fn regressions_found_by_fuzzing() {
    let node = Node::new("fzreg");
    let pod = node.pod("p");
    let chained = |prev_version: Value| {
        json!({"cniVersion": "1.0.0", "name": "chained", "type": "multimesh",
               "cniDir": node.cni_dir().display().to_string(), "capture": {"enabled": false},
               "prevResult": {"cniVersion": prev_version, "interfaces": [{"name": "eth0"}],
                              "ips": [{"version": "4", "address": "198.51.100.2/25", "interface": 0}]}})
    };
    for (i, v) in [json!("0.4.0"), json!("1.0.0")].into_iter().enumerate() {
        let conf = chained(v.clone());
        let cid = format!("reg{i}");
        let out = node.cni("ADD", &conf, &pod.path, &cid, "eth0");
        let r = out.ok();
        assert_eq!(r["cniVersion"], "1.0.0", "prevResult version {v}: {r}");
        assert!(r["ips"][0].get("version").is_none(), "{r}");
        assert_eq!(r["ips"][0]["address"], "198.51.100.2/25");
        node.cni("DEL", &conf, &pod.path, &cid, "eth0").ok();
    }
    for v in [Value::Null, json!("9.9.9"), json!(7)] {
        let conf = chained(v.clone());
        let msg = node.cni("ADD", &conf, &pod.path, "reg9", "eth0").err(1);
        assert!(msg.contains("prevResult"), "{v}: {msg}");
        node.cni("DEL", &conf, &pod.path, "reg9", "eth0").ok();
    }
    node.assert_no_leaks();
}

/// Valid API server answers in every framing the client reads: (wire, the
/// bodies of the responses in it). Several responses back to back, as on a
/// kept-alive connection.
fn http_seeds() -> Vec<(Vec<u8>, Vec<&'static [u8]>)> {
    let pod: &[u8] =
        br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns","uid":"u-1"}}"#;
    let status: &[u8] = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"p\" not found","reason":"NotFound","code":404}"#;
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for part in pod.chunks(17) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut with_ext = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    with_ext.extend_from_slice(format!("{:X};ext=1;q=\"a;b\"\r\n", pod.len()).as_bytes());
    with_ext.extend_from_slice(pod);
    with_ext.extend_from_slice(b"\r\n0;last\r\nX-Trailer: yes\r\nExpires: 0\r\n\r\n");
    let cl = |code: &str, body: &[u8], extra: &str| {
        let mut w = format!(
            "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        w.extend_from_slice(body);
        w
    };
    let mut close =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    close.extend_from_slice(pod);
    let mut http10 = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    http10.extend_from_slice(status);
    let mut two = cl("200 OK", pod, "");
    two.extend_from_slice(&chunked);
    two.extend_from_slice(&cl("404 Not Found", status, "Connection: keep-alive\r\n"));
    let mut interim = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    interim.extend_from_slice(&cl("201 Created", pod, ""));
    vec![
        (cl("200 OK", pod, ""), vec![pod]),
        (cl("404 Not Found", status, ""), vec![status]),
        (
            cl("429 Too Many Requests", status, "Retry-After: 1\r\n"),
            vec![status],
        ),
        (chunked, vec![pod]),
        (with_ext, vec![pod]),
        (close, vec![pod]),
        (http10, vec![status]),
        (two, vec![pod, pod, status]),
        (interim, vec![pod]),
        (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), vec![b""]),
    ]
}

/// Tokens that mean something to an HTTP/1.1 response parser.
const HTTP_WORDS: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    "\r\n\r\n",
    " ",
    ":",
    ";",
    "0",
    "0\r\n\r\n",
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.0 ",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Content-Length: 0\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: -1\r\n",
    "Content-Length: 18446744073709551615\r\n",
    "Content-Length: 18446744073709551616\r\n",
    "Content-Length: 16777216\r\n",
    "Content-Length: 16777217\r\n",
    "Connection: close\r\n",
    "Connection: keep-alive\r\n",
    "ffffffffffffffff",
    "fffffffffffffffe",
    "fffffffffffffffd",
    "10000000000000000",
    "1000000",
    "1000001",
    "7fffffffffffffff",
    ";ext=\"x\"",
    "X-Trailer: 1\r\n",
    " folded\r\n",
    "\u{0}",
    "é",
];

/// One mutated response stream.
fn gen_http(rng: &mut Rng, seeds: &[(Vec<u8>, Vec<&[u8]>)]) -> Vec<u8> {
    let mut w = match rng.below(20) {
        // Random bytes, sometimes behind a valid status line.
        0 => {
            let mut w = if rng.percent(50) {
                b"HTTP/1.1 200 OK\r\n".to_vec()
            } else {
                Vec::new()
            };
            for _ in 0..rng.below(300) {
                w.push(rng.next() as u8);
            }
            return w;
        }
        // Random tokens.
        1 => {
            let mut w = Vec::new();
            for _ in 0..rng.below(40) {
                w.extend_from_slice(rng.pick(HTTP_WORDS).as_bytes());
            }
            return w;
        }
        _ => rng.pick(seeds).0.clone(),
    };
    for _ in 0..(1 + rng.below(4)) {
        let len = w.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            // Flip, set or delete bytes.
            0 if len > 0 => {
                let i = rng.below(len);
                w[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                w[i] = *rng.pick(b"\r\n :;0fF-+\x00\xff");
            }
            2 => {
                let end = (at + rng.below(16)).min(len);
                w.drain(at..end);
            }
            // Insert a token (a huge chunk size or length, a header, CRLF).
            3 | 4 => {
                let t = rng.pick(HTTP_WORDS).as_bytes().to_vec();
                w.splice(at..at, t);
            }
            // Replace a number (chunk size or length) with a huge one.
            5 => {
                if let Some(p) = (at..len).find(|&i| w[i].is_ascii_hexdigit()) {
                    let end = (p..len).find(|&i| !w[i].is_ascii_hexdigit()).unwrap_or(len);
                    let big = rng
                        .pick(&[
                            "ffffffffffffffff",
                            "fffffffffffffffe",
                            "18446744073709551615",
                            "1000001",
                            "99999999999999999999999",
                        ])
                        .as_bytes()
                        .to_vec();
                    w.splice(p..end, big);
                }
            }
            // Truncate; duplicate a piece.
            6 => w.truncate(at),
            _ => {
                let end = (at + rng.below(64)).min(len);
                let piece = w[at..end].to_vec();
                w.splice(at..at, piece);
            }
        }
    }
    w
}

/// Read responses from `input` until an error or the end: never a panic,
/// never a Status error (the parser has none), bodies within MAX_BODY, at
/// most one response per byte.
fn http_case(rng: &mut Rng, input: &[u8]) -> Vec<Result<(u16, usize), String>> {
    use multimesh::k8s::client::{read_response, ApiError, MAX_BODY};
    use std::io::BufReader;
    let cap = *rng.pick(&[1usize, 2, 7, 64, 8192]);
    let mut r = BufReader::with_capacity(cap, input);
    let mut out = Vec::new();
    for _ in 0..=input.len() {
        match read_response(&mut r) {
            Ok(resp) => {
                assert!((200..=999).contains(&resp.status), "status {}", resp.status);
                assert!(resp.body.len() <= MAX_BODY);
                assert!(resp.body.len() <= input.len(), "body longer than the input");
                out.push(Ok((resp.status, resp.body.len())));
                if !resp.keep_alive {
                    break;
                }
            }
            Err(e @ ApiError::Status { .. }) => panic!("parser returned {e:?}"),
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

/// Random and mutated HTTP responses (chunked, Content-Length and
/// close-delimited seeds) through the API client's response parser, read
/// through buffers of several sizes: never a panic, bounded time per
/// input, bounded bodies; the unmutated seeds parse to their bodies.
#[test]
fn http_responses_never_panic() {
    use multimesh::k8s::client::read_response;
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x6874_7470);
    let seeds = http_seeds();
    for (wire, bodies) in &seeds {
        let mut r = &wire[..];
        for b in bodies {
            let resp = read_response(&mut r).unwrap_or_else(|e| panic!("seed {}: {e}", show(wire)));
            assert_eq!(&resp.body[..], *b, "seed {}", show(wire));
        }
        assert!(r.is_empty(), "seed {} not read to the end", show(wire));
    }
    let start = Instant::now();
    let (mut cases, mut ok, mut slowest) = (0usize, 0usize, Duration::ZERO);
    while cases < 50_000 && start.elapsed() < Duration::from_secs(10) {
        let input = gen_http(&mut rng, &seeds);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| http_case(&mut rng, &input)));
        let took = t.elapsed();
        match r {
            Ok(results) => ok += results.iter().filter(|x| x.is_ok()).count(),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("seed {seed} case {cases}: {msg}\ninput: {}", show(&input));
            }
        }
        assert!(
            took < Duration::from_secs(2),
            "seed {seed} case {cases}: took {took:?}\ninput: {}",
            show(&input)
        );
        slowest = slowest.max(took);
        cases += 1;
    }
    let report = format!(
        "fuzz http responses: seed {seed}, {cases} cases ({ok} responses parsed), slowest {slowest:?}, {:.1}s\n",
        start.elapsed().as_secs_f64()
    );
    use std::io::Write;
    let _ = std::io::stderr().write_all(report.as_bytes());
    assert!(cases >= 1000, "too few cases: {report}");
    assert!(
        ok > cases / 10,
        "the mutations rarely keep a response valid: {report}"
    );
}

/// Watch streams (chunked JSON event lines) cut, corrupted and spliced at
/// random: reading them never panics, never loops, and always ends (an
/// event, the end, or an error) within bounded time. Valid seeds read back
/// exactly.
#[test]
fn watch_streams_never_panic() {
    use multimesh::agent::pods::Pod;
    use multimesh::k8s::client::Watch;
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x7761_7463);
    let pod = |n: usize| {
        json!({"type": "MODIFIED", "object": {"metadata": {"name": format!("p{n}"), "namespace": "ns",
            "uid": format!("u{n}"), "resourceVersion": n.to_string(),
            "annotations": {"sidecar.istio.io/status": "{}"}},
            "spec": {"containers": [{"name": "istio-proxy"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "198.51.100.9"}]}}})
        .to_string()
    };
    let chunk = |data: &[u8], size: usize| {
        let mut out = Vec::new();
        for c in data.chunks(size.max(1)) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let read_all = |wire: Vec<u8>, chunked: bool| -> (usize, bool) {
        let mut w = Watch::over(Box::new(std::io::Cursor::new(wire)), chunked);
        let mut n = 0;
        loop {
            match w.next_event::<Value>() {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, true),
                Err(_) => return (n, false),
            }
            assert!(n < 100_000, "a watch that never ends");
        }
    };
    let body: Vec<u8> = (0..5)
        .flat_map(|i| format!("{}\n", pod(i)).into_bytes())
        .collect();
    for size in [1, 7, 64, body.len()] {
        assert_eq!(read_all(chunk(&body, size), true), (5, true));
        // And typed as the agent reads them.
        let mut w = Watch::over(Box::new(std::io::Cursor::new(chunk(&body, size))), true);
        let (_, p) = w.next_event::<Pod>().unwrap().unwrap();
        assert_eq!(p.metadata.name, "p0");
    }
    let start = Instant::now();
    let mut cases = 0usize;
    while cases < 20_000 && start.elapsed() < Duration::from_secs(8) {
        let mut wire = chunk(&body, 1 + rng.below(40));
        for _ in 0..1 + rng.below(4) {
            if wire.is_empty() {
                break;
            }
            let i = rng.below(wire.len());
            match rng.below(5) {
                0 => wire.truncate(i),
                1 => wire[i] = rng.next() as u8,
                2 => wire.insert(i, *rng.pick(b"\r\n0123456789abcdefzZ{}\":; ")),
                3 => {
                    let j = (i + rng.below(64)).min(wire.len());
                    wire.drain(i..j);
                }
                _ => {
                    let junk = rand_string(&mut rng).into_bytes();
                    wire.splice(i..i, junk);
                }
            }
        }
        let chunked = rng.percent(90);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| read_all(wire.clone(), chunked)));
        assert!(
            r.is_ok(),
            "seed {seed} case {cases}: panicked\ninput: {}",
            show(&wire)
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "seed {seed} case {cases}: slow"
        );
        cases += 1;
    }
    println!("fuzz watch streams: seed {seed}, {cases} cases");
}
