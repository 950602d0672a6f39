//! The container image: build the repository's Containerfile with Debian's
//! buildah (scripts/deps.sh installs it) into a private vfs store, then
//! mount the image and run the binary inside it with nothing else around.
//!
//! The binary is this build's `multimesh` (static like the release one:
//! `.cargo/config.toml` sets crt-static for every profile), placed where the
//! Containerfile expects the release build
//! (target/x86_64-unknown-linux-gnu/release). FROM scratch: no network needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_multimesh");
/// Where `cargo build --release` puts the binary: `.cargo/config.toml` sets
/// an explicit build target, so the output is under target/<triple>/.
const RELEASE_DIR: &str = "target/x86_64-unknown-linux-gnu/release";
const DEBUG_DIR: &str = "target/x86_64-unknown-linux-gnu/debug";

struct Store {
    dir: PathBuf,
    containers: Vec<String>,
}

impl Store {
    fn new() -> Store {
        let dir = std::env::temp_dir().join(format!("mm-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Store {
            dir,
            containers: vec![],
        }
    }

    fn buildah(&self, args: &[&str]) -> Output {
        let buildah = ["/usr/bin/buildah", "/usr/local/bin/buildah"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("buildah not found: run scripts/deps.sh");
        let root = self.dir.join("root");
        let runroot = self.dir.join("runroot");
        Command::new(buildah)
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("BUILDAH_ISOLATION", "chroot")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn buildah_ok(&self, args: &[&str]) -> String {
        let o = self.buildah(args);
        assert!(
            o.status.success(),
            "buildah {args:?} failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for c in self.containers.clone() {
            let _ = self.buildah(&["umount", &c]);
            let _ = self.buildah(&["rm", &c]);
        }
        let _ = self.buildah(&["rmi", "--all", "--force"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// coreutils' chroot (absolute: the child's environment is emptied).
fn chroot() -> &'static str {
    ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils) not found")
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn containerfile_builds_a_scratch_image_that_runs() {
    let t0 = std::time::Instant::now();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut store = Store::new();
    // The build context: what the repository has after a release build,
    // plus files .containerignore must keep out.
    let containerfile = std::fs::read_to_string(repo.join("Containerfile")).unwrap();
    assert!(
        containerfile.contains(&format!("COPY {RELEASE_DIR}/multimesh ")),
        "the Containerfile must COPY the release build from {RELEASE_DIR}"
    );
    let ctx = store.dir.join("ctx");
    std::fs::create_dir_all(ctx.join(RELEASE_DIR)).unwrap();
    std::fs::create_dir_all(ctx.join(DEBUG_DIR)).unwrap();
    std::fs::create_dir_all(ctx.join("target/release")).unwrap();
    std::fs::copy(BIN, ctx.join(RELEASE_DIR).join("multimesh")).unwrap();
    std::fs::copy(repo.join("Containerfile"), ctx.join("Containerfile")).unwrap();
    std::fs::copy(repo.join(".containerignore"), ctx.join(".containerignore")).unwrap();
    std::fs::write(ctx.join(DEBUG_DIR).join("big"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(
        ctx.join("target/release/multimesh"),
        "a stale pre-target build",
    )
    .unwrap();
    std::fs::write(ctx.join("notes.txt"), "not for the image").unwrap();

    let tag = "localhost/multimesh:test";
    store.buildah_ok(&[
        "bud",
        "--isolation",
        "chroot",
        "-f",
        ctx.join("Containerfile").to_str().unwrap(),
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);

    // Image config: the binary is the entrypoint.
    let inspect: serde_json::Value =
        serde_json::from_str(&store.buildah_ok(&["inspect", "--type", "image", tag])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/multimesh"]),
        "{inspect}"
    );
    assert_eq!(inspect["OCIv1"]["os"], "linux");

    // Its filesystem: exactly the binary, byte for byte, executable.
    let c = store.buildah_ok(&["from", tag]);
    store.containers.push(c.clone());
    let mnt = PathBuf::from(store.buildah_ok(&["mount", &c]));
    assert_eq!(files_under(&mnt), ["usr/bin/multimesh"]);
    let inside = mnt.join("usr/bin/multimesh");
    assert_eq!(std::fs::read(&inside).unwrap(), std::fs::read(BIN).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&inside).unwrap().permissions().mode() & 0o111,
        0o111
    );

    // It runs with nothing else in its root: no loader, no libc, no /proc.
    let o = Command::new(chroot())
        .arg(&mnt)
        .args(["/usr/bin/multimesh", "--version"])
        .env_clear()
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("multimesh {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let o = Command::new(chroot())
        .arg(&mnt)
        .args(["/usr/bin/multimesh", "install", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("--watch"));
    eprintln!("image build and checks: {:?}", t0.elapsed());
}
