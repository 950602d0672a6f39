//! `multimesh rules`: the capture rules for a config (and a pod), printed
//! as the backend would program them, without touching the system.

use crate::capture::{self, Backend};
use crate::config::NetConf;
use crate::flags::Flags;
use std::io::Read;

const RULES_HELP: &str = "\
Usage: multimesh rules --config FILE [--ipv6] [--backend iptables|nftables]
                      [--pod POD.json|yaml | --annotations FILE]
Print the capture rules multimesh would program for a network config (FILE,
or - for stdin), without touching the system. --pod applies a pod's mesh
annotations and decides, as Kubernetes mode does, whether it is captured at
all; --annotations applies an annotation map (JSON or YAML) as if the pod
were meshed.
";

pub fn main(args: &[&str]) -> Result<String, String> {
    let Some(f) = Flags::parse(
        args,
        &["config", "backend", "pod", "annotations"],
        &["ipv6"],
    )
    .map_err(|e| format!("rules: {e}"))?
    else {
        return Ok(RULES_HELP.to_string());
    };
    let file = f
        .value("config")
        .ok_or("rules: --config FILE is required")?;
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("read stdin: {e}"))?;
    } else {
        bytes = std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?;
    }
    let conf = NetConf::parse(&bytes).map_err(|e| e.to_string())?;
    let mut cfg = conf.capture.clone();
    match f.value("backend") {
        Some("iptables") => cfg.backend = Backend::Iptables,
        Some("nftables") => cfg.backend = Backend::Nftables,
        Some(b) => return Err(format!("unknown backend {b:?}")),
        None => {}
    }
    let ipv6 = f.switch("ipv6");
    let read_doc = |f: &str| -> Result<serde_json::Value, String> {
        let t = std::fs::read_to_string(f).map_err(|e| format!("read {f}: {e}"))?;
        crate::k8s::yaml_to_json(&t).map_err(|e| format!("{f}: {e}"))
    };
    let pod = match (f.value("pod"), f.value("annotations")) {
        (Some(_), Some(_)) => return Err("rules: give --pod or --annotations, not both".into()),
        (Some(f), None) => Some(read_doc(f)?),
        (None, Some(f)) => {
            let ann = read_doc(f)?;
            if !ann.is_object() {
                return Err(format!("{f}: annotations must be a map"));
            }
            let (proxy, status) = match cfg.profile {
                capture::Profile::Istio => ("istio-proxy", "sidecar.istio.io/status"),
                capture::Profile::Linkerd => ("linkerd-proxy", "linkerd.io/proxy-version"),
            };
            let mut ann = ann;
            if let Some(m) = ann.as_object_mut() {
                m.entry(status).or_insert_with(|| "{}".into());
            }
            Some(
                serde_json::json!({"metadata": {"namespace": "default", "annotations": ann},
                "spec": {"containers": [{"name": proxy}]}}),
            )
        }
        (None, None) => None,
    };
    if let Some(pod) = pod {
        let pod = crate::k8s::pod::Pod::from_json(&pod).map_err(|e| format!("the pod: {e}"))?;
        return match crate::k8s::pod::capture_for_pod(&cfg, &pod, None) {
            Err(e) => Err(e.to_string()),
            Ok(None) => Ok(format!(
                "# pod not captured (profile {}, not meshed, capture disabled or namespace excluded): no rules\n",
                cfg.profile.name()
            )),
            Ok(Some(c)) => Ok(capture::render(&c, ipv6)),
        };
    }
    Ok(capture::render(&cfg, ipv6))
}
