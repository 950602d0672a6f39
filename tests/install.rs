//! `multimesh install`: the real binary run against a temporary node root
//! (CNI dirs, a fake service account), no cluster needed.

use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_multimesh");
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A written file as seen from outside: path, bytes, inode, mtime.
type FileState = (PathBuf, Vec<u8>, u64, (i64, i64));

/// A fake node: every path `install` touches lives under `root`.
struct Root {
    root: PathBuf,
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn primary() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.51.100.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

impl Root {
    fn new(tag: &str) -> Root {
        let root = std::env::temp_dir().join(format!(
            "mm-install-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let r = Root { root };
        for d in ["opt/cni/bin", "etc/cni/net.d", "sa"] {
            std::fs::create_dir_all(r.root.join(d)).unwrap();
        }
        std::fs::write(r.sa().join("token"), "eyJhbGciOiJSUzI1NiJ9.test-token\n").unwrap();
        std::fs::write(
            r.sa().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        r
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn sa(&self) -> PathBuf {
        self.p("sa")
    }
    fn net_d(&self) -> PathBuf {
        self.p("etc/cni/net.d")
    }
    fn conflist(&self) -> PathBuf {
        self.net_d().join("00-multimesh.conflist")
    }
    fn mm_dir(&self) -> PathBuf {
        self.p("etc/cni/multimesh")
    }
    fn kubeconfig(&self) -> PathBuf {
        self.mm_dir().join("multimesh.kubeconfig")
    }
    fn installed_bin(&self) -> PathBuf {
        self.p("opt/cni/bin/multimesh")
    }
    fn write_primary(&self, name: &str, v: &Value) {
        std::fs::write(
            self.net_d().join(name),
            serde_json::to_vec_pretty(v).unwrap(),
        )
        .unwrap();
    }
    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["install".into()];
        for (k, v) in [
            ("--bin-dir", self.p("opt/cni/bin")),
            ("--cni-conf-dir", self.net_d()),
            ("--multimesh-conf-dir", self.mm_dir()),
            ("--service-account-dir", self.sa()),
            ("--state-dir", self.p("var/lib/cni/multimesh")),
        ] {
            a.push(k.into());
            a.push(v.to_str().unwrap().into());
        }
        a
    }
    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(self.args()).args(extra);
        // No CNI_* variable may leak in: it would make this a CNI call.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                c.env_remove(k);
            }
        }
        c.env("KUBERNETES_SERVICE_HOST", "2001:db8::1")
            .env("KUBERNETES_SERVICE_PORT", "6443")
            .stdin(Stdio::null());
        c
    }
    fn run(&self, extra: &[&str]) -> Output {
        self.command(extra).output().unwrap()
    }
    fn run_ok(&self, extra: &[&str]) -> String {
        let o = self.run(extra);
        assert!(
            o.status.success(),
            "install failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// Exit status 1, a message on stderr, never a panic.
    fn run_err(&self, extra: &[&str]) -> String {
        let o = self.run(extra);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "expected exit 1, stderr: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.starts_with("multimesh install: "), "{err}");
        err
    }
    fn conflist_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.conflist()).unwrap()).unwrap()
    }
    /// Every file install writes: (path, bytes, inode, mtime).
    fn snapshot(&self) -> Vec<FileState> {
        [
            self.conflist(),
            self.kubeconfig(),
            self.installed_bin(),
            self.mm_dir().join("serviceaccount/token"),
            self.mm_dir().join("serviceaccount/ca.crt"),
        ]
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap();
            let b = std::fs::read(&p).unwrap();
            (p, b, m.ino(), (m.mtime(), m.mtime_nsec()))
        })
        .collect()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn installs_binary_kubeconfig_and_conflist() {
    let r = Root::new("basic");
    r.write_primary("10-cluster.conflist", &primary());
    let before = std::fs::read(r.net_d().join("10-cluster.conflist")).unwrap();
    let out = r.run_ok(&[]);
    assert!(out.contains("wrote"), "{out}");
    assert!(out.contains("10-cluster.conflist"), "{out}");

    // The binary: the running executable (/proc/self/exe), 0755.
    assert_eq!(
        std::fs::read(r.installed_bin()).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    assert_eq!(mode(&r.installed_bin()), 0o755);

    // The conflist wraps the primary, which stays where it was.
    assert_eq!(mode(&r.conflist()), 0o644);
    assert_eq!(
        std::fs::read(r.net_d().join("10-cluster.conflist")).unwrap(),
        before
    );
    let c = r.conflist_json();
    let mm = r.mm_dir();
    assert_eq!(
        c,
        json!({
            "cniVersion": "1.0.0",
            "name": "multimesh-cni-network",
            "plugins": [{
                "type": "multimesh",
                "kubeconfig": r.kubeconfig().to_str().unwrap(),
                "cniDir": r.p("var/lib/cni/multimesh").to_str().unwrap(),
                "confDir": mm.join("net.d").to_str().unwrap(),
                "binDir": r.p("opt/cni/bin").to_str().unwrap(),
                "delegates": [primary()],
                "capture": {"backend": "iptables", "profile": "istio"},
                "capabilities": {"portMappings": true}
            }]
        })
    );
    assert!(mm.join("net.d").is_dir());
    assert!(r.p("var/lib/cni/multimesh").is_dir());

    // The kubeconfig: host-side copies of the token and CA, 0600.
    let token = mm.join("serviceaccount/token");
    let ca = mm.join("serviceaccount/ca.crt");
    assert_eq!(
        std::fs::read(&token).unwrap(),
        std::fs::read(r.sa().join("token")).unwrap()
    );
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(r.sa().join("ca.crt")).unwrap()
    );
    assert_eq!(mode(&token), 0o600);
    assert_eq!(mode(&ca), 0o644);
    assert_eq!(mode(&r.kubeconfig()), 0o600);
    let kc = std::fs::read_to_string(r.kubeconfig()).unwrap();
    let expected = format!(
        "# Written by multimesh install. tokenFile is a host copy of the service\n\
         # account token, kept current by `multimesh install --watch`.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: local\n  cluster:\n    server: https://[2001:db8::1]:6443\n    certificate-authority: {}\n\
         users:\n\
         - name: multimesh\n  user:\n    tokenFile: {}\n\
         contexts:\n\
         - name: multimesh-context\n  context:\n    cluster: local\n    user: multimesh\n\
         current-context: multimesh-context\n",
        ca.display(),
        token.display()
    );
    assert_eq!(kc, expected);
    // No leftover temp files anywhere.
    for d in [r.net_d(), r.p("opt/cni/bin"), mm.clone()] {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.ends_with(".tmp"), "leftover {n}");
        }
    }
}

#[test]
fn installed_conflist_is_accepted_by_the_installed_binary() {
    let r = Root::new("accept");
    r.write_primary("10-cluster.conflist", &primary());
    r.run_ok(&[
        "--capture-backend",
        "nftables",
        "--capture-profile",
        "linkerd",
    ]);
    let conf = std::fs::read(r.conflist()).unwrap();
    // The installed copy speaks CNI on the conflist the runtime will read.
    let mut c = Command::new(r.installed_bin());
    c.env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    std::io::Write::write_all(ch.stdin.as_mut().unwrap(), &conf).unwrap();
    drop(ch.stdin.take());
    let o = ch.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.0.0")));

    // The plugin object as the runtime hands it over (name and cniVersion
    // from the list) parses, and its capture section renders.
    let list = r.conflist_json();
    let mut plugin = list["plugins"][0].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["name"] = list["name"].clone();
    let f = r.p("plugin.json");
    std::fs::write(&f, serde_json::to_vec(&plugin).unwrap()).unwrap();
    let o = Command::new(r.installed_bin())
        .args(["rules", "--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // nftables, linkerd ports.
    assert!(out.contains("table inet multimesh"), "{out}");
    assert!(out.contains("4143"), "{out}");
    assert!(out.contains("4140"), "{out}");
}

#[test]
fn second_run_writes_nothing() {
    let r = Root::new("idem");
    r.write_primary("10-cluster.conflist", &primary());
    r.run_ok(&[]);
    let first = r.snapshot();
    std::thread::sleep(Duration::from_millis(20));
    let out = r.run_ok(&[]);
    assert!(!out.contains("wrote"), "{out}");
    assert!(out.contains("unchanged"), "{out}");
    // Same bytes, same inode, same mtime: nothing was replaced, so the
    // runtime's watch on net.d does not fire.
    assert_eq!(r.snapshot(), first);
}

#[test]
fn follows_changes_of_primary_and_token() {
    let r = Root::new("update");
    r.write_primary("10-cluster.conflist", &primary());
    r.run_ok(&[]);
    let kc_before = std::fs::read(r.kubeconfig()).unwrap();
    let mut p = primary();
    p["cniVersion"] = json!("0.4.0");
    p["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    r.write_primary("10-cluster.conflist", &p);
    std::fs::write(r.sa().join("token"), "rotated-token\n").unwrap();
    let out = r.run_ok(&[]);
    assert!(out.contains("wrote"), "{out}");
    let c = r.conflist_json();
    assert_eq!(c["cniVersion"], "0.4.0");
    assert_eq!(c["plugins"][0]["delegates"], json!([p]));
    assert_eq!(
        c["plugins"][0]["capabilities"],
        json!({"portMappings": true, "bandwidth": true})
    );
    assert_eq!(
        std::fs::read_to_string(r.mm_dir().join("serviceaccount/token")).unwrap(),
        "rotated-token\n"
    );
    // The kubeconfig names the token file, not the token: unchanged.
    assert_eq!(std::fs::read(r.kubeconfig()).unwrap(), kc_before);

    // A new lexically-first primary (the cluster's CNI was replaced).
    let single = json!({"cniVersion": "1.1.0", "name": "flat", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "203.0.113.0/24"}});
    r.write_primary("05-flat.conf", &single);
    r.run_ok(&["--cni-version", "1.0.0"]);
    let c = r.conflist_json();
    assert_eq!(c["cniVersion"], "1.0.0");
    assert_eq!(c["plugins"][0]["delegates"], json!([single]));
    assert!(c["plugins"][0].get("capabilities").is_none(), "{c}");
}

#[test]
fn primary_selection_skips_own_and_unusable_files() {
    let r = Root::new("select");
    r.write_primary("10-cluster.conflist", &primary());
    // multimesh's own configs are never the primary.
    r.write_primary(
        "01-mine.conf",
        &json!({"cniVersion": "1.0.0", "type": "multimesh"}),
    );
    // Not loadable: skipped (with a note), as the runtime skips them.
    std::fs::write(r.net_d().join("02-broken.conflist"), "{ not json").unwrap();
    r.write_primary(
        "03-empty.conflist",
        &json!({"cniVersion": "1.0.0", "plugins": []}),
    );
    // Not a CNI config name at all.
    std::fs::write(r.net_d().join("04-notes.txt"), "hello").unwrap();
    r.write_primary(".05-hidden.conf.tmp", &json!({"type": "x"}));
    let o = r.run(&[]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("02-broken.conflist"), "{err}");
    assert!(err.contains("03-empty.conflist"), "{err}");
    assert_eq!(r.conflist_json()["plugins"][0]["delegates"][0], primary());
    // Our own output is skipped on the next run too (no self-wrapping).
    r.run_ok(&[]);
    assert_eq!(r.conflist_json()["plugins"][0]["delegates"][0], primary());

    // --primary-conf picks a file explicitly.
    let other = json!({"cniVersion": "1.0.0", "name": "other", "type": "macvlan",
        "master": "eth0", "ipam": {"type": "host-local", "subnet": "203.0.113.0/24"}});
    r.write_primary("20-other.conf", &other);
    r.run_ok(&["--primary-conf", "20-other.conf"]);
    assert_eq!(r.conflist_json()["plugins"][0]["delegates"][0], other);
    let e = r.run_err(&["--primary-conf", "01-mine.conf"]);
    assert!(e.contains("multimesh config"), "{e}");

    // A primary whose plugin type is a path is never wrapped: multimesh
    // would refuse it as a delegate (and must never run /bin/sh).
    for (name, v) in [
        (
            "00-path.conf",
            json!({"cniVersion": "1.0.0", "name": "p", "type": "/bin/sh"}),
        ),
        (
            "00-path.conflist",
            json!({"cniVersion": "1.0.0", "name": "p",
                   "plugins": [{"type": "bridge"}, {"type": "../../bin/sh"}]}),
        ),
    ] {
        r.write_primary(name, &v);
        let o = r.run(&[]);
        assert!(o.status.success(), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(name) && err.contains("path"), "{err}");
        assert_ne!(r.conflist_json()["plugins"][0]["delegates"][0], v);
        let e = r.run_err(&["--primary-conf", name]);
        assert!(e.contains("not a bare plugin name"), "{e}");
        std::fs::remove_file(r.net_d().join(name)).unwrap();
    }
}

#[test]
fn no_primary_is_a_clear_error() {
    let r = Root::new("noprimary");
    let e = r.run_err(&[]);
    assert!(e.contains("no primary network config in"), "{e}");
    assert!(e.contains(r.net_d().to_str().unwrap()), "{e}");
    // Nothing was written.
    assert!(!r.conflist().exists());
    assert!(!r.installed_bin().exists());
    assert!(!r.kubeconfig().exists());

    // Bounded wait: gives up after the time given.
    let t = Instant::now();
    let e = r.run_err(&["--wait-for-primary", "1"]);
    assert!(e.contains("after waiting 1s"), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(t.elapsed() < Duration::from_secs(5));

    // ... and succeeds when the primary shows up in time.
    let child = r
        .command(&["--wait-for-primary", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    r.write_primary("10-cluster.conflist", &primary());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(r.conflist_json()["plugins"][0]["delegates"][0], primary());
}

#[test]
fn bad_input_is_a_clear_error() {
    let r = Root::new("errors");
    r.write_primary("10-cluster.conflist", &primary());
    let e = r.run_err(&["--capture-backend", "ebpf"]);
    assert!(e.contains("capture.backend"), "{e}");
    let e = r.run_err(&["--frobnicate"]);
    assert!(e.contains("unknown option"), "{e}");
    let e = r.run_err(&["--bin-dir"]);
    assert!(e.contains("missing argument for option '--bin-dir'"), "{e}");
    // No API server known.
    let o = r
        .command(&[])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--api-server"));
    // Missing service account token.
    std::fs::remove_file(r.sa().join("token")).unwrap();
    let e = r.run_err(&[]);
    assert!(e.contains("service account token"), "{e}");
    assert!(!r.conflist().exists());
    std::fs::write(r.sa().join("token"), "t").unwrap();
    // A primary whose version multimesh does not speak.
    let mut old = primary();
    old["cniVersion"] = json!("0.2.0");
    r.write_primary("10-cluster.conflist", &old);
    let e = r.run_err(&[]);
    assert!(e.contains("0.2.0") && e.contains("--cni-version"), "{e}");
    // Refused before anything was written.
    assert!(!r.conflist().exists());
    assert!(!r.installed_bin().exists());
    assert!(!r.kubeconfig().exists());
    r.run_ok(&["--cni-version", "0.4.0"]);
    assert_eq!(r.conflist_json()["cniVersion"], "0.4.0");
    // --help is not an error.
    let o = Command::new(BIN)
        .args(["install", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--bin-src",
        "--bin-dir",
        "--cni-conf-dir",
        "--multimesh-conf-dir",
        "--kubeconfig-out",
        "--service-account-dir",
        "--api-server",
        "--capture-backend",
        "--capture-profile",
        "--cni-version",
        "--wait-for-primary",
        "--watch",
        "--uninstall",
    ] {
        assert!(help.contains(opt), "{opt} missing from --help");
    }
}

#[test]
fn uninstall_removes_what_install_wrote() {
    let r = Root::new("uninstall");
    r.write_primary("10-cluster.conflist", &primary());
    let kc = r.p("elsewhere/kc");
    r.run_ok(&["--kubeconfig-out", kc.to_str().unwrap()]);
    assert!(kc.exists());
    std::fs::write(r.p("var/lib/cni/multimesh/keep"), "state").unwrap();
    let out = r.run_ok(&["--uninstall", "--kubeconfig-out", kc.to_str().unwrap()]);
    assert!(out.contains("removed"), "{out}");
    for p in [
        r.conflist(),
        kc.clone(),
        r.installed_bin(),
        r.mm_dir().join("serviceaccount/token"),
        r.mm_dir().join("serviceaccount/ca.crt"),
    ] {
        assert!(!p.exists(), "{} still there", p.display());
    }
    // The primary and the state directory stay.
    assert!(r.net_d().join("10-cluster.conflist").exists());
    assert!(r.p("var/lib/cni/multimesh/keep").exists());
    // Idempotent.
    let out = r.run_ok(&["--uninstall"]);
    assert!(!out.contains("removed"), "{out}");
    // A foreign file under our name is not removed.
    r.write_primary("00-multimesh.conflist", &primary());
    let e = r.run_err(&["--uninstall"]);
    assert!(e.contains("not a multimesh config"), "{e}");
    assert!(r.conflist().exists());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("--watch did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_reconciles_until_sigterm() {
    let r = Root::new("watch");
    r.write_primary("10-cluster.conflist", &primary());
    let mut child = r
        .command(&["--watch", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("first install", || r.conflist().exists());
    // The primary plugin rewrites its config: followed.
    let mut p = primary();
    p["plugins"][0]["bridge"] = json!("cni9");
    r.write_primary("10-cluster.conflist", &p);
    wait_for("primary change", || {
        std::fs::read(r.conflist())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|c| c["plugins"][0]["delegates"][0] == p)
    });
    // Someone removes our conflist: put back.
    std::fs::remove_file(r.conflist()).unwrap();
    wait_for("conflist restored", || r.conflist().exists());
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
}
