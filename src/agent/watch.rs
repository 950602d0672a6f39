//! The pod watch: the pods of this node (field selector `spec.nodeName`),
//! one list, then a watch from the list's resourceVersion, re-opened from
//! the last version seen when the server ends it. A watch that fails, or
//! expires (410 Gone: the version was compacted, the API server
//! restarted), is followed by a fresh list after a bounded back-off, and
//! the worker resyncs from it. A watch that goes silent fails after its
//! timeout and `k8s::client::WATCH_GRACE`, and is handled alike. No per-pod
//! polling: each pod is read once per list and once per change.
//!
//! A linkerd pod that sets no `config.linkerd.io/*` of its own takes its
//! namespace's, as at ADD (`pods::assess`): each such namespace is read
//! once per list and kept until the next one (at most `MAX_NAMESPACES`,
//! their `config.linkerd.io/*` annotations only).

use super::pods::{self, Pod};
use super::repair::Work;
use super::Shared;
use crate::capture::CaptureConfig;
use crate::k8s::client::{Client, EventType};
use crate::k8s::pod::{Namespace, LINKERD_CONFIG};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
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
/// Most namespaces whose linkerd config is kept between two lists (past
/// it, the cache starts over).
pub const MAX_NAMESPACES: usize = 1024;

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
    /// Most pods tracked (`MAX_PODS`).
    pub max_pods: usize,
    uids: HashSet<String>,
    /// Namespaces read since the last list (None: the API server has
    /// none), their `config.linkerd.io/*` annotations only.
    namespaces: HashMap<String, Option<Namespace>>,
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
            max_pods: MAX_PODS,
            uids: HashSet::new(),
            namespaces: HashMap::new(),
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
        self.namespaces.clear();
        let mut uids = HashSet::new();
        let mut pods = Vec::new();
        for p in list.items.into_iter().filter_map(|l| l.0) {
            if p.metadata.uid.is_empty() || uids.contains(&p.metadata.uid) {
                continue;
            }
            if !track(&mut uids, &p.metadata.uid, self.max_pods) {
                self.over_bound();
                break;
            }
            pods.push(p);
        }
        self.uids = uids.clone();
        self.shared.metrics.pods_watched.set(self.uids.len() as i64);
        let _ = self.tx.send(Work::Listed(uids));
        for p in pods {
            self.offer(&p);
        }
        Ok(list.metadata.resource_version)
    }

    fn over_bound(&self) {
        log::error!(
            "agent: more than {} pods on node {}: the rest are not watched",
            self.max_pods,
            self.node
        );
    }

    /// Hand the worker a pod if it is a candidate.
    fn offer(&mut self, p: &Pod) {
        let (client, cache) = (&mut self.client, &mut self.namespaces);
        let namespace = |ns: &str| namespace(client, cache, ns);
        match pods::assess(&self.base, p, namespace) {
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
                    if !track(&mut self.uids, &p.metadata.uid, self.max_pods) {
                        self.over_bound();
                        continue;
                    }
                    self.offer(&p);
                }
            }
            self.shared.metrics.pods_watched.set(self.uids.len() as i64);
        }
    }
}

/// Track `uid`: true when it is tracked already or now; false when it is
/// new and `max` are tracked already.
fn track(uids: &mut HashSet<String>, uid: &str, max: usize) -> bool {
    if uids.contains(uid) {
        return true;
    }
    if uids.len() >= max {
        return false;
    }
    uids.insert(uid.to_string());
    true
}

/// The Namespace `ns` from `cache`, else from the API server (kept, its
/// `config.linkerd.io/*` annotations only; the cache starts over past
/// `MAX_NAMESPACES`).
fn namespace(
    client: &mut Client,
    cache: &mut HashMap<String, Option<Namespace>>,
    ns: &str,
) -> Result<Option<Namespace>, String> {
    if let Some(n) = cache.get(ns) {
        return Ok(n.clone());
    }
    let mut n = crate::k8s::read_namespace(client, ns).map_err(|e| e.msg)?;
    if let Some(n) = n.as_mut() {
        n.metadata
            .annotations
            .retain(|k, _| k.starts_with(LINKERD_CONFIG));
        n.metadata.labels.clear();
    }
    if cache.len() >= MAX_NAMESPACES {
        cache.clear();
    }
    cache.insert(ns.to_string(), n.clone());
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Profile;
    use crate::k8s::kubeconfig::ApiConfig;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::mpsc::Receiver;
    use std::sync::Mutex;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A small API server on loopback: `route(path)` answers each GET
    /// (status, body); a watch's body is its events, then the connection
    /// closes. The paths asked for are logged.
    fn api(route: fn(&str) -> (u16, String)) -> (Client, Log) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log: Log = Arc::default();
        let paths = log.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let paths = paths.clone();
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    loop {
                        let mut first = String::new();
                        if r.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        let path = first.split(' ').nth(1).unwrap_or("").to_string();
                        paths.lock().unwrap().push(path.clone());
                        let (code, body) = route(&path);
                        if path.contains("watch=1") {
                            let _ = write!(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}");
                            return;
                        }
                        let _ = write!(
                            w,
                            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        let cfg = ApiConfig::test_loopback(port);
        (Client::new(cfg).unwrap(), log)
    }

    fn watcher(client: Client, profile: Profile) -> (Watcher, Receiver<Work>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Watcher::new(
            client,
            "node-1".into(),
            CaptureConfig::defaults(profile),
            tx,
            Arc::new(Shared::new()),
        );
        (w, rx)
    }

    fn plain_pod(uid: &str) -> Value {
        json!({"metadata": {"name": format!("p-{uid}"), "namespace": "shop", "uid": uid,
            "resourceVersion": "7"}, "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}})
    }

    fn drain(rx: &Receiver<Work>) -> Vec<Work> {
        rx.try_iter().collect()
    }

    /// At most `max_pods` pods are tracked, from the list and from the
    /// watch; a gone pod frees its place; duplicates and uid-less pods do
    /// not count. The agent's bound is `MAX_PODS`, 10,000.
    #[test]
    fn pods_tracked_are_bounded() {
        assert_eq!(MAX_PODS, 10_000);
        let (client, _) = api(|path| {
            if path.contains("watch=1") {
                let ev = |t: &str, uid: &str| {
                    json!({"type": t, "object": plain_pod(uid)}).to_string() + "\n"
                };
                let events = [
                    ev("ADDED", "u9"),
                    ev("MODIFIED", "u1"),
                    ev("DELETED", "u0"),
                    ev("ADDED", "u8"),
                    ev("ADDED", "u7"),
                ];
                return (200, events.concat());
            }
            let mut items: Vec<Value> = ["u0", "u0", "", "u1", "u2", "u3", "u4"]
                .iter()
                .map(|u| plain_pod(u))
                .collect();
            items.push(json!("not a pod"));
            (
                200,
                json!({"metadata": {"resourceVersion": "5"}, "items": items}).to_string(),
            )
        });
        let (mut w, rx) = watcher(client, Profile::Istio);
        assert_eq!(w.max_pods, MAX_PODS);
        w.max_pods = 3;
        let mut rv = w.relist().unwrap();
        assert_eq!(rv, "5");
        let listed = match drain(&rx).as_slice() {
            [Work::Listed(u)] => u.clone(),
            other => panic!("{} works", other.len()),
        };
        let want: HashSet<String> = ["u0", "u1", "u2"].map(String::from).into();
        assert_eq!(listed, want);
        assert_eq!(w.shared.metrics.pods_watched.get(), 3);
        // The watch: u9 is refused (3 tracked), u1 known, u0 gone frees a
        // place for u8, then u7 is refused.
        assert!(matches!(w.watch(&mut rv), Ended::Closed));
        let gone: Vec<String> = drain(&rx)
            .into_iter()
            .filter_map(|x| match x {
                Work::Gone(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(gone, ["u0"]);
        let want: HashSet<String> = ["u1", "u2", "u8"].map(String::from).into();
        assert_eq!(w.uids, want);
        assert_eq!(w.shared.metrics.pods_watched.get(), 3);
    }

    fn linkerd_pod(ns: &str, uid: &str, own: Value) -> Value {
        let mut ann = json!({"linkerd.io/proxy-version": "stable-2.14.10"});
        for (k, v) in own.as_object().unwrap() {
            ann[k] = v.clone();
        }
        json!({"metadata": {"name": format!("p-{uid}"), "namespace": ns, "uid": uid,
                "annotations": ann},
            "spec": {"nodeName": "node-1",
                "containers": [{"name": "app"}, {"name": "linkerd-proxy"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "198.51.100.9"}]}})
    }

    /// A linkerd pod without config.linkerd.io/* of its own is repaired
    /// with its namespace's, as ADD programs it; each namespace is read
    /// once per list (not for pods with their own config, nor for a
    /// namespace the API server lacks more than once), and only its
    /// config.linkerd.io/* annotations are kept.
    #[test]
    fn linkerd_namespace_config_read_once_per_list() {
        let (client, log) = api(|path| match path {
            "/api/v1/namespaces/shop" => (
                200,
                json!({"metadata": {"name": "shop", "annotations": {
                    "config.linkerd.io/skip-outbound-ports": "5432",
                    "config.linkerd.io/proxy-uid": "2200",
                    "unrelated": "x".repeat(1000)}}})
                .to_string(),
            ),
            p if p.starts_with("/api/v1/namespaces/") => (
                404,
                json!({"kind": "Status", "code": 404, "reason": "NotFound"}).to_string(),
            ),
            _ => {
                let items = [
                    linkerd_pod("shop", "a", json!({})),
                    linkerd_pod("shop", "b", json!({})),
                    linkerd_pod("other", "c", json!({"config.linkerd.io/proxy-uid": "2300"})),
                    linkerd_pod("gone", "d", json!({})),
                    linkerd_pod("gone", "e", json!({})),
                ];
                (
                    200,
                    json!({"metadata": {"resourceVersion": "5"}, "items": items}).to_string(),
                )
            }
        });
        let (mut w, rx) = watcher(client, Profile::Linkerd);
        let ns_reads = |log: &Log| -> Vec<String> {
            log.lock()
                .unwrap()
                .iter()
                .filter(|p| p.starts_with("/api/v1/namespaces/"))
                .cloned()
                .collect()
        };
        for round in 1..=2 {
            w.relist().unwrap();
            let uid_of: HashMap<String, CaptureConfig> = drain(&rx)
                .into_iter()
                .filter_map(|x| match x {
                    Work::Pod(c) => Some((c.uid.clone(), c.capture.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(uid_of.len(), 5);
            let defaults = CaptureConfig::defaults(Profile::Linkerd);
            for u in ["a", "b"] {
                assert_eq!(uid_of[u].proxy_uid, 2200);
                assert_ne!(uid_of[u], defaults);
            }
            assert_eq!(uid_of["c"].proxy_uid, 2300);
            assert_eq!(uid_of["d"], defaults);
            assert_eq!(
                ns_reads(&log),
                ["/api/v1/namespaces/shop", "/api/v1/namespaces/gone"].repeat(round)
            );
        }
        let kept = w.namespaces["shop"].as_ref().unwrap();
        assert!(kept
            .metadata
            .annotations
            .keys()
            .all(|k| k.starts_with(LINKERD_CONFIG)));
        assert_eq!(kept.metadata.annotations.len(), 2);
        assert_eq!(w.namespaces["gone"], None);
    }

    /// The namespace cache holds at most `MAX_NAMESPACES`: past it, it
    /// starts over.
    #[test]
    fn namespace_cache_is_bounded() {
        assert_eq!(MAX_NAMESPACES, 1024);
        let (mut client, log) = api(|_| (404, "{}".into()));
        let mut cache: HashMap<String, Option<Namespace>> = (0..MAX_NAMESPACES)
            .map(|i| (format!("ns{i}"), None))
            .collect();
        assert_eq!(namespace(&mut client, &mut cache, "ns7").unwrap(), None);
        assert!(log.lock().unwrap().is_empty()); // cached
        assert_eq!(namespace(&mut client, &mut cache, "new").unwrap(), None);
        assert_eq!(cache.len(), 1);
        assert_eq!(*log.lock().unwrap(), ["/api/v1/namespaces/new"]);
    }
}
