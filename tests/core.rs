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
    node.cni("DEL", &conf, &pod.path, "c3", "eth0").ok();
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    node.assert_no_leaks();
}
