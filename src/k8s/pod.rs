//! What a pod asks for, parsed and validated: the networks annotation (both
//! forms), the default-network annotation, and the mesh annotations that
//! decide and shape capture. Pure functions over JSON: unit-tested here,
//! exercised end to end in tests/k8s.rs. Nothing here builds rule text:
//! every value becomes a number, an address or a checked interface name.

use crate::capture::{self, CaptureConfig, PortSet, Profile};
use crate::cni;
use crate::error::{code, CniError, Result};
use serde_json::{Map, Value};
use std::net::IpAddr;

pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
pub const NAD_CAPTURE: &str = "multimesh.io/capture";

/// Limit on ports one annotation can expand to (ranges included): each port
/// is one rule.
pub const MAX_PORTS: usize = 256;

/// Longest value of an annotation multimesh reads (the networks, the
/// default network, the mesh annotations); Kubernetes allows 256 KiB for
/// all of a pod's annotations together.
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;
/// Deepest JSON nesting accepted from a tenant (a networks annotation, a
/// NetworkAttachmentDefinition's config). A state record nests a few
/// levels more, and must stay readable (serde_json stops at 128).
pub const MAX_JSON_DEPTH: usize = 32;
/// Most CIDRs or interface names one annotation may list (each is a rule).
pub const MAX_LIST_ITEMS: usize = 256;

/// Annotation prefixes and names multimesh reads from a pod.
const READ_ANNOTATIONS: &[&str] = &[
    NETWORKS,
    DEFAULT_NETWORK,
    "sidecar.istio.io/",
    "traffic.sidecar.istio.io/",
    "config.linkerd.io/",
    "linkerd.io/",
];

/// Every annotation multimesh reads is within `MAX_ANNOTATION_BYTES`.
/// Checked once, when the pod is read, before anything is parsed.
pub fn check_annotation_sizes(pod: &Value) -> Result<()> {
    let Some(anns) = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    else {
        return Ok(());
    };
    for (k, v) in anns {
        if !READ_ANNOTATIONS.iter().any(|p| k.starts_with(p)) {
            continue;
        }
        let len = v.as_str().map_or(0, str::len);
        if len > MAX_ANNOTATION_BYTES {
            return Err(bad(format!(
                "{k}: {len} bytes, more than the {MAX_ANNOTATION_BYTES} accepted"
            )));
        }
    }
    Ok(())
}

/// How deeply `v` nests (a scalar is 0, `[]` is 1).
pub fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// An error in something the pod (or its NAD) asked for.
pub fn bad(msg: impl Into<String>) -> CniError {
    CniError::new(code::POD_REQUEST, msg)
}

/// One entry of the networks annotation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    pub namespace: Option<String>,
    pub name: String,
    pub interface: Option<String>,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub default_route: Vec<IpAddr>,
    pub port_mappings: Option<Value>,
    pub bandwidth: Option<Value>,
    pub cni_args: Option<Map<String, Value>>,
}

impl Selection {
    /// `runtimeConfig` for the delegate (given to plugins by capability).
    pub fn runtime_config(&self) -> Option<Map<String, Value>> {
        let mut m = Map::new();
        if !self.ips.is_empty() {
            m.insert("ips".into(), self.ips.clone().into());
        }
        if let Some(mac) = &self.mac {
            m.insert("mac".into(), mac.clone().into());
        }
        if let Some(p) = &self.port_mappings {
            m.insert("portMappings".into(), p.clone());
        }
        if let Some(b) = &self.bandwidth {
            m.insert("bandwidth".into(), b.clone());
        }
        (!m.is_empty()).then_some(m)
    }
}

/// DNS-1123 label: namespaces.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: object names (NADs).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_name(name: &str, what: &str) -> Result<()> {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(bad(format!(
            "{NETWORKS}: {what} {name:?} is not a valid DNS-1123 name"
        )))
    }
}

fn check_ns(ns: &str) -> Result<()> {
    if is_dns_label(ns) {
        Ok(())
    } else {
        Err(bad(format!(
            "{NETWORKS}: namespace {ns:?} is not a valid DNS-1123 label"
        )))
    }
}

fn check_ifname(i: &str) -> Result<()> {
    cni::validate_ifname(i).map_err(|e| bad(format!("{NETWORKS}: {e}")))
}

/// An IP address, or an address/prefix with a prefix of 1–3 ASCII digits
/// in range for its family (ipnetwork; the host part may be set, as IPAM
/// requests an address, not a network).
fn is_address(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((_, l)) => {
            !l.is_empty()
                && l.len() <= 3
                && l.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<ipnetwork::IpNetwork>().is_ok()
        }
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parse the networks annotation: `[ns/]name[@ifname]` comma-separated, or
/// a JSON list of selection objects.
pub fn parse_networks(v: &str) -> Result<Vec<Selection>> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    if t.starts_with('[') || t.starts_with('{') {
        let j: Value =
            serde_json::from_str(t).map_err(|e| bad(format!("{NETWORKS}: not valid JSON: {e}")))?;
        if json_depth(&j) > MAX_JSON_DEPTH {
            return Err(bad(format!(
                "{NETWORKS}: nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        let list = match j {
            Value::Array(a) => a,
            _ => return Err(bad(format!("{NETWORKS}: the JSON form must be a list"))),
        };
        return list.iter().map(parse_json_selection).collect();
    }
    t.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_short)
        .collect()
}

fn parse_short(s: &str) -> Result<Selection> {
    let (rest, iface) = match s.split_once('@') {
        Some((r, i)) => (r, Some(i.to_string())),
        None => (s, None),
    };
    let (ns, name) = match rest.split_once('/') {
        Some((n, x)) => (Some(n.to_string()), x.to_string()),
        None => (None, rest.to_string()),
    };
    if let Some(n) = &ns {
        check_ns(n)?;
    }
    check_name(&name, "network name")?;
    if let Some(i) = &iface {
        check_ifname(i)?;
    }
    Ok(Selection {
        namespace: ns,
        name,
        interface: iface,
        ..Selection::default()
    })
}

const SELECTION_KEYS: &[&str] = &[
    "name",
    "namespace",
    "interface",
    "ips",
    "mac",
    "default-route",
    "portMappings",
    "bandwidth",
    "cni-args",
];

fn parse_json_selection(v: &Value) -> Result<Selection> {
    let o = v
        .as_object()
        .ok_or_else(|| bad(format!("{NETWORKS}: each entry must be an object")))?;
    for k in o.keys() {
        if !SELECTION_KEYS.contains(&k.as_str()) {
            return Err(bad(format!(
                "{NETWORKS}: field {k:?} is not supported (supported: {})",
                SELECTION_KEYS.join(", ")
            )));
        }
    }
    let s = |k: &str| -> Result<Option<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("{NETWORKS}: {k} must be a string"))),
        }
    };
    let name = s("name")?.ok_or_else(|| bad(format!("{NETWORKS}: an entry has no name")))?;
    check_name(&name, "network name")?;
    let namespace = s("namespace")?;
    if let Some(n) = &namespace {
        check_ns(n)?;
    }
    let interface = s("interface")?;
    if let Some(i) = &interface {
        check_ifname(i)?;
    }
    let strs = |k: &str| -> Result<Vec<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| bad(format!("{NETWORKS}: {k} must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(bad(format!("{NETWORKS}: {k} must be a list of strings"))),
        }
    };
    let ips = strs("ips")?;
    for ip in &ips {
        // An address with its prefix, as the static IPAM expects.
        if !ip.contains('/') {
            return Err(bad(format!(
                "{NETWORKS}: ips: {ip:?} needs a prefix length"
            )));
        }
        if !is_address(ip) {
            return Err(bad(format!(
                "{NETWORKS}: ips: {ip:?} is not an address/prefix"
            )));
        }
    }
    let mac = s("mac")?;
    if let Some(m) = &mac {
        if !is_mac(m) {
            return Err(bad(format!("{NETWORKS}: mac {m:?} is not a MAC address")));
        }
    }
    let default_route = strs("default-route")?
        .iter()
        .map(|g| {
            g.parse::<IpAddr>().map_err(|_| {
                bad(format!(
                    "{NETWORKS}: default-route: {g:?} is not an IP address"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let port_mappings = match o.get("portMappings") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            for pm in a {
                let ok = pm.as_object().is_some_and(|m| {
                    m.iter().all(|(k, v)| match k.as_str() {
                        "hostPort" | "containerPort" => {
                            v.as_u64().is_some_and(|p| (1..=65535).contains(&p))
                        }
                        "protocol" => v.as_str().is_some_and(|p| {
                            matches!(p, "tcp" | "udp" | "sctp" | "TCP" | "UDP" | "SCTP")
                        }),
                        "hostIP" => v.as_str().is_some_and(|h| h.parse::<IpAddr>().is_ok()),
                        _ => false,
                    }) && m.contains_key("containerPort")
                });
                if !ok {
                    return Err(bad(format!(
                        "{NETWORKS}: portMappings entry {pm} is not {{hostPort, containerPort, protocol, hostIP}}"
                    )));
                }
            }
            Some(Value::Array(a.clone()))
        }
        Some(_) => return Err(bad(format!("{NETWORKS}: portMappings must be a list"))),
    };
    let bandwidth = match o.get("bandwidth") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m))
            if m.iter().all(|(k, v)| {
                matches!(
                    k.as_str(),
                    "ingressRate" | "ingressBurst" | "egressRate" | "egressBurst"
                ) && v.is_u64()
            }) =>
        {
            Some(Value::Object(m.clone()))
        }
        Some(_) => {
            return Err(bad(format!(
                "{NETWORKS}: bandwidth must be an object of ingressRate/ingressBurst/egressRate/egressBurst numbers"
            )))
        }
    };
    let cni_args = match o.get("cni-args") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            check_cni_args(m)?;
            Some(m.clone())
        }
        Some(_) => return Err(bad(format!("{NETWORKS}: cni-args must be an object"))),
    };
    Ok(Selection {
        namespace,
        name,
        interface,
        ips,
        mac,
        default_route,
        port_mappings,
        bandwidth,
        cni_args,
    })
}

/// `cni-args` reach every plugin of the network as `args.cni`: values are
/// strings, numbers, booleans or flat lists of them, and the keys the
/// reference plugins read are checked for what those plugins expect
/// (`ips`: addresses, with or without prefix; `mac`: a MAC address), so a
/// value a plugin would refuse — on ADD and again on every DEL — is
/// refused here, before anything runs.
fn check_cni_args(m: &Map<String, Value>) -> Result<()> {
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    for (k, v) in m {
        let ok = match v {
            Value::Array(a) => a.iter().all(scalar),
            v => scalar(v),
        };
        if !ok {
            return Err(bad(format!(
                "{NETWORKS}: cni-args {k:?}: values must be strings, numbers, booleans or lists of them"
            )));
        }
    }
    if let Some(v) = m.get("ips") {
        let list: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for ip in list {
            if !ip.as_str().is_some_and(is_address) {
                return Err(bad(format!(
                    "{NETWORKS}: cni-args ips: {ip} is not an IP address"
                )));
            }
        }
    }
    if let Some(v) = m.get("mac") {
        if !v.as_str().is_some_and(is_mac) {
            return Err(bad(format!(
                "{NETWORKS}: cni-args mac: {v} is not a MAC address"
            )));
        }
    }
    Ok(())
}

/// The default-network annotation: exactly one network, no interface.
pub fn parse_default_network(v: &str) -> Result<Selection> {
    let mut l = parse_networks(v).map_err(|e| bad(e.msg.replacen(NETWORKS, DEFAULT_NETWORK, 1)))?;
    if l.len() != 1 {
        return Err(bad(format!(
            "{DEFAULT_NETWORK}: must name exactly one network"
        )));
    }
    Ok(l.remove(0))
}

pub fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/labels")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn container_names<'a>(pod: &'a Value, list: &str) -> Vec<&'a str> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Does the pod run the profile's sidecar without its init container?
/// (A native sidecar, an init container with restartPolicy Always, counts.)
pub fn is_meshed(profile: Profile, pod: &Value) -> bool {
    let containers = container_names(pod, "containers");
    let inits = container_names(pod, "initContainers");
    let has = |n: &str| containers.contains(&n) || inits.contains(&n);
    match profile {
        Profile::Istio => {
            annotation(pod, "sidecar.istio.io/status").is_some()
                && annotation(pod, "sidecar.istio.io/inject") != Some("false")
                && label(pod, "sidecar.istio.io/inject") != Some("false")
                && has("istio-proxy")
                && !inits.contains(&"istio-init")
        }
        Profile::Linkerd => {
            annotation(pod, "linkerd.io/inject") != Some("disabled")
                && has("linkerd-proxy")
                && !inits.contains(&"linkerd-init")
        }
    }
}

/// Ports from an annotation: comma-separated numbers and `a-b` ranges.
fn ann_ports(key: &str, v: &str) -> Result<Vec<u16>> {
    let mut out: Vec<u16> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let not_port = || {
            bad(format!(
                "{key}: {item:?} is not a port or a port range a-b (1-65535)"
            ))
        };
        let port = |s: &str| capture::parse_port_str(s.trim()).map_err(|_| not_port());
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(item)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(bad(format!("{key}: range {item:?} is backwards")));
        }
        for p in lo..=hi {
            if !out.contains(&p) {
                out.push(p);
                if out.len() > MAX_PORTS {
                    return Err(bad(format!(
                        "{key}: more than {MAX_PORTS} ports (each port is one rule)"
                    )));
                }
            }
        }
    }
    Ok(out)
}

fn ann_cidrs(key: &str, v: &str) -> Result<Vec<capture::Cidr>> {
    let l =
        capture::parse_cidrs(&Value::String(v.into())).map_err(|e| bad(format!("{key}: {e}")))?;
    at_most(key, l)
}

fn at_most<T>(key: &str, l: Vec<T>) -> Result<Vec<T>> {
    if l.len() > MAX_LIST_ITEMS {
        return Err(bad(format!(
            "{key}: more than {MAX_LIST_ITEMS} items (each is a rule)"
        )));
    }
    Ok(l)
}

fn union<T: PartialEq + Clone>(a: &mut Vec<T>, b: &[T]) {
    for x in b {
        if !a.contains(x) {
            a.push(x.clone());
        }
    }
}

/// Decide capture for a pod: None when it is not meshed by the configured
/// profile (or capture is off, or its namespace is excluded); otherwise the
/// config with the pod's annotations applied. A bad annotation value is an
/// error (code 110), never a rule.
pub fn capture_for_pod(base: &CaptureConfig, pod: &Value) -> Result<Option<CaptureConfig>> {
    if !base.enabled {
        return Ok(None);
    }
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if base.exclude_namespaces.iter().any(|n| n == ns) {
        return Ok(None);
    }
    if !is_meshed(base.profile, pod) {
        return Ok(None);
    }
    let mut c = base.clone();
    match base.profile {
        Profile::Istio => {
            const P: &str = "traffic.sidecar.istio.io/";
            let get = |k: &str| annotation(pod, &format!("{P}{k}")).map(|v| (format!("{P}{k}"), v));
            if let Some(m) = annotation(pod, "sidecar.istio.io/interceptionMode") {
                if m != "REDIRECT" {
                    return Err(bad(format!(
                        "sidecar.istio.io/interceptionMode: {m:?} is not supported (multimesh programs REDIRECT)"
                    )));
                }
            }
            if let Some((k, v)) = get("includeInboundPorts") {
                if v.trim() != "*" {
                    c.inbound = PortSet::Only(ann_ports(&k, v)?);
                }
            }
            if let Some((k, v)) = get("excludeInboundPorts") {
                let ex = ann_ports(&k, v)?;
                if let PortSet::AllExcept(list) = &mut c.inbound {
                    union(list, &ex);
                }
            }
            if let Some((k, v)) = get("includeOutboundPorts") {
                union(&mut c.include_outbound_ports, &ann_ports(&k, v)?);
            }
            if let Some((k, v)) = get("excludeOutboundPorts") {
                union(&mut c.exclude_outbound_ports, &ann_ports(&k, v)?);
            }
            if let Some((k, v)) = get("includeOutboundIPRanges") {
                c.include_outbound_cidrs = if v.trim() == "*" {
                    None
                } else {
                    Some(ann_cidrs(&k, v)?)
                };
            }
            if let Some((k, v)) = get("excludeOutboundIPRanges") {
                union(&mut c.exclude_outbound_cidrs, &ann_cidrs(&k, v)?);
            }
            if let Some((k, v)) = get("excludeInterfaces") {
                let l = capture::parse_ifnames(&Value::String(v.into()))
                    .map_err(|e| bad(format!("{k}: {e}")))?;
                union(&mut c.exclude_interfaces, &at_most(&k, l)?);
            }
        }
        Profile::Linkerd => {
            const P: &str = "config.linkerd.io/";
            let get = |k: &str| annotation(pod, &format!("{P}{k}")).map(|v| (format!("{P}{k}"), v));
            if let Some((k, v)) = get("skip-inbound-ports") {
                let ex = ann_ports(&k, v)?;
                if let PortSet::AllExcept(list) = &mut c.inbound {
                    union(list, &ex);
                }
            }
            if let Some((k, v)) = get("skip-outbound-ports") {
                union(&mut c.exclude_outbound_ports, &ann_ports(&k, v)?);
            }
            if let Some((k, v)) = get("skip-subnets") {
                union(&mut c.exclude_outbound_cidrs, &ann_cidrs(&k, v)?);
            }
            if let Some((k, v)) = get("proxy-uid") {
                c.proxy_uid = crate::fields::id(&Value::String(v.into()))
                    .map_err(|_| bad(format!("{k}: {v:?} is not a numeric uid")))?;
            }
        }
    }
    Ok(Some(c))
}

/// A NetworkAttachmentDefinition's `multimesh.io/capture` annotation:
/// Some(false) keeps its interface out of capture.
pub fn nad_capture(nad: &Value) -> Result<bool> {
    match nad
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(NAD_CAPTURE))
    {
        None => Ok(true),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(v) => Err(CniError::config(format!(
            "NetworkAttachmentDefinition annotation {NAD_CAPTURE}: {v} must be \"true\" or \"false\""
        ))),
    }
}

/// One entry of the network-status annotation (Multus's format).
pub fn status_entry(name: &str, ifname: &str, result: Option<&Value>, default: bool) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("interface".into(), ifname.into());
    let r = result.cloned().unwrap_or(Value::Null);
    let ifs = r.get("interfaces").and_then(Value::as_array);
    // The index of our interface (the one in the sandbox with our name).
    let idx = ifs.and_then(|l| {
        l.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    });
    let mut ips = Vec::new();
    let mut gws = Vec::new();
    for ip in r.get("ips").and_then(Value::as_array).into_iter().flatten() {
        let on_us = match (idx, ip.get("interface").and_then(Value::as_u64)) {
            (Some(i), Some(j)) => i as u64 == j,
            _ => true,
        };
        if !on_us {
            continue;
        }
        if let Some(a) = ip.get("address").and_then(Value::as_str) {
            ips.push(Value::from(a.split('/').next().unwrap_or(a)));
        }
        if let Some(g) = ip.get("gateway").and_then(Value::as_str) {
            gws.push(Value::from(g));
        }
    }
    if !ips.is_empty() {
        m.insert("ips".into(), Value::Array(ips));
    }
    if let Some(mac) = idx
        .and_then(|i| ifs.and_then(|l| l.get(i)))
        .and_then(|i| i.get("mac"))
        .and_then(Value::as_str)
    {
        m.insert("mac".into(), mac.into());
    }
    if default {
        m.insert("default".into(), true.into());
    }
    m.insert(
        "dns".into(),
        r.get("dns")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    if default && !gws.is_empty() {
        m.insert("gateway".into(), Value::Array(gws));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_form() {
        let l = parse_networks(" a, other/b@data0 ,c.d ").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].name, "a");
        assert_eq!(l[1].namespace.as_deref(), Some("other"));
        assert_eq!(l[1].interface.as_deref(), Some("data0"));
        assert_eq!(l[2].name, "c.d");
        assert!(parse_networks("").unwrap().is_empty());
        for bad_ in [
            "A",
            "a b",
            "../x",
            "ns/a/b",
            "a@",
            "a@this-name-is-too-long",
            "a@x y",
            "Ns/a",
            "a;rm -rf",
            "80 -j ACCEPT",
        ] {
            let e = parse_networks(bad_).unwrap_err();
            assert_eq!(e.code, code::POD_REQUEST, "{bad_:?}");
        }
    }

    #[test]
    fn json_form() {
        let l = parse_networks(
            r#"[{"name":"b","namespace":"x","interface":"n1","ips":["198.51.100.9/24"],
                "mac":"02:00:00:00:00:01","default-route":["198.51.100.1"],
                "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
                "bandwidth":{"ingressRate":1000,"ingressBurst":10},"cni-args":{"k":"v"}}]"#,
        )
        .unwrap();
        let s = &l[0];
        assert_eq!(
            s.default_route,
            vec!["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
        let rc = s.runtime_config().unwrap();
        assert_eq!(rc["ips"], json!(["198.51.100.9/24"]));
        assert_eq!(rc["mac"], "02:00:00:00:00:01");
        assert!(rc.contains_key("portMappings") && rc.contains_key("bandwidth"));
        assert_eq!(s.cni_args.as_ref().unwrap()["k"], "v");
        for bad_ in [
            r#"{"name":"a"}"#,
            r#"[{"name":"a","bogus":1}]"#,
            r#"[{"namespace":"x"}]"#,
            r#"[{"name":"a","ips":["198.51.100.9"]}]"#,
            r#"[{"name":"a","ips":["198.51.100.9/24 -j ACCEPT"]}]"#,
            r#"[{"name":"a","mac":"zz:00:00:00:00:01"}]"#,
            r#"[{"name":"a","default-route":["x"]}]"#,
            r#"[{"name":"a","portMappings":[{"hostPort":0,"containerPort":1}]}]"#,
            r#"[{"name":"a","bandwidth":{"x":1}}]"#,
            r#"[{"name":"a","interface":"eth0 x"}]"#,
            r#"[1]"#,
            r#"[{"name":"a""#,
        ] {
            assert_eq!(
                parse_networks(bad_).unwrap_err().code,
                code::POD_REQUEST,
                "{bad_}"
            );
        }
        assert_eq!(
            parse_default_network("kube-system/calico").unwrap().name,
            "calico"
        );
        assert!(parse_default_network("a,b").is_err());
    }

    fn pod(ann: Value, containers: &[&str], inits: &[&str]) -> Value {
        let c: Vec<Value> = containers.iter().map(|n| json!({"name": n})).collect();
        let i: Vec<Value> = inits.iter().map(|n| json!({"name": n})).collect();
        json!({"metadata": {"namespace": "default", "name": "p", "annotations": ann},
               "spec": {"containers": c, "initContainers": i}})
    }

    #[test]
    fn istio_decision_and_options() {
        let base = CaptureConfig::defaults(Profile::Istio);
        let st = json!({"sidecar.istio.io/status": "{}"});
        assert!(
            capture_for_pod(&base, &pod(st.clone(), &["app", "istio-proxy"], &[]))
                .unwrap()
                .is_some()
        );
        assert!(capture_for_pod(&base, &pod(st.clone(), &["app"], &[]))
            .unwrap()
            .is_none());
        assert!(
            capture_for_pod(&base, &pod(json!({}), &["app", "istio-proxy"], &[]))
                .unwrap()
                .is_none()
        );
        assert!(capture_for_pod(
            &base,
            &pod(st.clone(), &["app", "istio-proxy"], &["istio-init"])
        )
        .unwrap()
        .is_none());
        // Native sidecar.
        assert!(
            capture_for_pod(&base, &pod(st.clone(), &["app"], &["istio-proxy"]))
                .unwrap()
                .is_some()
        );
        let mut off = st.clone();
        off["sidecar.istio.io/inject"] = json!("false");
        assert!(
            capture_for_pod(&base, &pod(off, &["app", "istio-proxy"], &[]))
                .unwrap()
                .is_none()
        );
        let mut ks = pod(st.clone(), &["app", "istio-proxy"], &[]);
        ks["metadata"]["namespace"] = json!("kube-system");
        assert!(capture_for_pod(&base, &ks).unwrap().is_none());

        let mut a = st.clone();
        a["traffic.sidecar.istio.io/excludeInboundPorts"] = json!("8080, 9000-9002");
        a["traffic.sidecar.istio.io/excludeOutboundPorts"] = json!("5432");
        a["traffic.sidecar.istio.io/excludeOutboundIPRanges"] =
            json!("203.0.113.0/24,2001:db8::/32");
        a["traffic.sidecar.istio.io/includeOutboundIPRanges"] = json!("198.51.100.0/24");
        a["traffic.sidecar.istio.io/excludeInterfaces"] = json!("net1");
        let c = capture_for_pod(&base, &pod(a, &["istio-proxy"], &[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.inbound,
            PortSet::AllExcept(vec![15008, 15020, 15021, 15090, 8080, 9000, 9001, 9002])
        );
        assert_eq!(c.exclude_outbound_ports, vec![15020, 5432]);
        assert_eq!(c.exclude_outbound_cidrs.len(), 2);
        assert_eq!(c.include_outbound_cidrs.as_ref().unwrap().len(), 1);
        assert_eq!(c.exclude_interfaces, vec!["net1"]);

        let mut a = st.clone();
        a["traffic.sidecar.istio.io/includeInboundPorts"] = json!("");
        let c = capture_for_pod(&base, &pod(a, &["istio-proxy"], &[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.inbound, PortSet::Only(vec![]));

        for (k, v) in [
            ("excludeInboundPorts", "80 -j ACCEPT"),
            ("excludeInboundPorts", "0"),
            ("excludeInboundPorts", "70000"),
            ("excludeInboundPorts", "1-60000"),
            ("excludeInboundPorts", "9-1"),
            ("excludeOutboundIPRanges", "10.0.0.0/8; iptables -F"),
            ("excludeInterfaces", "eth0 -j ACCEPT"),
            ("includeOutboundIPRanges", "300.0.0.0/8"),
        ] {
            let mut a = st.clone();
            a[format!("traffic.sidecar.istio.io/{k}")] = json!(v);
            let e = capture_for_pod(&base, &pod(a, &["istio-proxy"], &[])).unwrap_err();
            assert_eq!(e.code, code::POD_REQUEST, "{k}={v}");
            assert!(e.msg.contains(k), "{k}: {}", e.msg);
        }
        let mut a = st;
        a["sidecar.istio.io/interceptionMode"] = json!("TPROXY");
        assert!(capture_for_pod(&base, &pod(a, &["istio-proxy"], &[])).is_err());
    }

    #[test]
    fn linkerd_decision_and_options() {
        let base = CaptureConfig::defaults(Profile::Linkerd);
        let a = json!({"config.linkerd.io/skip-inbound-ports": "25,3306-3307",
            "config.linkerd.io/skip-outbound-ports": "443",
            "config.linkerd.io/skip-subnets": "203.0.113.0/24",
            "config.linkerd.io/proxy-uid": "2103"});
        let c = capture_for_pod(&base, &pod(a, &["app", "linkerd-proxy"], &[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.proxy_uid, 2103);
        assert_eq!(
            c.inbound,
            PortSet::AllExcept(vec![4190, 4191, 4567, 4568, 25, 3306, 3307])
        );
        assert_eq!(c.exclude_outbound_ports, vec![4567, 4568, 443]);
        assert!(capture_for_pod(
            &base,
            &pod(json!({}), &["app", "linkerd-proxy"], &["linkerd-init"])
        )
        .unwrap()
        .is_none());
        assert!(capture_for_pod(&base, &pod(json!({}), &["app"], &[]))
            .unwrap()
            .is_none());
        let a = json!({"config.linkerd.io/proxy-uid": "-1"});
        assert!(capture_for_pod(&base, &pod(a, &["linkerd-proxy"], &[])).is_err());
        // An istio pod is not meshed for the linkerd profile.
        let a = json!({"sidecar.istio.io/status": "{}"});
        assert!(capture_for_pod(&base, &pod(a, &["istio-proxy"], &[]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn nad_annotation() {
        assert!(nad_capture(&json!({"metadata": {}})).unwrap());
        assert!(
            !nad_capture(&json!({"metadata": {"annotations": {NAD_CAPTURE: "false"}}})).unwrap()
        );
        assert!(nad_capture(&json!({"metadata": {"annotations": {NAD_CAPTURE: "no"}}})).is_err());
    }

    #[test]
    fn status_entries() {
        let r = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "net1", "mac": "02:00:00:00:00:09", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": "198.51.100.9/25", "gateway": "198.51.100.1", "interface": 2}],
            "dns": {"nameservers": ["198.51.100.53"]}});
        let e = status_entry("ns/b", "net1", Some(&r), false);
        assert_eq!(
            e,
            json!({"name": "ns/b", "interface": "net1", "ips": ["198.51.100.9"],
            "mac": "02:00:00:00:00:09", "dns": {"nameservers": ["198.51.100.53"]}})
        );
        let e = status_entry("cluster", "net1", Some(&r), true);
        assert_eq!(e["default"], true);
        assert_eq!(e["gateway"], json!(["198.51.100.1"]));
    }
}
