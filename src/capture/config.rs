//! The `capture` object: its keys as one derived type ([`Fields`]: read
//! from the network config and from state, written as the canonical form
//! state keeps), the profile defaults, and the typed readers of ports,
//! CIDRs and interface names that the pod annotations share. Every value
//! becomes a number, an address or a checked interface name here.

use super::{Backend, Cidr, Interception, Variant};
use crate::error::{CniError, Result};
use crate::fields::{self, leaf};
use serde::de::{Deserializer, Error as _};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Istio,
    Linkerd,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Istio => "istio",
            Profile::Linkerd => "linkerd",
        }
    }
}

/// Ports to redirect inbound: all but some, only some, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSet {
    AllExcept(Vec<u16>),
    Only(Vec<u16>),
}

/// The `capture` object, validated. Every field has its profile default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub enabled: bool,
    pub profile: Profile,
    pub backend: Backend,
    pub variant: Variant,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: Option<u32>,
    /// Inbound TCP ports captured (`*` minus excludeInboundPorts by default).
    pub inbound: PortSet,
    pub exclude_outbound_ports: Vec<u16>,
    pub include_outbound_ports: Vec<u16>,
    /// None: all destinations.
    pub include_outbound_cidrs: Option<Vec<Cidr>>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
    pub exclude_interfaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
    pub interception: Interception,
    /// Capture the app's DNS (UDP and TCP port 53) to `dns_port`.
    pub dns_capture: bool,
    pub dns_port: u16,
    /// Drop inbound packets conntrack marks INVALID.
    pub drop_invalid: bool,
    /// TCP arriving on these interfaces is the app's outbound.
    pub reroute_interfaces: Vec<String>,
}

/// A key given: replaces the default.
fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

/// `"*"` (everything) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Star<T> {
    All,
    Only(Vec<T>),
}

impl<T: Serialize> Serialize for Star<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Star::All => s.serialize_str("*"),
            Star::Only(l) => l.serialize(s),
        }
    }
}

/// The keys of the `capture` object. Each is optional (absent or `null`
/// keeps the profile's default); an unknown key is refused (code 2: a
/// typo must not silently drop a setting).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Fields {
    #[serde(default, deserialize_with = "fields::boolean")]
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    /// Unlike the other keys, an explicit `null` profile is refused.
    #[serde(default, deserialize_with = "profile")]
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Profile>,
    #[serde(default, deserialize_with = "backend")]
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<Backend>,
    #[serde(default, deserialize_with = "variant")]
    #[serde(skip_serializing_if = "Option::is_none")]
    iptables_variant: Option<Variant>,
    #[serde(default, deserialize_with = "port")]
    #[serde(skip_serializing_if = "Option::is_none")]
    inbound_port: Option<u16>,
    #[serde(default, deserialize_with = "port")]
    #[serde(skip_serializing_if = "Option::is_none")]
    outbound_port: Option<u16>,
    #[serde(rename = "proxyUID", default, deserialize_with = "fields::numeric_id")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_uid: Option<u32>,
    #[serde(rename = "proxyGID", default, deserialize_with = "fields::numeric_id")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_gid: Option<u32>,
    #[serde(default, deserialize_with = "star_ports")]
    #[serde(skip_serializing_if = "Option::is_none")]
    include_inbound_ports: Option<Star<u16>>,
    #[serde(default, deserialize_with = "ports")]
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_inbound_ports: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "ports")]
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_outbound_ports: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "ports")]
    #[serde(skip_serializing_if = "Option::is_none")]
    include_outbound_ports: Option<Vec<u16>>,
    #[serde(
        rename = "includeOutboundCIDRs",
        default,
        deserialize_with = "star_cidrs"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    include_outbound_cidrs: Option<Star<Cidr>>,
    #[serde(rename = "excludeOutboundCIDRs", default, deserialize_with = "cidrs")]
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_outbound_cidrs: Option<Vec<Cidr>>,
    #[serde(default, deserialize_with = "ifnames")]
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_interfaces: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fields::string_list")]
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_namespaces: Option<Vec<String>>,
    #[serde(default, deserialize_with = "interception")]
    #[serde(skip_serializing_if = "Option::is_none")]
    interception_mode: Option<Interception>,
    #[serde(default, deserialize_with = "fields::boolean")]
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_capture: Option<bool>,
    #[serde(default, deserialize_with = "port")]
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_port: Option<u16>,
    #[serde(default, deserialize_with = "fields::boolean")]
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_invalid: Option<bool>,
    #[serde(default, deserialize_with = "ifnames")]
    #[serde(skip_serializing_if = "Option::is_none")]
    reroute_interfaces: Option<Vec<String>>,
}

impl CaptureConfig {
    pub fn defaults(profile: Profile) -> Self {
        match profile {
            Profile::Istio => CaptureConfig {
                enabled: true,
                profile,
                backend: Backend::Iptables,
                variant: Variant::Auto,
                inbound_port: 15006,
                outbound_port: 15001,
                proxy_uid: 1337,
                proxy_gid: Some(1337),
                inbound: PortSet::AllExcept(vec![15008, 15020, 15021, 15090]),
                exclude_outbound_ports: vec![15020],
                include_outbound_ports: vec![],
                include_outbound_cidrs: None,
                exclude_outbound_cidrs: vec![],
                exclude_interfaces: vec![],
                exclude_namespaces: vec!["kube-system".into()],
                interception: Interception::Redirect,
                dns_capture: false,
                dns_port: 15053,
                drop_invalid: false,
                reroute_interfaces: vec![],
            },
            Profile::Linkerd => CaptureConfig {
                enabled: true,
                profile,
                backend: Backend::Iptables,
                variant: Variant::Auto,
                inbound_port: 4143,
                outbound_port: 4140,
                proxy_uid: 2102,
                proxy_gid: None,
                // The proxy's own admin/tap ports, and linkerd's default
                // opaque-skip ports.
                inbound: PortSet::AllExcept(vec![4190, 4191, 4567, 4568]),
                exclude_outbound_ports: vec![4567, 4568],
                include_outbound_ports: vec![],
                include_outbound_cidrs: None,
                exclude_outbound_cidrs: vec![],
                exclude_interfaces: vec![],
                exclude_namespaces: vec!["kube-system".into()],
                interception: Interception::Redirect,
                dns_capture: false,
                dns_port: 15053,
                drop_invalid: false,
                reroute_interfaces: vec![],
            },
        }
    }

    /// Parse the `capture` object. `None` (absent) gives the istio
    /// defaults. Errors name the key (`capture.inboundPort`): code 2 for an
    /// unknown one, 7 for a bad value.
    pub fn from_json(v: Option<&Value>) -> Result<Self> {
        match v {
            None | Some(Value::Null) => Ok(Self::defaults(Profile::Istio)),
            Some(v @ Value::Object(_)) => fields::decode::<Fields>(v)
                .map(Self::from_fields)
                .map_err(|e| e.config("capture.")),
            Some(_) => Err(CniError::config("capture: must be an object")),
        }
    }

    /// The given keys over the profile's defaults.
    fn from_fields(f: Fields) -> Self {
        let mut c = Self::defaults(f.profile.unwrap_or(Profile::Istio));
        set(&mut c.enabled, f.enabled);
        set(&mut c.backend, f.backend);
        set(&mut c.variant, f.iptables_variant);
        set(&mut c.inbound_port, f.inbound_port);
        set(&mut c.outbound_port, f.outbound_port);
        set(&mut c.proxy_uid, f.proxy_uid);
        if f.proxy_gid.is_some() {
            c.proxy_gid = f.proxy_gid;
        }
        // Only some ports inbound, or all (`*`, the default) but the
        // excluded ones.
        match (f.include_inbound_ports, f.exclude_inbound_ports) {
            (Some(Star::Only(p)), _) => c.inbound = PortSet::Only(p),
            (_, Some(ex)) => c.inbound = PortSet::AllExcept(ex),
            _ => {}
        }
        set(&mut c.exclude_outbound_ports, f.exclude_outbound_ports);
        set(&mut c.include_outbound_ports, f.include_outbound_ports);
        match f.include_outbound_cidrs {
            Some(Star::All) => c.include_outbound_cidrs = None,
            Some(Star::Only(l)) => c.include_outbound_cidrs = Some(l),
            None => {}
        }
        set(&mut c.exclude_outbound_cidrs, f.exclude_outbound_cidrs);
        set(&mut c.exclude_interfaces, f.exclude_interfaces);
        set(&mut c.exclude_namespaces, f.exclude_namespaces);
        set(&mut c.interception, f.interception_mode);
        set(&mut c.dns_capture, f.dns_capture);
        set(&mut c.dns_port, f.dns_port);
        set(&mut c.drop_invalid, f.drop_invalid);
        set(&mut c.reroute_interfaces, f.reroute_interfaces);
        c
    }

    /// The canonical JSON form (every field explicit), stored in state so
    /// CHECK and DEL rebuild exactly the plan ADD programmed.
    pub fn to_json(&self) -> Value {
        let (include_inbound_ports, exclude_inbound_ports) = match &self.inbound {
            PortSet::AllExcept(ex) => (Star::All, Some(ex.clone())),
            PortSet::Only(p) => (Star::Only(p.clone()), None),
        };
        let f = Fields {
            enabled: Some(self.enabled),
            profile: Some(self.profile),
            backend: Some(self.backend),
            iptables_variant: Some(self.variant),
            inbound_port: Some(self.inbound_port),
            outbound_port: Some(self.outbound_port),
            proxy_uid: Some(self.proxy_uid),
            proxy_gid: self.proxy_gid,
            include_inbound_ports: Some(include_inbound_ports),
            exclude_inbound_ports,
            exclude_outbound_ports: Some(self.exclude_outbound_ports.clone()),
            include_outbound_ports: Some(self.include_outbound_ports.clone()),
            include_outbound_cidrs: Some(match &self.include_outbound_cidrs {
                None => Star::All,
                Some(c) => Star::Only(c.clone()),
            }),
            exclude_outbound_cidrs: Some(self.exclude_outbound_cidrs.clone()),
            exclude_interfaces: Some(self.exclude_interfaces.clone()),
            exclude_namespaces: Some(self.exclude_namespaces.clone()),
            interception_mode: Some(self.interception),
            dns_capture: Some(self.dns_capture),
            dns_port: Some(self.dns_port),
            drop_invalid: Some(self.drop_invalid),
            reroute_interfaces: Some(self.reroute_interfaces.clone()),
        };
        serde_json::to_value(f).unwrap_or(Value::Null)
    }
}

impl Serialize for Profile {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Serialize for Backend {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Serialize for Variant {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Serialize for Interception {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One of `names` (a string), or `refusal`.
fn one_of<T: Copy>(
    v: &Value,
    names: &[(&str, T)],
    refusal: &str,
) -> std::result::Result<T, String> {
    names
        .iter()
        .find(|(n, _)| v.as_str() == Some(*n))
        .map(|(_, t)| *t)
        .ok_or_else(|| refusal.to_string())
}

const PROFILES: &[(&str, Profile)] = &[("istio", Profile::Istio), ("linkerd", Profile::Linkerd)];

fn profile<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Profile>, D::Error> {
    let v = Value::deserialize(d)?;
    one_of(&v, PROFILES, "must be \"istio\" or \"linkerd\"")
        .map(Some)
        .map_err(D::Error::custom)
}

fn backend<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Backend>, D::Error> {
    const B: &[(&str, Backend)] = &[
        ("iptables", Backend::Iptables),
        ("nftables", Backend::Nftables),
    ];
    leaf(d, |v| one_of(&v, B, "must be \"iptables\" or \"nftables\""))
}

fn variant<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Variant>, D::Error> {
    const V: &[(&str, Variant)] = &[
        ("auto", Variant::Auto),
        ("legacy", Variant::Legacy),
        ("nft", Variant::Nft),
    ];
    leaf(d, |v| {
        one_of(&v, V, "must be \"auto\", \"legacy\" or \"nft\"")
    })
}

fn interception<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Interception>, D::Error> {
    leaf(d, |v| {
        v.as_str()
            .and_then(Interception::parse)
            .ok_or_else(|| "must be \"REDIRECT\" or \"TPROXY\"".to_string())
    })
}

fn port<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u16>, D::Error> {
    leaf(d, |v| match v {
        Value::Number(n) => match n.as_u64() {
            Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
            _ => Err(format!("{n} is not a port number (1-65535)")),
        },
        Value::String(s) => parse_port_str(s.trim()),
        _ => Err("must be a port number".into()),
    })
}

fn ports<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<u16>>, D::Error> {
    leaf(d, |v| parse_ports(&v))
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<Cidr>>, D::Error> {
    leaf(d, |v| parse_cidrs(&v))
}

fn ifnames<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<String>>, D::Error> {
    leaf(d, |v| parse_ifnames(&v))
}

fn is_star(v: &Value) -> bool {
    v.as_str().map(str::trim) == Some("*")
}

fn star_ports<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Star<u16>>, D::Error> {
    leaf(d, |v| match is_star(&v) {
        true => Ok(Star::All),
        false => parse_ports(&v).map(Star::Only),
    })
}

fn star_cidrs<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Star<Cidr>>, D::Error> {
    leaf(d, |v| match is_star(&v) {
        true => Ok(Star::All),
        false => parse_cidrs(&v).map(Star::Only),
    })
}

/// A port number written in decimal digits only, 1-65535.
pub fn parse_port_str(s: &str) -> std::result::Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p as u16),
        _ => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

/// Ports (a list of either form `fields::list` takes); duplicates
/// removed, order kept.
pub fn parse_ports(v: &Value) -> std::result::Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for s in fields::list(v)? {
        let p = parse_port_str(&s)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Addresses or prefixes; duplicates removed, order kept.
pub fn parse_cidrs(v: &Value) -> std::result::Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for s in fields::list(v)? {
        let c: Cidr = s.parse()?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Interface names, each a valid one (`cni::validate_ifname`); duplicates
/// removed, order kept.
pub fn parse_ifnames(v: &Value) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for s in fields::list(v)? {
        crate::cni::validate_ifname(&s)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use serde_json::json;

    fn refusal(capture: Value) -> CniError {
        CaptureConfig::from_json(Some(&capture)).unwrap_err()
    }

    #[test]
    fn keys_over_profile_defaults() {
        let c = CaptureConfig::from_json(Some(&json!({"profile": "linkerd", "proxyUID": "7",
            "includeInboundPorts": " * ", "excludeInboundPorts": "25, 25,26",
            "includeOutboundCIDRs": "*", "excludeOutboundCIDRs": ["198.51.100.7/24"],
            "inboundPort": null, "backend": "nftables", "iptablesVariant": "legacy"})))
        .unwrap();
        assert_eq!(c.inbound_port, 4143);
        assert_eq!(c.proxy_uid, 7);
        assert_eq!(c.proxy_gid, None);
        assert_eq!(c.inbound, PortSet::AllExcept(vec![25, 26]));
        assert_eq!(c.include_outbound_cidrs, None);
        assert_eq!(c.exclude_outbound_cidrs[0].to_string(), "198.51.100.0/24");
        assert_eq!((c.backend, c.variant), (Backend::Nftables, Variant::Legacy));
        // An explicit list wins over the exclusions.
        let c = CaptureConfig::from_json(Some(
            &json!({"excludeInboundPorts": [1], "includeInboundPorts": [80, "81"]}),
        ))
        .unwrap();
        assert_eq!(c.inbound, PortSet::Only(vec![80, 81]));
    }

    #[test]
    fn canonical_form_round_trips() {
        for mut c in [Profile::Istio, Profile::Linkerd].map(CaptureConfig::defaults) {
            let v = c.to_json();
            assert_eq!(CaptureConfig::from_json(Some(&v)).unwrap(), c);
            c.inbound = PortSet::Only(vec![8080]);
            c.include_outbound_cidrs = Some(vec!["2001:db8::/32".parse().unwrap()]);
            let v = c.to_json();
            assert!(v.get("excludeInboundPorts").is_none(), "{v}");
            assert_eq!(v["includeOutboundCIDRs"], json!(["2001:db8::/32"]));
            assert_eq!(CaptureConfig::from_json(Some(&v)).unwrap(), c);
        }
        let v = CaptureConfig::defaults(Profile::Istio).to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "enabled",
                "profile",
                "backend",
                "iptablesVariant",
                "inboundPort",
                "outboundPort",
                "proxyUID",
                "proxyGID",
                "includeInboundPorts",
                "excludeInboundPorts",
                "excludeOutboundPorts",
                "includeOutboundPorts",
                "includeOutboundCIDRs",
                "excludeOutboundCIDRs",
                "excludeInterfaces",
                "excludeNamespaces",
                "interceptionMode",
                "dnsCapture",
                "dnsPort",
                "dropInvalid",
                "rerouteInterfaces"
            ]
        );
        assert_eq!(v["includeInboundPorts"], "*");
        // The new modes round-trip too.
        let mut c = CaptureConfig::defaults(Profile::Istio);
        c.interception = Interception::Tproxy;
        c.dns_capture = true;
        c.dns_port = 5353;
        c.drop_invalid = true;
        c.reroute_interfaces = vec!["net1".into()];
        let v = c.to_json();
        assert_eq!(v["interceptionMode"], "TPROXY");
        assert_eq!(CaptureConfig::from_json(Some(&v)).unwrap(), c);
        assert_eq!(v["backend"], "iptables");
    }

    /// Every refusal, with its code and the message naming the key.
    #[test]
    fn refusals_name_the_key() {
        let e = refusal(json!({"bogus": 1}));
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(
            e.msg.starts_with("capture.bogus: unknown field"),
            "{}",
            e.msg
        );
        for (capture, msg) in [
            (json!([]), "capture: must be an object"),
            (json!("x"), "capture: must be an object"),
            (
                json!({"profile": null}),
                "capture.profile: must be \"istio\" or \"linkerd\"",
            ),
            (
                json!({"profile": "Istio"}),
                "capture.profile: must be \"istio\" or \"linkerd\"",
            ),
            (
                json!({"enabled": "true"}),
                "capture.enabled: must be a boolean",
            ),
            (
                json!({"interceptionMode": "tproxy"}),
                "capture.interceptionMode: must be \"REDIRECT\" or \"TPROXY\"",
            ),
            (
                json!({"interceptionMode": ["TPROXY"]}),
                "capture.interceptionMode: must be \"REDIRECT\" or \"TPROXY\"",
            ),
            (
                json!({"dnsCapture": "true"}),
                "capture.dnsCapture: must be a boolean",
            ),
            (
                json!({"dnsPort": 65536}),
                "capture.dnsPort: 65536 is not a port number (1-65535)",
            ),
            (
                json!({"dropInvalid": 0}),
                "capture.dropInvalid: must be a boolean",
            ),
            (
                json!({"backend": 1}),
                "capture.backend: must be \"iptables\" or \"nftables\"",
            ),
            (
                json!({"iptablesVariant": "x"}),
                "capture.iptablesVariant: must be \"auto\", \"legacy\" or \"nft\"",
            ),
            (
                json!({"inboundPort": 0}),
                "capture.inboundPort: 0 is not a port number (1-65535)",
            ),
            (
                json!({"inboundPort": 1.5}),
                "capture.inboundPort: 1.5 is not a port number (1-65535)",
            ),
            (
                json!({"outboundPort": -1}),
                "capture.outboundPort: -1 is not a port number (1-65535)",
            ),
            (
                json!({"outboundPort": "+80"}),
                "capture.outboundPort: \"+80\" is not a port number (1-65535)",
            ),
            (
                json!({"inboundPort": true}),
                "capture.inboundPort: must be a port number",
            ),
            (
                json!({"inboundPort": [80]}),
                "capture.inboundPort: must be a port number",
            ),
            (
                json!({"proxyUID": 4294967295u64}),
                "capture.proxyUID: must be a numeric id (0-4294967294)",
            ),
            (
                json!({"proxyGID": 1.0}),
                "capture.proxyGID: must be a numeric id (0-4294967294)",
            ),
            (
                json!({"excludeInboundPorts": [true]}),
                "capture.excludeInboundPorts: items must be strings or numbers",
            ),
            (
                json!({"includeInboundPorts": {}}),
                "capture.includeInboundPorts: must be a list or a comma-separated string",
            ),
            (
                json!({"excludeOutboundPorts": "1,70000"}),
                "capture.excludeOutboundPorts: \"70000\" is not a port number (1-65535)",
            ),
            (
                json!({"includeOutboundPorts": [1.5]}),
                "capture.includeOutboundPorts: \"1.5\" is not a port number (1-65535)",
            ),
            (
                json!({"includeOutboundCIDRs": "10.0.0.0/33"}),
                "capture.includeOutboundCIDRs: \"10.0.0.0/33\" is not an IP address or CIDR",
            ),
            (
                json!({"excludeOutboundCIDRs": ["10.0.0.0/+8"]}),
                "capture.excludeOutboundCIDRs: \"10.0.0.0/+8\" is not an IP address or CIDR",
            ),
            (
                json!({"excludeInterfaces": "-x"}),
                "capture.excludeInterfaces: ",
            ),
            (
                json!({"excludeNamespaces": 5}),
                "capture.excludeNamespaces: must be a list or a comma-separated string",
            ),
        ] {
            let e = refusal(capture.clone());
            assert_eq!(e.code, code::INVALID_CONFIG, "{capture}: {}", e.msg);
            assert!(
                e.msg.starts_with(msg),
                "{capture}: {:?} is not {msg:?}",
                e.msg
            );
        }
    }
}
