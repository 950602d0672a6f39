//! The networks one CNI call attaches, in order, each on its interface:
//! from the node's config alone (`from_config`), or for a Kubernetes pod
//! from its annotations and NetworkAttachmentDefinitions (`pod::for_pod`).
//! Pure: nothing runs here.

pub mod pod;

use crate::config::{self, NetConf};
use crate::delegate::Delegate;
use crate::error::Result;
use serde_json::{Map, Value};

/// A delegate to attach on an interface.
pub struct Network {
    pub ifname: String,
    pub delegate: Delegate,
    pub runtime_config: Option<Map<String, Value>>,
    /// The name network-status reports (a NAD's `ns/name`, a conf's name).
    pub status_name: String,
    /// Gateways requested by the pod (`default-route`): this interface
    /// takes the default route of their families.
    pub default_route: Vec<std::net::IpAddr>,
    /// From a NetworkAttachmentDefinition: tenant input (docs/security.md).
    pub nad: bool,
}

/// The static attachment list: the cluster network (first delegate or
/// `clusterNetwork`) on CNI_IFNAME, then `defaultNetworks` and any further
/// delegates as net1, net2, ...
pub fn from_config(conf: &NetConf, ifname: &str) -> Result<Vec<Network>> {
    let mut raw: Vec<Value> = Vec::new();
    let rest: &[Value] = match &conf.cluster_network {
        Some(cn) => {
            raw.push(config::load_network(&conf.conf_dir, cn)?);
            &conf.delegates
        }
        None if !conf.delegates.is_empty() => {
            raw.push(conf.delegates[0].clone());
            &conf.delegates[1..]
        }
        None => &[],
    };
    for dn in &conf.default_networks {
        raw.push(config::load_network(&conf.conf_dir, dn)?);
    }
    raw.extend(rest.iter().cloned());
    let mut out = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        let d = Delegate::from_value(v, &conf.cni_version)
            .map_err(|e| e.context(format!("delegate {i}")))?;
        let ifname = if i == 0 {
            ifname.to_string()
        } else {
            format!("net{i}")
        };
        out.push(Network {
            nad: false,
            ifname,
            status_name: d.name.clone(),
            default_route: Vec::new(),
            delegate: d,
            // As Multus: the runtime's runtimeConfig (portMappings, ...)
            // belongs to the cluster network.
            runtime_config: if i == 0 {
                conf.runtime_config.clone()
            } else {
                None
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> NetConf {
        NetConf::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn ifnames_by_position() {
        let c = conf(json!({"cniVersion": "1.0.0", "name": "m", "delegates": [
            {"name": "a", "type": "bridge"}, {"name": "b", "type": "macvlan"}, {"name": "c", "type": "ptp"}]}));
        let p = from_config(&c, "eth0").unwrap();
        let names: Vec<_> = p
            .iter()
            .map(|x| (x.ifname.as_str(), x.delegate.name.as_str()))
            .collect();
        assert_eq!(names, [("eth0", "a"), ("net1", "b"), ("net2", "c")]);
        // A delegate without cniVersion inherits the config's.
        assert_eq!(p[1].delegate.version, "1.0.0");
        let p = from_config(&c, "pod0").unwrap();
        assert_eq!(p[0].ifname, "pod0");
    }

    #[test]
    fn cluster_network_then_default_networks_then_delegates() {
        let dir = std::env::temp_dir().join(format!("mm-networks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("00-k.conf"),
            r#"{"cniVersion":"0.4.0","name":"kube","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("50-s.conflist"), r#"{"cniVersion":"1.0.0","name":"storage","plugins":[{"type":"macvlan"},{"type":"tuning"}]}"#).unwrap();
        let c = conf(json!({"cniVersion": "1.0.0", "name": "m", "confDir": dir,
            "clusterNetwork": "kube", "defaultNetworks": ["50-s"],
            "delegates": [{"name": "extra", "type": "ptp"}],
            "runtimeConfig": {"portMappings": []}}));
        let p = from_config(&c, "eth0").unwrap();
        let names: Vec<_> = p
            .iter()
            .map(|x| (x.ifname.as_str(), x.delegate.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [("eth0", "kube"), ("net1", "storage"), ("net2", "extra")]
        );
        assert_eq!(p[0].delegate.version, "0.4.0");
        assert_eq!(p[1].delegate.plugins.len(), 2);
        // Only the cluster network gets the runtime's runtimeConfig.
        assert!(p[0].runtime_config.is_some());
        assert!(p[1].runtime_config.is_none() && p[2].runtime_config.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
