//! The network configuration multimesh receives on stdin: its keys as a
//! derived type (`Fields`, read by `NetConf::parse`), and the networks
//! `clusterNetwork` / `defaultNetworks` name in `confDir`.

use crate::capture::CaptureConfig;
use crate::cni;
use crate::error::{code, CniError, Result};
use crate::fields;
use serde::{Deserialize, Deserializer};
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

/// The keys of the network config multimesh reads (any other key is
/// accepted and ignored, as CNI configs carry their runtime's keys); each
/// is optional, and `null` reads as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    #[serde(default, deserialize_with = "fields::string")]
    name: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "fields::string")]
    typ: Option<String>,
    #[serde(default, deserialize_with = "delegates")]
    delegates: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "fields::string")]
    cluster_network: Option<String>,
    #[serde(default, deserialize_with = "fields::string_list")]
    default_networks: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fields::string")]
    conf_dir: Option<String>,
    #[serde(default, deserialize_with = "fields::string")]
    cni_dir: Option<String>,
    #[serde(default, deserialize_with = "fields::string")]
    bin_dir: Option<String>,
    #[serde(default, deserialize_with = "fields::string")]
    kubeconfig: Option<String>,
    #[serde(
        rename = "allowInsecureHTTP",
        default,
        deserialize_with = "fields::boolean"
    )]
    allow_insecure_http: Option<bool>,
    #[serde(
        rename = "readinessindicatorfile",
        default,
        deserialize_with = "fields::string"
    )]
    readiness_indicator_file: Option<String>,
    #[serde(default, deserialize_with = "fields::string")]
    log_file: Option<String>,
    #[serde(default, deserialize_with = "fields::string")]
    log_level: Option<String>,
    #[serde(default, deserialize_with = "fields::boolean")]
    log_to_stderr: Option<bool>,
    #[serde(default, deserialize_with = "seconds")]
    delegate_timeout: Option<u64>,
    #[serde(default, deserialize_with = "seconds")]
    add_timeout: Option<u64>,
    /// Checked by `CaptureConfig::from_json`.
    #[serde(default, deserialize_with = "fields::object")]
    capture: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "fields::object")]
    runtime_config: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "fields::object")]
    prev_result: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "fields::boolean")]
    namespace_isolation: Option<bool>,
    #[serde(default, deserialize_with = "fields::string_list")]
    global_namespaces: Option<Vec<String>>,
    /// Given as `null`, it is the empty list (not the default).
    #[serde(default, deserialize_with = "present_list")]
    system_namespaces: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fields::string")]
    multus_namespace: Option<String>,
    #[serde(default, deserialize_with = "max_networks")]
    max_networks_per_pod: Option<usize>,
    #[serde(default, deserialize_with = "fields::string_list")]
    allowed_network_types: Option<Vec<String>>,
}

/// `cniVersion`, read (and checked) before any other key.
#[derive(Deserialize)]
struct Version {
    #[serde(rename = "cniVersion", default, deserialize_with = "fields::string")]
    cni_version: Option<String>,
}

impl NetConf {
    /// Meta-plugin mode: multimesh runs delegates. Otherwise it is chained.
    pub fn is_meta(&self) -> bool {
        !self.delegates.is_empty() || self.cluster_network.is_some()
    }

    /// Decode stdin. Errors: 6 (not JSON), 1 (version), 7 (bad field,
    /// named in `msg`), 2 (an unknown key in `capture`).
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, format!("cannot decode network config: {e}"))
        })?;
        let not_object = || CniError::new(code::DECODE, "network config must be a JSON object");
        if !v.is_object() {
            return Err(not_object());
        }
        let cni_version = fields::decode::<Version>(&v)
            .map_err(|e| e.config(""))?
            .cni_version
            .ok_or_else(|| CniError::config("cniVersion: missing"))?;
        cni::check_version(&cni_version)?;
        let f: Fields = fields::decode(&v).map_err(|e| e.config(""))?;
        let Value::Object(raw) = v else {
            return Err(not_object());
        };
        if f.typ.as_deref().is_some_and(str::is_empty) {
            return Err(CniError::config("type: must not be empty"));
        }
        let log_level = match f.log_level {
            None => crate::logging::Level::Error,
            Some(s) => crate::logging::Level::parse(&s).ok_or_else(|| {
                CniError::config("logLevel: must be one of panic, error, verbose, debug")
            })?,
        };
        let allowed_network_types = f.allowed_network_types.unwrap_or_default();
        for t in &allowed_network_types {
            crate::delegate::validate_type(t).map_err(|e| e.context("allowedNetworkTypes"))?;
        }
        let secs = |s: Option<u64>, default| s.map_or(default, std::time::Duration::from_secs);
        let path = |p: Option<String>, d: &str| PathBuf::from(p.as_deref().unwrap_or(d));
        Ok(NetConf {
            name: f.name.unwrap_or_default(),
            cni_version,
            delegates: f.delegates.unwrap_or_default(),
            cluster_network: f.cluster_network.filter(|s| !s.is_empty()),
            default_networks: f.default_networks.unwrap_or_default(),
            conf_dir: path(f.conf_dir, DEFAULT_CONF_DIR),
            cni_dir: path(f.cni_dir, DEFAULT_CNI_DIR),
            bin_dir: path(f.bin_dir, DEFAULT_BIN_DIR),
            kubeconfig: f.kubeconfig.filter(|s| !s.is_empty()),
            allow_insecure_http: f.allow_insecure_http.unwrap_or(false),
            readiness_indicator_file: f
                .readiness_indicator_file
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            log_file: f.log_file,
            log_level,
            log_to_stderr: f.log_to_stderr.unwrap_or(true),
            delegate_timeout: secs(f.delegate_timeout, crate::delegate::DELEGATE_TIMEOUT),
            add_timeout: secs(f.add_timeout, crate::delegate::ADD_TIMEOUT),
            capture: CaptureConfig::from_json(f.capture.map(Value::Object).as_ref())?,
            runtime_config: f.runtime_config,
            prev_result: f.prev_result.map(Value::Object),
            namespace_isolation: f.namespace_isolation.unwrap_or(false),
            global_namespaces: f.global_namespaces.unwrap_or_default(),
            system_namespaces: f
                .system_namespaces
                .unwrap_or_else(|| vec!["kube-system".into()]),
            multus_namespace: f.multus_namespace.unwrap_or_else(|| "kube-system".into()),
            max_networks_per_pod: f
                .max_networks_per_pod
                .unwrap_or(DEFAULT_MAX_NETWORKS_PER_POD),
            allowed_network_types,
            raw,
        })
    }
}

/// Largest `delegateTimeout` / `addTimeout` (an hour).
pub const MAX_TIMEOUT: u64 = 3600;

/// `delegates`: a list (each item is checked as a delegate when it runs).
fn delegates<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<Value>>, D::Error> {
    fields::leaf(d, |v| match v {
        Value::Array(a) => Ok(a),
        _ => Err("must be a list of objects".into()),
    })
}

/// A list ([`fields::list`]) where `null` is the empty list.
fn present_list<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    fields::string_list(d).map(|l| Some(l.unwrap_or_default()))
}

/// A whole number of seconds from 1 to `MAX_TIMEOUT`.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    fields::leaf(d, |v| match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|s| (1..=MAX_TIMEOUT).contains(s))
            .ok_or_else(|| format!("must be a whole number of seconds from 1 to {MAX_TIMEOUT}")),
        _ => Err(format!("must be a number (seconds, 1 to {MAX_TIMEOUT})")),
    })
}

/// `maxNetworksPerPod`: 1 to `MAX_NETWORKS_PER_POD_LIMIT`.
fn max_networks<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    fields::leaf(d, |v| {
        v.as_u64()
            .filter(|n| (1..=MAX_NETWORKS_PER_POD_LIMIT as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| format!("must be a number from 1 to {MAX_NETWORKS_PER_POD_LIMIT}"))
    })
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

    /// Each key's refusal: code 7 and a message that starts with the key.
    #[test]
    fn refusals_name_the_key() {
        let parse =
            |extra: &str| NetConf::parse(format!(r#"{{"cniVersion":"1.0.0"{extra}}}"#).as_bytes());
        for (extra, msg) in [
            (r#","name":5"#, "name: must be a string"),
            (r#","type":"""#, "type: must not be empty"),
            (r#","type":["x"]"#, "type: must be a string"),
            (r#","delegates":{}"#, "delegates: must be a list of objects"),
            (r#","clusterNetwork":1"#, "clusterNetwork: must be a string"),
            (
                r#","defaultNetworks":[{}]"#,
                "defaultNetworks: items must be strings or numbers",
            ),
            (r#","confDir":false"#, "confDir: must be a string"),
            (r#","kubeconfig":{}"#, "kubeconfig: must be a string"),
            (
                r#","allowInsecureHTTP":"yes""#,
                "allowInsecureHTTP: must be a boolean",
            ),
            (
                r#","readinessindicatorfile":2"#,
                "readinessindicatorfile: must be a string",
            ),
            (
                r#","logLevel":"loud""#,
                "logLevel: must be one of panic, error, verbose, debug",
            ),
            (r#","logToStderr":1"#, "logToStderr: must be a boolean"),
            (r#","runtimeConfig":[]"#, "runtimeConfig: must be an object"),
            (r#","prevResult":"x""#, "prevResult: must be an object"),
            (r#","capture":true"#, "capture: must be an object"),
            (
                r#","namespaceIsolation":"true""#,
                "namespaceIsolation: must be a boolean",
            ),
            (
                r#","globalNamespaces":7"#,
                "globalNamespaces: must be a list or a comma-separated string",
            ),
            (
                r#","multusNamespace":[]"#,
                "multusNamespace: must be a string",
            ),
            (
                r#","maxNetworksPerPod":0"#,
                "maxNetworksPerPod: must be a number from 1 to 1024",
            ),
            (
                r#","maxNetworksPerPod":1025"#,
                "maxNetworksPerPod: must be a number from 1 to 1024",
            ),
            (
                r#","maxNetworksPerPod":"8""#,
                "maxNetworksPerPod: must be a number from 1 to 1024",
            ),
            (
                r#","maxNetworksPerPod":2.0"#,
                "maxNetworksPerPod: must be a number from 1 to 1024",
            ),
            (
                r#","allowedNetworkTypes":["../x"]"#,
                "allowedNetworkTypes: plugin type",
            ),
        ] {
            let e = parse(extra).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}: {}", e.msg);
            assert!(
                e.msg.starts_with(msg),
                "{extra}: {:?} is not {msg:?}",
                e.msg
            );
        }
        let e = NetConf::parse(br#"{"cniVersion":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (code::INVALID_CONFIG, "cniVersion: must be a string")
        );
        let e = NetConf::parse(br#"{"cniVersion":null}"#).unwrap_err();
        assert_eq!(e.msg, "cniVersion: missing");
        // The version is checked before any other key.
        let e = NetConf::parse(br#"{"name":5,"cniVersion":"0.1.0"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    }

    /// What is accepted, and what `null` and absent keys read as.
    #[test]
    fn unknown_keys_nulls_and_defaults() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":null,"someRuntimeKey":{"x":[1]},"clusterNetwork":"",
            "systemNamespaces":null,"maxNetworksPerPod":1024,"logToStderr":null,"prevResult":null,
            "globalNamespaces":["a",2],"allowedNetworkTypes":"bridge, macvlan","kubeconfig":""}"#,
        )
        .unwrap();
        assert_eq!(c.name, "");
        assert!(!c.is_meta());
        assert_eq!(c.system_namespaces, Vec::<String>::new());
        assert_eq!(c.max_networks_per_pod, 1024);
        assert!(c.log_to_stderr && c.prev_result.is_none() && c.kubeconfig.is_none());
        assert_eq!(c.global_namespaces, ["a", "2"]);
        assert_eq!(c.allowed_network_types, ["bridge", "macvlan"]);
        assert_eq!(c.raw["someRuntimeKey"]["x"][0], 1);
        assert_eq!(
            c.capture,
            CaptureConfig::defaults(crate::capture::Profile::Istio)
        );
    }
}
