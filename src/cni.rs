//! The CNI protocol: environment, versions, result conversion, validation.

use crate::error::{code, CniError, Result};
use serde_json::{json, Map, Value};

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The runtime's CNI_* variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Env {
    /// Read and validate what `cmd` needs (spec: ADD/DEL/CHECK need
    /// CONTAINERID and IFNAME, ADD/CHECK also NETNS). An empty CNI_PATH is
    /// accepted: binDir is searched first anyway.
    pub fn from_env(cmd: Command, get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let need = |k: &str| -> Result<String> {
            match get(k) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(CniError::env(format!(
                    "required environment variable {k} is missing or empty"
                ))),
            }
        };
        let opt = |k: &str| get(k).unwrap_or_default();
        let mut e = Env {
            args: opt("CNI_ARGS"),
            path: opt("CNI_PATH"),
            netns: opt("CNI_NETNS"),
            ..Env::default()
        };
        if matches!(cmd, Command::Add | Command::Del | Command::Check) {
            e.container_id = need("CNI_CONTAINERID")?;
            validate_container_id(&e.container_id)?;
            e.ifname = need("CNI_IFNAME")?;
            validate_ifname(&e.ifname).map_err(|m| CniError::env(format!("CNI_IFNAME: {m}")))?;
        }
        if matches!(cmd, Command::Add | Command::Check) {
            e.netns = need("CNI_NETNS")?;
        }
        Ok(e)
    }

    /// CNI_ARGS as key/value pairs (`K=V;K2=V2`).
    pub fn args_map(&self) -> Vec<(String, String)> {
        parse_cni_args(&self.args)
    }
}

pub fn parse_cni_args(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Longest CNI_CONTAINERID accepted. The spec sets no limit; the state
/// directory of a longer-than-a-file-name ID is named by its hash
/// (`state::dir_name`), so ADD and DEL work alike up to here, and an ID
/// beyond it is refused with code 4 by every command.
pub const MAX_CONTAINER_ID: usize = 1024;

/// Spec: a container ID is non-empty and has only alphanumerics, `_`, `-`, `.`.
pub fn validate_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CONTAINER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {:?} is invalid: it must be 1-{MAX_CONTAINER_ID} alphanumerics, '_', '-', '.'",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// The one interface-name check, for CNI_IFNAME, the pod's requested
/// interfaces and `excludeInterfaces` alike: the kernel's rules (1–15
/// bytes, no '/', ':', whitespace, not '.'/'..') narrowed to printable
/// ASCII without the characters that mean something to a rule language or
/// a command line — `+` and `*` (an iptables/nftables wildcard), `"`, `\`
/// — and without a leading `.` (a hidden record file) or `-` (an option).
pub fn validate_ifname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    let shown: String = name.chars().take(32).collect();
    if name.len() > 15 {
        return Err(format!("interface name {shown:?} is longer than 15 bytes"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "interface name {shown:?} must not start with '.' or '-'"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'"' | b'\\' | b'+' | b'*'))
    {
        return Err(format!(
            "interface name {shown:?} has a character that is not allowed (printable ASCII without / : \" \\ + *)"
        ));
    }
    Ok(())
}

/// Check that `v` is a spec version multimesh speaks.
pub fn check_version(v: &str) -> Result<()> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI version {v:?}: multimesh supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        )
        .with_details(format!("supportedVersions: {SUPPORTED_VERSIONS:?}")))
    }
}

/// Order versions: "0.3.1" < "1.0.0". Unknown parts sort low.
pub fn version_key(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

pub fn version_at_least(v: &str, min: &str) -> bool {
    version_key(v) >= version_key(min)
}

pub fn version_output(cni_version: &str) -> Value {
    json!({"cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS})
}

/// An empty, valid result of `version`.
pub fn empty_result(version: &str) -> Value {
    if version_at_least(version, "1.0.0") {
        json!({"cniVersion": version, "interfaces": [], "ips": [], "dns": {}})
    } else {
        json!({"cniVersion": version, "dns": {}})
    }
}

/// Convert a result (0.3.0 … 1.1.0) to `to`. 0.3.x and 0.4.0 share one
/// format with `ips[].version`; 1.0.0 drops that field; 1.1.0 adds optional
/// fields that older versions do not define and that are dropped going down.
pub fn convert_result(result: &Value, to: &str) -> Result<Value> {
    let mut r = match result {
        Value::Object(m) => m.clone(),
        _ => return Err(CniError::new(code::DECODE, "result is not a JSON object")),
    };
    let from = match r.get("cniVersion") {
        None => "0.3.0".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("result: cniVersion {v} is not a version string"),
            ))
        }
    };
    check_version(&from).map_err(|e| e.context("result"))?;
    check_version(to)?;
    let to_new = version_at_least(to, "1.0.0");
    if let Some(Value::Array(ips)) = r.get_mut("ips") {
        for ip in ips.iter_mut() {
            let Some(o) = ip.as_object_mut() else {
                return Err(CniError::new(
                    code::DECODE,
                    "result: ips entry is not an object",
                ));
            };
            if to_new {
                o.remove("version");
            } else if !o.contains_key("version") {
                let addr = o.get("address").and_then(Value::as_str).unwrap_or("");
                let ver = if addr.contains(':') { "6" } else { "4" };
                o.insert("version".into(), ver.into());
            }
        }
    }
    if !version_at_least(to, "1.1.0") {
        if let Some(Value::Array(routes)) = r.get_mut("routes") {
            for rt in routes.iter_mut().filter_map(Value::as_object_mut) {
                for k in ["mtu", "advmss", "priority", "table", "scope"] {
                    rt.remove(k);
                }
            }
        }
        if let Some(Value::Array(ifs)) = r.get_mut("interfaces") {
            for i in ifs.iter_mut().filter_map(Value::as_object_mut) {
                for k in ["mtu", "socketPath", "pciID"] {
                    i.remove(k);
                }
            }
        }
    }
    r.insert("cniVersion".into(), to.into());
    Ok(Value::Object(r))
}

/// Does a result carry an IPv6 address?
pub fn result_has_ipv6(result: &Value) -> bool {
    result
        .get("ips")
        .and_then(Value::as_array)
        .is_some_and(|ips| {
            ips.iter().any(|ip| {
                ip.get("address")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.contains(':'))
            })
        })
}

/// Build the stdin config for one plugin invocation: the plugin's own
/// object with `name`/`cniVersion` set (libcni does this for conflists),
/// `runtimeConfig` restricted to its declared capabilities, and prevResult.
pub fn plugin_stdin(
    plugin: &Map<String, Value>,
    name: &str,
    version: &str,
    runtime_config: Option<&Map<String, Value>>,
    prev_result: Option<&Value>,
) -> Result<Vec<u8>> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), name.into());
    conf.insert("cniVersion".into(), version.into());
    conf.remove("runtimeConfig");
    if let Some(rc) = runtime_config {
        let caps = plugin.get("capabilities").and_then(Value::as_object);
        let mut filtered = Map::new();
        if let Some(caps) = caps {
            for (k, v) in rc {
                if caps.get(k).and_then(Value::as_bool) == Some(true) {
                    filtered.insert(k.clone(), v.clone());
                }
            }
        }
        if !filtered.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(filtered));
        }
    }
    conf.remove("prevResult");
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), convert_result(prev, version)?);
    }
    serde_json::to_vec(&Value::Object(conf))
        .map_err(|e| CniError::new(code::DECODE, format!("encode config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("net15").is_ok());
        assert!(validate_ifname("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            "a b",
            "a/b",
            ".",
            "..",
            "eth0\n",
            "a:b",
            "é",
            "e+",
            "veth*",
            ".eth0",
            "-x",
            "a\"b",
            "a\\b",
            "a\x1bb",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn container_ids() {
        assert!(validate_container_id("abc-123_x.y").is_ok());
        assert!(validate_container_id(&"a".repeat(MAX_CONTAINER_ID)).is_ok());
        let too_long = "a".repeat(MAX_CONTAINER_ID + 1);
        for bad in ["", "../x", "a/b", "a b", ".hidden", &too_long] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_requires_vars() {
        let e = Env::from_env(Command::Add, |k| match k {
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        // DEL needs no netns.
        assert!(Env::from_env(Command::Del, |k| match k {
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        })
        .is_ok());
    }

    #[test]
    fn convert_between_versions() {
        let r040 = json!({"cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"version": "4", "address": "198.51.100.2/24", "interface": 0},
                    {"version": "6", "address": "2001:db8::2/64", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {}});
        let r100 = convert_result(&r040, "1.0.0").unwrap();
        assert_eq!(r100["cniVersion"], "1.0.0");
        assert!(r100["ips"][0].get("version").is_none());
        let back = convert_result(&r100, "0.3.1").unwrap();
        assert_eq!(back["ips"][0]["version"], "4");
        assert_eq!(back["ips"][1]["version"], "6");
        assert_eq!(back["cniVersion"], "0.3.1");
        let r110 = json!({"cniVersion": "1.1.0", "ips": [], "routes": [{"dst": "0.0.0.0/0", "mtu": 1400}],
            "interfaces": [{"name": "eth0", "mtu": 1400}]});
        let down = convert_result(&r110, "1.0.0").unwrap();
        assert!(down["routes"][0].get("mtu").is_none());
        assert!(down["interfaces"][0].get("mtu").is_none());
        assert_eq!(
            convert_result(&r040, "0.2.0").unwrap_err().code,
            code::INCOMPATIBLE_VERSION
        );
        assert!(result_has_ipv6(&r040));
    }

    #[test]
    fn runtime_config_by_capability() {
        let plugin: Map<String, Value> = serde_json::from_value(json!({
            "type": "bridge", "capabilities": {"portMappings": true, "ips": false}, "custom": 1
        }))
        .unwrap();
        let rc: Map<String, Value> =
            serde_json::from_value(json!({"portMappings": [1], "ips": ["x"], "mac": "m"})).unwrap();
        let out: Value =
            serde_json::from_slice(&plugin_stdin(&plugin, "n", "1.0.0", Some(&rc), None).unwrap())
                .unwrap();
        assert_eq!(out["runtimeConfig"], json!({"portMappings": [1]}));
        assert_eq!(out["custom"], 1);
        assert_eq!(out["name"], "n");
    }
}
