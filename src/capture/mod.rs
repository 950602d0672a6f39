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

/// Program capture in `ns`. Idempotent: converges to exactly the plan.
/// `state_dir` (the pod's state directory) holds its xtables lock file.
pub fn apply(p: &Setup, ns: &NetNs, state_dir: &Path) -> std::result::Result<(), ApplyError> {
    let plan = p.plan();
    match p.config.backend {
        Backend::Iptables => {
            let variant = iptables::resolve_variant(p.variant, state_dir)
                .map_err(|error| ApplyError { error, clean: true })?;
            iptables::apply(&plan, variant, ns, state_dir)
        }
        // One nft transaction: all or nothing.
        Backend::Nftables => {
            nftnl::apply(&plan, ns).map_err(|error| ApplyError { error, clean: true })
        }
    }
}

/// Add the IPv6 part to capture `apply` programmed single-stack (`p` is
/// the same capture with `ipv6` set). iptables: the ip6tables family only;
/// on failure the IPv4 family is removed again, so `clean` still means
/// nothing remains. nftables: the `inet` table is replaced in one
/// transaction; a failed one leaves the single-stack table, so not clean.
pub fn add_ipv6(p: &Setup, ns: &NetNs, state_dir: &Path) -> std::result::Result<(), ApplyError> {
    let plan = p.plan();
    match p.config.backend {
        Backend::Iptables => {
            let variant =
                iptables::resolve_variant(p.variant, state_dir).map_err(|error| ApplyError {
                    error,
                    clean: false,
                })?;
            iptables::apply_rest(&plan, variant, ns, state_dir, &[Family::V4])
        }
        Backend::Nftables => nftnl::apply(&plan, ns).map_err(|error| ApplyError {
            error,
            clean: false,
        }),
    }
}

/// Remove what multimesh programmed; succeeds when it is partly or wholly gone.
pub fn remove(p: &Setup, ns: &NetNs, state_dir: &Path) -> Result<()> {
    match p.config.backend {
        Backend::Iptables => {
            let variant = iptables::resolve_variant(p.variant, state_dir)?;
            iptables::remove(&p.plan(), variant, ns, state_dir)
        }
        Backend::Nftables => nftnl::remove(ns),
    }
}

/// Compare what is in `ns` with the plan; CAPTURE_DRIFT when they differ.
pub fn check(p: &Setup, ns: &NetNs, state_dir: &Path) -> Result<()> {
    let plan = p.plan();
    match p.config.backend {
        Backend::Iptables => {
            let variant = iptables::resolve_variant(p.variant, state_dir)?;
            iptables::check(&plan, variant, ns)
        }
        Backend::Nftables => nft::check(&plan, ns),
    }
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
