//! The repair worker: takes candidate pods from the watch, finds which of
//! them lack capture, and acts per `--repair-mode`, each action with a pod
//! Event. One thread; pods that arrive together are handled as a batch
//! with one search for their network namespaces.
//!
//! A pod lacks capture when its validator said so (exit 95), or when its
//! netns (found by its IPs) has no multimesh owner and not the rules ADD
//! would have programmed. A pod acted on successfully is never touched
//! again; a failed one is retried on its next change, at most
//! `MAX_ATTEMPTS` times.

use super::locate::{self, Found};
use super::pods::{Candidate, UNINITIALIZED_LABEL};
use super::{RepairMode, Shared};
use crate::attach::{self, Repaired};
use crate::capture::{self, Setup};
use crate::k8s::client::Client;
use crate::netns::NetNs;
use crate::state::NetnsOwners;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Tries per pod (failed repairs, label or delete calls).
pub const MAX_ATTEMPTS: u32 = 3;
/// Most pods handled in one batch.
pub const MAX_BATCH: usize = 1024;
/// How often the records of gone pods whose namespace is gone are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What the watch hands the worker.
pub enum Work {
    /// A pod that should have capture (added or changed).
    Pod(Box<Candidate>),
    /// A pod gone from the API server.
    Gone(String),
    /// A full list: the uids of every pod of the node now.
    Listed(HashSet<String>),
}

pub struct Worker {
    pub client: Client,
    pub cni_dir: PathBuf,
    pub mode: RepairMode,
    pub netns_dirs: Vec<PathBuf>,
    pub node: String,
    pub shared: Arc<Shared>,
    /// Every pod of the node the watch reported (and not gone since).
    known: HashSet<String>,
    /// Acted on successfully (never again).
    done: HashSet<String>,
    /// Found captured (looked at again only if its validator fails).
    captured: HashSet<String>,
    attempts: HashMap<String, u32>,
}

enum Action {
    /// Captured meanwhile (an ADD or another repair): nothing done.
    AlreadyCaptured,
    Repaired,
    Labelled,
    Deleted,
    Detected,
}

impl Worker {
    pub fn new(
        client: Client,
        cni_dir: PathBuf,
        mode: RepairMode,
        netns_dirs: Vec<PathBuf>,
        node: String,
        shared: Arc<Shared>,
    ) -> Worker {
        Worker {
            client,
            cni_dir,
            mode,
            netns_dirs,
            node,
            shared,
            known: HashSet::new(),
            done: HashSet::new(),
            captured: HashSet::new(),
            attempts: HashMap::new(),
        }
    }

    pub fn run(mut self, rx: Receiver<Work>) {
        let mut next_sweep = std::time::Instant::now() + SWEEP_EVERY;
        loop {
            if std::time::Instant::now() >= next_sweep {
                let known = std::mem::take(&mut self.known);
                self.release_repairs(|u| !known.contains(u));
                self.known = known;
                next_sweep = std::time::Instant::now() + SWEEP_EVERY;
            }
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(w) => w,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut pods: Vec<Candidate> = Vec::new();
            for w in batch(first, &rx, MAX_BATCH) {
                match w {
                    Work::Pod(c) => {
                        let c = *c;
                        self.known.insert(c.uid.clone());
                        pods.retain(|p| p.uid != c.uid);
                        pods.push(c);
                    }
                    Work::Gone(uid) => {
                        pods.retain(|p| p.uid != uid);
                        self.known.remove(&uid);
                        self.forget(&uid);
                        self.release_repairs(|u| u == uid);
                    }
                    Work::Listed(uids) => {
                        self.known.clone_from(&uids);
                        self.done.retain(|u| uids.contains(u));
                        self.captured.retain(|u| uids.contains(u));
                        self.attempts.retain(|u, _| uids.contains(u));
                        self.release_repairs(|u| !uids.contains(u));
                    }
                }
            }
            self.handle(pods);
        }
    }

    fn forget(&mut self, uid: &str) {
        self.done.remove(uid);
        self.captured.remove(uid);
        self.attempts.remove(uid);
    }

    /// Drop the repair records of pods `gone` says are gone whose network
    /// namespace is gone too: their DEL came without a netns, or never.
    /// A namespace still there is left to the pod's DEL (which removes the
    /// rules): a pod missing from one list (a bad answer, a lagging API
    /// server) never loses its capture.
    fn release_repairs(&self, gone: impl Fn(&str) -> bool) {
        for (key, rec) in attach::repairs(&self.cni_dir) {
            let uid = crate::cni::parse_cni_args(&rec.cni_args)
                .into_iter()
                .find(|(k, _)| k == "K8S_POD_UID")
                .map(|(_, v)| v)
                .unwrap_or_default();
            if uid.is_empty() || !gone(&uid) {
                continue;
            }
            let alive = NetNs::open(Path::new(&rec.netns))
                .ok()
                .flatten()
                .and_then(|ns| ns.key().ok())
                .is_some_and(|k| k == key);
            if alive {
                continue;
            }
            match attach::release_repair(&self.cni_dir, &key, None) {
                Ok(_) => {
                    log::info!("agent: released the repair of gone pod {uid}")
                }
                Err(e) => log::error!("agent: releasing the repair of {uid}: {e}"),
            }
        }
    }

    fn handle(&mut self, pods: Vec<Candidate>) {
        let pods: Vec<Candidate> = pods
            .into_iter()
            .filter(|p| !self.done.contains(&p.uid))
            .filter(|p| self.attempts.get(&p.uid).copied().unwrap_or(0) < MAX_ATTEMPTS)
            .filter(|p| p.validator_failed || !self.captured.contains(&p.uid))
            .collect();
        if pods.is_empty() {
            return;
        }
        // One search for every namespace this batch needs: repairs need
        // one, and deciding "no rules" needs one.
        let repairing = self.mode == RepairMode::Repair;
        let needs_netns = |p: &Candidate| repairing || !p.validator_failed;
        let wanted: HashSet<IpAddr> = pods
            .iter()
            .filter(|p| needs_netns(p))
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        let found = locate::by_ips(
            &self.netns_dirs,
            Path::new("/proc"),
            &wanted,
            &locate::Limits::default(),
        );
        for p in pods {
            let netns = if needs_netns(&p) {
                match netns_of(&p, &found) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.failed(&p, &e);
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(n) = &netns {
                match self.has_capture(&p, n) {
                    Ok(true) => {
                        self.captured.insert(p.uid.clone());
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.failed(&p, &e);
                        continue;
                    }
                }
            }
            let why = if p.validator_failed {
                "its multimesh-validation init container reported capture missing (exit 95)"
            } else {
                "it runs without multimesh capture in its network namespace"
            };
            match self.act(&p, netns.as_ref(), why) {
                Ok(Action::AlreadyCaptured) => {
                    self.captured.insert(p.uid.clone());
                }
                Ok(a) => {
                    let (outcome, reason, msg) = describe(&a, why);
                    log::info!("agent: pod {}: {outcome}: {why}", p.id());
                    self.shared.metrics.repair(self.mode.name(), outcome);
                    if !matches!(a, Action::Deleted) {
                        // (A deleted pod's Event went out before it.)
                        self.event(&p, "Normal", reason, &msg);
                    }
                    self.done.insert(p.uid.clone());
                }
                Err(e) => self.failed(&p, &e),
            }
        }
    }

    fn failed(&mut self, p: &Candidate, e: &str) {
        let n = self.attempts.entry(p.uid.clone()).or_insert(0);
        *n += 1;
        log::error!(
            "agent: pod {}: {} failed (attempt {n} of {MAX_ATTEMPTS}): {e}",
            p.id(),
            self.mode.name()
        );
        self.shared.metrics.repair(self.mode.name(), "failed");
        self.event(
            p,
            "Warning",
            "MultimeshRepairFailed",
            &format!("multimesh {} failed: {e}", self.mode.name()),
        );
    }

    /// Does the pod's netns have multimesh capture (an owner, or the rules
    /// ADD would have programmed)?
    fn has_capture(&self, p: &Candidate, n: &Found) -> Result<bool, String> {
        if NetnsOwners::new(&self.cni_dir).any(&n.key) {
            return Ok(true);
        }
        let ns = open_same(n)?;
        let scratch = self.cni_dir.join("agent");
        let setup = Setup::resolve(&p.capture, p.ips.iter().any(IpAddr::is_ipv6), &scratch)
            .map_err(|e| e.to_string())?;
        Ok(capture::check(&setup, &ns, &scratch).is_ok())
    }

    fn act(&mut self, p: &Candidate, netns: Option<&Found>, why: &str) -> Result<Action, String> {
        let pod_path = format!("/api/v1/namespaces/{}/pods/{}", p.namespace, p.name);
        match self.mode {
            RepairMode::Off => Ok(Action::Detected),
            RepairMode::Repair => {
                let n = netns.ok_or("no network namespace")?;
                let ns = open_same(n)?;
                let ipv6 = p.ips.iter().any(IpAddr::is_ipv6);
                let path = n.path.to_string_lossy();
                match attach::repair(&self.cni_dir, &ns, &path, &p.capture, ipv6, &p.cni_args())
                    .map_err(|e| e.to_string())?
                {
                    Repaired::Programmed => Ok(Action::Repaired),
                    Repaired::AlreadyOwned => Ok(Action::AlreadyCaptured),
                }
            }
            RepairMode::Label => {
                let body = json!({"metadata": {"labels": {UNINITIALIZED_LABEL: "true"}}});
                self.client
                    .patch(
                        &pod_path,
                        "application/merge-patch+json",
                        &serde_json::to_vec(&body).unwrap_or_default(),
                    )
                    .map_err(|e| e.to_string())?;
                Ok(Action::Labelled)
            }
            RepairMode::Delete => {
                // The Event first: the pod it names is about to go.
                let (_, reason, msg) = describe(&Action::Deleted, why);
                self.event(p, "Normal", reason, &msg);
                self.client.delete(&pod_path).map_err(|e| e.to_string())?;
                Ok(Action::Deleted)
            }
        }
    }

    /// Post a pod Event (best effort: logged when it fails).
    fn event(&mut self, p: &Candidate, kind: &str, reason: &str, message: &str) {
        let now = rfc3339(std::time::SystemTime::now());
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{}.", p.name), "namespace": p.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": p.name,
                "namespace": p.namespace, "uid": p.uid},
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "multimesh-agent", "host": self.node},
            "reportingComponent": "multimesh.io/agent",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let path = format!("/api/v1/namespaces/{}/events", p.namespace);
        if let Err(e) = self
            .client
            .post(&path, &serde_json::to_vec(&ev).unwrap_or_default())
        {
            log::error!("agent: event for pod {}: {e}", p.id());
        }
    }
}

/// `first` and what else is waiting in `rx`, at most `max` in all (the
/// rest stays for the next batch).
fn batch(first: Work, rx: &Receiver<Work>, max: usize) -> Vec<Work> {
    let mut out = vec![first];
    while out.len() < max {
        match rx.try_recv() {
            Ok(w) => out.push(w),
            Err(_) => break,
        }
    }
    out
}

/// An action's metric outcome, Event reason and Event message.
fn describe(a: &Action, why: &str) -> (&'static str, &'static str, String) {
    match a {
        Action::Repaired => (
            "repaired",
            "MultimeshRepaired",
            format!("multimesh programmed capture in the pod's network namespace: {why}"),
        ),
        Action::Labelled => (
            "labelled",
            "MultimeshUninitialized",
            format!("labelled {UNINITIALIZED_LABEL}=true: {why}"),
        ),
        Action::Deleted => (
            "deleted",
            "MultimeshDeleted",
            format!("deleted so that it restarts with capture: {why}"),
        ),
        Action::Detected => (
            "detected",
            "MultimeshCaptureMissing",
            format!("not repaired (repair mode off): {why}"),
        ),
        Action::AlreadyCaptured => (
            "captured",
            "MultimeshCaptured",
            "captured meanwhile".to_string(),
        ),
    }
}

/// The one netns holding the pod's IPs.
fn netns_of(p: &Candidate, found: &HashMap<IpAddr, Vec<Found>>) -> Result<Found, String> {
    let mut hits: Vec<&Found> = p
        .ips
        .iter()
        .filter_map(|ip| found.get(ip))
        .flatten()
        .collect();
    hits.sort_by(|a, b| a.key.cmp(&b.key));
    hits.dedup_by(|a, b| a.key == b.key);
    match hits.as_slice() {
        [] => Err(format!(
            "no network namespace on this node has the pod's IPs ({})",
            p.ips
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        [one] => Ok((*one).clone()),
        _ => Err("the pod's IPs are in more than one network namespace: not choosing".into()),
    }
}

/// Open a found netns again, making sure its path still names it.
fn open_same(n: &Found) -> Result<NetNs, String> {
    let ns = NetNs::open(&n.path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is gone", n.path.display()))?;
    if ns.key().map_err(|e| e.to_string())? != n.key {
        return Err(format!("{} names another namespace now", n.path.display()));
    }
    Ok(ns)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), as Kubernetes writes timestamps.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let at = |s: u64| rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    fn cand(ips: &[&str]) -> Candidate {
        Candidate {
            uid: "u".into(),
            namespace: "n".into(),
            name: "p".into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            capture: crate::capture::CaptureConfig::defaults(crate::capture::Profile::Istio),
            validator_failed: false,
        }
    }

    /// A batch takes what is waiting, at most `max` (the agent's
    /// `MAX_BATCH`, 1024); the rest is the next batch's.
    #[test]
    fn batches_are_bounded() {
        assert_eq!(MAX_BATCH, 1024);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10 {
            tx.send(Work::Gone(format!("u{i}"))).unwrap();
        }
        let uids = |b: Vec<Work>| -> Vec<String> {
            b.into_iter()
                .map(|w| match w {
                    Work::Gone(u) => u,
                    _ => unreachable!(),
                })
                .collect()
        };
        let b = batch(Work::Gone("first".into()), &rx, 4);
        assert_eq!(uids(b), ["first", "u0", "u1", "u2"]);
        let b = batch(Work::Gone("second".into()), &rx, 4);
        assert_eq!(uids(b), ["second", "u3", "u4", "u5"]);
        // Fewer waiting than the bound: all of them.
        let b = batch(Work::Gone("third".into()), &rx, MAX_BATCH);
        assert_eq!(uids(b).len(), 5);
        assert!(rx.try_recv().is_err());
        // A bound of one: the first alone.
        tx.send(Work::Gone("left".into())).unwrap();
        assert_eq!(uids(batch(Work::Gone("x".into()), &rx, 1)), ["x"]);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn one_namespace_or_none() {
        let f = |k: &str| Found {
            path: PathBuf::from(format!("/x/{k}")),
            key: k.into(),
        };
        let mut found = HashMap::new();
        found.insert("198.51.100.2".parse().unwrap(), vec![f("a")]);
        found.insert("2001:db8::2".parse().unwrap(), vec![f("a")]);
        found.insert("198.51.100.3".parse().unwrap(), vec![f("b"), f("c")]);
        assert_eq!(
            netns_of(&cand(&["198.51.100.2", "2001:db8::2"]), &found)
                .unwrap()
                .key,
            "a"
        );
        assert!(netns_of(&cand(&["198.51.100.9"]), &found)
            .unwrap_err()
            .contains("no network namespace"));
        assert!(netns_of(&cand(&["198.51.100.3"]), &found)
            .unwrap_err()
            .contains("more than one"));
        assert!(netns_of(&cand(&["198.51.100.2", "198.51.100.3"]), &found).is_err());
    }
}
