//! What a pod asks for, parsed and validated: the pod and
//! NetworkAttachmentDefinition parts multimesh reads (`Pod`, `Nad`), the
//! networks annotation (both forms; the JSON form's element is the derived
//! `Selection`), the default-network annotation, the mesh annotations that
//! decide and shape capture, and the network-status entry written back.
//! Pure functions over typed documents: unit-tested here, exercised end to
//! end in tests/k8s.rs and tests/boundary.rs. Nothing here builds rule
//! text: every value becomes a number, an address or a checked interface
//! name.

use crate::capture::{self, CaptureConfig, PortSet, Profile};
use crate::cni;
use crate::error::{code, CniError, Result};
use crate::fields;
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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

/// The parts of a pod multimesh reads, as the API server gives them
/// (annotations and labels are maps of strings in Kubernetes; a pod of
/// another shape is refused when read, `Pod::from_json`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: Metadata,
    pub spec: PodSpec,
}

/// The metadata multimesh reads of a pod or a NetworkAttachmentDefinition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Metadata {
    #[serde(deserialize_with = "fields::string")]
    pub namespace: Option<String>,
    #[serde(deserialize_with = "fields::string")]
    pub uid: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(deserialize_with = "nullable")]
    pub containers: Vec<fields::Object<Container>>,
    #[serde(deserialize_with = "nullable")]
    pub init_containers: Vec<fields::Object<Container>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    #[serde(deserialize_with = "fields::string")]
    pub name: Option<String>,
    /// `Always` on an init container: a native sidecar.
    #[serde(deserialize_with = "fields::string")]
    pub restart_policy: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub env: Vec<fields::Object<EnvVar>>,
    #[serde(deserialize_with = "nullable")]
    pub security_context: SecurityContext,
}

/// A container's environment variable (only literal values are read).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EnvVar {
    #[serde(deserialize_with = "fields::string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "fields::string")]
    pub value: Option<String>,
}

/// The ids a container runs as (int64 in the API; checked when used).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(deserialize_with = "nullable")]
    pub run_as_user: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    pub run_as_group: Option<i64>,
}

/// A Namespace: only its annotations are read (linkerd's
/// `config.linkerd.io/*` apply to its pods that set none).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub metadata: Metadata,
}

impl Namespace {
    pub fn from_json(v: &Value) -> std::result::Result<Namespace, fields::Refused> {
        fields::decode(v)
    }
}

/// A NetworkAttachmentDefinition: its annotations and `spec.config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Nad {
    pub metadata: Metadata,
    pub spec: NadSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NadSpec {
    /// The network config as JSON text; empty or absent: the file of the
    /// NAD's name in confDir.
    #[serde(deserialize_with = "fields::string")]
    pub config: Option<String>,
}

/// `null` reads as the empty value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

impl Pod {
    /// Read a pod (the API server's answer, or a document given to
    /// `multimesh rules --pod`).
    pub fn from_json(v: &Value) -> std::result::Result<Pod, fields::Refused> {
        fields::decode::<fields::Object<Pod>>(v).map(|o| o.0)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.get(key).map(String::as_str)
    }

    /// Every annotation multimesh reads is within `MAX_ANNOTATION_BYTES`.
    /// Checked once, when the pod is read, before anything is parsed.
    pub fn check_annotation_sizes(&self) -> Result<()> {
        for (k, v) in &self.metadata.annotations {
            if !READ_ANNOTATIONS.iter().any(|p| k.starts_with(p)) {
                continue;
            }
            if v.len() > MAX_ANNOTATION_BYTES {
                return Err(bad(format!(
                    "{k}: {} bytes, more than the {MAX_ANNOTATION_BYTES} accepted",
                    v.len()
                )));
            }
        }
        Ok(())
    }
}

impl Nad {
    pub fn from_json(v: &Value) -> std::result::Result<Nad, fields::Refused> {
        fields::decode::<fields::Object<Nad>>(v).map(|o| o.0)
    }
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

/// One entry of the networks annotation: the JSON form's object (every
/// key but `name` optional, unknown keys refused), or what the short form
/// `[ns/]name[@ifname]` gives. Each value is checked as it is read.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default, deserialize_with = "namespace")]
    pub namespace: Option<String>,
    #[serde(deserialize_with = "network_name")]
    pub name: String,
    #[serde(default, deserialize_with = "interface")]
    pub interface: Option<String>,
    #[serde(default, deserialize_with = "ips")]
    pub ips: Vec<String>,
    #[serde(default, deserialize_with = "mac")]
    pub mac: Option<String>,
    #[serde(rename = "default-route", default, deserialize_with = "gateways")]
    pub default_route: Vec<IpAddr>,
    #[serde(rename = "portMappings", default, deserialize_with = "port_mappings")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, deserialize_with = "bandwidth")]
    pub bandwidth: Option<Bandwidth>,
    #[serde(rename = "cni-args", default, deserialize_with = "cni_args")]
    pub cni_args: Option<Map<String, Value>>,
}

/// A `portMappings` entry (the portmap plugin's runtimeConfig).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default, deserialize_with = "some_port")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(deserialize_with = "mapped_port")]
    pub container_port: u16,
    #[serde(default, deserialize_with = "protocol")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default, deserialize_with = "host_ip")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// `bandwidth` (the bandwidth plugin's runtimeConfig): whole numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, deserialize_with = "rate")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, deserialize_with = "rate")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, deserialize_with = "rate")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, deserialize_with = "rate")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// What a selection hands its delegate as `runtimeConfig` (given to
/// plugins by capability).
#[derive(Serialize)]
struct RuntimeConfig<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ips: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(rename = "portMappings", skip_serializing_if = "Option::is_none")]
    port_mappings: Option<&'a [PortMapping]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<&'a Bandwidth>,
}

impl Selection {
    /// `runtimeConfig` for the delegate; None when the selection asks for
    /// nothing of the kind.
    pub fn runtime_config(&self) -> Option<Map<String, Value>> {
        let rc = RuntimeConfig {
            ips: &self.ips,
            mac: self.mac.as_deref(),
            port_mappings: self.port_mappings.as_deref(),
            bandwidth: self.bandwidth.as_ref(),
        };
        match serde_json::to_value(rc) {
            Ok(Value::Object(m)) if !m.is_empty() => Some(m),
            _ => None,
        }
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

fn check_name(name: &str) -> std::result::Result<(), String> {
    match is_dns_subdomain(name) {
        true => Ok(()),
        false => Err(format!(
            "network name {name:?} is not a valid DNS-1123 name"
        )),
    }
}

fn check_ns(ns: &str) -> std::result::Result<(), String> {
    match is_dns_label(ns) {
        true => Ok(()),
        false => Err(format!("namespace {ns:?} is not a valid DNS-1123 label")),
    }
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
/// a JSON list of selection objects. Errors name the entry and key
/// (`[1].ips`).
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
        if !j.is_array() {
            return Err(bad(format!("{NETWORKS}: the JSON form must be a list")));
        }
        let list: Vec<fields::Object<Selection>> =
            fields::decode(&j).map_err(|e| bad(format!("{NETWORKS}: {e}")))?;
        return Ok(list.into_iter().map(|o| o.0).collect());
    }
    t.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_short(s).map_err(|e| bad(format!("{NETWORKS}: {e}"))))
        .collect()
}

fn parse_short(s: &str) -> std::result::Result<Selection, String> {
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
    check_name(&name)?;
    if let Some(i) = &iface {
        cni::validate_ifname(i)?;
    }
    Ok(Selection {
        namespace: ns,
        name,
        interface: iface,
        ..Selection::default()
    })
}

/// A string the `check` accepts.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> std::result::Result<(), String>,
) -> std::result::Result<Option<String>, D::Error> {
    let s = fields::string(d)?;
    if let Some(s) = &s {
        check(s).map_err(D::Error::custom)?;
    }
    Ok(s)
}

fn network_name<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    checked(d, check_name)?.ok_or_else(|| D::Error::custom("an entry has no name"))
}

fn namespace<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    checked(d, check_ns)
}

fn interface<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    checked(d, cni::validate_ifname)
}

fn mac<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    checked(d, |m| match is_mac(m) {
        true => Ok(()),
        false => Err(format!("{m:?} is not a MAC address")),
    })
}

/// A list of strings; `null` is the empty list.
fn strings(v: Value) -> std::result::Result<Vec<String>, String> {
    let not = || "must be a list of strings".to_string();
    match v {
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(not()),
            })
            .collect(),
        _ => Err(not()),
    }
}

/// Addresses with their prefix, as the static IPAM expects.
fn ips<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    let l = fields::leaf(d, strings)?.unwrap_or_default();
    for ip in &l {
        if !ip.contains('/') {
            return Err(D::Error::custom(format!("{ip:?} needs a prefix length")));
        }
        if !is_address(ip) {
            return Err(D::Error::custom(format!("{ip:?} is not an address/prefix")));
        }
    }
    Ok(l)
}

fn gateways<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<IpAddr>, D::Error> {
    fields::leaf(d, strings)?
        .unwrap_or_default()
        .iter()
        .map(|g| {
            g.parse()
                .map_err(|_| D::Error::custom(format!("{g:?} is not an IP address")))
        })
        .collect()
}

fn port_mappings<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<PortMapping>>, D::Error> {
    let l = Option::<Vec<fields::Object<PortMapping>>>::deserialize(d)?;
    Ok(l.map(|l| l.into_iter().map(|o| o.0).collect()))
}

/// A port number (a JSON number 1-65535); `null` is refused.
fn mapped_port<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u16, D::Error> {
    Value::deserialize(d)?
        .as_u64()
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
        .ok_or_else(|| D::Error::custom("must be a port number (1-65535)"))
}

fn some_port<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u16>, D::Error> {
    mapped_port(d).map(Some)
}

fn protocol<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(p)
            if matches!(p.as_str(), "tcp" | "udp" | "sctp" | "TCP" | "UDP" | "SCTP") =>
        {
            Ok(Some(p))
        }
        _ => Err(D::Error::custom("must be tcp, udp or sctp")),
    }
}

fn host_ip<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(h) if h.parse::<IpAddr>().is_ok() => Ok(Some(h)),
        _ => Err(D::Error::custom("must be an IP address")),
    }
}

fn bandwidth<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Bandwidth>, D::Error> {
    Ok(Option::<fields::Object<Bandwidth>>::deserialize(d)?.map(|o| o.0))
}

/// A whole number (of bits per second, or bits); `null` is refused.
fn rate<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    Value::deserialize(d)?
        .as_u64()
        .map(Some)
        .ok_or_else(|| D::Error::custom("must be a whole number"))
}

/// `cni-args` reach every plugin of the network as `args.cni`: values are
/// strings, numbers, booleans or flat lists of them, and the keys the
/// reference plugins read are checked for what those plugins expect
/// (`ips`: addresses, with or without prefix; `mac`: a MAC address), so a
/// value a plugin would refuse — on ADD and again on every DEL — is
/// refused here, before anything runs.
fn cni_args<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Map<String, Value>>, D::Error> {
    let m = fields::object(d)?;
    if let Some(m) = &m {
        check_cni_args(m).map_err(D::Error::custom)?;
    }
    Ok(m)
}

fn check_cni_args(m: &Map<String, Value>) -> std::result::Result<(), String> {
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    for (k, v) in m {
        let ok = match v {
            Value::Array(a) => a.iter().all(scalar),
            v => scalar(v),
        };
        if !ok {
            return Err(format!(
                "{k:?}: values must be strings, numbers, booleans or lists of them"
            ));
        }
    }
    if let Some(v) = m.get("ips") {
        let list: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for ip in list {
            if !ip.as_str().is_some_and(is_address) {
                return Err(format!("ips: {ip} is not an IP address"));
            }
        }
    }
    if let Some(v) = m.get("mac") {
        if !v.as_str().is_some_and(is_mac) {
            return Err(format!("mac: {v} is not a MAC address"));
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

fn container_names(list: &[fields::Object<Container>]) -> Vec<&str> {
    list.iter().filter_map(|c| c.name.as_deref()).collect()
}

/// The profile's (proxy, init) container names.
fn mesh_containers(profile: Profile) -> (&'static str, &'static str) {
    match profile {
        Profile::Istio => ("istio-proxy", "istio-init"),
        Profile::Linkerd => ("linkerd-proxy", "linkerd-init"),
    }
}

/// The profile's proxy container: a regular container, or a native
/// sidecar (an init container with `restartPolicy: Always`).
pub fn proxy_container(profile: Profile, pod: &Pod) -> Option<&Container> {
    let (proxy, _) = mesh_containers(profile);
    let named = |c: &&fields::Object<Container>| c.name.as_deref() == Some(proxy);
    pod.spec
        .containers
        .iter()
        .find(named)
        .or_else(|| {
            pod.spec
                .init_containers
                .iter()
                .filter(named)
                .find(|c| c.restart_policy.as_deref() == Some("Always"))
        })
        .map(|c| &c.0)
}

/// Does the pod run the profile's sidecar without its init container?
/// (A native sidecar, an init container with restartPolicy Always, counts;
/// a proxy among the plain init containers does not.)
pub fn is_meshed(profile: Profile, pod: &Pod) -> bool {
    let (_, init) = mesh_containers(profile);
    let inits = container_names(&pod.spec.init_containers);
    let no_init = !inits.contains(&init);
    proxy_container(profile, pod).is_some()
        && no_init
        && match profile {
            Profile::Istio => {
                pod.annotation("sidecar.istio.io/status").is_some()
                    && pod.annotation("sidecar.istio.io/inject") != Some("false")
                    && pod.label("sidecar.istio.io/inject") != Some("false")
            }
            Profile::Linkerd => pod.annotation("linkerd.io/inject") != Some("disabled"),
        }
}

/// linkerd's annotation prefix.
pub const LINKERD_CONFIG: &str = "config.linkerd.io/";
/// multimesh's pod annotation turning the istio profile's DNS capture on
/// ("true") or off ("false"), over the proxy's `ISTIO_META_DNS_CAPTURE`.
pub const DNS_CAPTURE: &str = "multimesh.io/dns-capture";

/// Would `capture_for_pod` read the pod's namespace? Only for a linkerd
/// pod that is captured and sets no `config.linkerd.io/*` itself.
pub fn needs_namespace(base: &CaptureConfig, pod: &Pod) -> bool {
    base.enabled
        && base.profile == Profile::Linkerd
        && !base
            .exclude_namespaces
            .iter()
            .any(|n| Some(n.as_str()) == pod.metadata.namespace.as_deref())
        && is_meshed(Profile::Linkerd, pod)
        && !pod
            .metadata
            .annotations
            .keys()
            .any(|k| k.starts_with(LINKERD_CONFIG))
}

/// A securityContext id as a proxy UID/GID.
fn context_id(container: &str, key: &str, v: Option<i64>) -> Result<Option<u32>> {
    match v {
        None => Ok(None),
        Some(n) if (0..=i64::from(u32::MAX - 1)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(bad(format!(
            "container {container} securityContext.{key}: {n} is not a numeric id (0-4294967294)"
        ))),
    }
}

fn ann_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!("{key}: {v:?} must be \"true\" or \"false\""))),
    }
}

fn ann_ifnames(key: &str, v: &str) -> Result<Vec<String>> {
    let l =
        capture::parse_ifnames(&Value::String(v.into())).map_err(|e| bad(format!("{key}: {e}")))?;
    at_most(key, l)
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
/// profile (or capture is off, or its namespace is excluded, or istio's
/// interceptionMode is NONE); otherwise the config with the proxy
/// container's identity and the pod's annotations applied (for linkerd,
/// `namespace`'s `config.linkerd.io/*` when the pod sets none; see
/// [`needs_namespace`]). A bad value is an error (code 110), never a rule.
pub fn capture_for_pod(
    base: &CaptureConfig,
    pod: &Pod,
    namespace: Option<&Namespace>,
) -> Result<Option<CaptureConfig>> {
    if !base.enabled {
        return Ok(None);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    if base.exclude_namespaces.iter().any(|n| n == ns) {
        return Ok(None);
    }
    if !is_meshed(base.profile, pod) {
        return Ok(None);
    }
    let mut c = base.clone();
    // The proxy's ids default to its container's securityContext.
    if let Some(proxy) = proxy_container(base.profile, pod) {
        let name = mesh_containers(base.profile).0;
        let sc = &proxy.security_context;
        if let Some(u) = context_id(name, "runAsUser", sc.run_as_user)? {
            c.proxy_uid = u;
        }
        if let Some(g) = context_id(name, "runAsGroup", sc.run_as_group)? {
            c.proxy_gid = Some(g);
        }
    }
    match base.profile {
        Profile::Istio => {
            const P: &str = "traffic.sidecar.istio.io/";
            let get = |k: &str| {
                pod.annotation(&format!("{P}{k}"))
                    .map(|v| (format!("{P}{k}"), v))
            };
            if let Some(m) = pod.annotation("sidecar.istio.io/interceptionMode") {
                if m == "NONE" {
                    return Ok(None);
                }
                c.interception = capture::Interception::parse(m).ok_or_else(|| {
                    bad(format!(
                        "sidecar.istio.io/interceptionMode: {m:?} must be \"REDIRECT\", \"TPROXY\" or \"NONE\""
                    ))
                })?;
            }
            // DNS capture: the proxy's ISTIO_META_DNS_CAPTURE, unless the
            // pod's multimesh.io/dns-capture says otherwise.
            let env_dns = proxy_container(Profile::Istio, pod).is_some_and(|p| {
                p.env.iter().any(|e| {
                    e.name.as_deref() == Some("ISTIO_META_DNS_CAPTURE")
                        && e.value.as_deref() == Some("true")
                })
            });
            c.dns_capture |= env_dns;
            if let Some(v) = pod.annotation(DNS_CAPTURE) {
                c.dns_capture = ann_bool(DNS_CAPTURE, v)?;
            }
            for k in [
                "istio.io/reroute-virtual-interfaces",
                "traffic.sidecar.istio.io/kubevirtInterfaces",
            ] {
                if let Some(v) = pod.annotation(k) {
                    union(&mut c.reroute_interfaces, &ann_ifnames(k, v)?);
                }
            }
            if c.reroute_interfaces.len() > MAX_LIST_ITEMS {
                return Err(bad(format!(
                    "rerouted interfaces: more than {MAX_LIST_ITEMS} (each is a rule)"
                )));
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
                union(&mut c.exclude_interfaces, &ann_ifnames(&k, v)?);
            }
        }
        Profile::Linkerd => {
            const P: &str = LINKERD_CONFIG;
            // The pod's own config.linkerd.io/* or, when it sets none, its
            // namespace's.
            let own = pod.metadata.annotations.keys().any(|k| k.starts_with(P));
            let from = match (own, namespace) {
                (false, Some(n)) => &n.metadata.annotations,
                _ => &pod.metadata.annotations,
            };
            let get = |k: &str| {
                let key = format!("{P}{k}");
                from.get(&key).map(|v| (key, v.as_str()))
            };
            for (k, v) in [
                "skip-inbound-ports",
                "skip-outbound-ports",
                "skip-subnets",
                "proxy-uid",
            ]
            .iter()
            .filter_map(|k| get(k))
            {
                if v.len() > MAX_ANNOTATION_BYTES {
                    return Err(bad(format!(
                        "{k}: longer than {MAX_ANNOTATION_BYTES} bytes"
                    )));
                }
            }
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
pub fn nad_capture(nad: &Nad) -> Result<bool> {
    match nad.metadata.annotations.get(NAD_CAPTURE).map(String::as_str) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(CniError::config(format!(
            "NetworkAttachmentDefinition annotation {NAD_CAPTURE}: {v:?} must be \"true\" or \"false\""
        ))),
    }
}

/// One entry of the network-status annotation (Multus's format).
#[derive(Debug, Serialize)]
pub struct NetworkStatus {
    pub name: String,
    pub interface: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    pub dns: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
}

/// The parts of a CNI result the status reads; anything else in it, or
/// of another shape, is left out of the status.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResultView {
    interfaces: Vec<InterfaceView>,
    ips: Vec<IpView>,
    dns: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InterfaceView {
    name: Option<String>,
    mac: Option<String>,
    sandbox: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpView {
    address: Option<String>,
    gateway: Option<String>,
    interface: Option<u64>,
}

/// The status entry of attachment `ifname` from its delegate's result:
/// the result's addresses on that interface (the one in the sandbox by
/// that name; all of them when the result does not say), its MAC, DNS,
/// and for the default network the gateways.
pub fn status_entry(name: &str, ifname: &str, result: Option<&Value>, default: bool) -> Value {
    let r: ResultView = result
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    let idx = r.interfaces.iter().position(|i| {
        i.name.as_deref() == Some(ifname) && i.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    });
    let on_us = r.ips.iter().filter(|ip| match (idx, ip.interface) {
        (Some(i), Some(j)) => i as u64 == j,
        _ => true,
    });
    let mut status = NetworkStatus {
        name: name.into(),
        interface: ifname.into(),
        ips: Vec::new(),
        mac: idx.and_then(|i| r.interfaces[i].mac.clone()),
        default,
        dns: r.dns.unwrap_or_else(|| Value::Object(Map::new())),
        gateway: Vec::new(),
    };
    for ip in on_us {
        if let Some(a) = &ip.address {
            status
                .ips
                .push(a.split('/').next().unwrap_or(a).to_string());
        }
        if let Some(g) = &ip.gateway {
            if default {
                status.gateway.push(g.clone());
            }
        }
    }
    serde_json::to_value(status).unwrap_or(Value::Null)
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

    /// Each refusal of the JSON form names the entry and the key.
    #[test]
    fn json_form_refusals_name_the_key() {
        for (ann, msg) in [
            (r#"[{"name":null}]"#, "[0].name: an entry has no name"),
            (r#"[{"name":"a"},{}]"#, "[1]: missing field `name`"),
            (
                r#"[{"name":"a","bogus":1}]"#,
                "[0].bogus: unknown field `bogus`, expected one of",
            ),
            (
                r#"[{"name":"A"}]"#,
                "[0].name: network name \"A\" is not a valid DNS-1123 name",
            ),
            (
                r#"[{"name":"a","namespace":"x/y"}]"#,
                "[0].namespace: namespace \"x/y\" is not",
            ),
            (
                r#"[{"name":"a","namespace":7}]"#,
                "[0].namespace: must be a string",
            ),
            (r#"[{"name":"a","interface":"-x"}]"#, "[0].interface: "),
            (
                r#"[{"name":"a","ips":"198.51.100.9/24"}]"#,
                "[0].ips: must be a list of strings",
            ),
            (
                r#"[{"name":"a","ips":[1]}]"#,
                "[0].ips: must be a list of strings",
            ),
            (
                r#"[{"name":"a","ips":["198.51.100.9"]}]"#,
                "[0].ips: \"198.51.100.9\" needs a prefix length",
            ),
            (
                r#"[{"name":"a","ips":["x/24"]}]"#,
                "[0].ips: \"x/24\" is not an address/prefix",
            ),
            (
                r#"[{"name":"a","mac":"02:00:00:00:00"}]"#,
                "[0].mac: \"02:00:00:00:00\" is not a MAC",
            ),
            (
                r#"[{"name":"a","default-route":["x"]}]"#,
                "[0].default-route: \"x\" is not an IP address",
            ),
            (
                r#"[{"name":"a","portMappings":{}}]"#,
                "[0].portMappings: invalid type: map",
            ),
            (
                r#"[{"name":"a","portMappings":[[80]]}]"#,
                "[0].portMappings[0]: invalid type: sequence, expected an object",
            ),
            (
                r#"[{"name":"a","portMappings":[{"hostPort":80}]}]"#,
                "[0].portMappings[0]: missing field `containerPort`",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":80,"hostPort":null}]}]"#,
                "[0].portMappings[0].hostPort: must be a port number (1-65535)",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":80.0}]}]"#,
                "[0].portMappings[0].containerPort: must be a port number",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":65536}]}]"#,
                "[0].portMappings[0].containerPort: must be a port number",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":"80"}]}]"#,
                "[0].portMappings[0].containerPort: must be a port number",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":80,"protocol":"icmp"}]}]"#,
                "[0].portMappings[0].protocol: must be tcp, udp or sctp",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":80,"hostIP":"x"}]}]"#,
                "[0].portMappings[0].hostIP: must be an IP address",
            ),
            (
                r#"[{"name":"a","portMappings":[{"containerPort":80,"x":1}]}]"#,
                "[0].portMappings[0].x: unknown field",
            ),
            (
                r#"[{"name":"a","bandwidth":[]}]"#,
                "[0].bandwidth: invalid type: sequence, expected an object",
            ),
            (
                r#"[{"name":"a","bandwidth":{"ingressRate":null}}]"#,
                "[0].bandwidth.ingressRate: must be a whole number",
            ),
            (
                r#"[{"name":"a","bandwidth":{"egressBurst":-1}}]"#,
                "[0].bandwidth.egressBurst: must be a whole number",
            ),
            (
                r#"[{"name":"a","bandwidth":{"egressRate":1.5}}]"#,
                "[0].bandwidth.egressRate: must be a whole number",
            ),
            (
                r#"[{"name":"a","cni-args":[]}]"#,
                "[0].cni-args: must be an object",
            ),
            (
                r#"[{"name":"a","cni-args":{"k":null}}]"#,
                "[0].cni-args: \"k\": values must be",
            ),
            (
                r#"[{"name":"a","cni-args":{"ips":"x"}}]"#,
                "[0].cni-args: ips: \"x\" is not an IP address",
            ),
            (
                r#"[{"name":"a","cni-args":{"mac":1}}]"#,
                "[0].cni-args: mac: 1 is not a MAC address",
            ),
            (
                r#"[1]"#,
                "[0]: invalid type: integer `1`, expected an object",
            ),
            (r#"{"name":"a"}"#, "the JSON form must be a list"),
        ] {
            let e = parse_networks(ann).unwrap_err();
            assert_eq!(e.code, code::POD_REQUEST, "{ann}");
            let want = format!("{NETWORKS}: {msg}");
            assert!(
                e.msg.starts_with(&want),
                "{ann}: {:?} is not {want:?}",
                e.msg
            );
        }
        let e = parse_default_network(r#"[{"name":"a","ips":[1]}]"#).unwrap_err();
        assert!(
            e.msg.starts_with(&format!("{DEFAULT_NETWORK}: [0].ips")),
            "{}",
            e.msg
        );
    }

    /// `null` reads as absent; what reaches the delegate is what was asked.
    #[test]
    fn json_form_nulls_and_runtime_config() {
        let l = parse_networks(
            r#"[{"name":"a","namespace":null,"interface":null,"ips":null,"mac":null,
                "default-route":null,"portMappings":null,"bandwidth":null,"cni-args":null},
               {"name":"b","portMappings":[{"containerPort":80,"protocol":"UDP","hostIP":"2001:db8::1"}],
                "bandwidth":{}}]"#,
        )
        .unwrap();
        assert_eq!(
            l[0],
            Selection {
                name: "a".into(),
                ..Selection::default()
            }
        );
        assert_eq!(l[0].runtime_config(), None);
        let rc = l[1].runtime_config().unwrap();
        assert_eq!(
            Value::Object(rc),
            json!({"portMappings": [{"containerPort": 80, "protocol": "UDP", "hostIP": "2001:db8::1"}],
                   "bandwidth": {}})
        );
    }

    /// A result of another shape gives a status with no addresses; DNS
    /// and the MAC come from the result as they are.
    #[test]
    fn status_from_odd_results() {
        let e = status_entry("n", "eth0", Some(&json!("x")), true);
        assert_eq!(
            e,
            json!({"name": "n", "interface": "eth0", "default": true, "dns": {}})
        );
        let r =
            json!({"ips": [{"address": "2001:db8::5/64", "gateway": "2001:db8::1"}], "dns": null});
        let e = status_entry("n", "eth0", Some(&r), false);
        assert_eq!(
            e,
            json!({"name": "n", "interface": "eth0", "ips": ["2001:db8::5"], "dns": {}})
        );
    }

    /// The pod as the tests write it, read as the API's answer is.
    fn capture_for_pod(base: &CaptureConfig, pod: &Value) -> Result<Option<CaptureConfig>> {
        super::capture_for_pod(base, &Pod::from_json(pod).unwrap(), None)
    }

    fn nad_capture(nad: &Value) -> Result<bool> {
        super::nad_capture(&Nad::from_json(nad).unwrap())
    }

    /// The pod and NAD subsets: what is absent or `null` reads as empty;
    /// a part of another type is refused, naming where.
    #[test]
    fn pod_and_nad_shapes() {
        let p = Pod::from_json(
            &json!({"metadata": {"annotations": null, "labels": {"a": "b"},
            "uid": "u", "managedFields": [1]}, "spec": {"containers": null,
            "initContainers": [{"name": "istio-proxy", "restartPolicy": "Always"}]}, "status": {}}),
        )
        .unwrap();
        assert!(p.metadata.annotations.is_empty());
        assert_eq!(p.label("a"), Some("b"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u"));
        assert_eq!(
            p.spec.init_containers[0].name.as_deref(),
            Some("istio-proxy")
        );
        assert_eq!(Pod::from_json(&json!({})).unwrap(), Pod::default());
        for (v, msg) in [
            (json!([]), "invalid type: sequence, expected an object"),
            (
                json!({"metadata": {"annotations": {"k": 1}}}),
                "metadata.annotations.k: invalid type: integer `1`, expected a string",
            ),
            (
                json!({"metadata": {"labels": []}}),
                "metadata.labels: invalid type: sequence",
            ),
            (
                json!({"metadata": {"uid": 5}}),
                "metadata.uid: must be a string",
            ),
            (
                json!({"spec": {"containers": [["istio-proxy"]]}}),
                "spec.containers[0]: invalid type: sequence, expected an object",
            ),
            (
                json!({"spec": {"initContainers": [{"name": true}]}}),
                "spec.initContainers[0].name: must be a string",
            ),
        ] {
            let e = Pod::from_json(&v).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{v}: {e:?} is not {msg:?}");
        }
        let n = Nad::from_json(&json!({"metadata": {"annotations": {NAD_CAPTURE: "false"}},
            "spec": {"config": null}}))
        .unwrap();
        assert_eq!(n.spec.config, None);
        assert!(!super::nad_capture(&n).unwrap());
        let e = Nad::from_json(&json!({"spec": {"config": {"type": "bridge"}}})).unwrap_err();
        assert_eq!(e.to_string(), "spec.config: must be a string");
        let e =
            nad_capture(&json!({"metadata": {"annotations": {NAD_CAPTURE: "no"}}})).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.msg.ends_with("\"no\" must be \"true\" or \"false\""),
            "{}",
            e.msg
        );
    }

    #[test]
    fn annotation_sizes() {
        let big = "x".repeat(MAX_ANNOTATION_BYTES + 1);
        let p = Pod::from_json(&json!({"metadata": {"annotations": {"other.io/x": big}}})).unwrap();
        assert!(p.check_annotation_sizes().is_ok());
        let p = Pod::from_json(&json!({"metadata": {"annotations": {NETWORKS: big}}})).unwrap();
        let e = p.check_annotation_sizes().unwrap_err();
        assert_eq!(e.code, code::POD_REQUEST);
        assert!(e.msg.starts_with(NETWORKS), "{}", e.msg);
        let ok = "x".repeat(MAX_ANNOTATION_BYTES);
        let p =
            Pod::from_json(&json!({"metadata": {"annotations": {DEFAULT_NETWORK: ok}}})).unwrap();
        assert!(p.check_annotation_sizes().is_ok());
    }

    /// `inits` names ending in `:Always` are native sidecars.
    fn pod(ann: Value, containers: &[&str], inits: &[&str]) -> Value {
        let c: Vec<Value> = containers.iter().map(|n| json!({"name": n})).collect();
        let i: Vec<Value> = inits
            .iter()
            .map(|n| match n.strip_suffix(":Always") {
                Some(n) => json!({"name": n, "restartPolicy": "Always"}),
                None => json!({"name": n}),
            })
            .collect();
        json!({"metadata": {"namespace": "default", "name": "p", "annotations": ann},
               "spec": {"containers": c, "initContainers": i}})
    }

    /// TPROXY, DNS capture, rerouted interfaces and the proxy's identity
    /// from the pod; bad values refused naming where.
    #[test]
    fn istio_modes_and_proxy_identity() {
        let base = CaptureConfig::defaults(Profile::Istio);
        let st = json!({"sidecar.istio.io/status": "{}"});
        let with = |ann: Value, proxy: Value| -> Result<Option<CaptureConfig>> {
            let mut a = st.clone();
            for (k, v) in ann.as_object().unwrap() {
                a[k] = v.clone();
            }
            capture_for_pod(
                &base,
                &json!({"metadata": {"namespace": "default", "annotations": a},
                        "spec": {"containers": [{"name": "app"}], "initContainers": [proxy]}}),
            )
        };
        let native = json!({"name": "istio-proxy", "restartPolicy": "Always",
            "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}, {"name": "X", "valueFrom": {}}],
            "securityContext": {"runAsUser": 1500, "runAsGroup": 1501}});
        let c = with(json!({}), native.clone()).unwrap().unwrap();
        assert!(c.dns_capture);
        assert_eq!((c.proxy_uid, c.proxy_gid), (1500, Some(1501)));
        assert_eq!(c.interception, capture::Interception::Redirect);
        let c = with(
            json!({"sidecar.istio.io/interceptionMode": "TPROXY", DNS_CAPTURE: "false",
                   "istio.io/reroute-virtual-interfaces": "net1, net2",
                   "traffic.sidecar.istio.io/kubevirtInterfaces": "net2,net3"}),
            native.clone(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.interception, capture::Interception::Tproxy);
        assert!(!c.dns_capture);
        assert_eq!(c.reroute_interfaces, ["net1", "net2", "net3"]);
        let plain = json!({"name": "istio-proxy", "restartPolicy": "Always"});
        let c = with(json!({DNS_CAPTURE: "true"}), plain.clone())
            .unwrap()
            .unwrap();
        assert!(c.dns_capture);
        assert_eq!((c.proxy_uid, c.proxy_gid), (1337, Some(1337)));
        assert!(with(
            json!({"sidecar.istio.io/interceptionMode": "NONE"}),
            plain.clone()
        )
        .unwrap()
        .is_none());
        for (ann, proxy, msg) in [
            (
                json!({"sidecar.istio.io/interceptionMode": "tproxy"}),
                plain.clone(),
                "sidecar.istio.io/interceptionMode: \"tproxy\" must be",
            ),
            (
                json!({DNS_CAPTURE: "yes"}),
                plain.clone(),
                "multimesh.io/dns-capture: \"yes\"",
            ),
            (
                json!({"istio.io/reroute-virtual-interfaces": "net1 -j ACCEPT"}),
                plain.clone(),
                "istio.io/reroute-virtual-interfaces:",
            ),
            (
                json!({"traffic.sidecar.istio.io/kubevirtInterfaces": "sixteen-bytes-xx"}),
                plain.clone(),
                "traffic.sidecar.istio.io/kubevirtInterfaces:",
            ),
            (
                json!({}),
                json!({"name": "istio-proxy", "restartPolicy": "Always",
                       "securityContext": {"runAsUser": -1}}),
                "container istio-proxy securityContext.runAsUser: -1 is not a numeric id",
            ),
            (
                json!({}),
                json!({"name": "istio-proxy", "restartPolicy": "Always",
                       "securityContext": {"runAsGroup": 4294967295u64}}),
                "securityContext.runAsGroup: 4294967295 is not",
            ),
        ] {
            let e = with(ann.clone(), proxy).unwrap_err();
            assert_eq!(e.code, code::POD_REQUEST, "{ann}: {e}");
            assert!(e.msg.contains(msg), "{ann}: {:?} lacks {msg:?}", e.msg);
        }
        // The bound on rerouted interfaces (each is a rule).
        let many: Vec<String> = (0..=MAX_LIST_ITEMS).map(|i| format!("v{i}")).collect();
        let e = with(
            json!({"istio.io/reroute-virtual-interfaces": many.join(",")}),
            plain,
        )
        .unwrap_err();
        assert!(e.msg.contains("more than"), "{}", e.msg);
    }

    /// linkerd: the namespace's config.linkerd.io/* apply when the pod sets
    /// none; a pod's own win wholesale; the proxy uid from securityContext
    /// unless proxy-uid says otherwise.
    #[test]
    fn linkerd_namespace_annotations_and_identity() {
        let base = CaptureConfig::defaults(Profile::Linkerd);
        let ns = Namespace::from_json(&json!({"metadata": {"annotations": {
            "config.linkerd.io/skip-outbound-ports": "5432",
            "config.linkerd.io/proxy-uid": "2200"}}}))
        .unwrap();
        let p = |ann: Value| {
            Pod::from_json(
                &json!({"metadata": {"namespace": "apps", "annotations": ann},
                "spec": {"containers": [{"name": "app"}],
                         "initContainers": [{"name": "linkerd-proxy", "restartPolicy": "Always",
                                             "securityContext": {"runAsUser": 2150}}]}}),
            )
            .unwrap()
        };
        let bare = p(json!({}));
        assert!(needs_namespace(&base, &bare));
        let c = super::capture_for_pod(&base, &bare, Some(&ns))
            .unwrap()
            .unwrap();
        assert_eq!(c.exclude_outbound_ports, vec![4567, 4568, 5432]);
        assert_eq!(c.proxy_uid, 2200);
        let c = super::capture_for_pod(&base, &bare, None).unwrap().unwrap();
        assert_eq!(c.proxy_uid, 2150, "securityContext.runAsUser");
        let own = p(json!({"config.linkerd.io/skip-inbound-ports": "9000"}));
        assert!(!needs_namespace(&base, &own));
        let c = super::capture_for_pod(&base, &own, Some(&ns))
            .unwrap()
            .unwrap();
        assert_eq!(c.exclude_outbound_ports, vec![4567, 4568]);
        assert_eq!(c.proxy_uid, 2150);
        let bad_ns = Namespace::from_json(&json!({"metadata": {"annotations": {
            "config.linkerd.io/skip-subnets": "10.0.0.0/8; flush"}}}))
        .unwrap();
        let e = super::capture_for_pod(&base, &bare, Some(&bad_ns)).unwrap_err();
        assert!(
            e.msg.contains("config.linkerd.io/skip-subnets"),
            "{}",
            e.msg
        );
        // A namespace annotation is bounded like a pod's.
        let big = "1,".repeat(MAX_ANNOTATION_BYTES / 2 + 1);
        let big_ns = Namespace::from_json(&json!({"metadata": {"annotations": {
            "config.linkerd.io/skip-outbound-ports": big}}}))
        .unwrap();
        let e = super::capture_for_pod(&base, &bare, Some(&big_ns)).unwrap_err();
        assert!(e.msg.contains("longer than"), "{}", e.msg);
        // Not captured, or another profile: no namespace read.
        assert!(!needs_namespace(
            &CaptureConfig::defaults(Profile::Istio),
            &bare
        ));
        let mut off = base.clone();
        off.enabled = false;
        assert!(!needs_namespace(&off, &bare));
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
        // Native sidecar; a proxy among the plain init containers is not
        // the sidecar; istio-init beside a native sidecar still means the
        // init container captures.
        assert!(
            capture_for_pod(&base, &pod(st.clone(), &["app"], &["istio-proxy:Always"]))
                .unwrap()
                .is_some()
        );
        assert!(
            capture_for_pod(&base, &pod(st.clone(), &["app"], &["istio-proxy"]))
                .unwrap()
                .is_none()
        );
        assert!(capture_for_pod(
            &base,
            &pod(st.clone(), &["app"], &["istio-init", "istio-proxy:Always"])
        )
        .unwrap()
        .is_none());
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
        let c = capture_for_pod(&base, &pod(a.clone(), &["istio-proxy"], &[]));
        assert_eq!(
            c.unwrap().unwrap().interception,
            capture::Interception::Tproxy
        );
        a["sidecar.istio.io/interceptionMode"] = json!("TPROXY; drop");
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
