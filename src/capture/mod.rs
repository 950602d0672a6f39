//! Mesh capture: TCP interception in a pod network namespace.
//!
//! The core is pure: a [`CaptureConfig`] (from the `capture` object, later
//! merged with pod annotations) becomes a [`Plan`], and the plan becomes a
//! list of [`Rule`]s per address family. Renderers turn rules into an
//! `iptables-restore` payload or an nftables ruleset; the backends apply a
//! payload in one atomic step inside the pod netns. Nothing here splices
//! user text into rules: every value is parsed into a number, an address or
//! a validated interface name first.

pub mod iptables;
pub mod nft;
pub mod nftnl;
pub mod plan;
pub mod route;

pub use plan::{Cidr, Family, Plan};

use crate::error::{code, CniError, Result};
use crate::netns::NetNs;
use serde_json::{json, Map, Value};
use std::path::Path;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// Which iptables implementation to drive. `Auto` detects the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Auto,
    Legacy,
    Nft,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Auto => "auto",
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
    }
}

/// How inbound TCP reaches the proxy (`interceptionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interception {
    /// nat REDIRECT: the proxy reads the original destination with
    /// `SO_ORIGINAL_DST`; the app sees connections from the proxy.
    Redirect,
    /// mangle TPROXY: the proxy's `IP_TRANSPARENT` listener accepts the
    /// connection with the client's source and original destination.
    Tproxy,
}

impl Interception {
    pub fn name(self) -> &'static str {
        match self {
            Interception::Redirect => "REDIRECT",
            Interception::Tproxy => "TPROXY",
        }
    }
    /// The mode's name as the config and Istio's annotation spell it.
    pub fn parse(s: &str) -> Option<Interception> {
        match s {
            "REDIRECT" => Some(Interception::Redirect),
            "TPROXY" => Some(Interception::Tproxy),
            _ => None,
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

const KNOWN_KEYS: &[&str] = &[
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
    "rerouteInterfaces",
];

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

    /// Parse the `capture` object. `None` (absent) gives the istio defaults.
    pub fn from_json(v: Option<&Value>) -> Result<Self> {
        let obj = match v {
            None | Some(Value::Null) => return Ok(Self::defaults(Profile::Istio)),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(CniError::config("capture: must be an object")),
        };
        for k in obj.keys() {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("capture.{k}: unknown field"),
                ));
            }
        }
        let profile = match obj.get("profile") {
            None => Profile::Istio,
            Some(Value::String(s)) if s == "istio" => Profile::Istio,
            Some(Value::String(s)) if s == "linkerd" => Profile::Linkerd,
            Some(_) => {
                return Err(CniError::config(
                    "capture.profile: must be \"istio\" or \"linkerd\"",
                ))
            }
        };
        let mut c = Self::defaults(profile);
        let f = |k: &str| obj.get(k).filter(|v| !v.is_null());
        if let Some(v) = f("enabled") {
            c.enabled = v
                .as_bool()
                .ok_or_else(|| CniError::config("capture.enabled: must be a boolean"))?;
        }
        if let Some(v) = f("backend") {
            c.backend = match v.as_str() {
                Some("iptables") => Backend::Iptables,
                Some("nftables") => Backend::Nftables,
                _ => {
                    return Err(CniError::config(
                        "capture.backend: must be \"iptables\" or \"nftables\"",
                    ))
                }
            };
        }
        if let Some(v) = f("iptablesVariant") {
            c.variant = match v.as_str() {
                Some("auto") => Variant::Auto,
                Some("legacy") => Variant::Legacy,
                Some("nft") => Variant::Nft,
                _ => {
                    return Err(CniError::config(
                        "capture.iptablesVariant: must be \"auto\", \"legacy\" or \"nft\"",
                    ))
                }
            };
        }
        if let Some(v) = f("inboundPort") {
            c.inbound_port = parse_port(v, "capture.inboundPort")?;
        }
        if let Some(v) = f("outboundPort") {
            c.outbound_port = parse_port(v, "capture.outboundPort")?;
        }
        if let Some(v) = f("proxyUID") {
            c.proxy_uid = crate::fields::id(v, "capture.proxyUID")?;
        }
        if let Some(v) = f("proxyGID") {
            c.proxy_gid = Some(crate::fields::id(v, "capture.proxyGID")?);
        }
        let excl_in = match f("excludeInboundPorts") {
            Some(v) => Some(parse_ports(v, "capture.excludeInboundPorts")?),
            None => None,
        };
        match f("includeInboundPorts") {
            Some(v) if is_star(v) => {}
            Some(v) => c.inbound = PortSet::Only(parse_ports(v, "capture.includeInboundPorts")?),
            None => {}
        }
        if let (Some(ex), PortSet::AllExcept(_)) = (excl_in, &c.inbound) {
            c.inbound = PortSet::AllExcept(ex);
        }
        if let Some(v) = f("excludeOutboundPorts") {
            c.exclude_outbound_ports = parse_ports(v, "capture.excludeOutboundPorts")?;
        }
        if let Some(v) = f("includeOutboundPorts") {
            c.include_outbound_ports = parse_ports(v, "capture.includeOutboundPorts")?;
        }
        if let Some(v) = f("includeOutboundCIDRs") {
            c.include_outbound_cidrs = if is_star(v) {
                None
            } else {
                Some(parse_cidrs(v, "capture.includeOutboundCIDRs")?)
            };
        }
        if let Some(v) = f("excludeOutboundCIDRs") {
            c.exclude_outbound_cidrs = parse_cidrs(v, "capture.excludeOutboundCIDRs")?;
        }
        if let Some(v) = f("excludeInterfaces") {
            c.exclude_interfaces = parse_ifnames(v, "capture.excludeInterfaces")?;
        }
        if let Some(v) = f("excludeNamespaces") {
            c.exclude_namespaces = crate::fields::list(v, "capture.excludeNamespaces")?;
        }
        if let Some(v) = f("interceptionMode") {
            c.interception = v.as_str().and_then(Interception::parse).ok_or_else(|| {
                CniError::config("capture.interceptionMode: must be \"REDIRECT\" or \"TPROXY\"")
            })?;
        }
        if let Some(v) = f("dnsCapture") {
            c.dns_capture = v
                .as_bool()
                .ok_or_else(|| CniError::config("capture.dnsCapture: must be a boolean"))?;
        }
        if let Some(v) = f("dnsPort") {
            c.dns_port = parse_port(v, "capture.dnsPort")?;
        }
        if let Some(v) = f("dropInvalid") {
            c.drop_invalid = v
                .as_bool()
                .ok_or_else(|| CniError::config("capture.dropInvalid: must be a boolean"))?;
        }
        if let Some(v) = f("rerouteInterfaces") {
            c.reroute_interfaces = parse_ifnames(v, "capture.rerouteInterfaces")?;
        }
        Ok(c)
    }

    /// The canonical JSON form (every field explicit), stored in state so
    /// CHECK and DEL rebuild exactly the plan ADD programmed.
    pub fn to_json(&self) -> Value {
        let ports = |p: &[u16]| Value::from(p.to_vec());
        let cidrs = |c: &[Cidr]| Value::from(c.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        let mut m = Map::new();
        m.insert("enabled".into(), self.enabled.into());
        m.insert("profile".into(), self.profile.name().into());
        m.insert("backend".into(), self.backend.name().into());
        m.insert("iptablesVariant".into(), self.variant.name().into());
        m.insert("inboundPort".into(), self.inbound_port.into());
        m.insert("outboundPort".into(), self.outbound_port.into());
        m.insert("proxyUID".into(), self.proxy_uid.into());
        if let Some(g) = self.proxy_gid {
            m.insert("proxyGID".into(), g.into());
        }
        match &self.inbound {
            PortSet::AllExcept(ex) => {
                m.insert("includeInboundPorts".into(), "*".into());
                m.insert("excludeInboundPorts".into(), ports(ex));
            }
            PortSet::Only(p) => {
                m.insert("includeInboundPorts".into(), ports(p));
            }
        }
        m.insert(
            "excludeOutboundPorts".into(),
            ports(&self.exclude_outbound_ports),
        );
        m.insert(
            "includeOutboundPorts".into(),
            ports(&self.include_outbound_ports),
        );
        m.insert(
            "includeOutboundCIDRs".into(),
            match &self.include_outbound_cidrs {
                None => "*".into(),
                Some(c) => cidrs(c),
            },
        );
        m.insert(
            "excludeOutboundCIDRs".into(),
            cidrs(&self.exclude_outbound_cidrs),
        );
        m.insert("excludeInterfaces".into(), json!(self.exclude_interfaces));
        m.insert("excludeNamespaces".into(), json!(self.exclude_namespaces));
        m.insert("interceptionMode".into(), self.interception.name().into());
        m.insert("dnsCapture".into(), self.dns_capture.into());
        m.insert("dnsPort".into(), self.dns_port.into());
        m.insert("dropInvalid".into(), self.drop_invalid.into());
        m.insert("rerouteInterfaces".into(), json!(self.reroute_interfaces));
        Value::Object(m)
    }
}

fn is_star(v: &Value) -> bool {
    v.as_str().map(str::trim) == Some("*")
}

pub fn parse_port_str(s: &str, field: &str) -> Result<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p as u16),
        _ => Err(CniError::config(format!(
            "{field}: {s:?} is not a port number (1-65535)"
        ))),
    }
}

fn parse_port(v: &Value, field: &str) -> Result<u16> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
            _ => Err(CniError::config(format!(
                "{field}: {n} is not a port number (1-65535)"
            ))),
        },
        Value::String(s) => parse_port_str(s.trim(), field),
        _ => Err(CniError::config(format!("{field}: must be a port number"))),
    }
}

/// Ports: numbers; duplicates removed, order kept.
pub fn parse_ports(v: &Value, field: &str) -> Result<Vec<u16>> {
    let mut out = Vec::new();
    for s in crate::fields::list(v, field)? {
        let p = parse_port_str(&s, field)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

pub fn parse_cidrs(v: &Value, field: &str) -> Result<Vec<Cidr>> {
    let mut out = Vec::new();
    for s in crate::fields::list(v, field)? {
        let c: Cidr = s
            .parse()
            .map_err(|e| CniError::config(format!("{field}: {e}")))?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

pub fn parse_ifnames(v: &Value, field: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for s in crate::fields::list(v, field)? {
        crate::cni::validate_ifname(&s).map_err(|e| CniError::config(format!("{field}: {e}")))?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The capture an attachment sets up in its pod netns — its config, the
/// iptables variant resolved for it, whether IPv6 is covered — recorded
/// in state before it is programmed, so DEL and CHECK need nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub config: CaptureConfig,
    /// The resolved iptables variant (never Auto) for the iptables backend.
    pub variant: Variant,
    pub ipv6: bool,
}

impl Setup {
    pub fn to_json(&self) -> Value {
        json!({"config": self.config.to_json(), "variant": self.variant.name(), "ipv6": self.ipv6})
    }
    pub fn from_json(v: &Value) -> Result<Self> {
        let config = CaptureConfig::from_json(v.get("config"))?;
        let variant = match v.get("variant").and_then(Value::as_str) {
            Some("legacy") => Variant::Legacy,
            Some("nft") => Variant::Nft,
            _ => Variant::Auto,
        };
        Ok(Setup {
            config,
            variant,
            ipv6: v.get("ipv6").and_then(Value::as_bool).unwrap_or(false),
        })
    }
    /// What ADD will program: the config with the iptables variant
    /// resolved (detected once per node, see `iptables::resolve_variant`).
    pub fn resolve(config: &CaptureConfig, ipv6: bool, state_dir: &Path) -> Result<Self> {
        let variant = match config.backend {
            Backend::Iptables => iptables::resolve_variant(config.variant, state_dir)?,
            Backend::Nftables => Variant::Auto,
        };
        Ok(Setup {
            config: config.clone(),
            variant,
            ipv6,
        })
    }

    pub fn plan(&self) -> Plan {
        Plan::new(&self.config, self.ipv6)
    }
}

/// A failed apply. `clean`: nothing this apply did remains in the netns
/// (each step is atomic and partial work was undone), so there is nothing
/// for a rollback to remove.
#[derive(Debug)]
pub struct ApplyError {
    pub error: CniError,
    pub clean: bool,
}

/// A capture backend: how a [`Plan`] becomes rules in a pod netns. One
/// implementation per [`Backend`]: [`iptables::Iptables`] (one
/// `iptables-restore` per family, legacy or nft variant) and
/// [`nftnl::Nftables`] (one nf_tables netlink transaction). Callers pick one
/// with [`Setup::driver`] (or [`driver`]) and never match on the backend.
pub trait Driver {
    /// The rules as this backend programs them (`multimesh rules`).
    fn render(&self, plan: &Plan) -> String;
    /// Converge `ns` to exactly `plan`, atomically per step.
    fn apply(&self, plan: &Plan, ns: &NetNs) -> std::result::Result<(), ApplyError>;
    /// Add the IPv6 part of `plan` to a single-stack apply of it.
    fn add_ipv6(&self, plan: &Plan, ns: &NetNs) -> std::result::Result<(), ApplyError>;
    /// Remove what multimesh programmed; succeeds when it is partly or
    /// wholly gone.
    fn remove(&self, plan: &Plan, ns: &NetNs) -> Result<()>;
    /// Compare `ns` with `plan`; CAPTURE_DRIFT when they differ.
    fn check(&self, plan: &Plan, ns: &NetNs) -> Result<()>;
    /// What of multimesh's this backend finds in `ns` (`multimesh
    /// inspect`), None when there is nothing.
    fn describe(&self, ns: &NetNs) -> Result<Option<String>>;
}

/// The driver for `backend`. `variant` must be resolved (not Auto) for the
/// iptables backend to touch a netns; `lock_dir` holds its xtables lock.
pub fn driver(backend: Backend, variant: Variant, lock_dir: &Path) -> Box<dyn Driver + '_> {
    match backend {
        Backend::Iptables => Box::new(iptables::Iptables { variant, lock_dir }),
        Backend::Nftables => Box::new(nftnl::Nftables),
    }
}

/// Every driver `inspect` asks: iptables (both variants) and nftables.
pub fn all_drivers(lock_dir: &Path) -> Vec<Box<dyn Driver + '_>> {
    vec![
        driver(Backend::Iptables, Variant::Legacy, lock_dir),
        driver(Backend::Iptables, Variant::Nft, lock_dir),
        driver(Backend::Nftables, Variant::Auto, lock_dir),
    ]
}

/// The rules for a capture config as its backend would program them.
pub fn render(cfg: &CaptureConfig, ipv6: bool) -> String {
    if !cfg.enabled {
        return "# capture disabled: no rules\n".into();
    }
    driver(cfg.backend, cfg.variant, Path::new("")).render(&Plan::new(cfg, ipv6))
}

impl Setup {
    /// This capture's driver; `state_dir` (the pod's state directory)
    /// holds the xtables lock file and leads to the node's variant cache.
    pub fn driver<'a>(&self, state_dir: &'a Path) -> Result<Box<dyn Driver + 'a>> {
        let variant = match self.config.backend {
            Backend::Iptables => iptables::resolve_variant(self.variant, state_dir)?,
            Backend::Nftables => Variant::Auto,
        };
        Ok(driver(self.config.backend, variant, state_dir))
    }
}

/// Program capture in `ns`. Idempotent: converges to exactly the plan.
pub fn apply(p: &Setup, ns: &NetNs, state_dir: &Path) -> std::result::Result<(), ApplyError> {
    let driver = p
        .driver(state_dir)
        .map_err(|error| ApplyError { error, clean: true })?;
    let plan = p.plan();
    driver.apply(&plan, ns)?;
    with_routing(&*driver, &plan, ns)
}

/// Add the IPv6 part to capture `apply` programmed single-stack (`p` is
/// the same capture with `ipv6` set); see [`Driver::add_ipv6`].
pub fn add_ipv6(p: &Setup, ns: &NetNs, state_dir: &Path) -> std::result::Result<(), ApplyError> {
    let driver = p.driver(state_dir).map_err(|error| ApplyError {
        error,
        clean: false,
    })?;
    let plan = p.plan();
    driver.add_ipv6(&plan, ns)?;
    with_routing(&*driver, &plan, ns)
}

/// The TPROXY policy routing after the driver's rules; when it fails,
/// the rules and whatever routing was added are removed again.
fn with_routing(
    driver: &dyn Driver,
    plan: &Plan,
    ns: &NetNs,
) -> std::result::Result<(), ApplyError> {
    if !plan.tproxy() {
        return Ok(());
    }
    route::apply(ns, &plan.families()).map_err(|error| {
        let undone = driver.remove(plan, ns).and(route::remove(ns));
        if let Err(e) = &undone {
            log::error!("undoing capture after failed TPROXY routing: {e}");
        }
        ApplyError {
            error,
            clean: undone.is_ok(),
        }
    })
}

/// Remove what multimesh programmed; succeeds when it is partly or wholly gone.
pub fn remove(p: &Setup, ns: &NetNs, state_dir: &Path) -> Result<()> {
    let plan = p.plan();
    let rules = p.driver(state_dir)?.remove(&plan, ns);
    if plan.tproxy() {
        route::remove(ns)?;
    }
    rules
}

/// Compare what is in `ns` with the plan; CAPTURE_DRIFT when they differ.
pub fn check(p: &Setup, ns: &NetNs, state_dir: &Path) -> Result<()> {
    let plan = p.plan();
    p.driver(state_dir)?.check(&plan, ns)?;
    if plan.tproxy() {
        route::check(ns, &plan.families())?;
    }
    Ok(())
}

/// Locate a tool in PATH or the usual sbin directories.
pub(crate) fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]
                .iter()
                .map(Into::into),
        )
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub(crate) const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
