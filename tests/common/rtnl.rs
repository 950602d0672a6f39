//! A pod netns's links and addresses read over rtnetlink: the harness's
//! independent view of what the plugin did, without parsing `ip` output.
//! rtnetlink is async; here that is harmless: one short-lived thread
//! enters the netns (setns changes only the calling thread) and runs a
//! current-thread tokio runtime whose netlink socket is created there.

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use std::net::IpAddr;

/// One interface as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// Global-scope addresses as `addr/prefix`.
    pub addrs: Vec<String>,
}

/// Every interface of the netns at `path` (lo included).
pub fn links(path: &str) -> Vec<Link> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), dump())
                .await
                .unwrap_or_else(|_| panic!("rtnetlink dump in {path} timed out"))
        })
    })
    .join()
    .unwrap()
}

async fn dump() -> Vec<Link> {
    let (conn, handle, _) = rtnetlink::new_connection().expect("rtnetlink socket");
    tokio::spawn(conn);
    let mut out: Vec<Link> = handle
        .link()
        .get()
        .execute()
        .map_ok(|m| Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            name: m
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
                .unwrap_or_default(),
            addrs: Vec::new(),
        })
        .try_collect()
        .await
        .expect("link dump");
    let addrs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .expect("address dump");
    for a in addrs {
        // RT_SCOPE_UNIVERSE: global addresses only, as `scope global`.
        if u8::from(a.header.scope) != 0 {
            continue;
        }
        let ip = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        let (Some(ip), Some(l)) = (ip, out.iter_mut().find(|l| l.index == a.header.index)) else {
            continue;
        };
        let ip = match ip {
            IpAddr::V4(v) => v.to_string(),
            IpAddr::V6(v) => v.to_string(),
        };
        l.addrs.push(format!("{ip}/{}", a.header.prefix_len));
    }
    out
}
