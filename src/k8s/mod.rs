//! Kubernetes mode: read the pod and its NetworkAttachmentDefinitions from
//! the API server, decide the attachments and the capture from them, and
//! write the network-status annotation back.
//!
//! On when `kubeconfig` is set (or in-cluster) *and* CNI_ARGS names the pod
//! (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`); without a pod identity (a
//! runtime that is not kubelet) multimesh behaves as in static mode.
//! Round trips per ADD: one pod GET, one GET per distinct NAD, one status
//! PATCH. DEL never talks to the API server.

pub mod client;
pub mod kubeconfig;
pub mod pod;

use crate::capture::CaptureConfig;
use crate::config::NetConf;
use crate::error::{code, CniError, Result};
use client::{ApiError, Client};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// A YAML (or JSON) document as a JSON value: kubeconfigs and the pod files
/// of `multimesh rules --pod`. serde_norway (libyaml) parses; anchors,
/// aliases and `<<` merge keys are resolved; mapping keys must be strings.
pub fn yaml_to_json(text: &str) -> std::result::Result<Value, String> {
    let mut v: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    v.apply_merge().map_err(|e| e.to_string())?;
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// The pod named by CNI_ARGS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl PodRef {
    pub fn from_args(args: &str) -> Option<PodRef> {
        let kv = crate::cni::parse_cni_args(args);
        let get = |k: &str| {
            kv.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        Some(PodRef {
            namespace: get("K8S_POD_NAMESPACE")?,
            name: get("K8S_POD_NAME")?,
            uid: get("K8S_POD_UID"),
        })
    }
    fn validate(&self) -> Result<()> {
        let ok = pod::is_dns_label(&self.namespace) && pod::is_dns_subdomain(&self.name);
        let uid_ok = self.uid.as_deref().is_none_or(|u| {
            u.len() <= 64 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if ok && uid_ok {
            Ok(())
        } else {
            Err(CniError::env(format!(
                "CNI_ARGS: K8S_POD_NAMESPACE/K8S_POD_NAME/K8S_POD_UID {}/{} is not a valid pod identity",
                self.namespace, self.name
            )))
        }
    }
}

/// The API configuration, when Kubernetes mode is configured. A plain
/// `http://` server is refused (code 7) unless the network config sets
/// `allowInsecureHTTP: true`; the in-cluster configuration is always https.
pub fn api_config(conf: &NetConf) -> Option<Result<kubeconfig::ApiConfig>> {
    let to_err = |e: String| CniError::config(format!("kubeconfig: {e}"));
    match &conf.kubeconfig {
        Some(k) => Some(
            kubeconfig::load(Path::new(k))
                .map_err(to_err)
                .and_then(|c| check_scheme(c, conf.allow_insecure_http, k)),
        ),
        None => kubeconfig::in_cluster(|k| std::env::var(k).ok()).map(|r| r.map_err(to_err)),
    }
}

fn check_scheme(
    c: kubeconfig::ApiConfig,
    allow_http: bool,
    path: &str,
) -> Result<kubeconfig::ApiConfig> {
    if c.scheme == kubeconfig::Scheme::Http && !allow_http {
        return Err(CniError::config(format!(
            "kubeconfig {path}: server http://{}: plain HTTP to the API server is refused \
             (credentials and pod data would cross the network unprotected); \
             set \"allowInsecureHTTP\": true in the multimesh network config to allow it",
            c.authority()
        )));
    }
    Ok(c)
}

pub fn api_error(e: ApiError, what: &str) -> CniError {
    match &e {
        _ if e.is_retryable() => CniError::new(code::TRY_AGAIN, format!("{what}: {e}")),
        _ => CniError::new(code::API, format!("{what}: {e}")),
    }
}

/// The Namespace `ns` (a DNS label, checked by the caller); None when the
/// API server has none. ADD and the node agent read it alike.
pub fn read_namespace(client: &mut Client, ns: &str) -> Result<Option<pod::Namespace>> {
    let v = match client.get(&format!("/api/v1/namespaces/{ns}")) {
        Ok(v) => v,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(api_error(e, &format!("reading namespace {ns}"))),
    };
    pod::Namespace::from_json(&v).map(Some).map_err(|e| {
        CniError::new(
            code::API,
            format!("namespace {ns} as the API server gave it: {e}"),
        )
    })
}

/// One ADD's conversation with the API server.
pub struct Session {
    client: Client,
    pub pod_ref: PodRef,
    pub pod: pod::Pod,
    nads: HashMap<(String, String), pod::Nad>,
}

impl Session {
    /// Connect and read the pod; its UID must match K8S_POD_UID.
    pub fn open(cfg: kubeconfig::ApiConfig, pod_ref: PodRef) -> Result<Session> {
        pod_ref.validate()?;
        let mut client =
            Client::new(cfg).map_err(|e| CniError::config(format!("kubeconfig: {e}")))?;
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            pod_ref.namespace, pod_ref.name
        );
        let pod = client.get(&path).map_err(|e| match e.status() {
            Some(404) => CniError::new(
                code::POD_IDENTITY,
                format!(
                    "pod {}/{} not found on the API server",
                    pod_ref.namespace, pod_ref.name
                ),
            ),
            _ => api_error(
                e,
                &format!("reading pod {}/{}", pod_ref.namespace, pod_ref.name),
            ),
        })?;
        let pod = pod::Pod::from_json(&pod).map_err(|e| {
            CniError::new(
                code::API,
                format!(
                    "pod {}/{} as the API server gave it: {e}",
                    pod_ref.namespace, pod_ref.name
                ),
            )
        })?;
        if let Some(want) = &pod_ref.uid {
            let have = pod.metadata.uid.as_deref().unwrap_or("");
            if have != want {
                return Err(CniError::new(
                    code::POD_IDENTITY,
                    format!(
                        "pod {}/{} has UID {have:?}, not K8S_POD_UID {want:?} (deleted and recreated?)",
                        pod_ref.namespace, pod_ref.name
                    ),
                ));
            }
        }
        pod.check_annotation_sizes()?;
        Ok(Session {
            client,
            pod_ref,
            pod,
            nads: HashMap::new(),
        })
    }

    /// The pod's capture (`pod::capture_for_pod`), reading its namespace
    /// (one GET) only when the linkerd profile needs it.
    pub fn capture(&mut self, base: &CaptureConfig) -> Result<Option<CaptureConfig>> {
        let ns = if pod::needs_namespace(base, &self.pod) {
            self.namespace()?
        } else {
            None
        };
        pod::capture_for_pod(base, &self.pod, ns.as_ref())
    }

    /// The pod's Namespace; None when the API server has none.
    fn namespace(&mut self) -> Result<Option<pod::Namespace>> {
        read_namespace(&mut self.client, &self.pod_ref.namespace)
    }

    /// A NetworkAttachmentDefinition (one GET per distinct name per ADD).
    pub fn nad(&mut self, ns: &str, name: &str) -> Result<pod::Nad> {
        if !pod::is_dns_label(ns) || !pod::is_dns_subdomain(name) {
            // Names from the config (multusNamespace, clusterNetwork) are
            // checked here; the pod's were checked when parsed.
            return Err(CniError::config(format!(
                "network {ns}/{name}: not a valid namespace/name (DNS-1123)"
            )));
        }
        let key = (ns.to_string(), name.to_string());
        if let Some(v) = self.nads.get(&key) {
            return Ok(v.clone());
        }
        let path = format!(
            "/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}"
        );
        let v = self.client.get(&path).map_err(|e| match e.status() {
            Some(404) => CniError::new(
                code::POD_REQUEST,
                format!("NetworkAttachmentDefinition {ns}/{name} not found"),
            ),
            _ => api_error(
                e,
                &format!("reading NetworkAttachmentDefinition {ns}/{name}"),
            ),
        })?;
        let nad = pod::Nad::from_json(&v).map_err(|e| {
            CniError::config(format!("NetworkAttachmentDefinition {ns}/{name}: {e}"))
        })?;
        self.nads.insert(key, nad.clone());
        Ok(nad)
    }

    /// Write `k8s.v1.cni.cncf.io/network-status` on the pod's status
    /// subresource: a JSON merge patch of that one annotation, retried on
    /// conflicts, 429 and 5xx (bounded).
    pub fn write_status(&mut self, entries: &[Value]) -> Result<()> {
        let text = serde_json::to_string_pretty(entries).unwrap_or_default();
        let body = serde_json::json!({"metadata": {"annotations": {pod::NETWORK_STATUS: text}}});
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            self.pod_ref.namespace, self.pod_ref.name
        );
        let mut delay = std::time::Duration::from_millis(50);
        for attempt in 1..=5 {
            match self
                .client
                .patch(&path, "application/merge-patch+json", &body)
            {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 5 && (e.status() == Some(409) || e.is_retryable()) => {
                    log::info!("network-status write: {e}; retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(api_error(e, "writing network-status")),
            }
        }
        Err(CniError::new(
            code::TRY_AGAIN,
            "writing network-status: gave up",
        ))
    }

    pub fn requests(&self) -> u32 {
        self.client.requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_allow_insecure_http() {
        let dir = std::env::temp_dir().join(format!("mm-k8s-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kc = dir.join("kubeconfig");
        let conf = |server: &str, extra: &str| {
            std::fs::write(
                &kc,
                format!(
                    "clusters:\n- name: c\n  cluster:\n    server: {server}\n\
                     contexts:\n- name: x\n  context:\n    cluster: c\n"
                ),
            )
            .unwrap();
            NetConf::parse(
                format!(
                    r#"{{"cniVersion":"1.0.0","name":"mm","type":"multimesh","kubeconfig":{:?}{extra}}}"#,
                    kc.display().to_string()
                )
                .as_bytes(),
            )
        };
        let c = conf("http://198.51.100.1:8080", "").unwrap();
        assert!(!c.allow_insecure_http);
        let e = api_config(&c).unwrap().err().unwrap();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("allowInsecureHTTP"), "{}", e.msg);
        let c = conf("http://198.51.100.1:8080", r#","allowInsecureHTTP":false"#).unwrap();
        assert!(api_config(&c).unwrap().is_err());
        let c = conf("http://198.51.100.1:8080", r#","allowInsecureHTTP":true"#).unwrap();
        let a = api_config(&c).unwrap().unwrap();
        assert_eq!(a.scheme, kubeconfig::Scheme::Http);
        // https never needs it.
        let c = conf("https://198.51.100.1:6443", "").unwrap();
        assert!(api_config(&c).unwrap().is_ok());
        // Type-checked like the other booleans.
        let e = conf("http://198.51.100.1", r#","allowInsecureHTTP":"yes""#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("allowInsecureHTTP"), "{}", e.msg);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
