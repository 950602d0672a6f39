//! What `netlink::existing_links` costs on a pod netns (run as root):
//!
//!   cargo run --release --example netlink_cost [N [cold]]
//!
//! Creates a scratch netns with a veth pair and a macvlan (the shape of a
//! pod after a bridge and a macvlan attachment), then times N calls (default
//! 200) of `existing_links`, and of `NetNs::run` with an empty closure (the
//! thread that enters the netns, alone), and prints medians, and the time
//! of the process's first call. The netns is
//! removed at the end.

use multimesh::netlink::existing_links;
use multimesh::netns::NetNs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "failed: {cmd}");
}

fn stats(name: &str, mut t: Vec<Duration>) {
    t.sort();
    let n = t.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name}: N={n} median {:.0} µs, p10 {:.0} µs, p90 {:.0} µs, max {:.0} µs",
        us(t[n / 2]),
        us(t[n / 10]),
        us(t[n * 9 / 10]),
        us(t[n - 1])
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N"))
        .unwrap_or(200)
        .max(10);
    let name = format!("mm-nlcost-{}", std::process::id());
    sh(&format!(
        "ip netns add {name} && ip -n {name} link set lo up && \
         ip -n {name} link add eth0 type veth peer name vpeer0 && \
         ip -n {name} link add net1 link eth0 type macvlan mode bridge && \
         ip -n {name} link set eth0 up"
    ));
    let ns = NetNs::open(Path::new(&format!("/run/netns/{name}")))
        .unwrap()
        .unwrap();
    let wanted: Vec<String> = ["eth0", "net1", "net2"].map(String::from).to_vec();
    // A CNI call makes this check once per process: the first call is the
    // one it pays (cold code and the process's first thread). With "cold"
    // as second argument, an empty NetNs::run goes first, to tell the two
    // apart.
    let thread_first = std::env::args().nth(2).as_deref() == Some("cold");
    let t0 = Instant::now();
    if thread_first {
        ns.run(|| ()).unwrap();
    }
    let t1 = Instant::now();
    existing_links(&ns, &wanted).unwrap();
    let first = (t1 - t0, t1.elapsed());
    for _ in 0..20 {
        existing_links(&ns, &wanted).unwrap();
    }
    let time = |f: &dyn Fn()| {
        (0..n)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let check = time(&|| {
        let got = existing_links(&ns, &wanted).unwrap();
        assert_eq!(got, ["eth0", "net1"]);
    });
    let thread_only = time(&|| ns.run(|| ()).unwrap());
    sh(&format!("ip netns del {name}"));
    stats("existing_links (4 links)", check);
    stats("NetNs::run, empty closure", thread_only);
    if thread_first {
        println!(
            "first NetNs::run (empty) in this process: {:.0} µs, then first existing_links: {:.0} µs",
            first.0.as_secs_f64() * 1e6,
            first.1.as_secs_f64() * 1e6
        );
    } else {
        println!(
            "first existing_links call in this process: {:.0} µs",
            first.1.as_secs_f64() * 1e6
        );
    }
}
