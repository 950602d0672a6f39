//! What encoding the nf_tables ADD batch costs (no kernel, no root):
//!
//!   cargo run --release --example nft_encode_cost [N]
//!
//! Encodes a typical plan (istio defaults, dual-stack, two excluded CIDRs
//! and one excluded interface: 37 messages, 8,676 bytes) N times (default
//! 10,000), five rounds, and prints the median CPU time per batch: the
//! whole `nftnl::apply_batch`, and the crate's serialization alone (the
//! same messages built once, emitted as one typed tree each). Commit
//! a14011a ran the hand-written encoder `nftnl` had before alongside.

use multimesh::capture::{nftnl, CaptureConfig, Plan, Profile};
use multimesh::netlink;
use netlink_packet_netfilter::NetfilterMessage;
use nix::time::{clock_gettime, ClockId};
use std::hint::black_box;
use std::time::Duration;

/// This thread's CPU time: other processes on a shared machine do not
/// count (wall time would).
fn cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID")
        .into()
}

/// Median nanoseconds of CPU time per call of `f`.
fn per_call(n: usize, f: &dyn Fn() -> Vec<u8>) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = cpu_time();
            for _ in 0..n {
                black_box(f());
            }
            (cpu_time() - t).as_nanos() as f64 / n as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N"))
        .unwrap_or(10_000)
        .max(1);
    let mut cfg = CaptureConfig::defaults(Profile::Istio);
    cfg.exclude_outbound_cidrs = vec![
        "198.51.100.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    cfg.exclude_interfaces = vec!["net1".into()];
    let plan = Plan::new(&cfg, true);
    let (bytes, what) = nftnl::apply_batch(&plan);
    println!("batch: {} bytes, {} messages", bytes.len(), what.len() + 2);
    let whole = per_call(n, &|| nftnl::apply_batch(black_box(&plan)).0);
    let mut msgs = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let p = netlink::parse::<NetfilterMessage>(rest).expect("a batch message");
        msgs.push(p.msg);
        rest = p.rest;
    }
    let emit_only = per_call(n, &|| {
        let mut buf = Vec::with_capacity(8192);
        for m in &msgs {
            let at = buf.len();
            buf.resize(at + m.buffer_len(), 0);
            m.serialize(&mut buf[at..]);
        }
        buf
    });
    println!("nftnl::apply_batch: {whole:.0} ns/batch (CPU, median of 5 x {n})");
    println!("serializing the built messages as typed trees: {emit_only:.0} ns/batch");
}
