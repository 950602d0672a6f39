//! Core meta-plugin behaviour against real kernel objects and Debian's
//! reference plugins: delegation, results, rollback, state, DEL, GC.

mod common;
use common::*;
use serde_json::{json, Value};

const OFF: fn() -> Value = || json!({"enabled": false});

#[test]
fn three_attachments_bridge_bridge_macvlan() {
    let node = Node::new("three");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.second_bridge(), node.macvlan()],
        OFF(),
    );
    let res = node.cni("ADD", &conf, &pod.path, "c3", "eth0");
    let r = res.ok();
    // The cluster network's result, in the config's version.
    assert_eq!(r["cniVersion"], "1.0.0");
    let ip0 = r["ips"][0]["address"].as_str().unwrap();
    assert!(ip0.starts_with("198.51.100."), "{r}");
    let mut links = pod.links();
    links.sort();
    assert_eq!(links, ["eth0", "net1", "net2"]);
    assert_eq!(pod.addrs("eth0"), [ip0]);
    assert!(
        pod.addrs("net1")[0].starts_with("198.51.100.1"),
        "{:?}",
        pod.addrs("net1")
    );
    assert!(
        pod.addrs("net2")[0].starts_with("203.0.113."),
        "{:?}",
        pod.addrs("net2")
    );
    // Reachable through each network from the node.
    for a in [
        pod.addrs("eth0")[0].clone(),
        pod.addrs("net1")[0].clone(),
        pod.addrs("net2")[0].clone(),
    ] {
        let ip = a.split('/').next().unwrap();
        node.exec_ok(&format!("ping -c1 -W2 {ip}"));
    }
    // State exists while attached.
    assert!(node.cni_dir().join("c3").join("eth0.json").exists());
    node.cni("CHECK", &conf, &pod.path, "c3", "eth0").ok();
    // CHECK lists the pod netns itself: an attached interface that is gone
    // is 105, named, before any delegate's CHECK runs.
    pod.exec_ok("ip link del net2");
    let e = node.cni("CHECK", &conf, &pod.path, "c3", "eth0").err(105);
    assert!(e.contains("interface net2 is gone"), "{e}");
    node.cni("DEL", &conf, &pod.path, "c3", "eth0").ok();
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    node.assert_no_leaks();
}

fn ipam_allocations(node: &Node) -> Vec<String> {
    walk(&node.dir.join("ipam"))
        .into_iter()
        .filter(|p| {
            std::path::Path::new(p)
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.parse::<std::net::IpAddr>().is_ok())
        })
        .collect()
}

#[test]
fn result_is_converted_to_the_config_version() {
    let node = Node::new("ver");
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = node.pod(&format!("v{}", v.replace('.', "")));
        // Delegates speak 1.0.0 (bridge) and 0.4.0 (recorder); the result
        // comes back in the multimesh config's version.
        let mut conf = node.meta(
            vec![
                node.cluster_bridge(),
                node.recorder("rec", json!({"cniVersion": "0.4.0"})),
            ],
            OFF(),
        );
        conf["cniVersion"] = json!(v);
        let cid = format!("ver{}", v.replace('.', ""));
        let out = node.cni("ADD", &conf, &pod.path, &cid, "eth0");
        let r = out.ok();
        assert_eq!(r["cniVersion"], v);
        let ip = &r["ips"][0];
        if v.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{v}: {r}");
        } else {
            assert!(ip.get("version").is_none(), "{v}: {r}");
        }
        assert!(ip["address"].as_str().unwrap().starts_with("198.51.100."));
        node.cni("DEL", &conf, &pod.path, &cid, "eth0").ok();
    }
    node.assert_no_leaks();
}

#[test]
fn delegates_get_ifnames_env_and_runtime_config_by_capability() {
    let node = Node::new("env");
    let pod = node.pod("p");
    let mut conf = node.meta(
        vec![
            node.recorder("first", json!({"capabilities": {"portMappings": true}})),
            node.recorder("second", json!({"capabilities": {"mac": true}})),
            node.recorder("third", json!({"custom": {"kept": [1, 2]}})),
        ],
        OFF(),
    );
    conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                                   "mac": "02:00:00:00:00:01"});
    node.cni("ADD", &conf, &pod.path, "envc", "eth0").ok();
    let calls = node.calls();
    assert_eq!(calls.len(), 3);
    let ifnames: Vec<_> = calls
        .iter()
        .map(|c| c["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(ifnames, ["eth0", "net1", "net2"]);
    for c in &calls {
        assert_eq!(c["command"], "ADD");
        assert_eq!(c["containerID"], "envc");
        assert_eq!(c["netns"], pod.path.as_str());
        assert!(c["args"].as_str().unwrap().contains("K8S_POD_NAME=test"));
        // binDir first, then the runtime's CNI_PATH.
        assert!(c["path"]
            .as_str()
            .unwrap()
            .starts_with(bin_dir().to_str().unwrap()));
        assert!(c["path"].as_str().unwrap().ends_with(REF_PLUGINS));
    }
    // The cluster network gets the runtime's portMappings (it declares the
    // capability); nobody gets what they did not declare.
    assert_eq!(
        calls[0]["config"]["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(calls[0]["config"]["runtimeConfig"].get("mac").is_none());
    assert!(calls[1]["config"].get("runtimeConfig").is_none());
    // Unknown fields pass through untouched.
    assert_eq!(calls[2]["config"]["custom"], json!({"kept": [1, 2]}));
    assert_eq!(calls[2]["config"]["name"], "third");
    node.cni("DEL", &conf, &pod.path, "envc", "eth0").ok();
    let dels: Vec<_> = node.calls()[3..]
        .iter()
        .map(|c| c["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dels, ["net2", "net1", "eth0"], "DEL runs in reverse");
    node.assert_no_leaks();
}

#[test]
fn conflist_delegate_runs_its_chain_with_prev_result() {
    let node = Node::new("chain");
    let pod = node.pod("p");
    let list = json!({"cniVersion": "1.0.0", "name": "listnet", "plugins": [
        node.recorder("x", json!({"address": "203.0.113.50/24"})),
        node.recorder("x", json!({"step": 2})),
    ]});
    let conf = node.meta(vec![list], OFF());
    let r = node.cni("ADD", &conf, &pod.path, "chainc", "eth0");
    assert_eq!(r.ok()["ips"][0]["address"], "203.0.113.50/24");
    let calls = node.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0]["config"].get("prevResult").is_none());
    assert_eq!(
        calls[1]["config"]["prevResult"]["ips"][0]["address"],
        "203.0.113.50/24"
    );
    assert_eq!(calls[1]["config"]["name"], "listnet");
    node.cni("DEL", &conf, &pod.path, "chainc", "eth0").ok();
    let calls = node.calls();
    assert_eq!(
        calls[2]["config"]["step"], 2,
        "the chain is deleted in reverse"
    );
    assert_eq!(
        calls[2]["config"]["prevResult"]["ips"][0]["address"],
        "203.0.113.50/24"
    );
    node.assert_no_leaks();
}

#[test]
fn rollback_at_each_position_leaves_nothing() {
    let node = Node::new("rb");
    let fail = || node.recorder("failing", json!({"failOn": "ADD", "failCode": 11}));
    let cases: Vec<Vec<Value>> = vec![
        vec![fail()],
        vec![node.cluster_bridge(), fail()],
        vec![node.cluster_bridge(), node.second_bridge(), fail()],
        vec![
            node.cluster_bridge(),
            node.second_bridge(),
            node.macvlan(),
            fail(),
        ],
        // A crashing delegate (no CNI error JSON) in the middle.
        vec![
            node.cluster_bridge(),
            node.recorder("crash", json!({"failOn": "ADD", "crash": true})),
            node.macvlan(),
        ],
    ];
    for (k, delegates) in cases.into_iter().enumerate() {
        let pod = node.pod(&format!("k{k}"));
        let crash = k == 4;
        let conf = node.meta(delegates, OFF());
        let out = node.cni("ADD", &conf, &pod.path, &format!("rb{k}"), "eth0");
        let msg = out.err(if crash { 100 } else { 11 });
        assert!(
            msg.contains(if crash { "crash" } else { "failing" }),
            "{msg}"
        );
        assert!(pod.links().is_empty(), "case {k}: {:?}", pod.links());
        assert!(
            ipam_allocations(&node).is_empty(),
            "case {k}: {:?}",
            ipam_allocations(&node)
        );
        node.assert_no_leaks();
        // The runtime DELs after a failed ADD: that must succeed too.
        node.cni("DEL", &conf, &pod.path, &format!("rb{k}"), "eth0")
            .ok();
        node.assert_no_leaks();
    }
}

#[test]
fn del_is_idempotent_and_survives_missing_netns_and_state() {
    let node = Node::new("del");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.recorder("rec", json!({}))],
        OFF(),
    );
    node.cni("ADD", &conf, &pod.path, "d1", "eth0").ok();
    node.cni("DEL", &conf, &pod.path, "d1", "eth0").ok();
    node.cni("DEL", &conf, &pod.path, "d1", "eth0").ok();
    node.assert_no_leaks();

    // The netns disappears before DEL: IPs and host veths are still released.
    let pod2 = node.pod("gone");
    node.cni("ADD", &conf, &pod2.path, "d2", "eth0").ok();
    assert_eq!(ipam_allocations(&node).len(), 1);
    node.remove_pod_netns(&pod2);
    node.cni("DEL", &conf, &pod2.path, "d2", "eth0").ok();
    node.cni_env("DEL", &conf, "", "d2", "eth0", &[("CNI_NETNS", "")])
        .ok();
    // The host veth goes with the netns, in the kernel's background cleanup.
    node.assert_no_leaks_within(std::time::Duration::from_secs(5));

    // cniDir lost (node wiped it): DEL falls back to the config's delegates
    // for IPAM; the interfaces (nothing says they are this container's) go
    // with the netns.
    let pod3 = node.pod("nostate");
    node.cni("ADD", &conf, &pod3.path, "d3", "eth0").ok();
    std::fs::remove_dir_all(node.cni_dir().join("d3")).unwrap();
    node.cni("DEL", &conf, &pod3.path, "d3", "eth0").ok();
    assert!(ipam_allocations(&node).is_empty());
    node.remove_pod_netns(&pod3);
    node.assert_no_leaks_within(std::time::Duration::from_secs(5));

    // Never added at all.
    node.cni("DEL", &conf, &pod.path, "never", "eth0").ok();
    node.assert_no_leaks();
}

#[test]
fn twenty_add_del_cycles_leave_nothing_behind() {
    let node = Node::new("cyc");
    let pod = node.pod("p");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.second_bridge()],
        json!({"backend": "iptables", "iptablesVariant": "legacy"}),
    );
    for i in 0..20 {
        let cid = format!("cycle{i}");
        node.cni("ADD", &conf, &pod.path, &cid, "eth0").ok();
        node.cni("DEL", &conf, &pod.path, &cid, "eth0").ok();
    }
    assert!(pod.links().is_empty());
    assert!(!pod
        .exec_ok("iptables-legacy-save -t nat")
        .contains("MULTIMESH"));
    node.assert_no_leaks();
}

#[test]
fn second_add_of_same_interface_fails_without_touching_the_first() {
    let node = Node::new("dup");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], OFF());
    node.cni("ADD", &conf, &pod.path, "dup", "eth0").ok();
    node.cni("ADD", &conf, &pod.path, "dup", "eth0").err(106);
    // The first attachment is intact.
    assert_eq!(pod.links(), ["eth0"]);
    node.cni("CHECK", &conf, &pod.path, "dup", "eth0").ok();
    node.cni("DEL", &conf, &pod.path, "dup", "eth0").ok();
    node.assert_no_leaks();
}

#[test]
fn stale_state_from_a_crashed_add_is_cleaned_by_the_next_add() {
    let node = Node::new("stale");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.recorder("rec", json!({}))], OFF());
    node.cni("ADD", &conf, &pod.path, "st", "eth0").ok();
    // Pretend the ADD crashed before completing.
    let p = node.cni_dir().join("st").join("eth0.json");
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    rec["complete"] = json!(false);
    std::fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
    node.cni("ADD", &conf, &pod.path, "st", "eth0").ok();
    let cmds: Vec<_> = node
        .calls()
        .iter()
        .map(|c| c["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cmds,
        ["ADD", "DEL", "ADD"],
        "the crashed ADD was undone first"
    );
    node.cni("DEL", &conf, &pod.path, "st", "eth0").ok();
    node.assert_no_leaks();
}

#[test]
fn state_file_is_private_and_complete() {
    let node = Node::new("perm");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], OFF());
    node.cni("ADD", &conf, &pod.path, "perm", "eth0").ok();
    use std::os::unix::fs::PermissionsExt;
    let dir = node.cni_dir().join("perm");
    let f = dir.join("eth0.json");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let rec: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    assert_eq!(rec["complete"], true);
    assert_eq!(rec["attachments"][0]["conf"]["type"], "bridge");
    assert!(rec["attachments"][0]["result"]["ips"].is_array());
    // No temp files left beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    node.cni("DEL", &conf, &pod.path, "perm", "eth0").ok();
    node.assert_no_leaks();
}

#[test]
fn path_traversal_in_delegate_type_is_refused_before_anything_runs() {
    let node = Node::new("trav");
    let pod = node.pod("p");
    let canary = node.dir.join("canary-ran");
    let script = node.dir.join("canary");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch {}\necho '{{}}'\n", canary.display()),
    )
    .unwrap();
    sh_ok(&format!("chmod +x {}", script.display()));
    let rel = format!("../../../../../..{}", script.display());
    for t in [rel.as_str(), script.to_str().unwrap(), "..", "sub/plugin"] {
        let conf = node.meta(
            vec![
                node.recorder("ok", json!({})),
                json!({"name": "bad", "type": t}),
            ],
            OFF(),
        );
        let msg = node.cni("ADD", &conf, &pod.path, "trav", "eth0").err(7);
        assert!(msg.contains("bare plugin name"), "{msg}");
        assert!(!canary.exists(), "the canary plugin ran for type {t:?}");
        assert!(node.calls().is_empty(), "a delegate ran before the refusal");
        node.assert_no_leaks();
    }
    // Also inside a conflist.
    let list = json!({"name": "l", "cniVersion": "1.0.0", "plugins": [{"type": "mm-recorder"}, {"type": rel}]});
    node.cni(
        "ADD",
        &node.meta(vec![list], OFF()),
        &pod.path,
        "trav",
        "eth0",
    )
    .err(7);
    assert!(!canary.exists());
    node.assert_no_leaks();
}

#[test]
fn error_codes_for_bad_input() {
    let node = Node::new("err");
    let pod = node.pod("p");
    let good = node.meta(vec![node.recorder("rec", json!({}))], OFF());
    let run = |conf: &[u8], env: &[(&str, &str)]| {
        let mut e: Vec<(String, String)> = vec![
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), "errc".into()),
            ("CNI_NETNS".into(), pod.path.clone()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_PATH".into(), REF_PLUGINS.into()),
        ];
        for (k, v) in env {
            e.retain(|(x, _)| x != k);
            if !v.is_empty() {
                e.push((k.to_string(), v.to_string()));
            }
        }
        run_in(&node.name, BIN, &e, conf)
    };
    let good_bytes = serde_json::to_vec(&good).unwrap();
    // 4: environment.
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
        let msg = run(&good_bytes, &[(var, "")]).err(4);
        assert!(msg.contains(var), "{msg}");
    }
    run(&good_bytes, &[("CNI_COMMAND", "FROB")]).err(4);
    run(&good_bytes, &[("CNI_CONTAINERID", "../../etc")]).err(4);
    run(&good_bytes, &[("CNI_IFNAME", "this-is-too-long0")]).err(4);
    // 6: not JSON.
    run(b"{not json", &[]).err(6);
    // 1: version.
    let mut v = good.clone();
    v["cniVersion"] = json!("0.2.0");
    let o = run(&serde_json::to_vec(&v).unwrap(), &[]);
    o.err(1);
    // 7: invalid config.
    let mut v = good.clone();
    v["delegates"] = json!("bridge");
    assert!(run(&serde_json::to_vec(&v).unwrap(), &[])
        .err(7)
        .contains("delegates"));
    let mut v = good.clone();
    v["capture"] = json!({"enabled": true, "inboundPort": 0});
    assert!(run(&serde_json::to_vec(&v).unwrap(), &[])
        .err(7)
        .contains("capture.inboundPort"));
    // 2: unsupported field.
    let mut v = good.clone();
    v["capture"] = json!({"enabeld": true});
    run(&serde_json::to_vec(&v).unwrap(), &[]).err(2);
    // 101: plugin not installed.
    let mut v = good.clone();
    v["delegates"] = json!([{"name": "x", "type": "no-such-plugin"}]);
    assert!(run(&serde_json::to_vec(&v).unwrap(), &[])
        .err(101)
        .contains("no-such-plugin"));
    // 105: netns path that is not a netns.
    run(&good_bytes, &[("CNI_NETNS", "/etc/hostname")]).err(105);
    run(&good_bytes, &[("CNI_NETNS", "/run/netns/does-not-exist")]).err(105);
    // 107: CHECK without state.
    run(&good_bytes, &[("CNI_COMMAND", "CHECK")]).err(107);
    // Nothing ran, nothing is left.
    assert!(node.calls().is_empty());
    node.assert_no_leaks();
    // With any CNI_ variable set but no CNI_COMMAND it is still CNI: code 4.
    let o = run_in(
        &node.name,
        BIN,
        &[("CNI_IFNAME".into(), "eth0".into())],
        b"{}",
    );
    assert!(o.err(4).contains("CNI_COMMAND"));
}

#[test]
fn version_and_status() {
    let node = Node::new("vs");
    let env = |cmd: &str| {
        vec![
            ("CNI_COMMAND".to_string(), cmd.to_string()),
            ("CNI_PATH".into(), REF_PLUGINS.into()),
        ]
    };
    let o = run_in(
        &node.name,
        BIN,
        &env("VERSION"),
        br#"{"cniVersion":"0.4.0"}"#,
    );
    assert_eq!(o.ok()["cniVersion"], "0.4.0");
    assert_eq!(
        o.json["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let mut conf = node.meta(vec![node.recorder("rec", json!({}))], OFF());
    conf["cniVersion"] = json!("1.1.0");
    let ready = node.dir.join("ready");
    conf["readinessindicatorfile"] = json!(ready.display().to_string());
    let bytes = serde_json::to_vec(&conf).unwrap();
    run_in(&node.name, BIN, &env("STATUS"), &bytes).err(50);
    std::fs::write(&ready, "").unwrap();
    let o = run_in(&node.name, BIN, &env("STATUS"), &bytes);
    o.ok();
    assert!(o.stdout.trim().is_empty());
    conf["delegates"] = json!([{"type": "not-installed", "name": "x"}]);
    run_in(
        &node.name,
        BIN,
        &env("STATUS"),
        &serde_json::to_vec(&conf).unwrap(),
    )
    .err(50);
}

#[test]
fn chained_mode_passes_prev_result_through() {
    let node = Node::new("chn");
    let pod = node.pod("p");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": pod.path}],
                      "ips": [{"address": "198.51.100.77/25", "interface": 0}], "dns": {"nameservers": ["198.51.100.1"]}});
    let conf = json!({"cniVersion": "1.0.0", "name": "chained", "type": "multimesh",
        "cniDir": node.cni_dir().display().to_string(), "capture": {"enabled": false}, "prevResult": prev});
    let r = node.cni("ADD", &conf, &pod.path, "ch1", "eth0");
    assert_eq!(r.ok(), &prev);
    node.cni("CHECK", &conf, &pod.path, "ch1", "eth0").ok();
    node.cni("DEL", &conf, &pod.path, "ch1", "eth0").ok();
    // No prevResult: a valid empty result of the config's version.
    for v in ["0.4.0", "1.0.0"] {
        let conf = json!({"cniVersion": v, "name": "chained", "type": "multimesh",
            "cniDir": node.cni_dir().display().to_string(), "capture": {"enabled": false}});
        let r = node.cni("ADD", &conf, &pod.path, "ch2", "eth0");
        assert_eq!(r.ok()["cniVersion"], v);
        node.cni("DEL", &conf, &pod.path, "ch2", "eth0").ok();
    }
    node.assert_no_leaks();
}

#[test]
fn cluster_and_default_networks_from_conf_dir() {
    let node = Node::new("cdir");
    let pod = node.pod("p");
    let confdir = node.dir.join("conf");
    std::fs::write(
        confdir.join("10-cluster.conf"),
        serde_json::to_vec(&node.cluster_bridge()).unwrap(),
    )
    .unwrap();
    let list = json!({"cniVersion": "1.0.0", "name": "extra", "plugins": [node.second_bridge()]});
    std::fs::write(
        confdir.join("20-extra.conflist"),
        serde_json::to_vec(&list).unwrap(),
    )
    .unwrap();
    let mut conf = node.meta(vec![node.macvlan()], OFF());
    conf["clusterNetwork"] = json!("cluster");
    conf["defaultNetworks"] = json!(["20-extra"]);
    let r = node.cni("ADD", &conf, &pod.path, "cd", "eth0");
    assert!(r.ok()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("198.51.100."));
    assert!(pod.addrs("net1")[0].starts_with("198.51.100.1"));
    assert!(pod.addrs("net2")[0].starts_with("203.0.113."));
    node.cni("DEL", &conf, &pod.path, "cd", "eth0").ok();
    conf["clusterNetwork"] = json!("missing-net");
    assert!(node
        .cni("ADD", &conf, &pod.path, "cd", "eth0")
        .err(7)
        .contains("missing-net"));
    conf["clusterNetwork"] = json!("../etc/passwd");
    node.cni("ADD", &conf, &pod.path, "cd", "eth0").err(7);
    node.assert_no_leaks();
}

#[test]
fn gc_removes_attachments_not_in_the_valid_list() {
    let node = Node::new("gc");
    let conf = node.meta(
        vec![node.cluster_bridge(), node.recorder("rec", json!({}))],
        OFF(),
    );
    let pods: Vec<Pod> = (0..3).map(|i| node.pod(&format!("g{i}"))).collect();
    for (i, p) in pods.iter().enumerate() {
        node.cni("ADD", &conf, &p.path, &format!("gc{i}"), "eth0")
            .ok();
    }
    assert_eq!(ipam_allocations(&node).len(), 3);
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let mut gc = conf.clone();
        gc["cniVersion"] = json!("1.1.0");
        gc[key] = json!([{"containerID": "gc0", "ifname": "eth0"}, {"containerID": "gc1", "ifname": "eth0"}]);
        if key == "cni.dev/attachments" {
            gc[key] = json!([{"containerID": "gc0", "ifname": "eth0"}]);
        }
        let e = vec![
            ("CNI_COMMAND".to_string(), "GC".to_string()),
            ("CNI_PATH".into(), REF_PLUGINS.into()),
        ];
        run_in(&node.name, BIN, &e, &serde_json::to_vec(&gc).unwrap()).ok();
    }
    // gc2 then gc1 were collected: their delegates DELeted, IPs released.
    assert_eq!(ipam_allocations(&node).len(), 1);
    assert!(node.cni_dir().join("gc0").exists());
    assert!(!node.cni_dir().join("gc1").exists());
    assert!(!node.cni_dir().join("gc2").exists());
    assert!(pods[2].links().is_empty());
    assert_eq!(pods[0].links(), ["eth0"]);
    node.cni("DEL", &conf, &pods[0].path, "gc0", "eth0").ok();
    node.assert_no_leaks();
}

#[test]
fn del_with_a_truncated_state_file_falls_back_to_the_config() {
    let node = Node::new("trunc");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], OFF());
    node.cni("ADD", &conf, &pod.path, "tr", "eth0").ok();
    // A power loss can leave a renamed-but-unwritten record behind.
    std::fs::write(node.cni_dir().join("tr").join("eth0.json"), b"").unwrap();
    node.cni("DEL", &conf, &pod.path, "tr", "eth0").ok();
    // Without a readable record nothing says eth0 is this container's: the
    // IP is released, the interface goes with the netns.
    assert!(ipam_allocations(&node).is_empty());
    assert_eq!(pod.links(), ["eth0"]);
    node.remove_pod_netns(&pod);
    node.assert_no_leaks_within(std::time::Duration::from_secs(5));
}

/// The benchmark's floor, mm-passthrough, must really be the bare delegate
/// behind one exec: the bridge attaches and detaches through it, its result
/// and exit status come back unchanged, and misconfigured it answers CNI
/// error JSON.
#[test]
fn passthrough_forwards_the_bridge_unchanged() {
    let node = Node::new("pass");
    let pod = node.pod("p");
    let br = node.cluster_bridge();
    let bridge = format!("{REF_PLUGINS}/bridge");
    let via = |cmd: &str, target: &str| {
        node.run_plugin(
            PASSTHROUGH,
            cmd,
            &br,
            &pod.path,
            "cpass",
            "eth0",
            &[("MM_PASSTHROUGH", target)],
        )
    };
    let add = via("ADD", &bridge);
    let r = add.ok();
    let ip = r["ips"][0]["address"].as_str().unwrap();
    assert!(ip.starts_with("198.51.100."), "{r}");
    assert_eq!(pod.addrs("eth0"), [ip]);
    // The bridge's own error comes back as it is (a second ADD of eth0).
    let again = via("ADD", &bridge);
    assert_ne!(again.code, 0, "{}", again.stdout);
    assert!(again.json["code"].as_u64().is_some(), "{}", again.stdout);
    let del = via("DEL", &bridge);
    assert_eq!(del.code, 0, "{} {}", del.stdout, del.stderr);
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    // Misconfigured (MM_PASSTHROUGH empty): CNI error JSON, exit 1.
    let bad = via("ADD", "");
    assert_eq!(bad.code, 1);
    assert_eq!(bad.json["code"], 999, "{}", bad.stdout);
    assert!(pod.links().is_empty());
    node.assert_no_leaks();
}
