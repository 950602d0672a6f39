//! What encoding the nf_tables ADD batch costs (no kernel, no root):
//!
//!   cargo run --release --example nft_encode_cost [N]
//!
//! Encodes a typical plan (istio defaults, dual-stack, two excluded CIDRs
//! and one excluded interface) N times (default 10,000) with the
//! netlink-packet-netfilter encoder (`nftnl`) and with the hand-written one
//! it replaced (`nftnl_old`), five rounds each, and prints the median
//! nanoseconds of CPU time per batch and the batch size.

use multimesh::capture::{nftnl, nftnl_old, CaptureConfig, Plan};
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

/// A batch and what each of its messages does.
type Encoded = (Vec<u8>, Vec<String>);

fn per_batch(n: usize, encode: &dyn Fn(&Plan) -> Encoded, plan: &Plan) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = cpu_time();
            for _ in 0..n {
                black_box(encode(black_box(plan)));
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
    let mut cfg = CaptureConfig::defaults(multimesh::capture::Profile::Istio);
    cfg.exclude_outbound_cidrs = vec![
        "198.51.100.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    cfg.exclude_interfaces = vec!["net1".into()];
    let plan = Plan::new(&cfg, true);
    let (bytes, what) = nftnl::apply_batch(&plan);
    assert_eq!(
        (&bytes, &what),
        (
            &nftnl_old::apply_batch(&plan).0,
            &nftnl_old::apply_batch(&plan).1
        )
    );
    println!("batch: {} bytes, {} messages", bytes.len(), what.len() + 2);
    let new = per_batch(n, &nftnl::apply_batch, &plan);
    let old = per_batch(n, &nftnl_old::apply_batch, &plan);
    println!("netlink-packet-netfilter: {new:.0} ns/batch (median of 5 x {n})");
    println!("hand-written encoder:     {old:.0} ns/batch (median of 5 x {n})");
    // The crate's share: the same messages, built once, serialized only.
    let mut msgs = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let p =
            multimesh::netlink::parse::<netlink_packet_netfilter::NetfilterMessage>(rest).unwrap();
        msgs.push(p.msg);
        rest = p.rest;
    }
    let emit = |_: &Plan| {
        let mut buf = Vec::with_capacity(8192);
        for m in &msgs {
            let at = buf.len();
            buf.resize(at + m.buffer_len(), 0);
            m.serialize(&mut buf[at..]);
        }
        (buf, Vec::new())
    };
    let ser = per_batch(n, &emit, &plan);
    println!("  of which serializing built messages: {ser:.0} ns/batch");
}
