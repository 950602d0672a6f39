//! containerd's CRI plugin as kubelet's runtime, one private containerd per
//! test, started inside the test's node netns (`nsenter --net`, keeping the
//! host mount namespace so the sandbox netns bind mounts containerd makes
//! under /run/netns are visible to the test). Its CNI calls, the bridges,
//! veths and the test API server then all live in that node netns.
//!
//! Private state: `root`, `state`, gRPC socket, CNI `bin_dir` (symlinks to
//! this build's multimesh and mm-recorder and to the reference plugins in
//! /usr/lib/cni) and `conf_dir` under the node's test directory; the
//! `native` snapshotter; runc with cgroupfs under a cgroup parent of the
//! test's own; `restrict_oom_score_adj = true` (lowering oom_score_adj, as
//! CRI asks for the sandbox, is not permitted on these machines and runc
//! would fail every sandbox with "can't get final child's PID from pipe").
//!
//! No registry: the sandbox ("pause") image is busybox-static `sleep`,
//! built once per test run with buildah (`FROM scratch`), kept as an
//! `oci-archive` under /tmp/mmtest, imported into each containerd with
//! `ctr -n k8s.io images import` and tagged a second time as the app image.
//!
//! `stop` (also on Drop) removes every sandbox through CRI, stops containerd
//! (SIGTERM, bounded, SIGKILL), kills by PID whatever is left of its shims
//! and of the containers in the test's cgroups, unmounts what it left under
//! the test directory and in /run/netns, and removes the cgroups.

use super::cri::{Cri, PodSpec, SandboxStatus};
use super::{bin_dir, sh, sh_ok, Node, BIN, RECORDER, REF_PLUGINS};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PAUSE_IMAGE: &str = "localhost/mm-pause:1";
pub const APP_IMAGE: &str = "localhost/mm-app:1";
/// Bounds every ctr and buildah command.
const TOOL_TIMEOUT_S: u32 = 60;

static IMAGE: OnceLock<PathBuf> = OnceLock::new();

/// The busybox image as an oci-archive, built once per test process
/// (several tests share it). Keyed by busybox's content so a changed
/// busybox-static is rebuilt.
pub fn image_archive() -> &'static Path {
    IMAGE.get_or_init(|| {
        for (tool, pkg) in [
            ("/usr/bin/containerd", "containerd"),
            ("/usr/bin/ctr", "containerd"),
            ("/usr/sbin/runc", "runc"),
            ("/usr/bin/buildah", "buildah"),
            ("/bin/busybox", "busybox-static"),
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} missing: install {pkg} (scripts/deps.sh does)"
            );
        }
        let sum = sh_ok("sha256sum /bin/busybox | cut -c1-16");
        let dir = PathBuf::from("/tmp/mmtest");
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join(format!("cri-image-{}-v1.tar", sum.trim()));
        if archive.exists() {
            return archive;
        }
        let work = dir.join(format!("cri-image-build-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cri_image.sh");
        let tmp = work.with_extension("tar");
        let o = sh(&format!(
            "timeout {TOOL_TIMEOUT_S} bash {} {} {} {PAUSE_IMAGE}",
            script.display(),
            work.display(),
            tmp.display()
        ));
        let _ = std::fs::remove_dir_all(&work);
        assert!(
            o.status.success(),
            "building the pause image failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // Atomic: a concurrent test process sees a whole archive or none.
        std::fs::rename(&tmp, &archive).unwrap();
        archive
    })
}

pub struct Containerd {
    pub dir: PathBuf,
    pub node_ns: String,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    child: Option<Child>,
    cri: Option<Cri>,
    /// Sandbox netns paths seen (unmounted on Drop if containerd left them).
    netns_seen: std::cell::RefCell<Vec<String>>,
    stopped: bool,
}

impl Containerd {
    /// A containerd in `node`'s netns whose CNI conf_dir holds `conflist`
    /// (as `10-<name>.conflist`), with the images imported; ready for CRI.
    pub fn start(node: &Node, conflist: &Value) -> Containerd {
        let image = image_archive();
        let dir = node.dir.join("containerd");
        for d in ["root", "state", "cni-bin", "cni-conf", "opt"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let bins = dir.join("cni-bin");
        for e in std::fs::read_dir(REF_PLUGINS).unwrap().flatten() {
            let _ = std::os::unix::fs::symlink(e.path(), bins.join(e.file_name()));
        }
        std::os::unix::fs::symlink(BIN, bins.join("multimesh")).unwrap();
        std::os::unix::fs::symlink(RECORDER, bins.join("mm-recorder")).unwrap();
        let c = Containerd {
            socket: dir.join("containerd.sock"),
            cgroup_parent: format!("/{}", node.name),
            node_ns: node.name.clone(),
            dir,
            child: None,
            cri: None,
            netns_seen: Default::default(),
            stopped: false,
        };
        c.write_conflist(conflist);
        std::fs::write(c.dir.join("config.toml"), c.config()).unwrap();
        let mut c = c;
        c.spawn();
        c.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            &image.display().to_string(),
        ]);
        c.ctr_ok(&["images", "tag", PAUSE_IMAGE, APP_IMAGE]);
        c
    }

    /// Replace the CNI network config (containerd reloads conf_dir).
    pub fn write_conflist(&self, conflist: &Value) {
        let name = conflist["name"].as_str().unwrap_or("net");
        let tmp = self.dir.join("cni-conf.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(conflist).unwrap()).unwrap();
        std::fs::rename(
            &tmp,
            self.dir
                .join("cni-conf")
                .join(format!("10-{name}.conflist")),
        )
        .unwrap();
    }

    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
    max_conf_num = 1
"#
        )
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited early ({st}):\n{}", self.log_tail(40));
            }
            if self.socket.exists() {
                if let Ok(cri) = Cri::connect(&self.socket) {
                    if cri.version().is_ok() {
                        self.cri = Some(cri);
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready within 30 s:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn cri(&self) -> &Cri {
        self.cri.as_ref().expect("containerd running")
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let t = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .arg(TOOL_TIMEOUT_S.to_string())
            .arg("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A pod spec whose sandbox lands in this test's cgroup parent.
    pub fn pod(&self, ns: &str, name: &str, uid: &str) -> PodSpec {
        let mut p = PodSpec::new(ns, name, uid);
        p.cgroup_parent = self.cgroup_parent.clone();
        p
    }

    /// RunPodSandbox that must succeed; its status (with a netns).
    pub fn run_pod_ok(&self, pod: &PodSpec) -> SandboxStatus {
        let id = self.cri().run_pod(pod).unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox {}/{}: {e}\ncontainerd log:\n{}",
                pod.namespace,
                pod.name,
                self.log_tail(30)
            )
        });
        self.status_ok(&id)
    }

    pub fn status_ok(&self, id: &str) -> SandboxStatus {
        let st = self
            .cri()
            .status(id)
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"));
        if !st.netns.is_empty() {
            self.netns_seen.borrow_mut().push(st.netns.clone());
        }
        st
    }

    /// SIGTERM containerd (bounded wait, then SIGKILL) and start it again
    /// with the same configuration; shims and sandboxes keep running.
    pub fn restart(&mut self) {
        self.cri = None;
        self.terminate();
        self.spawn();
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }

    /// PIDs of processes that belong to this containerd: itself, its shims
    /// (their command line names our socket or state dir) and everything
    /// in the test's cgroups (the sandboxes and containers).
    pub fn processes(&self) -> Vec<(u32, String)> {
        let d = self.dir.display().to_string();
        let mut out = Vec::new();
        let me = std::process::id();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me || super::process_gone(pid) {
                continue;
            }
            let cmd = std::fs::read(e.path().join("cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            let in_cgroup = cg.lines().any(|l| {
                l.split(':')
                    .nth(2)
                    .is_some_and(|p| p.starts_with(&self.cgroup_parent))
            });
            if cmd.contains(&d) || in_cgroup {
                out.push((pid, cmd));
            }
        }
        out
    }

    /// Remove every sandbox through CRI, stop containerd, then make sure
    /// nothing of it is left. Returns what had to be killed by force
    /// (processes still alive after containerd's clean stop).
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return vec![];
        }
        self.stopped = true;
        if let Some(cri) = &self.cri {
            if let Ok(ids) = cri.list_pods() {
                for id in ids {
                    let _ = cri.stop_pod(&id);
                    let _ = cri.remove_pod(&id);
                }
            }
        }
        self.cri = None;
        self.terminate();
        let mut killed = Vec::new();
        // Shims exit once their last container is gone; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (pid, cmd) in self.processes() {
            killed.push(format!("{pid} {cmd}"));
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // Mounts containerd left under its dirs (rootfs, shm) and sandbox
        // netns bind mounts it did not get to remove.
        let d = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mine: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&d))
            .map(String::from)
            .collect();
        mine.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mine {
            sh(&format!("umount -l {m}"));
        }
        for ns in self.netns_seen.borrow().iter() {
            if Path::new(ns).exists() {
                sh(&format!("umount -l {ns} 2>/dev/null; rm -f {ns}"));
            }
        }
        super::remove_cgroups(&self.cgroup_parent);
        killed
    }

    /// libcni's result cache entries (/var/lib/cni/results) of a sandbox.
    pub fn cni_cache(id: &str) -> Vec<String> {
        super::walk(Path::new("/var/lib/cni/results"))
            .into_iter()
            .filter(|f| f.contains(id))
            .collect()
    }

    /// multimesh's own state and the reference plugins' for this node are
    /// in `Node::leaks`; the binDir multimesh searches first is the build's.
    pub fn multimesh_bin_dir() -> PathBuf {
        bin_dir()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}
