//! src/netlink.rs against real network namespaces: `link_names` and
//! `existing_links` agree with `ip -o link` in a pod netns as interfaces come
//! and go, a missing netns is reported as missing, and the calling thread
//! never leaves its own netns.
//!
//! Run with `--nocapture` to see the median time of `existing_links`.

mod common;
use common::*;
use multimesh::error::code;
use multimesh::netlink::{existing_links, link_names};
use multimesh::netns::NetNs;
use std::path::Path;
use std::time::{Duration, Instant};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Every interface name in the pod, lo included, as `ip -o link` lists them.
fn ip_links(pod: &Pod) -> Vec<String> {
    let mut v: Vec<String> = pod
        .exec_ok("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1")
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn open(path: &str) -> NetNs {
    NetNs::open(Path::new(path)).unwrap().expect("netns exists")
}

/// This thread's netns, as the kernel identifies it.
fn own_netns() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[test]
fn link_names_follow_ip_link_as_interfaces_come_and_go() {
    let before = own_netns();
    let node = Node::new("nl");
    let pod = node.pod("p");
    let ns = open(&pod.path);

    assert_eq!(sorted(link_names(&ns).unwrap()), ["lo"]);
    assert_eq!(ip_links(&pod), ["lo"]);

    // A veth pair, a bridge with one end enslaved, a macvlan and a vxlan.
    pod.exec_ok(
        "ip link add eth0 type veth peer name vpeer0 && \
         ip link add mmbr0 type bridge && ip link set vpeer0 master mmbr0 && \
         ip link add net1 link eth0 type macvlan mode bridge && \
         ip link add vx0 type vxlan id 42 dstport 4789 local 198.51.100.10 && \
         ip addr add 198.51.100.10/25 dev eth0 && ip -6 addr add 2001:db8:1::10/64 dev eth0 && \
         ip link set eth0 up",
    );
    let listed = sorted(link_names(&ns).unwrap());
    assert_eq!(listed, ip_links(&pod));
    assert_eq!(listed, ["eth0", "lo", "mmbr0", "net1", "vpeer0", "vx0"]);

    let wanted = s(&["net2", "eth0", "net1", "eth1", "vx0"]);
    assert_eq!(
        existing_links(&ns, &wanted).unwrap(),
        ["eth0", "net1", "vx0"]
    );
    // Exact names only: prefixes and case do not match.
    assert!(existing_links(&ns, &s(&["eth", "ETH0", "net", "mmbr"]))
        .unwrap()
        .is_empty());
    assert!(existing_links(&ns, &[]).unwrap().is_empty());

    // Removed and renamed: the next call sees it.
    pod.exec_ok("ip link del net1 && ip link del vx0 && ip link set eth0 down && ip link set eth0 name net7");
    let listed = sorted(link_names(&ns).unwrap());
    assert_eq!(listed, ip_links(&pod));
    assert_eq!(listed, ["lo", "mmbr0", "net7", "vpeer0"]);
    assert_eq!(existing_links(&ns, &wanted).unwrap(), Vec::<String>::new());
    assert_eq!(
        existing_links(&ns, &s(&["eth0", "net7"])).unwrap(),
        ["net7"]
    );

    // Many interfaces: the dump spans several datagrams.
    pod.exec_ok("for i in $(seq 0 99); do ip link add mmb$i type bridge; done");
    let listed = sorted(link_names(&ns).unwrap());
    assert_eq!(listed.len(), 104);
    assert_eq!(listed, ip_links(&pod));
    assert_eq!(
        existing_links(&ns, &s(&["mmb99", "mmb0", "mmb100"])).unwrap(),
        ["mmb99", "mmb0"]
    );

    // The node netns is another namespace with other interfaces.
    let node_ns = open(&format!("/run/netns/{}", node.name));
    let node_links = sorted(link_names(&node_ns).unwrap());
    assert_eq!(node_links, ["lo", "mmv0", "mmv0p"]);
    assert!(existing_links(&node_ns, &s(&["net7"])).unwrap().is_empty());

    assert_eq!(own_netns(), before, "the test thread changed netns");
}

#[test]
fn a_missing_netns_and_one_deleted_while_open() {
    let before = own_netns();
    let node = Node::new("nlgone");
    let pod = node.pod("p");
    pod.exec_ok("ip link add eth0 type veth peer name vpeer0");

    // Never existed / already removed: open says so, nothing to list.
    assert!(NetNs::open(Path::new("/run/netns/mm-no-such-netns"))
        .unwrap()
        .is_none());

    // An open handle keeps the namespace alive after `ip netns del`
    // (the runtime removed the pod while we were working): still listable.
    let ns = open(&pod.path);
    node.remove_pod_netns(&pod);
    assert!(NetNs::open(Path::new(&pod.path)).unwrap().is_none());
    assert_eq!(sorted(link_names(&ns).unwrap()), ["eth0", "lo", "vpeer0"]);
    assert_eq!(
        existing_links(&ns, &s(&["eth0", "net1"])).unwrap(),
        ["eth0"]
    );

    // A file that is not a netns is refused with 105 by open.
    let e = NetNs::open(Path::new("/proc/self/ns/uts")).err().unwrap();
    assert_eq!(e.code, code::NETNS);

    assert_eq!(own_netns(), before, "the test thread changed netns");
}

#[test]
fn calls_from_many_threads_do_not_move_them() {
    let node = Node::new("nlthreads");
    let pod = node.pod("p");
    pod.exec_ok("ip link add eth0 type veth peer name vpeer0");
    let path = pod.path.clone();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let before = own_netns();
                let ns = open(&path);
                for _ in 0..20 {
                    assert_eq!(
                        existing_links(&ns, &s(&["eth0", "net1"])).unwrap(),
                        ["eth0"]
                    );
                }
                assert_eq!(own_netns(), before);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Cost of the check multimesh would make before an ADD: `existing_links`
/// on a pod netns with a few interfaces. Median over 200 calls (printed;
/// the bound is only a sanity check, debug builds are slower).
#[test]
fn existing_links_timing() {
    let node = Node::new("nltime");
    let pod = node.pod("p");
    pod.exec_ok(
        "ip link add eth0 type veth peer name vpeer0 && \
         ip link add net1 link eth0 type macvlan mode bridge && ip link set eth0 up",
    );
    let ns = open(&pod.path);
    let wanted = s(&["eth0", "net1", "net2"]);
    for _ in 0..10 {
        existing_links(&ns, &wanted).unwrap();
    }
    let mut t: Vec<Duration> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            let got = existing_links(&ns, &wanted).unwrap();
            let d = t0.elapsed();
            assert_eq!(got, ["eth0", "net1"]);
            d
        })
        .collect();
    t.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    eprintln!(
        "existing_links, pod netns with 4 links, N=200 ({} build): median {:.0} µs, p10 {:.0} µs, p90 {:.0} µs, max {:.0} µs",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        us(t[100]),
        us(t[20]),
        us(t[180]),
        us(t[199])
    );
    assert!(t[100] < Duration::from_millis(20), "median {:?}", t[100]);
}

/// `interfaces` (what `inspect` prints): every link with its state and its
/// addresses of both families, as `ip -o addr` shows them.
#[test]
fn interfaces_carry_state_and_addresses() {
    let node = Node::new("nladdr");
    let pod = node.pod("p");
    pod.exec_ok(
        "ip link add eth0 type veth peer name vpeer0 && ip link set eth0 up && \
         ip addr add 198.51.100.10/25 dev eth0 && ip addr add 2001:db8:1::10/64 dev eth0 nodad && \
         ip addr add 198.51.100.11/25 dev eth0",
    );
    let ifs = multimesh::netlink::interfaces(&open(&pod.path)).unwrap();
    let eth0 = ifs.iter().find(|i| i.name == "eth0").expect("eth0");
    assert!(eth0.up);
    let mut want: Vec<String> = pod
        .exec_ok("ip -o addr show dev eth0 | awk '{print $4}'")
        .lines()
        .map(String::from)
        .collect();
    want.sort();
    let mut got = eth0.addresses.clone();
    got.sort();
    assert_eq!(got, want);
    assert!(got.contains(&"198.51.100.11/25".to_string()), "{got:?}");
    let peer = ifs.iter().find(|i| i.name == "vpeer0").expect("vpeer0");
    assert!(!peer.up && peer.addresses.is_empty(), "{peer:?}");
    let lo = ifs.iter().find(|i| i.name == "lo").expect("lo");
    assert!(lo.addresses.contains(&"127.0.0.1/8".to_string()), "{lo:?}");
    // inspect prints them.
    let out = sh_ok(&format!("{BIN} inspect --netns {}", pod.path));
    assert!(
        out.contains("interfaces: lo eth0 vpeer0") || out.contains("interfaces: lo vpeer0 eth0"),
        "{out}"
    );
    assert!(
        out.contains("198.51.100.10/25 ") || out.contains("198.51.100.10/25\n"),
        "{out}"
    );
}
