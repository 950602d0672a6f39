//! State under `cniDir`: what DEL, CHECK and GC need, written atomically
//! (temp file + rename, mode 0600) before the first delegate runs.
//!
//! Layout: `cniDir/<containerID>/<ifname>.json`, one record per CNI
//! attachment (the runtime's CNI_IFNAME). The container directory (0700) is
//! also the per-container lock (flock), serialising ADD/DEL/CHECK of one
//! container while different containers proceed in parallel; it is removed
//! with its last record. A container ID too long for a file name gets a
//! directory named by its hash (`dir_name`).
//!
//! `cniDir/netns/` holds who owns the capture of each pod network
//! namespace (`NetnsOwners`): capture belongs to the netns, and goes with
//! the last of the attachments (of any container) that asked for it.

use crate::error::{code, CniError, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn state_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(code::STATE, format!("{what} {}: {e}", path.display()))
}

/// Replace `path` with `data` atomically: a hidden temp file next to it
/// (`.<name>.<pid>.tmp`, never taken for a record, a CNI config or a
/// plugin), exactly `mode` (not the umask's), renamed into place. With
/// `durable`, the file and then its directory are fsync'ed (install's
/// files); state records are not (a crash of the process keeps the page
/// cache, a node crash takes the pod netns with it). The one atomic writer
/// of the project: state and install both use it.
pub fn replace_file(path: &Path, data: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    if durable {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Write a state file atomically with mode 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    replace_file(path, data, 0o600, false).map_err(|e| state_err("write", path, e))
}

fn mkdir_private(path: &Path) -> std::io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Longest container ID used as a directory name as it is; a longer one
/// (the spec sets no limit) is named by its SHA-256 instead, behind a `+`
/// that no container ID contains.
pub const MAX_PLAIN_DIR_NAME: usize = 128;

/// The state directory name of a container ID.
pub fn dir_name(container_id: &str) -> String {
    if container_id.len() <= MAX_PLAIN_DIR_NAME {
        return container_id.to_string();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, container_id.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("+sha256-{hex}")
}

/// Is `name` a record file (`<ifname>.json`, not a temp file)?
fn record_ifname(name: &str) -> Option<&str> {
    name.strip_suffix(".json")
        .filter(|i| crate::cni::validate_ifname(i).is_ok())
}

/// An exclusive lock on one container's state directory. Dropping it
/// releases the lock and removes the directory when it holds no record.
pub struct ContainerLock {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl ContainerLock {
    /// Lock `cniDir/<id>`, creating it when `create`. Ok(None) when it does
    /// not exist and `create` is false.
    pub fn acquire(
        cni_dir: &Path,
        container_id: &str,
        create: bool,
    ) -> Result<Option<ContainerLock>> {
        Self::acquire_dir(cni_dir.join(dir_name(container_id)), create)
    }

    /// Lock a container directory by its path (GC walks directory names).
    pub fn acquire_dir(dir: PathBuf, create: bool) -> Result<Option<ContainerLock>> {
        for _ in 0..100 {
            if create {
                mkdir_private(&dir).map_err(|e| state_err("create", &dir, e))?;
            }
            let fd = match File::open(&dir) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(state_err("open", &dir, e)),
            };
            let fd = Flock::lock(fd, FlockArg::LockExclusive)
                .map_err(|(_, e)| state_err("lock", &dir, e.into()))?;
            // The holder before us may have removed the directory: retry on
            // the new one (or report it gone).
            let same = match (fs::metadata(&dir), fd.metadata()) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(Some(ContainerLock { dir, _lock: fd }));
            }
            if !create {
                return Ok(None);
            }
        }
        Err(CniError::new(
            code::STATE,
            format!("cannot lock {}", dir.display()),
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn record_path(&self, ifname: &str) -> PathBuf {
        self.dir.join(format!("{ifname}.json"))
    }

    /// The record's step journal: one line per delegate that returned
    /// since the record was last written whole (`append_step`).
    fn journal_path(&self, ifname: &str) -> PathBuf {
        self.dir.join(format!("{ifname}.steps"))
    }

    /// Record that attachment `i` of `rec` returned its result and the
    /// next one starts, by appending one line to the record's journal
    /// instead of rewriting the whole record: ADD's state writes stay
    /// linear in the number of attachments. The line is one `write` (a
    /// crash leaves it whole or, at worst, a torn last line that `load`
    /// ignores: that step then reads as not returned).
    pub fn append_step(&self, rec: &Record, i: usize) -> Result<()> {
        let step = Step {
            step: i,
            result: rec.attachments.get(i).and_then(|a| a.result.clone()),
        };
        let mut line = serde_json::to_vec(&step)
            .map_err(|e| CniError::new(code::STATE, format!("encode state: {e}")))?;
        serde_json::from_slice::<Value>(&line).map_err(|e| {
            CniError::new(
                code::STATE,
                format!("state step would not read back ({e}); refused"),
            )
        })?;
        line.push(b'\n');
        let p = self.journal_path(&rec.ifname);
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| state_err("write", &p, e))
    }

    /// Apply the journal's steps to a record read from disk.
    fn replay(&self, rec: &mut Record) {
        let Ok(text) = fs::read_to_string(self.journal_path(&rec.ifname)) else {
            return;
        };
        for line in text.lines() {
            let Ok(Step { step: i, result }) = serde_json::from_str::<Step>(line) else {
                break; // a torn last line
            };
            if let Some(a) = rec.attachments.get_mut(i) {
                a.result = result;
                a.started = true;
            }
            if let Some(next) = rec.attachments.get_mut(i + 1) {
                next.started = true;
            }
        }
    }

    pub fn load(&self, ifname: &str) -> Result<Option<Record>> {
        let p = self.record_path(ifname);
        match fs::read(&p) {
            Ok(b) => {
                let mut rec = Record::from_slice(&b).map_err(|e| {
                    CniError::new(code::STATE, format!("{}: {}", p.display(), e.msg))
                })?;
                self.replay(&mut rec);
                Ok(Some(rec))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state_err("read", &p, e)),
        }
    }

    /// Write a record atomically — only if it reads back: a record DEL
    /// could not read (nested past the JSON reader's depth limit, say)
    /// would make DEL forget what to undo, so it is refused here, before
    /// it replaces the last good one.
    pub fn save(&self, rec: &Record) -> Result<()> {
        let data = rec
            .to_bytes()
            .map_err(|e| CniError::new(code::STATE, format!("encode state: {e}")))?;
        Record::from_slice(&data).map_err(|e| e.msg).map_err(|e| {
            CniError::new(
                code::STATE,
                format!("state record would not read back ({e}); refused"),
            )
        })?;
        write_atomic(&self.record_path(&rec.ifname), &data)?;
        // The whole record holds every step now (a crash before this
        // unlink replays steps it already has: the same values again).
        let _ = fs::remove_file(self.journal_path(&rec.ifname));
        Ok(())
    }

    pub fn delete(&self, ifname: &str) -> Result<()> {
        let _ = fs::remove_file(self.journal_path(ifname));
        let p = self.record_path(ifname);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(state_err("remove", &p, e)),
        }
    }

    /// All records of this container (any network).
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                if let Some(ifname) = record_ifname(&name.to_string_lossy()) {
                    if let Ok(Some(r)) = self.load(ifname) {
                        out.push(r);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        out
    }
}

impl Drop for ContainerLock {
    fn drop(&mut self) {
        // Remove the directory once no record is left (xtables.lock and
        // stray temp files go with it).
        let has_records = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| record_ifname(&e.file_name().to_string_lossy()).is_some())
            })
            .unwrap_or(true);
        if !has_records {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The container directories under cniDir (named by `dir_name`).
pub fn container_dirs(cni_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(cni_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    crate::cni::validate_container_id(&n).is_ok() || n.starts_with("+sha256-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Who asked for capture in each pod network namespace:
/// `cniDir/netns/<netns key>:<container dir>:<ifname>`, a symlink to that
/// attachment's record. The netns key is its nsfs device and inode
/// (`NetNs::key`), so every path to one netns (a bind mount, /proc/PID/ns/net)
/// finds the same owners. A marker whose record is gone does not count.
/// Callers hold the netns lock (`NetNs::lock`) while they add an owner and
/// program, or remove one, count the rest and maybe remove capture.
pub struct NetnsOwners {
    dir: PathBuf,
}

impl NetnsOwners {
    pub fn new(cni_dir: &Path) -> NetnsOwners {
        NetnsOwners {
            dir: cni_dir.join("netns"),
        }
    }

    /// The owners under the cniDir that holds `lock`'s container.
    pub fn of(lock: &ContainerLock) -> NetnsOwners {
        Self::new(lock.dir.parent().unwrap_or(Path::new("/")))
    }

    fn marker(&self, key: &str, lock: &ContainerLock, ifname: &str) -> (PathBuf, PathBuf) {
        let cdir = lock
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (
            self.dir.join(format!("{key}:{cdir}:{ifname}")),
            Path::new("..").join(&cdir).join(format!("{ifname}.json")),
        )
    }

    /// Record `lock`'s attachment `ifname` as an owner of netns `key`.
    pub fn add(&self, key: &str, lock: &ContainerLock, ifname: &str) -> Result<()> {
        let (m, target) = self.marker(key, lock, ifname);
        mkdir_private(&self.dir).map_err(|e| state_err("create", &self.dir, e))?;
        match std::os::unix::fs::symlink(&target, &m) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(state_err("create", &m, e)),
        }
    }

    /// Drop an owner (gone already is fine).
    pub fn remove(&self, key: &str, lock: &ContainerLock, ifname: &str) {
        let (m, _) = self.marker(key, lock, ifname);
        let _ = fs::remove_file(m);
    }

    /// Remove every marker whose record is gone (GC).
    pub fn prune(&self) {
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if !e.path().exists() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Does any attachment own netns `key`? (Stale markers do not count.)
    pub fn any(&self, key: &str) -> bool {
        let prefix = format!("{key}:");
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name().to_string_lossy().starts_with(&prefix) && e.path().exists()
                })
            })
            .unwrap_or(false)
    }

    /// Does any attachment other than `lock`'s `ifname` own netns `key`?
    /// Stale markers (their record gone) are removed on the way.
    pub fn others(&self, key: &str, lock: &ContainerLock, ifname: &str) -> bool {
        let (mine, _) = self.marker(key, lock, ifname);
        let prefix = format!("{key}:");
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return false;
        };
        let mut found = false;
        for e in rd.flatten() {
            let p = e.path();
            if p == mine || !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            if p.exists() {
                found = true; // follows the link: the owner's record is there
            } else {
                let _ = fs::remove_file(&p);
            }
        }
        found
    }
}

/// One line of a record's step journal: attachment `step` returned
/// `result` (`null`: none).
#[derive(Debug, Serialize, Deserialize)]
struct Step {
    step: usize,
    result: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Chained,
    /// Also what an unknown mode reads as.
    #[serde(other)]
    Meta,
}

fn yes() -> bool {
    true
}

/// One delegate attachment (a conf or a conflist) of a meta-plugin record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(default)]
    pub ifname: String,
    /// The delegate's network name.
    #[serde(default)]
    pub name: String,
    /// The resolved delegate: a single plugin conf or a conflist object.
    pub conf: Value,
    /// runtimeConfig handed to it (filtered per plugin by capabilities).
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// Its result once ADD succeeded.
    #[serde(default)]
    pub result: Option<Value>,
    /// The delegate's ADD was started (DEL must undo it even without result).
    #[serde(default = "yes")]
    pub started: bool,
}

/// One runtime attachment's state: `cniDir/<container dir>/<ifname>.json`
/// (serde; field names as written since version 1 of the format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub cni_version: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub cni_args: String,
    #[serde(default = "meta")]
    pub mode: Mode,
    /// ADD finished. A record that is not complete is a crashed or running ADD.
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// What capture programmed (or is about to), for DEL/CHECK.
    #[serde(default)]
    pub capture: Option<Value>,
    /// The pod netns's key (`NetNs::key`) under which this attachment owns
    /// capture (`NetnsOwners`).
    #[serde(default)]
    pub netns_key: Option<String>,
}

fn meta() -> Mode {
    Mode::Meta
}

/// The record as written: the format version first.
#[derive(Serialize)]
struct Versioned<'a> {
    version: u32,
    #[serde(flatten)]
    record: &'a Record,
}

impl Record {
    /// The bytes written to disk.
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&Versioned {
            version: 1,
            record: self,
        })
    }

    /// Read a record (from disk, or what `to_bytes` wrote).
    pub fn from_slice(b: &[u8]) -> Result<Record> {
        let r: Record = serde_json::from_slice(b)
            .map_err(|e| CniError::new(code::STATE, format!("corrupt state: {e}")))?;
        if r.ifname.is_empty() || r.container_id.is_empty() {
            return Err(CniError::new(
                code::STATE,
                "corrupt state: missing ifname or containerID",
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(n: usize) -> Record {
        Record {
            network: "n".into(),
            cni_version: "1.0.0".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: String::new(),
            cni_args: String::new(),
            mode: Mode::Meta,
            complete: false,
            attachments: (0..n)
                .map(|i| Attachment {
                    ifname: format!("net{i}"),
                    name: format!("a{i}"),
                    conf: json!({"type": "x"}),
                    runtime_config: None,
                    result: None,
                    started: i == 0,
                })
                .collect(),
            capture: None,
            netns_key: None,
        }
    }

    #[test]
    fn steps_replay_onto_the_record_and_a_torn_line_is_ignored() {
        let root = std::env::temp_dir().join(format!("mm-state-{}", std::process::id()));
        let lk = ContainerLock::acquire(&root, "c", true).unwrap().unwrap();
        let mut r = record(3);
        lk.save(&r).unwrap();
        r.attachments[0].result = Some(json!({"ips": [1]}));
        lk.append_step(&r, 0).unwrap();
        let got = lk.load("eth0").unwrap().unwrap();
        assert_eq!(got.attachments[0].result, Some(json!({"ips": [1]})));
        assert!(got.attachments[1].started && !got.attachments[2].started);
        // A torn write of the next step reads as not returned.
        let mut f = OpenOptions::new()
            .append(true)
            .open(lk.journal_path("eth0"))
            .unwrap();
        f.write_all(b"{\"step\": 1, \"resu").unwrap();
        let got = lk.load("eth0").unwrap().unwrap();
        assert!(got.attachments[1].result.is_none() && !got.attachments[2].started);
        // A whole write folds the steps in and drops the journal.
        lk.save(&got).unwrap();
        assert!(!lk.journal_path("eth0").exists());
        assert_eq!(lk.load("eth0").unwrap().unwrap(), got);
        lk.delete("eth0").unwrap();
        drop(lk);
        assert!(!root.join("c").exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn long_container_ids_get_hashed_directory_names() {
        assert_eq!(dir_name("abc"), "abc");
        let long = "a".repeat(MAX_PLAIN_DIR_NAME + 1);
        let d = dir_name(&long);
        assert!(d.starts_with("+sha256-") && d.len() == 8 + 64, "{d}");
        assert_ne!(d, dir_name(&"a".repeat(MAX_PLAIN_DIR_NAME + 2)));
        assert!(crate::cni::validate_container_id(&d).is_err());
    }

    #[test]
    fn a_record_that_would_not_read_back_is_refused() {
        let root = std::env::temp_dir().join(format!("mm-state-deep-{}", std::process::id()));
        let lk = ContainerLock::acquire(&root, "c", true).unwrap().unwrap();
        let mut r = record(1);
        let mut d = json!(1);
        for _ in 0..130 {
            d = json!([d]);
        }
        r.attachments[0].conf = json!({"type": "x", "deep": d});
        let e = lk.save(&r).unwrap_err();
        assert_eq!(e.code, code::STATE);
        assert!(e.msg.contains("would not read back"), "{}", e.msg);
        assert!(lk.load("eth0").unwrap().is_none());
        drop(lk);
        let _ = fs::remove_dir_all(&root);
    }
}
