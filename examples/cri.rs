//! A tiny CRI client: what kubelet says to the container runtime, for the
//! benchmark (scripts/bench_lib.py) and the demo (scripts/demo.sh). There is
//! no `crictl` offline and `ctr` does not speak CRI; this is the test
//! suite's client (tests/common/cri.rs: k8s-cri + tonic) behind a command
//! line. Built with the dev-dependencies: `cargo build --example cri`.
//!
//!   cri --socket S version
//!   cri --socket S run-pod --namespace NS --name N --uid U \
//!       [--annotation K=V]... [--cgroup-parent P]       # prints the sandbox as JSON
//!   cri --socket S stop-pod ID | remove-pod ID | status ID
//!   cri --socket S remove-all     # StopPodSandbox + RemovePodSandbox of every sandbox
//!   cri --socket S cycle --namespace NS --name N --uid U [--cgroup-parent P]
//!       # RunPodSandbox, StopPodSandbox, RemovePodSandbox; prints their
//!       # wall times (seconds) and the sandbox's IP as JSON

#[path = "../tests/common/cri.rs"]
mod cri;

use cri::{Cri, PodSpec};
use serde_json::json;
use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: cri --socket PATH (version | run-pod OPTS | cycle OPTS | stop-pod ID | remove-pod ID | status ID | remove-all)\n\
         OPTS: --namespace NS --name N --uid U [--annotation K=V]... [--cgroup-parent P]"
    );
    std::process::exit(2)
}

fn die(what: &str, e: String) -> ! {
    eprintln!("cri: {what}: {e}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut socket = None;
    let mut cmd = None;
    let mut id = None;
    let mut pod = PodSpec::default();
    let mut i = 0;
    let val = |i: usize| args.get(i + 1).cloned().unwrap_or_else(|| usage());
    while i < args.len() {
        match args[i].as_str() {
            "--socket" => socket = Some(val(i)),
            "--namespace" => pod.namespace = val(i),
            "--name" => pod.name = val(i),
            "--uid" => pod.uid = val(i),
            "--cgroup-parent" => pod.cgroup_parent = val(i),
            "--annotation" => {
                let kv = val(i);
                let (k, v) = kv.split_once('=').unwrap_or_else(|| usage());
                pod.annotations.push((k.into(), v.into()));
            }
            c if cmd.is_none() && !c.starts_with('-') => {
                cmd = Some(c.to_string());
                i += 1;
                continue;
            }
            x if id.is_none() && !x.starts_with('-') => {
                id = Some(x.to_string());
                i += 1;
                continue;
            }
            _ => usage(),
        }
        i += 2;
    }
    let socket = socket.unwrap_or_else(|| usage());
    let cri = Cri::connect(std::path::Path::new(&socket)).unwrap_or_else(|e| die("connect", e));
    let need_pod = |p: &PodSpec| {
        if p.name.is_empty() || p.namespace.is_empty() || p.uid.is_empty() {
            usage()
        }
    };
    let id = || id.clone().unwrap_or_else(|| usage());
    match cmd.as_deref() {
        Some("version") => {
            let (n, v, api) = cri.version().unwrap_or_else(|e| die("Version", e));
            println!("{}", json!({"runtime": n, "version": v, "api": api}));
        }
        Some("run-pod") => {
            need_pod(&pod);
            let sid = cri
                .run_pod(&pod)
                .unwrap_or_else(|e| die("RunPodSandbox", e));
            let st = cri
                .status(&sid)
                .unwrap_or_else(|e| die("PodSandboxStatus", e));
            println!(
                "{}",
                json!({"id": st.id, "state": st.state, "ip": st.ip, "netns": st.netns, "pid": st.pid})
            );
        }
        Some("status") => {
            let st = cri
                .status(&id())
                .unwrap_or_else(|e| die("PodSandboxStatus", e));
            println!(
                "{}",
                json!({"id": st.id, "state": st.state, "ip": st.ip, "netns": st.netns, "pid": st.pid})
            );
        }
        Some("stop-pod") => cri
            .stop_pod(&id())
            .unwrap_or_else(|e| die("StopPodSandbox", e)),
        Some("remove-pod") => cri
            .remove_pod(&id())
            .unwrap_or_else(|e| die("RemovePodSandbox", e)),
        Some("remove-all") => {
            let ids = cri.list_pods().unwrap_or_else(|e| die("ListPodSandbox", e));
            for sid in ids {
                cri.stop_pod(&sid)
                    .unwrap_or_else(|e| die("StopPodSandbox", e));
                cri.remove_pod(&sid)
                    .unwrap_or_else(|e| die("RemovePodSandbox", e));
            }
        }
        Some("cycle") => {
            need_pod(&pod);
            let t0 = Instant::now();
            let sid = cri
                .run_pod(&pod)
                .unwrap_or_else(|e| die("RunPodSandbox", e));
            let t1 = Instant::now();
            // Outside the timing: what the sandbox got (the driver checks it).
            let st = cri
                .status(&sid)
                .unwrap_or_else(|e| die("PodSandboxStatus", e));
            let t2 = Instant::now();
            cri.stop_pod(&sid)
                .unwrap_or_else(|e| die("StopPodSandbox", e));
            let t3 = Instant::now();
            cri.remove_pod(&sid)
                .unwrap_or_else(|e| die("RemovePodSandbox", e));
            let t4 = Instant::now();
            println!(
                "{}",
                json!({"id": sid, "ip": st.ip, "netns": st.netns,
                       "run_s": (t1 - t0).as_secs_f64(), "stop_s": (t3 - t2).as_secs_f64(),
                       "remove_s": (t4 - t3).as_secs_f64()})
            );
        }
        _ => usage(),
    }
}
