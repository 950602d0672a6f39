//! Mesh capture: TCP interception in a pod network namespace.
//!
//! The core is pure: a [`CaptureConfig`] (from the `capture` object, later
//! merged with pod annotations) becomes a [`Plan`], and the plan becomes a
//! list of [`Rule`]s per address family. Renderers turn rules into an
//! `iptables-restore` payload or an nftables ruleset; the backends apply a
//! payload in one atomic step inside the pod netns. Nothing here splices
//! user text into rules: every value is parsed into a number, an address or
//! a validated interface name first.

pub mod config;
pub mod iptables;
pub mod nft;
pub mod nftnl;
pub mod plan;
pub mod route;

pub use config::{parse_cidrs, parse_ifnames, parse_port_str, parse_ports};
pub use config::{CaptureConfig, PortSet, Profile};
pub use plan::{Cidr, Family, Plan};

use crate::error::{CniError, Result};
use crate::netns::NetNs;
use serde_json::{json, Value};
use std::path::Path;

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
    let plan = Plan::new(cfg, ipv6);
    let rules = driver(cfg.backend, cfg.variant, Path::new("")).render(&plan);
    rules + &route::render(&plan)
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
