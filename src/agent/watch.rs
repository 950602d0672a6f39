//! The pod watch: the pods of this node (field selector `spec.nodeName`),
//! one list, then a watch from the list's resourceVersion, re-opened from
//! the last version seen when the server ends it. A watch that fails, or
//! expires (410 Gone: the version was compacted, the API server
//! restarted), is followed by a fresh list after a bounded back-off, and
//! the worker resyncs from it. No per-pod polling: each pod is read once
//! per list and once per change.

use super::pods::{self, Pod};
use super::repair::Work;
use super::Shared;
use crate::capture::CaptureConfig;
use crate::k8s::client::{Client, EventType};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// `timeoutSeconds` of each watch request.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Back-off after a failed list or watch: doubling from the first to the
/// second.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));
/// A watch the server ends sooner than this is reopened only after the
/// back-off.
pub const MIN_WATCH: Duration = Duration::from_secs(1);
/// Most pods of one node the agent keeps track of.
pub const MAX_PODS: usize = 10_000;

/// A list or event item: a pod, or None when it does not read as one
/// (one odd object never stops the list or the watch).
struct Lenient(Option<Pod>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(Lenient(serde_json::from_value(v).ok()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct PodList {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Lenient>,
}

pub struct Watcher {
    pub client: Client,
    pub node: String,
    pub base: CaptureConfig,
    pub tx: Sender<Work>,
    pub shared: Arc<Shared>,
    uids: HashSet<String>,
}

enum Ended {
    /// The server closed it: watch again from the last version.
    Closed,
    /// 410: relist now.
    Expired,
    /// Anything else: back off, relist.
    Failed(String),
}

impl Watcher {
    pub fn new(
        client: Client,
        node: String,
        base: CaptureConfig,
        tx: Sender<Work>,
        shared: Arc<Shared>,
    ) -> Watcher {
        Watcher {
            client,
            node,
            base,
            tx,
            shared,
            uids: HashSet::new(),
        }
    }

    fn selector(&self) -> String {
        format!("fieldSelector=spec.nodeName%3D{}", self.node)
    }

    pub fn run(mut self) {
        let mut backoff = BACKOFF.0;
        loop {
            let mut rv = match self.relist() {
                Ok(rv) => {
                    self.shared.watching.store(true, Ordering::SeqCst);
                    backoff = BACKOFF.0;
                    rv
                }
                Err(e) => {
                    self.shared.watching.store(false, Ordering::SeqCst);
                    log::error!(
                        "agent: listing the pods of node {}: {e}; again in {} ms",
                        self.node,
                        backoff.as_millis()
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            };
            loop {
                let started = std::time::Instant::now();
                let reason = match self.watch(&mut rv) {
                    Ended::Closed => {
                        self.restarted("ended");
                        // A server that ends every watch at once is not
                        // asked again in a tight loop.
                        if started.elapsed() < MIN_WATCH {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(BACKOFF.1);
                        } else {
                            backoff = BACKOFF.0;
                        }
                        continue;
                    }
                    Ended::Expired => {
                        log::info!("agent: watch expired (410): relisting");
                        self.restarted("expired");
                        break;
                    }
                    Ended::Failed(e) => e,
                };
                self.restarted("error");
                log::error!(
                    "agent: pod watch failed: {reason}; relisting in {} ms",
                    backoff.as_millis()
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF.1);
                break;
            }
        }
    }

    fn restarted(&self, reason: &'static str) {
        self.shared
            .metrics
            .watch_restarts
            .get_or_create(&super::metrics::ReasonLabel { reason })
            .inc();
    }

    /// List the node's pods, hand the worker the full set and every
    /// candidate; the list's resourceVersion.
    fn relist(&mut self) -> Result<String, String> {
        let path = format!("/api/v1/pods?{}", self.selector());
        let list: PodList = self.client.get_as(&path).map_err(|e| e.to_string())?;
        let mut uids = HashSet::new();
        let mut pods = Vec::new();
        for p in list.items.into_iter().filter_map(|l| l.0) {
            if uids.len() >= MAX_PODS {
                log::error!(
                    "agent: more than {MAX_PODS} pods on node {}: the rest are not watched",
                    self.node
                );
                break;
            }
            if !p.metadata.uid.is_empty() && uids.insert(p.metadata.uid.clone()) {
                pods.push(p);
            }
        }
        self.uids = uids.clone();
        self.shared.metrics.pods_watched.set(self.uids.len() as i64);
        let _ = self.tx.send(Work::Listed(uids));
        for p in pods {
            self.offer(&p);
        }
        Ok(list.metadata.resource_version)
    }

    /// Hand the worker a pod if it is a candidate.
    fn offer(&self, p: &Pod) {
        match pods::assess(&self.base, p) {
            Ok(Some(c)) => {
                let _ = self.tx.send(Work::Pod(Box::new(c)));
            }
            Ok(None) => {}
            Err(e) => log::info!("agent: pod left alone: {e}"),
        }
    }

    /// One watch from `rv` until it ends; `rv` follows the events.
    fn watch(&mut self, rv: &mut String) -> Ended {
        let rv_ok = !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_alphanumeric());
        if !rv_ok {
            return Ended::Expired; // nothing to watch from: relist
        }
        let path = format!(
            "/api/v1/pods?{}&watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds={}",
            self.selector(),
            WATCH_TIMEOUT.as_secs()
        );
        let mut w = match self.client.watch(&path, WATCH_TIMEOUT) {
            Ok(w) => w,
            Err(e) if e.status() == Some(410) => return Ended::Expired,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        loop {
            let (kind, item) = match w.next_event::<Lenient>() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ended::Closed,
                Err(e) if e.status() == Some(410) => return Ended::Expired,
                Err(e) => return Ended::Failed(e.to_string()),
            };
            let Some(p) = item.0 else {
                continue;
            };
            let v = &p.metadata.resource_version;
            if !v.is_empty() && v.len() <= 64 {
                rv.clone_from(v);
            }
            match kind {
                EventType::Bookmark => {}
                EventType::Deleted => {
                    if self.uids.remove(&p.metadata.uid) {
                        let _ = self.tx.send(Work::Gone(p.metadata.uid.clone()));
                    }
                }
                EventType::Added | EventType::Modified => {
                    if p.metadata.uid.is_empty() {
                        continue;
                    }
                    if !self.uids.contains(&p.metadata.uid) {
                        if self.uids.len() >= MAX_PODS {
                            continue;
                        }
                        self.uids.insert(p.metadata.uid.clone());
                    }
                    self.offer(&p);
                }
            }
            self.shared.metrics.pods_watched.set(self.uids.len() as i64);
        }
    }
}
