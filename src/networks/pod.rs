//! The attachment list for a pod in Kubernetes mode, Multus's way:
//! the cluster network (or the pod's default-network) on CNI_IFNAME, then
//! `defaultNetworks` (unless the pod is in a system namespace), then the
//! networks the pod's annotation asks for, named `net<position>` unless
//! the request names an interface.

use super::Network;
use crate::capture::CaptureConfig;
use crate::config::{self, NetConf};
use crate::delegate::Delegate;
use crate::error::{code, CniError, Result};
use crate::k8s::pod::{self, bad, Selection};
use crate::k8s::Session;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// A pod's networks and whether (and how) it is captured.
pub struct PodNetworks {
    pub networks: Vec<Network>,
    /// None: the pod is not meshed (or capture is off).
    pub capture: Option<CaptureConfig>,
}

/// A network config from a NAD: `spec.config` (conf or conflist), or the
/// file of the same name in confDir when it is empty.
fn nad_config(conf: &NetConf, nad: &pod::Nad, ns: &str, name: &str) -> Result<Value> {
    let ctx = |e: CniError| e.context(format!("NetworkAttachmentDefinition {ns}/{name}"));
    let text = nad.spec.config.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        return config::load_network(&conf.conf_dir, name).map_err(ctx);
    }
    if text.len() > MAX_NAD_CONFIG_BYTES {
        return Err(ctx(CniError::config(format!(
            "spec.config is {} bytes, more than the {MAX_NAD_CONFIG_BYTES} accepted",
            text.len()
        ))));
    }
    let mut v: Value = serde_json::from_str(text)
        .map_err(|e| ctx(CniError::config(format!("spec.config is not JSON: {e}"))))?;
    if pod::json_depth(&v) > pod::MAX_JSON_DEPTH {
        return Err(ctx(CniError::config(format!(
            "spec.config is nested deeper than {} levels",
            pod::MAX_JSON_DEPTH
        ))));
    }
    let o = v
        .as_object_mut()
        .ok_or_else(|| ctx(CniError::config("spec.config must be a JSON object")))?;
    if !o.contains_key("name") {
        o.insert("name".into(), name.into());
    }
    Ok(v)
}

/// Longest `spec.config` of a NetworkAttachmentDefinition accepted.
pub const MAX_NAD_CONFIG_BYTES: usize = 256 * 1024;

/// `cni-args` go to every plugin of the delegate as `args.cni`.
fn with_cni_args(mut d: Delegate, args: Option<&Map<String, Value>>) -> Delegate {
    if let Some(a) = args {
        for p in d.plugins.iter_mut() {
            let outer = p.entry("args").or_insert_with(|| Value::Object(Map::new()));
            if !outer.is_object() {
                *outer = Value::Object(Map::new());
            }
            if let Some(o) = outer.as_object_mut() {
                let cni = o.entry("cni").or_insert_with(|| Value::Object(Map::new()));
                if !cni.is_object() {
                    *cni = Value::Object(Map::new());
                }
                if let Some(c) = cni.as_object_mut() {
                    for (k, v) in a {
                        c.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    d
}

/// A cluster/default network named in the config: a path, a conf in
/// confDir, or else a NAD (`ns/name`, or `name` in multusNamespace).
fn named_network(conf: &NetConf, s: &mut Session, key: &str) -> Result<Item> {
    // A conf in confDir: named by its network name (the key without one).
    let from_file = |v: Value| {
        let mut it = Item::node(v);
        if it.status_name.is_empty() {
            it.status_name = key.to_string();
        }
        it
    };
    if key.starts_with('/') {
        return Ok(from_file(config::load_network(&conf.conf_dir, key)?));
    }
    let (ns, name) = match key.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => {
            if let Ok(v) = config::load_network(&conf.conf_dir, key) {
                return Ok(from_file(v));
            }
            (conf.multus_namespace.clone(), key.to_string())
        }
    };
    let nad = s.nad(&ns, &name).map_err(|e| {
        if e.code == code::POD_REQUEST {
            CniError::config(format!(
                "network {key:?} is neither in confDir {} nor a NetworkAttachmentDefinition ({})",
                conf.conf_dir.display(),
                e.msg
            ))
        } else {
            e
        }
    })?;
    Ok(Item {
        conf: nad_config(conf, &nad, &ns, &name)?,
        nad: true,
        status_name: format!("{ns}/{name}"),
        capture: pod::nad_capture(&nad)?,
        sel: None,
        runtime_config: None,
    })
}

/// `namespaceIsolation`: a pod may name networks of its own namespace and
/// of `globalNamespaces` — by any annotation. The default network may also
/// come from `multusNamespace` (`admin_ns`), the admin's own namespace
/// where a bare default-network name is looked up, as in Multus.
fn isolation(
    conf: &NetConf,
    (pod_ns, admin_ns): (&str, Option<&str>),
    ns: &str,
    net: &str,
    ann: &str,
) -> Result<()> {
    if conf.namespace_isolation
        && ns != pod_ns
        && admin_ns != Some(ns)
        && !conf.global_namespaces.iter().any(|g| g == ns)
    {
        return Err(bad(format!(
            "{ann}: pod in namespace {pod_ns} may not use network {ns}/{net} (namespaceIsolation)"
        )));
    }
    Ok(())
}

struct Item {
    conf: Value,
    /// From a NetworkAttachmentDefinition (tenant input).
    nad: bool,
    status_name: String,
    capture: bool,
    sel: Option<Selection>,
    runtime_config: Option<Map<String, Value>>,
}

impl Item {
    /// A network from the node's own config (a delegate or a confDir
    /// file): captured, not tenant input, named by its network name.
    fn node(conf: Value) -> Item {
        Item {
            status_name: conf
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            conf,
            nad: false,
            capture: true,
            sel: None,
            runtime_config: None,
        }
    }
}

/// A network the pod asked for (by annotation `ann`): its NAD, fetched once.
fn requested(
    conf: &NetConf,
    s: &mut Session,
    ns: &str,
    sel: Selection,
    runtime_config: Option<Map<String, Value>>,
    ann: &str,
) -> Result<Item> {
    let nad = s.nad(ns, &sel.name).map_err(|e| {
        if e.code == code::POD_REQUEST {
            e.context(ann)
        } else {
            e
        }
    })?;
    Ok(Item {
        nad: true,
        conf: nad_config(conf, &nad, ns, &sel.name)?,
        status_name: format!("{ns}/{}", sel.name),
        capture: pod::nad_capture(&nad)?,
        runtime_config,
        sel: Some(sel),
    })
}

pub fn for_pod(conf: &NetConf, ifname: &str, s: &mut Session) -> Result<PodNetworks> {
    let pod_ns = s.pod_ref.namespace.clone();
    let mut items: Vec<Item> = Vec::new();
    // The pod's requests are parsed and counted before any NAD is fetched:
    // the work a pod can cause is bounded by maxNetworksPerPod.
    let requests = match s.pod.annotation(pod::NETWORKS) {
        Some(a) => pod::parse_networks(a)?,
        None => Vec::new(),
    };
    let extra = match conf.cluster_network {
        Some(_) => conf.delegates.len(),
        None => conf.delegates.len().saturating_sub(1),
    };
    let fixed = 1 + extra + conf.default_networks.len();
    if requests.len() + fixed > conf.max_networks_per_pod {
        return Err(bad(format!(
            "{}: {} networks requested; with the {fixed} every pod gets that is more than maxNetworksPerPod ({})",
            pod::NETWORKS,
            requests.len(),
            conf.max_networks_per_pod
        )));
    }

    // 1. The cluster network, or the pod's replacement for it.
    let default_ann = s.pod.annotation(pod::DEFAULT_NETWORK).map(String::from);
    let extra_delegates: &[Value];
    match default_ann {
        Some(a) => {
            let sel = pod::parse_default_network(&a)?;
            if sel.interface.is_some() {
                return Err(bad(format!(
                    "{}: the default network cannot name an interface",
                    pod::DEFAULT_NETWORK
                )));
            }
            // As Multus: the default network's NAD lives in multusNamespace
            // unless the annotation names a namespace.
            let ns = sel
                .namespace
                .clone()
                .unwrap_or_else(|| conf.multus_namespace.clone());
            isolation(
                conf,
                (&pod_ns, Some(&conf.multus_namespace)),
                &ns,
                &sel.name,
                pod::DEFAULT_NETWORK,
            )?;
            let runtime_config = conf.runtime_config.clone();
            items.push(requested(
                conf,
                s,
                &ns,
                sel,
                runtime_config,
                pod::DEFAULT_NETWORK,
            )?);
            if conf.cluster_network.is_none() && !conf.delegates.is_empty() {
                extra_delegates = &conf.delegates[1..];
            } else {
                extra_delegates = &conf.delegates;
            }
        }
        None => match &conf.cluster_network {
            Some(cn) => {
                items.push(Item {
                    runtime_config: conf.runtime_config.clone(),
                    ..named_network(conf, s, cn)?
                });
                extra_delegates = &conf.delegates;
            }
            None => {
                let first = conf.delegates.first().ok_or_else(|| {
                    CniError::config("no cluster network: set delegates or clusterNetwork")
                })?;
                items.push(Item {
                    runtime_config: conf.runtime_config.clone(),
                    ..Item::node(first.clone())
                });
                extra_delegates = &conf.delegates[1..];
            }
        },
    }

    // 2. defaultNetworks, except for pods in system namespaces.
    if !conf.system_namespaces.iter().any(|n| n == &pod_ns) {
        for dn in &conf.default_networks {
            items.push(named_network(conf, s, dn)?);
        }
    }
    items.extend(extra_delegates.iter().cloned().map(Item::node));

    // 3. What the pod asks for.
    for sel in requests {
        let ns = sel.namespace.clone().unwrap_or_else(|| pod_ns.clone());
        isolation(conf, (&pod_ns, None), &ns, &sel.name, pod::NETWORKS)?;
        let runtime_config = sel.runtime_config();
        items.push(requested(conf, s, &ns, sel, runtime_config, pod::NETWORKS)?);
    }

    // Delegates and interface names.
    let mut networks: Vec<Network> = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        let d = Delegate::from_value(&it.conf, &conf.cni_version)
            .map_err(|e| e.context(format!("network {}", it.status_name)))?;
        let d = with_cni_args(d, it.sel.as_ref().and_then(|s| s.cni_args.as_ref()));
        let name = if i == 0 {
            ifname.to_string()
        } else {
            it.sel
                .as_ref()
                .and_then(|s| s.interface.clone())
                .unwrap_or_else(|| format!("net{i}"))
        };
        if networks.iter().any(|p| p.ifname == name) {
            return Err(bad(format!(
                "{}: interface {name} is requested twice",
                pod::NETWORKS
            )));
        }
        if !it.capture {
            excluded.push(name.clone());
        }
        let default_route: Vec<IpAddr> = it
            .sel
            .as_ref()
            .map(|s| s.default_route.clone())
            .unwrap_or_default();
        networks.push(Network {
            nad: it.nad,
            ifname: name,
            delegate: d,
            runtime_config: it.runtime_config,
            status_name: it.status_name,
            default_route,
        });
    }

    let capture = match s.capture(&conf.capture)? {
        Some(mut c) => {
            for x in excluded {
                if !c.exclude_interfaces.contains(&x) {
                    c.exclude_interfaces.push(x);
                }
            }
            Some(c)
        }
        None => None,
    };
    Ok(PodNetworks { networks, capture })
}
