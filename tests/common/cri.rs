//! A small synchronous CRI client (kubelet's side of the Container Runtime
//! Interface): the `k8s-cri` protobufs over `tonic` gRPC on a unix socket,
//! each call a `block_on` on a private current-thread tokio runtime and
//! bounded by a timeout. Used by tests/containerd.rs and by
//! examples/cri.rs (the benchmark's and the demo's client). It depends on
//! nothing else in the harness so the example can include it by path.
#![allow(dead_code)]

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// What kubelet would put in a PodSandboxConfig.
#[derive(Clone, Debug, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub annotations: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// cgroupfs parent (e.g. "/mmcri-123"); empty: the runtime's default.
    pub cgroup_parent: String,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, uid: &str) -> PodSpec {
        PodSpec {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    /// The PodSandboxConfig kubelet would send (metadata, hostname,
    /// labels as kubelet sets them, annotations, the cgroup parent).
    pub fn config(&self) -> cri::PodSandboxConfig {
        let mut labels: HashMap<String, String> = self.labels.iter().cloned().collect();
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), self.uid.clone());
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            labels,
            annotations: self.annotations.iter().cloned().collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A sandbox as PodSandboxStatus (verbose) reports it.
#[derive(Clone, Debug)]
pub struct SandboxStatus {
    pub id: String,
    /// "SANDBOX_READY" / "SANDBOX_NOTREADY"
    pub state: String,
    /// `status.network.ip` (the primary IP kubelet records for the pod).
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// The sandbox's network namespace path (from the verbose info's
    /// runtimeSpec), empty when none is reported.
    pub netns: String,
    /// The pause process's PID (verbose info), 0 when not reported.
    pub pid: u32,
    /// The verbose `info` map's "info" entry, parsed.
    pub info: serde_json::Value,
}

pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    pub timeout: Duration,
}

/// A gRPC error as text: "Code: message".
pub fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

impl Cri {
    /// Connect to the CRI endpoint at unix socket `socket` (bounded).
    pub fn connect(socket: &Path) -> Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let path: PathBuf = socket.to_path_buf();
        let channel = rt.block_on(async move {
            let ep = Endpoint::try_from("http://[::1]:50051")
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5));
            tokio::time::timeout(
                Duration::from_secs(10),
                ep.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                })),
            )
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect {}: {e}", socket.display()))
        })?;
        Ok(Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
            timeout: Duration::from_secs(120),
        })
    }

    fn call<T, F>(&self, f: F) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, f).await {
                Err(_) => Err(format!("CRI call timed out after {:?}", self.timeout)),
                Ok(Err(s)) => Err(status_text(&s)),
                Ok(Ok(r)) => Ok(r.into_inner()),
            }
        })
    }

    /// Runtime name and version ("containerd 1.6.20~ds1", API "v1").
    pub fn version(&self) -> Result<(String, String, String), String> {
        let mut c = self.client.clone();
        let v = self.call(c.version(cri::VersionRequest {
            version: "v1".into(),
        }))?;
        Ok((v.runtime_name, v.runtime_version, v.runtime_api_version))
    }

    /// RunPodSandbox; the sandbox ID.
    pub fn run_pod(&self, pod: &PodSpec) -> Result<String, String> {
        let mut c = self.client.clone();
        let r = self.call(c.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.config()),
            runtime_handler: String::new(),
        }))?;
        Ok(r.pod_sandbox_id)
    }

    /// RunPodSandbox for every pod at once (kubelet's pod workers run in
    /// parallel): every request is in flight before any answer is awaited.
    pub fn run_pods_at_once(&self, pods: &[PodSpec]) -> Vec<Result<String, String>> {
        let timeout = self.timeout;
        let futs: Vec<_> = pods
            .iter()
            .map(|p| {
                let mut c = self.client.clone();
                let req = cri::RunPodSandboxRequest {
                    config: Some(p.config()),
                    runtime_handler: String::new(),
                };
                async move { c.run_pod_sandbox(req).await }
            })
            .collect();
        self.rt.block_on(async move {
            let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(match tokio::time::timeout(timeout, h).await {
                    Err(_) => Err(format!("RunPodSandbox timed out after {timeout:?}")),
                    Ok(Err(e)) => Err(format!("task: {e}")),
                    Ok(Ok(Err(s))) => Err(status_text(&s)),
                    Ok(Ok(Ok(r))) => Ok(r.into_inner().pod_sandbox_id),
                });
            }
            out
        })
    }

    /// StopPodSandbox (or RemovePodSandbox with `remove`) for every ID at once.
    pub fn stop_pods_at_once(&self, ids: &[String], remove: bool) -> Vec<Result<(), String>> {
        let timeout = self.timeout;
        let futs: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut c = self.client.clone();
                let id = id.clone();
                async move {
                    if remove {
                        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                            .await
                            .map(|_| ())
                    } else {
                        c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                            .await
                            .map(|_| ())
                    }
                }
            })
            .collect();
        self.rt.block_on(async move {
            let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(match tokio::time::timeout(timeout, h).await {
                    Err(_) => Err(format!("call timed out after {timeout:?}")),
                    Ok(Err(e)) => Err(format!("task: {e}")),
                    Ok(Ok(Err(s))) => Err(status_text(&s)),
                    Ok(Ok(Ok(()))) => Ok(()),
                });
            }
            out
        })
    }

    /// PodSandboxStatus (verbose).
    pub fn status(&self, id: &str) -> Result<SandboxStatus, String> {
        let mut c = self.client.clone();
        let r = self.call(c.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        }))?;
        let st = r.status.ok_or("PodSandboxStatus without status")?;
        let info = verbose_info(&r.info);
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|n| n["type"] == "network")
                    .and_then(|n| n["path"].as_str())
            })
            .unwrap_or("")
            .to_string();
        let net = st.network.unwrap_or_default();
        Ok(SandboxStatus {
            id: st.id,
            state: cri::PodSandboxState::try_from(st.state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_else(|_| st.state.to_string()),
            ip: net.ip,
            additional_ips: net.additional_ips.into_iter().map(|p| p.ip).collect(),
            netns,
            pid: info["pid"].as_u64().unwrap_or(0) as u32,
            info,
        })
    }

    /// IDs of every sandbox the runtime knows (any state).
    pub fn list_pods(&self) -> Result<Vec<String>, String> {
        let mut c = self.client.clone();
        let r = self.call(c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))?;
        Ok(r.items.into_iter().map(|p| p.id).collect())
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), String> {
        let mut c = self.client.clone();
        self.call(c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(|_| ())
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), String> {
        let mut c = self.client.clone();
        self.call(c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(|_| ())
    }

    /// CreateContainer + StartContainer: an app container in the sandbox
    /// running `command` from `image`; its container ID.
    pub fn start_container(
        &self,
        sandbox: &str,
        pod: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String, String> {
        let mut c = self.client.clone();
        let cfg = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            labels: [("io.kubernetes.container.name".to_string(), name.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let r = self.call(c.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(cfg),
            sandbox_config: Some(pod.config()),
        }))?;
        let id = r.container_id;
        let mut c = self.client.clone();
        self.call(c.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        }))?;
        Ok(id)
    }

    /// ContainerStatus: (state name, pid from the verbose info).
    pub fn container_status(&self, id: &str) -> Result<(String, u32), String> {
        let mut c = self.client.clone();
        let r = self.call(c.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        }))?;
        let st = r.status.ok_or("ContainerStatus without status")?;
        let info = verbose_info(&r.info);
        Ok((
            cri::ContainerState::try_from(st.state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_default(),
            info["pid"].as_u64().unwrap_or(0) as u32,
        ))
    }
}

/// The JSON under "info" of a verbose CRI status answer (Null without it).
fn verbose_info(info: &std::collections::HashMap<String, String>) -> serde_json::Value {
    info.get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null)
}
