//! The few fields of a pod the agent reads (deserialised straight from the
//! API's answer: the rest of each object is skipped, never held) and the
//! decision whether a pod should have capture it may lack.
//!
//! Pods come from the API server, written by tenants: every field is
//! bounded here (`MAX_*`) before anything else looks at it, and a pod that
//! breaks a bound is left alone (logged), never acted on.

use crate::capture::CaptureConfig;
use crate::k8s::pod;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The label `label` mode sets on a pod without capture.
pub const UNINITIALIZED_LABEL: &str = "multimesh.io/uninitialized";
/// Init containers whose name starts with this are multimesh's validator.
pub const VALIDATOR_PREFIX: &str = "multimesh-validation";
/// The validator's exit code when capture is missing.
pub const VALIDATOR_FAILED: i32 = 95;
/// Most containers (and, separately, init containers) a pod may list.
pub const MAX_CONTAINERS: usize = 64;
/// Most pod IPs a pod may report (one per family in Kubernetes).
pub const MAX_POD_IPS: usize = 8;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: Meta,
    pub spec: Spec,
    pub status: Status,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
    pub deletion_timestamp: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    pub node_name: String,
    pub host_network: bool,
    /// The containers, read exactly as ADD reads them.
    #[serde(flatten)]
    pub pod: pod::PodSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    pub phase: String,
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    pub init_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    pub last_state: ContainerState,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    pub running: Option<Value>,
    pub terminated: Option<Terminated>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
}

impl Pod {
    /// `namespace/name` for logs.
    pub fn id(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// Did the validator's latest run say capture is missing? (Its latest
    /// run: the current state when terminated, else the last one while it
    /// waits to run again; a running or passed validator says no.)
    pub fn validator_failed(&self) -> bool {
        self.status
            .init_container_statuses
            .iter()
            .filter(|c| c.name.starts_with(VALIDATOR_PREFIX))
            .any(|c| {
                if c.state.running.is_some() {
                    return false;
                }
                match (&c.state.terminated, &c.last_state.terminated) {
                    (Some(t), _) => t.exit_code == VALIDATOR_FAILED,
                    (None, Some(t)) => t.exit_code == VALIDATOR_FAILED,
                    (None, None) => false,
                }
            })
    }

    /// The pod as ADD reads it (`k8s::pod::Pod`), for `capture_for_pod`.
    fn as_read_by_add(&self) -> pod::Pod {
        pod::Pod {
            metadata: pod::Metadata {
                namespace: Some(self.metadata.namespace.clone()),
                uid: Some(self.metadata.uid.clone()),
                annotations: self.metadata.annotations.clone(),
                labels: self.metadata.labels.clone(),
            },
            spec: self.spec.pod.clone(),
        }
    }
}

/// A pod that should have capture and may lack it: what the repair worker
/// needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// The capture ADD would have programmed (the pod's annotations
    /// applied to the installed config).
    pub capture: CaptureConfig,
    /// Its validator reported capture missing (exit 95).
    pub validator_failed: bool,
}

impl Candidate {
    /// CNI_ARGS-style identity, recorded with a repair.
    pub fn cni_args(&self) -> String {
        format!(
            "K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={}",
            self.namespace, self.name, self.uid
        )
    }
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a pod is not a candidate (Ok(None)), or what breaks a bound (Err).
/// `namespace` gives the pod's Namespace (None: there is none) when ADD
/// would read it (`pod::needs_namespace`: a linkerd pod that sets no
/// `config.linkerd.io/*` of its own); its error leaves the pod alone.
pub fn assess(
    base: &CaptureConfig,
    p: &Pod,
    namespace: impl FnOnce(&str) -> Result<Option<pod::Namespace>, String>,
) -> Result<Option<Candidate>, String> {
    let m = &p.metadata;
    if !pod::is_dns_label(&m.namespace) || !pod::is_dns_subdomain(&m.name) {
        return Err(format!(
            "pod {:?}: not a valid namespace/name",
            p.id().chars().take(80).collect::<String>()
        ));
    }
    if m.uid.is_empty()
        || m.uid.len() > 64
        || !m
            .uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("pod {}: not a valid uid", p.id()));
    }
    if m.deletion_timestamp.is_some() || p.spec.host_network {
        return Ok(None);
    }
    if p.spec.pod.containers.len() > MAX_CONTAINERS
        || p.spec.pod.init_containers.len() > MAX_CONTAINERS
    {
        return Err(format!(
            "pod {}: more than {MAX_CONTAINERS} containers",
            p.id()
        ));
    }
    if p.status.pod_ips.len() > MAX_POD_IPS {
        return Err(format!("pod {}: more than {MAX_POD_IPS} pod IPs", p.id()));
    }
    if let Some((k, _)) = m
        .annotations
        .iter()
        .find(|(_, v)| v.len() > pod::MAX_ANNOTATION_BYTES)
    {
        return Err(format!(
            "pod {}: annotation {:?} larger than {} bytes",
            p.id(),
            k.chars().take(80).collect::<String>(),
            pod::MAX_ANNOTATION_BYTES
        ));
    }
    if m.labels.get(UNINITIALIZED_LABEL).map(String::as_str) == Some("true") {
        return Ok(None); // labelled already
    }
    let validator_failed = p.validator_failed();
    if p.status.phase != "Running" && !validator_failed {
        return Ok(None);
    }
    let ips: Vec<IpAddr> = p
        .status
        .pod_ips
        .iter()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        return Ok(None);
    }
    // The same rule as ADD (`k8s::Session::capture`).
    let read = p.as_read_by_add();
    let ns = if pod::needs_namespace(base, &read) {
        namespace(&m.namespace).map_err(|e| format!("pod {}: {e}", p.id()))?
    } else {
        None
    };
    let capture = match pod::capture_for_pod(base, &read, ns.as_ref()) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("pod {}: {}", p.id(), e.msg)),
    };
    Ok(Some(Candidate {
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        ips,
        capture,
        validator_failed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Profile;
    use serde_json::json;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    /// `assess` where no namespace may be read.
    fn assess_pod(base: &CaptureConfig, p: &Pod) -> Result<Option<Candidate>, String> {
        assess(base, p, |ns| panic!("namespace {ns} read"))
    }

    fn meshed(extra_status: Value) -> Value {
        let mut status =
            json!({"phase": "Running", "podIPs": [{"ip": "198.51.100.7"}, {"ip": "2001:db8::7"}]});
        for (k, v) in extra_status.as_object().unwrap() {
            status[k] = v.clone();
        }
        json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                "annotations": {"sidecar.istio.io/status": "{}"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}, {"name": "istio-proxy"}]},
            "status": status,
        })
    }

    #[test]
    fn meshed_running_pods_are_candidates() {
        let base = CaptureConfig::defaults(Profile::Istio);
        let c = assess_pod(&base, &pod(meshed(json!({})))).unwrap().unwrap();
        assert_eq!(c.id(), "shop/web");
        assert_eq!(c.ips.len(), 2);
        assert!(!c.validator_failed);
        assert_eq!(
            c.cni_args(),
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_UID=u-1"
        );
        // Not meshed, not running, host network, being deleted, labelled,
        // no IP yet: not candidates.
        let mut v = meshed(json!({}));
        v["metadata"]["annotations"] = json!({});
        assert_eq!(assess_pod(&base, &pod(v)).unwrap(), None);
        assert_eq!(
            assess_pod(&base, &pod(meshed(json!({"phase": "Pending"})))).unwrap(),
            None
        );
        let mut v = meshed(json!({}));
        v["spec"]["hostNetwork"] = json!(true);
        assert_eq!(assess_pod(&base, &pod(v)).unwrap(), None);
        let mut v = meshed(json!({}));
        v["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(assess_pod(&base, &pod(v)).unwrap(), None);
        let mut v = meshed(json!({}));
        v["metadata"]["labels"] = json!({UNINITIALIZED_LABEL: "true"});
        assert_eq!(assess_pod(&base, &pod(v)).unwrap(), None);
        assert_eq!(
            assess_pod(&base, &pod(meshed(json!({"podIPs": [{"ip": "bogus"}]})))).unwrap(),
            None
        );
        // Linkerd's profile does not see an istio pod.
        let l = CaptureConfig::defaults(Profile::Linkerd);
        assert_eq!(assess_pod(&l, &pod(meshed(json!({})))).unwrap(), None);
    }

    #[test]
    fn a_failed_validator_makes_a_pending_pod_a_candidate() {
        let base = CaptureConfig::defaults(Profile::Istio);
        let failed = |state: Value, last: Value| {
            meshed(json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "multimesh-validation", "state": state, "lastState": last}]}))
        };
        let term = |c: i32| json!({"terminated": {"exitCode": c}});
        let c = assess_pod(&base, &pod(failed(term(95), json!({}))))
            .unwrap()
            .unwrap();
        assert!(c.validator_failed);
        let waiting = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert!(
            assess_pod(&base, &pod(failed(waiting.clone(), term(95))))
                .unwrap()
                .unwrap()
                .validator_failed
        );
        // Passed on its latest run, running now, or another exit code.
        assert_eq!(
            assess_pod(&base, &pod(failed(term(0), term(95)))).unwrap(),
            None
        );
        assert_eq!(
            assess_pod(&base, &pod(failed(json!({"running": {}}), term(95)))).unwrap(),
            None
        );
        assert_eq!(
            assess_pod(&base, &pod(failed(term(1), json!({})))).unwrap(),
            None
        );
    }

    #[test]
    fn bounds_on_tenant_fields() {
        let base = CaptureConfig::defaults(Profile::Istio);
        let mut v = meshed(json!({}));
        v["spec"]["containers"] = Value::Array(
            (0..=MAX_CONTAINERS)
                .map(|i| json!({"name": format!("c{i}")}))
                .collect(),
        );
        assert!(assess_pod(&base, &pod(v))
            .unwrap_err()
            .contains("containers"));
        let ips: Vec<Value> = (0..=MAX_POD_IPS)
            .map(|i| json!({"ip": format!("198.51.100.{i}")}))
            .collect();
        assert!(assess_pod(&base, &pod(meshed(json!({"podIPs": ips}))))
            .unwrap_err()
            .contains("pod IPs"));
        let mut v = meshed(json!({}));
        v["metadata"]["annotations"]["big"] = json!("x".repeat(pod::MAX_ANNOTATION_BYTES + 1));
        assert!(assess_pod(&base, &pod(v))
            .unwrap_err()
            .contains("annotation"));
        for (k, bad) in [
            ("name", "Bad_Name"),
            ("namespace", "a/b"),
            ("uid", "u 1"),
            ("uid", ""),
        ] {
            let mut v = meshed(json!({}));
            v["metadata"][k] = json!(bad);
            assert!(assess_pod(&base, &pod(v)).is_err(), "{k}={bad:?}");
        }
        // A bad annotation value is an error, never a rule.
        let mut v = meshed(json!({}));
        v["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"] =
            json!("99999");
        assert!(assess_pod(&base, &pod(v)).is_err());
    }

    /// A linkerd pod without `config.linkerd.io/*` of its own takes its
    /// namespace's, as ADD does; one with its own, and istio pods, never
    /// read the namespace; a namespace that cannot be read leaves the pod
    /// alone.
    #[test]
    fn linkerd_pods_take_their_namespace_config() {
        let base = CaptureConfig::defaults(Profile::Linkerd);
        let linkerd = |ann: Value| {
            let mut v = meshed(json!({}));
            v["metadata"]["annotations"] = ann;
            v["spec"]["containers"] = json!([{"name": "app"}, {"name": "linkerd-proxy"}]);
            pod(v)
        };
        let proxy = json!({"linkerd.io/proxy-version": "stable-2.14.10"});
        let ns = pod::Namespace::from_json(&json!({"metadata": {"name": "shop",
            "annotations": {"config.linkerd.io/skip-outbound-ports": "5432",
                            "config.linkerd.io/proxy-uid": "2200"}}}))
        .unwrap();
        let mut asked = Vec::new();
        let c = assess(&base, &linkerd(proxy.clone()), |n| {
            asked.push(n.to_string());
            Ok(Some(ns.clone()))
        })
        .unwrap()
        .unwrap();
        assert_eq!(asked, ["shop"]);
        // Exactly what ADD computes with the same namespace.
        let add = pod::capture_for_pod(&base, &linkerd(proxy.clone()).as_read_by_add(), Some(&ns))
            .unwrap()
            .unwrap();
        assert_eq!(c.capture, add);
        assert_eq!(c.capture.proxy_uid, 2200);
        assert_ne!(c.capture, CaptureConfig::defaults(Profile::Linkerd));
        // No namespace object: the profile's defaults.
        let none = assess(&base, &linkerd(proxy.clone()), |_| Ok(None))
            .unwrap()
            .unwrap();
        assert_eq!(none.capture.proxy_uid, base.proxy_uid);
        // Its own config.linkerd.io/*: the namespace is not read.
        let mut own = proxy.clone();
        own["config.linkerd.io/proxy-uid"] = json!("2300");
        let c = assess_pod(&base, &linkerd(own)).unwrap().unwrap();
        assert_eq!(c.capture.proxy_uid, 2300);
        // Cannot read it: left alone, saying why.
        let e = assess(&base, &linkerd(proxy.clone()), |_| Err("API down".into())).unwrap_err();
        assert!(e.contains("shop/web") && e.contains("API down"), "{e}");
        // A bad value in the namespace is an error, as at ADD.
        let bad = pod::Namespace::from_json(&json!({"metadata": {"annotations":
            {"config.linkerd.io/skip-outbound-ports": "99999"}}}))
        .unwrap();
        assert!(assess(&base, &linkerd(proxy), |_| Ok(Some(bad))).is_err());
    }
}
