//! Kubernetes-mode harness: a fake kube-apiserver
//! (`tests/apiserver/fake_apiserver.py`, HTTPS, or plain HTTP with
//! `start_plain`, on 127.0.0.1) per test, with
//! its certificates, tokens, kubeconfigs and fixtures. Everything lives in
//! one temp directory per server, removed (and the server stopped) on Drop.
//!
//! Certificates (openssl CLI, EC P-256, v3): a CA (CA:TRUE critical,
//! keyCertSign), a server certificate (SAN IP:127.0.0.1, IP:::1,
//! DNS:localhost; serverAuth; CA:FALSE) and a client certificate
//! (CN=multimesh, O=system:nodes; clientAuth). Generated once per test
//! process, kept in memory, written into each server's directory. Validity
//! starts an hour in the past (`openssl ca -startdate`: OpenSSL 3.0's
//! `x509`/`req` have no `-not_before`).
//!
//! Server state files (see the python file's header for the full schema):
//! `tokens`, `objects/pods/<ns>/<name>.json`, `objects/nads/<ns>/<name>.json`,
//! `faults.json`, `requests.log`.

use super::{CniOut, Node, Pod};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// Kubernetes-mode calls of the real binary, shared by the test files.

pub const LEGACY: &str = r#"{"backend": "iptables", "iptablesVariant": "legacy"}"#;

pub fn legacy() -> Value {
    serde_json::from_str(LEGACY).unwrap()
}

pub fn istio_status() -> Value {
    json!({"sidecar.istio.io/status": "{\"initContainers\":null,\"containers\":[\"istio-proxy\"]}"})
}

/// `a` with the keys of `b` added.
pub fn merged(a: Value, b: Value) -> Value {
    let mut a = a;
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// A multimesh config in Kubernetes mode.
pub fn k8s_conf(node: &Node, kubeconfig: &Path, delegates: Vec<Value>, capture: Value) -> Value {
    let mut c = node.meta(delegates, capture);
    c["kubeconfig"] = json!(kubeconfig.display().to_string());
    c
}

pub fn pod_args(ns: &str, name: &str, uid: &str, cid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}"
    )
}

pub fn cni_pod(
    node: &Node,
    cmd: &str,
    conf: &Value,
    pod: &Pod,
    cid: &str,
    (ns, name, uid): (&str, &str, &str),
) -> CniOut {
    let args = pod_args(ns, name, uid, cid);
    node.cni_env(cmd, conf, &pod.path, cid, "eth0", &[("CNI_ARGS", &args)])
}

/// (method, path) of every request the API server saw.
pub fn requests(api: &ApiServer) -> Vec<(String, String)> {
    api.requests()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or("").to_string(),
                r["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A NAD config string from a delegate object.
pub fn cfg(v: &Value) -> String {
    v.to_string()
}

static SERVERS: AtomicUsize = AtomicUsize::new(0);
static WRITES: AtomicUsize = AtomicUsize::new(0);
static CERTS: OnceLock<Certs> = OnceLock::new();

/// The script, in the source tree.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apiserver/fake_apiserver.py")
}

struct Certs {
    ca: String,
    server: String,
    server_key: String,
    client: String,
    client_key: String,
}

pub struct ApiServer {
    pub dir: PathBuf,
    pub port: u16,
    /// `https://127.0.0.1:PORT` (`http://` for a plain server)
    pub url: String,
    /// Accepted bearer token (a line of `dir/tokens`).
    pub token: String,
    child: Option<Child>,
    kubeconfigs: AtomicUsize,
    /// The network namespace it runs in (None: this one).
    netns: Option<String>,
    plain: bool,
}

impl ApiServer {
    /// A fresh server in its own temp dir, ready to answer (bounded wait).
    pub fn start() -> ApiServer {
        Self::start_opt(None, false)
    }

    /// A server speaking plain HTTP (`--plain`): bearer tokens only, no
    /// TLS. The certificates are still written (kubeconfigs may name them).
    pub fn start_plain() -> ApiServer {
        Self::start_opt(None, true)
    }

    /// `start_plain` inside network namespace `netns`.
    pub fn start_plain_in(netns: &str) -> ApiServer {
        Self::start_opt(Some(netns), true)
    }

    /// A server inside network namespace `netns` (on its loopback), where
    /// a test's multimesh runs. Readiness is the port file (written once
    /// listening): this process cannot connect into that netns.
    pub fn start_in(netns: &str) -> ApiServer {
        Self::start_opt(Some(netns), false)
    }

    fn start_opt(netns: Option<&str>, plain: bool) -> ApiServer {
        let certs = CERTS.get_or_init(generate_certs);
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/mmtest/k8s-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["objects/pods", "objects/nads"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        write_file(&dir.join("ca.pem"), &certs.ca, 0o644);
        write_file(&dir.join("server.pem"), &certs.server, 0o644);
        write_file(&dir.join("server-key.pem"), &certs.server_key, 0o600);
        write_file(&dir.join("client.pem"), &certs.client, 0o644);
        write_file(&dir.join("client-key.pem"), &certs.client_key, 0o600);
        let token = format!("mm-test-token-{}", unique_hex(n));
        write_file(&dir.join("tokens"), &format!("{token}\n"), 0o600);
        write_file(&dir.join("token-file"), &format!("{token}\n"), 0o600);

        let mut srv = ApiServer {
            dir,
            port: 0,
            url: String::new(),
            token,
            child: None,
            kubeconfigs: AtomicUsize::new(0),
            netns: netns.map(String::from),
            plain,
        };
        srv.spawn(0);
        srv
    }

    /// Start the server process on `port` (0: any) and wait until it
    /// listens (bounded).
    fn spawn(&mut self, port: u16) {
        let dir = self.dir.clone();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.stderr"))
            .unwrap();
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let port_file = dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, python]);
                c
            }
            None => Command::new(python),
        };
        cmd.arg(script()).arg("--dir").arg(&dir);
        if self.plain {
            cmd.arg("--plain");
        } else {
            cmd.arg("--cert")
                .arg(dir.join("server.pem"))
                .arg("--key")
                .arg(dir.join("server-key.pem"))
                .arg("--client-ca")
                .arg(dir.join("ca.pem"));
        }
        let child = cmd
            .arg("--port-file")
            .arg(&port_file)
            .arg("--port")
            .arg(port.to_string())
            // We keep the write end: if this process dies, the server sees
            // EOF and exits.
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {python}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.fail_start(&format!("fake apiserver exited early ({st})"));
            }
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                if self.netns.is_some()
                    || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                {
                    self.port = port;
                    let scheme = if self.plain { "http" } else { "https" };
                    self.url = format!("{scheme}://127.0.0.1:{port}");
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail_start("fake apiserver not ready within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the server process (its files stay) and start a new one on the
    /// same port: what a client sees when the API server restarts. The new
    /// one forgets the watch history (a watch from an old version gets 410).
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn(self.port);
    }

    /// Stop the server process only (SIGTERM, bounded wait, SIGKILL);
    /// its exit code when it exited by itself.
    fn terminate(&mut self) -> Option<i32> {
        let mut code = None;
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match c.try_wait() {
                    Ok(Some(st)) => {
                        code = st.code();
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        code
    }

    fn fail_start(&mut self, what: &str) -> ! {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let err = self.stderr();
        let _ = std::fs::remove_dir_all(&self.dir);
        panic!("{what}\nserver stderr:\n{err}");
    }

    /// What the server wrote on stderr so far (quiet unless it failed).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.stderr")).unwrap_or_default()
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// (certificate, key) of the client certificate the server accepts.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.pem"), self.dir.join("client-key.pem"))
    }

    /// The file `kubeconfig_token_file` points at (initially `self.token`).
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token-file")
    }

    /// Replace the token file's content (the server's accepted tokens are
    /// not changed: see `add_token` / `set_tokens`).
    pub fn set_token_file(&self, tok: &str) {
        write_file(&self.token_file(), &format!("{tok}\n"), 0o600);
    }

    /// Cluster with `certificate-authority-data`, user `token: <token>`.
    pub fn kubeconfig_token(&self) -> PathBuf {
        self.kubeconfig_with(&self.url, &format!("token: {}", self.token))
    }

    /// Cluster with `certificate-authority-data`, user `tokenFile: <path>`.
    pub fn kubeconfig_token_file(&self) -> PathBuf {
        self.kubeconfig_with(
            &self.url,
            &format!("tokenFile: {}", self.token_file().display()),
        )
    }

    /// Cluster with `certificate-authority: <path>`, user with
    /// `client-certificate-data` / `client-key-data`.
    pub fn kubeconfig_cert(&self) -> PathBuf {
        let (cert, key) = self.client_cert();
        self.kubeconfig_custom(
            &format!(
                "certificate-authority: {}\nserver: {}",
                self.ca_pem().display(),
                self.url
            ),
            &format!(
                "client-certificate-data: {}\nclient-key-data: {}",
                base64(&std::fs::read(cert).unwrap()),
                base64(&std::fs::read(key).unwrap())
            ),
        )
    }

    /// Cluster `server: <server_url>` with `certificate-authority-data`;
    /// `user_yaml` (one or more `key: value` lines) goes under `user:`.
    pub fn kubeconfig_with(&self, server_url: &str, user_yaml: &str) -> PathBuf {
        let ca = base64(&std::fs::read(self.ca_pem()).unwrap());
        self.kubeconfig_custom(
            &format!("certificate-authority-data: {ca}\nserver: {server_url}"),
            user_yaml,
        )
    }

    /// The most general form: `cluster_yaml` goes under `cluster:`,
    /// `user_yaml` under `user:` (each line indented for you), in the
    /// layout `kubectl config view --raw` writes.
    pub fn kubeconfig_custom(&self, cluster_yaml: &str, user_yaml: &str) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n{}  name: fake-cluster\ncontexts:\n\
             - context:\n    cluster: fake-cluster\n    user: multimesh\n  name: multimesh@fake-cluster\n\
             current-context: multimesh@fake-cluster\nkind: Config\npreferences: {{}}\nusers:\n\
             - name: multimesh\n  user:\n{}",
            indent(cluster_yaml, 4),
            indent(user_yaml, 4)
        );
        self.kubeconfig_raw(&text)
    }

    /// Write `text` as a new kubeconfig file in the server's dir.
    pub fn kubeconfig_raw(&self, text: &str) -> PathBuf {
        let n = self.kubeconfigs.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("kubeconfig-{n}.yaml"));
        write_file(&path, text, 0o600);
        path
    }

    /// Accept one more bearer token.
    pub fn add_token(&self, tok: &str) {
        let mut t = std::fs::read_to_string(self.dir.join("tokens")).unwrap_or_default();
        t.push_str(tok);
        t.push('\n');
        write_file(&self.dir.join("tokens"), &t, 0o600);
    }

    /// Accept exactly these bearer tokens (`self.token` included only if listed).
    pub fn set_tokens(&self, toks: &[&str]) {
        let t: String = toks.iter().map(|t| format!("{t}\n")).collect();
        write_file(&self.dir.join("tokens"), &t, 0o600);
    }

    fn object_path(&self, kind: &str, ns: &str, name: &str) -> PathBuf {
        for s in [ns, name] {
            assert!(
                !s.is_empty() && !s.contains('/') && s != "." && s != "..",
                "bad object name {s:?}"
            );
        }
        self.dir
            .join("objects")
            .join(kind)
            .join(ns)
            .join(format!("{name}.json"))
    }

    /// Store a Pod (namespace and name from its metadata).
    pub fn put_pod(&self, pod: &Value) {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .expect("pod metadata.namespace");
        let name = pod["metadata"]["name"].as_str().expect("pod metadata.name");
        let path = self.object_path("pods", ns, name);
        write_file(&path, &serde_json::to_string_pretty(pod).unwrap(), 0o644);
    }

    /// Store a Namespace with these annotations (an object, or Null).
    pub fn put_namespace(&self, ns: &str, annotations: Value) {
        let mut obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": format!("ns-{ns}"), "resourceVersion": "1",
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        });
        if !annotations.is_null() {
            obj["metadata"]["annotations"] = annotations;
        }
        let path = self
            .dir
            .join("objects/namespaces")
            .join(format!("{ns}.json"));
        write_file(&path, &serde_json::to_string_pretty(&obj).unwrap(), 0o644);
    }

    /// Delete a stored Pod (the server then answers 404).
    pub fn remove_pod(&self, ns: &str, name: &str) {
        let _ = std::fs::remove_file(self.object_path("pods", ns, name));
    }

    /// The Pod as stored now (after the server's writes).
    pub fn pod(&self, ns: &str, name: &str) -> Value {
        let path = self.object_path("pods", ns, name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("pod {ns}/{name}: {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// A realistic Pod: resourceVersion "1", the given containers (and
    /// init containers, `initContainers` omitted when empty), phase Pending.
    /// `annotations`: an object, or Null for no `annotations` key at all.
    pub fn pod_json(
        ns: &str,
        name: &str,
        uid: &str,
        annotations: Value,
        containers: &[&str],
        init_containers: &[&str],
    ) -> Value {
        let container = |c: &&str| -> Value {
            let image = match *c {
                "istio-proxy" | "istio-init" => "docker.io/istio/proxyv2:1.22.0".to_string(),
                "linkerd-proxy" => "cr.l5d.io/linkerd/proxy:stable-2.14.10".to_string(),
                "linkerd-init" => "cr.l5d.io/linkerd/proxy-init:v2.2.3".to_string(),
                other => format!("registry.example/{other}:1.0"),
            };
            json!({
                "name": c, "image": image, "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            })
        };
        let mut metadata = json!({
            "name": name, "namespace": ns, "uid": uid,
            "resourceVersion": "1",
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"app": name},
        });
        if !annotations.is_null() {
            metadata["annotations"] = annotations;
        }
        let mut spec = json!({
            "containers": containers.iter().map(container).collect::<Vec<_>>(),
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "nodeName": "node-1",
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
        });
        if !init_containers.is_empty() {
            spec["initContainers"] = Value::Array(init_containers.iter().map(container).collect());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        })
    }

    /// Store a NetworkAttachmentDefinition; `spec.config` is omitted when
    /// `config` is None. `annotations`: an object, or Null for none.
    pub fn put_nad(&self, ns: &str, name: &str, config: Option<&str>, annotations: Value) {
        let mut nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {
                "name": name, "namespace": ns,
                "uid": format!("nad-{ns}-{name}"),
                "resourceVersion": "1",
                "generation": 1,
                "creationTimestamp": "2024-05-01T12:00:00Z",
            },
            "spec": {},
        });
        if !annotations.is_null() {
            nad["metadata"]["annotations"] = annotations;
        }
        if let Some(c) = config {
            nad["spec"]["config"] = Value::String(c.to_string());
        }
        self.put_nad_json(&nad);
    }

    /// Store an arbitrary NAD object (namespace and name from its metadata).
    pub fn put_nad_json(&self, nad: &Value) {
        let ns = nad["metadata"]["namespace"]
            .as_str()
            .expect("nad metadata.namespace");
        let name = nad["metadata"]["name"].as_str().expect("nad metadata.name");
        let path = self.object_path("nads", ns, name);
        write_file(&path, &serde_json::to_string_pretty(nad).unwrap(), 0o644);
    }

    /// Every request the server answered (or dropped) since the last clear,
    /// in order: `{"method","path","query","content_type","auth","status",
    /// "conn"[,"body"]}`.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("requests.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn clear_requests(&self) {
        let _ = std::fs::write(self.dir.join("requests.log"), "");
    }

    /// Replace `faults.json` (schema in the python file's header).
    pub fn set_faults(&self, faults: Value) {
        write_file(
            &self.dir.join("faults.json"),
            &serde_json::to_string_pretty(&faults).unwrap(),
            0o644,
        );
    }

    /// `faults.json` now (counters as the server left them), Null if none.
    pub fn faults(&self) -> Value {
        std::fs::read_to_string(self.dir.join("faults.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// SIGTERM, bounded wait, SIGKILL; then remove the directory.
    /// Idempotent; also run on Drop.
    pub fn stop(&mut self) {
        self.stop_checked();
    }

    /// `stop`, returning how the server ended: its exit code (None if it
    /// had to be SIGKILLed or was already stopped) and its stderr.
    pub fn stop_checked(&mut self) -> (Option<i32>, String) {
        let code = self.terminate();
        let err = self.stderr();
        let _ = std::fs::remove_dir_all(&self.dir);
        (code, err)
    }

    /// Store a Node (name from its metadata).
    pub fn put_node(&self, node: &Value) {
        let name = node["metadata"]["name"]
            .as_str()
            .expect("node metadata.name");
        assert!(!name.contains('/') && !name.starts_with('.'));
        let path = self.dir.join("objects/nodes").join(format!("{name}.json"));
        write_file(&path, &serde_json::to_string_pretty(node).unwrap(), 0o644);
    }

    /// The Node as stored now.
    pub fn node(&self, name: &str) -> Value {
        let path = self.dir.join("objects/nodes").join(format!("{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Is the pod stored (not deleted)?
    pub fn has_pod(&self, ns: &str, name: &str) -> bool {
        self.object_path("pods", ns, name).exists()
    }

    /// Every Event POSTed to the server.
    pub fn events(&self) -> Vec<Value> {
        walk_json(&self.dir.join("objects/events"))
    }
}

fn walk_json(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(walk_json(&p));
        } else if p.extension().is_some_and(|x| x == "json")
            && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        {
            if let Ok(v) = serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_default()) {
                out.push(v);
            }
        }
    }
    out
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Standard base64 (RFC 4648, padded).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// Write via temp file + rename (the server may be reading it), with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::SeqCst)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

fn unique_hex(n: usize) -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{:x}{:08x}{:x}", std::process::id(), t.subsec_nanos(), n)
}

/// CA, server and client certificates by `tests/apiserver/gen_certs.sh`
/// (shared with the demo and the benchmark), in a scratch dir that is
/// removed again; the PEMs are kept in memory.
fn generate_certs() -> Certs {
    let dir = PathBuf::from(format!("/tmp/mmtest/k8s-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = script().with_file_name("gen_certs.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run gen_certs.sh");
    assert!(
        o.status.success(),
        "{} failed (apt-get install openssl):\n{}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let certs = Certs {
        ca: read("ca.pem"),
        server: read("server.pem"),
        server_key: read("server.key"),
        client: read("client.pem"),
        client_key: read("client.key"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    certs
}
