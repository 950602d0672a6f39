//! The Kubernetes manifests under conf/k8s: schema-validated, and consistent
//! with each other and with `multimesh install`.
//!
//! Built-in kinds are validated by `kubernetes-validate --strict` (PyPI,
//! pinned in scripts/requirements-k8s.txt, installed by scripts/deps.sh into
//! /opt/multimesh-venv, or $MULTIMESH_VENV) against the Kubernetes schemas
//! of K8S_VERSION. Kinds defined by a CRD (NetworkAttachmentDefinition) are
//! not in those schemas: tests/validate_custom_resources.py validates them
//! against the CRD's openAPIV3Schema with the same strictness. Every document
//! must be passed by one of the two; a document neither validates fails.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_multimesh");
const K8S_VERSION: &str = "1.31.0";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("MULTIMESH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/multimesh-venv"));
    let p = venv.join("bin").join(name);
    assert!(
        p.exists(),
        "{} not found: run scripts/deps.sh (installs kubernetes-validate)",
        p.display()
    );
    p
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    v.sort();
    v
}

fn k8s_dir() -> PathBuf {
    repo().join("conf/k8s")
}

struct Run {
    ok: bool,
    out: String,
}

fn run(cmd: &mut Command) -> Run {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    Run {
        ok: o.status.success(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

fn kubernetes_validate(files: &[PathBuf], strict: bool) -> Run {
    let mut c = Command::new(venv_tool("kubernetes-validate"));
    c.args(["-k", K8S_VERSION]);
    if strict {
        c.arg("--strict");
    }
    run(c.args(files))
}

fn validate_custom_resources(files: &[PathBuf]) -> Run {
    let mut c = Command::new(venv_tool("python"));
    c.arg(repo().join("tests/validate_custom_resources.py"))
        .args(["-k", K8S_VERSION, "--strict"]);
    run(c.args(files))
}

/// Every document of every file, parsed by the same YAML loader.
fn documents(files: &[PathBuf]) -> Vec<(PathBuf, Value)> {
    let mut c = Command::new(venv_tool("python"));
    c.arg(repo().join("tests/validate_custom_resources.py"))
        .arg("--dump")
        .args(files);
    let r = run(&mut c);
    assert!(r.ok, "{}", r.out);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| (PathBuf::from(d["file"].as_str().unwrap()), d["doc"].clone()))
        .collect()
}

/// Validate every document of `files`; Err with the validators' output
/// when any is invalid or validated by neither validator.
fn validate_all(files: &[PathBuf]) -> Result<String, String> {
    let kv = kubernetes_validate(files, true);
    let cr = validate_custom_resources(files);
    let report = format!(
        "kubernetes-validate --strict:\n{}\nvalidate_custom_resources.py --strict:\n{}",
        kv.out, cr.out
    );
    if !kv.ok || !cr.ok || kv.out.contains("ERROR") || cr.out.contains("ERROR") {
        return Err(report);
    }
    // Count: each document passed exactly one validator.
    let mut passed: BTreeMap<String, usize> = BTreeMap::new();
    for l in kv.out.lines().filter(|l| l.starts_with("INFO ")) {
        if l.contains(" passed for resource ") {
            let f = l.split_whitespace().nth(1).unwrap().to_string();
            *passed.entry(f).or_default() += 1;
        }
    }
    for l in cr.out.lines().filter(|l| l.starts_with("PASS ")) {
        let f = l[5..].split(": ").next().unwrap().to_string();
        *passed.entry(f).or_default() += 1;
    }
    for f in files {
        let docs = documents(std::slice::from_ref(f)).len();
        let got = passed.get(f.to_str().unwrap()).copied().unwrap_or(0);
        if docs == 0 || got != docs {
            return Err(format!(
                "{}: {docs} documents, {got} validated\n{report}",
                f.display()
            ));
        }
    }
    Ok(report)
}

#[test]
fn every_manifest_validates() {
    let files = yaml_files(&k8s_dir());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "crd-network-attachment-definition.yaml",
        "rbac.yaml",
        "daemonset.yaml",
        "nad-bridge.yaml",
        "nad-macvlan.yaml",
        "pod-meshed.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let report = validate_all(&files).unwrap_or_else(|e| panic!("invalid manifests\n{e}"));
    // The NADs went through the CRD schema, not around it.
    assert!(
        report.contains("NetworkAttachmentDefinition/bridge-net against CRD"),
        "{report}"
    );
}

/// A scratch directory with the CRD and one edited copy of a manifest.
struct Broken {
    dir: PathBuf,
}

impl Drop for Broken {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Broken {
    fn new(file: &str, from: &str, to: &str) -> Broken {
        let dir = std::env::temp_dir().join(format!(
            "mm-manifests-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let crd = "crd-network-attachment-definition.yaml";
        std::fs::copy(k8s_dir().join(crd), dir.join(crd)).unwrap();
        let text = std::fs::read_to_string(k8s_dir().join(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(dir.join(file), text.replacen(from, to, 1)).unwrap();
        Broken { dir }
    }
    fn files(&self) -> Vec<PathBuf> {
        yaml_files(&self.dir)
    }
    fn file(&self, name: &str) -> Vec<PathBuf> {
        vec![self.dir.join(name)]
    }
}

#[test]
fn validation_catches_broken_manifests() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // Wrong type in a built-in kind.
        (
            "daemonset.yaml",
            "hostNetwork: true",
            "hostNetwork: \"yes\"",
            "hostNetwork: 'yes' is not of type 'boolean'",
        ),
        (
            "daemonset.yaml",
            "memory: 16Mi",
            "memory: [16Mi]",
            "requests.memory: ['16Mi'] is not valid",
        ),
        // Unknown field (strict).
        (
            "daemonset.yaml",
            "hostNetwork: true",
            "hostNetwrok: true",
            "('hostNetwrok' was unexpected)",
        ),
        (
            "rbac.yaml",
            "verbs: [\"get\", \"patch\"]",
            "verb: [\"get\", \"patch\"]",
            "'verbs' is a required property",
        ),
        // Custom resources against the CRD schema.
        (
            "nad-bridge.yaml",
            "config: |",
            "config: 42\n  x: |",
            "spec.config: 42 is not of type 'string'",
        ),
        (
            "nad-bridge.yaml",
            "  config: |",
            "  confg: |",
            "('confg' was unexpected)",
        ),
        (
            "nad-macvlan.yaml",
            "namespace: default",
            "namespace: default\n  labels: {tier: 3}",
            "metadata.labels.tier: 3 is not of type 'string'",
        ),
        (
            "nad-macvlan.yaml",
            "name: macvlan-net\n",
            "name: Macvlan_Net\n",
            "'Macvlan_Net' is not a DNS-1123 subdomain",
        ),
        // What multimesh needs from a NAD's config.
        (
            "nad-bridge.yaml",
            "\"cniVersion\": \"1.0.0\",",
            "\"cniVersion\": \"1.0.0\"",
            "spec.config: not JSON",
        ),
        (
            "nad-no-capture.yaml",
            "multimesh.io/capture: \"false\"",
            "multimesh.io/capture: \"no\"",
            "multimesh.io/capture: must be \"true\" or \"false\"",
        ),
    ];
    for (file, from, to, expect) in cases {
        let b = Broken::new(file, from, to);
        match validate_all(&b.files()) {
            Ok(r) => panic!("{file} with {to:?} passed validation\n{r}"),
            Err(e) => assert!(e.contains(expect), "{file} {to:?}: no {expect:?} in\n{e}"),
        }
    }
    // --strict is what catches unknown fields in built-in kinds.
    let b = Broken::new("daemonset.yaml", "hostNetwork: true", "hostNetwrok: true");
    assert!(kubernetes_validate(&b.file("daemonset.yaml"), false).ok);
    assert!(!kubernetes_validate(&b.file("daemonset.yaml"), true).ok);
    // A custom resource whose CRD is not among the files is validated by
    // neither tool: that is a failure too, not a silent pass.
    let b = Broken::new("nad-bridge.yaml", "bridge-net", "bridge-net");
    std::fs::remove_file(b.dir.join("crd-network-attachment-definition.yaml")).unwrap();
    let e = validate_all(&b.files()).unwrap_err();
    assert!(e.contains("1 documents, 0 validated"), "{e}");
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in conf/k8s"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn manifests_agree_with_each_other_and_the_binary() {
    let docs = documents(&yaml_files(&k8s_dir()));

    // CRD as Multus ships it.
    let crd = find(
        &docs,
        "CustomResourceDefinition",
        "network-attachment-definitions.k8s.cni.cncf.io",
    );
    assert_eq!(crd["spec"]["group"], "k8s.cni.cncf.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "NetworkAttachmentDefinition");
    assert_eq!(
        strs(&crd["spec"]["names"]["shortNames"]),
        ["net-attach-def"]
    );
    let v1 = &crd["spec"]["versions"][0];
    assert_eq!(v1["name"], "v1");
    assert_eq!(
        v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["config"]["type"],
        "string"
    );

    // RBAC: the DaemonSet's service account is bound to the role.
    let ds = find(&docs, "DaemonSet", "multimesh");
    let pod = &ds["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let ns = ds["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(ns, "kube-system");
    find(&docs, "ServiceAccount", sa);
    let crb = find(&docs, "ClusterRoleBinding", "multimesh");
    assert_eq!(crb["subjects"][0]["name"], sa);
    assert_eq!(crb["subjects"][0]["namespace"], ns);
    let role = find(
        &docs,
        "ClusterRole",
        crb["roleRef"]["name"].as_str().unwrap(),
    );
    let allows = |group: &str, res: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            strs(&r["apiGroups"]).iter().any(|g| g == group)
                && strs(&r["resources"]).iter().any(|x| x == res)
                && strs(&r["verbs"]).iter().any(|x| x == verb)
        })
    };
    assert!(allows("", "pods", "get"));
    // The agent: its node's pods, the node's taint.
    for verb in ["list", "watch", "patch", "delete"] {
        assert!(allows("", "pods", verb), "pods {verb}");
    }
    for verb in ["get", "patch"] {
        assert!(allows("", "nodes", verb), "nodes {verb}");
    }
    // A linkerd pod's namespace config (ADD and the agent).
    assert!(allows("", "namespaces", "get"));
    assert!(allows("", "events", "create"));
    assert!(allows("", "pods/status", "patch"));
    assert!(allows("", "pods/status", "update"));
    for verb in ["get", "list", "watch"] {
        assert!(allows(
            "k8s.cni.cncf.io",
            "network-attachment-definitions",
            verb
        ));
    }

    // DaemonSet: node-wide, one privileged agent, probes on its endpoints,
    // the host's processes and netns bind mounts visible, host paths at the
    // same paths.
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert!(pod.get("initContainers").is_none());
    assert!(pod["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["operator"] == "Exists" && t.get("key").is_none()));
    let main = &pod["containers"][0];
    assert_eq!(main["securityContext"]["privileged"], true);
    let main_args = strs(&main["args"]);
    assert_eq!(main_args[0], "agent");
    let listen = main_args
        .iter()
        .find_map(|a| a.strip_prefix("--listen="))
        .expect("--listen");
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(main[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(main[probe]["httpGet"]["port"], port, "{probe}");
    }
    assert_eq!(
        main["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(main["env"][0]["name"], "NODE_NAME");
    let netns = main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/netns")
        .expect("the netns directory");
    assert_eq!(netns["mountPropagation"], "HostToContainer");
    assert!(main_args.contains(&"--netns-dir=/var/run/netns".to_string()));
    {
        assert!(main["resources"]["limits"]["memory"].is_string(), "{main}");
        let mounts: BTreeMap<String, String> = main["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let vol = m["name"].as_str().unwrap();
                let host = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == vol)
                    .unwrap()["hostPath"]["path"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (m["mountPath"].as_str().unwrap().to_string(), host)
            })
            .collect();
        for p in [
            "/opt/cni/bin",
            "/etc/cni/net.d",
            "/etc/cni/multimesh",
            "/var/lib/cni/multimesh",
            "/var/run/netns",
        ] {
            // Same path inside and outside: what install writes is valid on the host.
            assert_eq!(mounts.get(p).map(String::as_str), Some(p), "{mounts:?}");
        }
    }

    // The agent's arguments work: its own options are the agent's, the
    // rest install's, which run against a scratch node root.
    let help_of = |cmd: &str| {
        let o = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let (help, agent_help) = (help_of("install"), help_of("agent"));
    let agent_own = [
        "--listen",
        "--node-name",
        "--kubeconfig",
        "--netns-dir",
        "--repair-mode",
    ];
    let init_args: Vec<String> = main_args
        .iter()
        .filter(|a| {
            let opt = a.split_once('=').map_or(a.as_str(), |(o, _)| o);
            let own = agent_own.contains(&opt);
            assert!(
                !own || agent_help.contains(opt),
                "{opt} is not an agent option"
            );
            !own && opt != "--watch"
        })
        .cloned()
        .collect();
    let root = std::env::temp_dir().join(format!("mm-manifests-ds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
    std::fs::create_dir_all(root.join("sa")).unwrap();
    std::fs::write(root.join("sa/token"), "t").unwrap();
    std::fs::write(root.join("sa/ca.crt"), "c").unwrap();
    std::fs::write(
        root.join("etc/cni/net.d/10-flannel.conflist"),
        r#"{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    let mut args: Vec<String> = vec!["install".into()];
    for a in &init_args[1..] {
        let (opt, val) = a.split_once('=').unwrap();
        assert!(
            help.contains(opt),
            "{opt} is not a `multimesh install` option"
        );
        if opt == "--wait-for-primary" {
            args.push(format!("{opt}=0"));
        } else if val.starts_with('/') {
            args.push(format!("{opt}={}{val}", root.display()));
        } else {
            args.push(a.clone());
        }
    }
    args.push(format!("--service-account-dir={}/sa", root.display()));
    let o = Command::new(BIN)
        .args(&args)
        .env("KUBERNETES_SERVICE_HOST", "198.51.100.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .output()
        .unwrap();
    let conflist = std::fs::read(root.join("etc/cni/net.d/00-multimesh.conflist"));
    let _ = std::fs::remove_dir_all(&root);
    assert!(o.status.success(), "{args:?}\n{o:?}");
    let c: Value = serde_json::from_slice(&conflist.unwrap()).unwrap();
    assert_eq!(c["plugins"][0]["delegates"][0]["name"], "cbr0");
    assert_eq!(
        c["plugins"][0]["kubeconfig"],
        format!("{}/etc/cni/multimesh/multimesh.kubeconfig", root.display())
    );

    // NADs: configs name their network, the capture opt-out is "false".
    let nads: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "NetworkAttachmentDefinition")
        .collect();
    for n in &nads {
        let cfg: Value = serde_json::from_str(n["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(cfg["name"], n["metadata"]["name"], "{n}");
    }
    assert!(nads
        .iter()
        .any(|n| n["metadata"]["annotations"]["multimesh.io/capture"] == "false"));
    let macvlan = find(&docs, "NetworkAttachmentDefinition", "macvlan-net");
    let cfg: Value = serde_json::from_str(macvlan["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["type"], "macvlan");
    assert!(cfg["master"].is_string());

    // The meshed pod: every requested network exists in its namespace, and
    // it looks meshed to multimesh's istio profile (contract section 5).
    let p = find(&docs, "Pod", "meshed-app");
    let ann = &p["metadata"]["annotations"];
    let nets = ann["k8s.v1.cni.cncf.io/networks"].as_str().unwrap();
    assert_eq!(nets, "bridge-net,macvlan-net@data0");
    for n in nets.split(',') {
        let name = n.split('@').next().unwrap();
        let nad = find(&docs, "NetworkAttachmentDefinition", name);
        assert_eq!(nad["metadata"]["namespace"], p["metadata"]["namespace"]);
    }
    let status: Value =
        serde_json::from_str(ann["sidecar.istio.io/status"].as_str().unwrap()).unwrap();
    assert_eq!(status["containers"][0], "istio-proxy");
    assert!(ann["traffic.sidecar.istio.io/excludeOutboundIPRanges"].is_string());
    let containers: Vec<&str> = p["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["app", "istio-proxy"]);

    // Its validator: the init container the agent looks for, from the
    // DaemonSet's image, as neither root nor the proxy, with arguments
    // `multimesh validate` takes and the profile the node installs.
    let inits = p["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    let v = &inits[0];
    assert_eq!(v["name"], multimesh::validate::INIT_CONTAINER);
    assert_eq!(v["image"], main["image"]);
    let sc = &v["securityContext"];
    for id in ["runAsUser", "runAsGroup"] {
        let n = sc[id].as_u64().unwrap();
        assert!(n != 0 && n != 1337, "{id} {n}: root or the istio proxy");
    }
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(v["resources"]["limits"]["memory"].is_string());
    let args = strs(&v["args"]);
    assert_eq!(args[0], "validate");
    let help = Command::new(BIN)
        .args(["validate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for a in &args[1..] {
        let opt = a.split_once('=').unwrap().0;
        assert!(
            help.contains(opt),
            "{opt} is not a `multimesh validate` option"
        );
    }
    let profile = |args: &[String], opt: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(opt))
            .map(String::from)
    };
    assert_eq!(
        profile(&args, "--profile="),
        profile(&init_args, "--capture-profile=")
    );
}
