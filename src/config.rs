//! The network configuration multimesh receives on stdin.

use crate::capture::CaptureConfig;
use crate::cni;
use crate::error::{code, CniError, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multimesh/net.d";
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/multimesh";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Default `maxNetworksPerPod`.
pub const DEFAULT_MAX_NETWORKS_PER_POD: usize = 32;
/// Largest `maxNetworksPerPod` an admin may set.
pub const MAX_NETWORKS_PER_POD_LIMIT: usize = 1024;

#[derive(Debug, Clone)]
pub struct NetConf {
    pub name: String,
    pub cni_version: String,
    /// `delegates` as given (conf or conflist objects).
    pub delegates: Vec<Value>,
    pub cluster_network: Option<String>,
    pub default_networks: Vec<String>,
    pub conf_dir: PathBuf,
    pub cni_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub kubeconfig: Option<String>,
    /// `allowInsecureHTTP`: accept a kubeconfig `server: http://...`.
    pub allow_insecure_http: bool,
    pub readiness_indicator_file: Option<PathBuf>,
    pub log_file: Option<String>,
    pub log_level: crate::logging::Level,
    pub log_to_stderr: bool,
    /// `delegateTimeout`: longest one delegate call may run (default 120 s).
    pub delegate_timeout: std::time::Duration,
    /// `addTimeout`: budget for all delegate ADDs of one ADD (default 240 s).
    pub add_timeout: std::time::Duration,
    pub capture: CaptureConfig,
    pub runtime_config: Option<Map<String, Value>>,
    pub prev_result: Option<Value>,
    pub namespace_isolation: bool,
    pub global_namespaces: Vec<String>,
    pub system_namespaces: Vec<String>,
    pub multus_namespace: String,
    /// Kubernetes mode: most attachments one pod may have (the cluster
    /// network included); more is refused before anything runs.
    pub max_networks_per_pod: usize,
    /// Kubernetes mode: plugin types a NetworkAttachmentDefinition may use
    /// (every plugin of its config); empty allows every plugin in binDir /
    /// CNI_PATH.
    pub allowed_network_types: Vec<String>,
    /// The whole object, for GC's `cni.dev/valid-attachments`.
    pub raw: Map<String, Value>,
}

impl NetConf {
    /// Meta-plugin mode: multimesh runs delegates. Otherwise it is chained.
    pub fn is_meta(&self) -> bool {
        !self.delegates.is_empty() || self.cluster_network.is_some()
    }

    /// Decode stdin. Errors: 6 (not JSON), 1 (version), 7 (bad field).
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, format!("cannot decode network config: {e}"))
        })?;
        let raw = match v {
            Value::Object(m) => m,
            _ => {
                return Err(CniError::new(
                    code::DECODE,
                    "network config must be a JSON object",
                ))
            }
        };
        let cni_version = match raw.get("cniVersion") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(CniError::config("cniVersion: missing")),
            Some(_) => return Err(CniError::config("cniVersion: must be a string")),
        };
        cni::check_version(&cni_version)?;
        let str_field = |k: &str| -> Result<Option<String>> {
            match raw.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(CniError::config(format!("{k}: must be a string"))),
            }
        };
        let bool_field = |k: &str, d: bool| -> Result<bool> {
            match raw.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(CniError::config(format!("{k}: must be a boolean"))),
            }
        };
        let list_field = |k: &str| -> Result<Vec<String>> {
            match raw.get(k) {
                None | Some(Value::Null) => Ok(vec![]),
                // Multus takes these as comma-separated strings too.
                Some(v) => crate::fields::list(v, k),
            }
        };
        let name = str_field("name")?.unwrap_or_default();
        let typ = str_field("type")?;
        if typ.as_deref().is_some_and(|t| t.is_empty()) {
            return Err(CniError::config("type: must not be empty"));
        }
        let delegates = match raw.get("delegates") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(CniError::config("delegates: must be a list of objects")),
        };
        let log_level = match str_field("logLevel")? {
            None => crate::logging::Level::Error,
            Some(s) => crate::logging::Level::parse(&s).ok_or_else(|| {
                CniError::config("logLevel: must be one of panic, error, verbose, debug")
            })?,
        };
        let runtime_config = match raw.get("runtimeConfig") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err(CniError::config("runtimeConfig: must be an object")),
        };
        let prev_result = raw.get("prevResult").filter(|v| !v.is_null()).cloned();
        if let Some(p) = &prev_result {
            if !p.is_object() {
                return Err(CniError::config("prevResult: must be an object"));
            }
        }
        let path = |k: &str, d: &str| -> Result<PathBuf> {
            Ok(PathBuf::from(
                str_field(k)?.unwrap_or_else(|| d.to_string()),
            ))
        };
        Ok(NetConf {
            name,
            cni_version,
            delegates,
            cluster_network: str_field("clusterNetwork")?.filter(|s| !s.is_empty()),
            default_networks: list_field("defaultNetworks")?,
            conf_dir: path("confDir", DEFAULT_CONF_DIR)?,
            cni_dir: path("cniDir", DEFAULT_CNI_DIR)?,
            bin_dir: path("binDir", DEFAULT_BIN_DIR)?,
            kubeconfig: str_field("kubeconfig")?.filter(|s| !s.is_empty()),
            allow_insecure_http: bool_field("allowInsecureHTTP", false)?,
            readiness_indicator_file: str_field("readinessindicatorfile")?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            log_file: str_field("logFile")?,
            log_level,
            log_to_stderr: bool_field("logToStderr", true)?,
            delegate_timeout: seconds_field(&raw, "delegateTimeout", crate::delegate::DELEGATE_TIMEOUT)?,
            add_timeout: seconds_field(&raw, "addTimeout", crate::delegate::ADD_TIMEOUT)?,
            capture: CaptureConfig::from_json(raw.get("capture"))?,
            runtime_config,
            prev_result,
            namespace_isolation: bool_field("namespaceIsolation", false)?,
            global_namespaces: list_field("globalNamespaces")?,
            system_namespaces: {
                let l = list_field("systemNamespaces")?;
                if raw.contains_key("systemNamespaces") {
                    l
                } else {
                    vec!["kube-system".into()]
                }
            },
            multus_namespace: str_field("multusNamespace")?.unwrap_or_else(|| "kube-system".into()),
            max_networks_per_pod: match raw.get("maxNetworksPerPod") {
                None | Some(Value::Null) => DEFAULT_MAX_NETWORKS_PER_POD,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_NETWORKS_PER_POD_LIMIT as u64).contains(n))
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        CniError::config(format!(
                            "maxNetworksPerPod: must be a number from 1 to {MAX_NETWORKS_PER_POD_LIMIT}"
                        ))
                    })?,
            },
            allowed_network_types: {
                let l = list_field("allowedNetworkTypes")?;
                for t in &l {
                    crate::delegate::validate_type(t)
                        .map_err(|e| e.context("allowedNetworkTypes"))?;
                }
                l
            },
            raw,
        })
    }
}

/// Largest `delegateTimeout` / `addTimeout` (an hour).
pub const MAX_TIMEOUT: u64 = 3600;

/// A whole number of seconds from 1 to `MAX_TIMEOUT`; `default` when absent.
fn seconds_field(
    raw: &Map<String, Value>,
    k: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration> {
    let secs = match raw.get(k) {
        None | Some(Value::Null) => default.as_secs(),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|s| (1..=MAX_TIMEOUT).contains(s))
            .ok_or_else(|| {
                CniError::config(format!(
                    "{k}: must be a whole number of seconds from 1 to {MAX_TIMEOUT}"
                ))
            })?,
        Some(_) => {
            return Err(CniError::config(format!(
                "{k}: must be a number (seconds, 1 to {MAX_TIMEOUT})"
            )))
        }
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// Load a network by name or path from `conf_dir`: an absolute path names a
/// file (or a directory, whose first config by name is taken) inside
/// `conf_dir`; otherwise a file in `conf_dir` whose network `name`, or
/// whose file name without extension, equals `key`. Nothing outside
/// `conf_dir` is ever read.
pub fn load_network(conf_dir: &Path, key: &str) -> Result<Value> {
    let not_found = || {
        CniError::config(format!(
            "network {key:?} not found in confDir {}",
            conf_dir.display()
        ))
    };
    if key.starts_with('/') {
        let p = inside(conf_dir, Path::new(key))?;
        if p.is_dir() {
            return conf_files(&p)
                .into_iter()
                .next()
                .and_then(|f| read_conf(&f).ok())
                .ok_or_else(not_found);
        }
        return read_conf(&p);
    }
    if key.contains('/') || key.contains("..") {
        return Err(CniError::config(format!(
            "network {key:?}: a name must not contain '/' or '..'"
        )));
    }
    let files = conf_files(conf_dir);
    for f in &files {
        if let Ok(v) = read_conf(f) {
            if v.get("name").and_then(Value::as_str) == Some(key) {
                return Ok(v);
            }
        }
    }
    for f in &files {
        if f.file_stem().and_then(|s| s.to_str()) == Some(key) {
            return read_conf(f);
        }
    }
    Err(not_found())
}

/// `p` with every link resolved, if it is `dir` or lies under it.
fn inside(dir: &Path, p: &Path) -> Result<PathBuf> {
    let outside = || {
        CniError::config(format!(
            "network path {} is not inside confDir {}",
            p.display(),
            dir.display()
        ))
    };
    let d = dir.canonicalize().map_err(|_| outside())?;
    let c = p
        .canonicalize()
        .map_err(|e| CniError::config(format!("cannot read {}: {e}", p.display())))?;
    if c.starts_with(&d) {
        Ok(c)
    } else {
        Err(outside())
    }
}

fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conf" | "conflist" | "json")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_conf(p: &Path) -> Result<Value> {
    let b = std::fs::read(p)
        .map_err(|e| CniError::config(format!("cannot read {}: {e}", p.display())))?;
    let v: Value = serde_json::from_slice(&b)
        .map_err(|e| CniError::config(format!("cannot decode {}: {e}", p.display())))?;
    if !v.is_object() {
        return Err(CniError::config(format!(
            "{}: not a JSON object",
            p.display()
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meta_conf() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"mm","type":"multimesh",
            "delegates":[{"type":"bridge"}],"defaultNetworks":"a, b","cniDir":"/tmp/x",
            "capture":{"inboundPort":1234,"excludeInterfaces":["net1"]}}"#,
        )
        .unwrap();
        assert!(c.is_meta());
        assert_eq!(c.default_networks, ["a", "b"]);
        assert_eq!(c.cni_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.bin_dir, PathBuf::from(DEFAULT_BIN_DIR));
        assert_eq!(c.capture.inbound_port, 1234);
        assert_eq!(c.system_namespaces, ["kube-system"]);
    }

    #[test]
    fn error_codes() {
        assert_eq!(NetConf::parse(b"{nope").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, code::DECODE);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"0.1.0"}"#)
                .unwrap_err()
                .code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            NetConf::parse(br#"{"name":"x"}"#).unwrap_err().code,
            code::INVALID_CONFIG
        );
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","capture":{"inboundPort":70000}}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("capture.inboundPort"), "{}", e.msg);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","capture":{"excludeOutboundCIDRs":["10.0.0.0/8 -j ACCEPT"]}}"#).unwrap_err();
        assert!(e.msg.contains("excludeOutboundCIDRs"), "{}", e.msg);
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","capture":{"excludeInterfaces":["a b"]}}"#)
                .unwrap_err();
        assert!(e.msg.contains("excludeInterfaces"), "{}", e.msg);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","capture":{"bogus":1}}"#).unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
    }

    #[test]
    fn timeouts_default_and_are_range_checked() {
        use std::time::Duration;
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap();
        assert_eq!(c.delegate_timeout, Duration::from_secs(120));
        assert_eq!(c.add_timeout, Duration::from_secs(240));
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","delegateTimeout":1,"addTimeout":3600}"#)
            .unwrap();
        assert_eq!(c.delegate_timeout, Duration::from_secs(1));
        assert_eq!(c.add_timeout, Duration::from_secs(3600));
        for field in ["delegateTimeout", "addTimeout"] {
            for bad in ["0", "3601", "-1", "1.5", "\"5\"", "true", "[]", "1e3"] {
                let conf = format!(r#"{{"cniVersion":"1.0.0","{field}":{bad}}}"#);
                let e = NetConf::parse(conf.as_bytes()).unwrap_err();
                assert_eq!(e.code, code::INVALID_CONFIG, "{conf}");
                assert!(e.msg.starts_with(field), "{conf}: {}", e.msg);
            }
        }
    }
}
