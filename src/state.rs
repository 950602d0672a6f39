//! State under `cniDir`: what DEL, CHECK and GC need, written atomically
//! (temp file + rename, mode 0600) before the first delegate runs.
//!
//! Layout: `cniDir/<containerID>/<ifname>.json`, one record per CNI
//! attachment (the runtime's CNI_IFNAME). The container directory (0700) is
//! also the per-container lock (flock), serialising ADD/DEL/CHECK of one
//! container while different containers proceed in parallel; it is removed
//! with its last record.

use crate::error::{code, CniError, Result};
use serde_json::{json, Value};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn state_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(code::STATE, format!("{what} {}: {e}", path.display()))
}

/// Write `data` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(state_err("write", path, e));
    }
    Ok(())
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

/// An exclusive lock on one container's state directory. Dropping it
/// releases the lock and removes the directory when it holds no record.
pub struct ContainerLock {
    dir: PathBuf,
    _fd: File,
}

impl ContainerLock {
    /// Lock `cniDir/<id>`, creating it when `create`. Ok(None) when it does
    /// not exist and `create` is false.
    pub fn acquire(
        cni_dir: &Path,
        container_id: &str,
        create: bool,
    ) -> Result<Option<ContainerLock>> {
        let dir = cni_dir.join(container_id);
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
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(state_err("lock", &dir, std::io::Error::last_os_error()));
            }
            // The holder before us may have removed the directory: retry on
            // the new one (or report it gone).
            let same = match (fs::metadata(&dir), fd.metadata()) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(Some(ContainerLock { dir, _fd: fd }));
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

    pub fn load(&self, ifname: &str) -> Result<Option<Record>> {
        let p = self.record_path(ifname);
        match fs::read(&p) {
            Ok(b) => {
                let v: Value = serde_json::from_slice(&b).map_err(|e| {
                    CniError::new(code::STATE, format!("corrupt state {}: {e}", p.display()))
                })?;
                Record::from_json(&v).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state_err("read", &p, e)),
        }
    }

    pub fn save(&self, rec: &Record) -> Result<()> {
        let data = serde_json::to_vec_pretty(&rec.to_json())
            .map_err(|e| CniError::new(code::STATE, format!("encode state: {e}")))?;
        write_atomic(&self.record_path(&rec.ifname), &data)
    }

    pub fn delete(&self, ifname: &str) -> Result<()> {
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
                let name = name.to_string_lossy();
                if let Some(ifname) = name.strip_suffix(".json") {
                    if !name.starts_with('.') {
                        if let Ok(Some(r)) = self.load(ifname) {
                            out.push(r);
                        }
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
                rd.flatten().any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.ends_with(".json") && !n.starts_with('.')
                })
            })
            .unwrap_or(true);
        if !has_records {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Containers with state under cniDir.
pub fn container_ids(cni_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(cni_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| crate::cni::validate_container_id(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Meta,
    Chained,
}

/// One delegate attachment (a conf or a conflist) of a meta-plugin record.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub ifname: String,
    /// The delegate's network name.
    pub name: String,
    /// The resolved delegate: a single plugin conf or a conflist object.
    pub conf: Value,
    /// runtimeConfig handed to it (filtered per plugin by capabilities).
    pub runtime_config: Option<Value>,
    /// Its result once ADD succeeded.
    pub result: Option<Value>,
    /// The delegate's ADD was started (DEL must undo it even without result).
    pub started: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub network: String,
    pub cni_version: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub cni_args: String,
    pub mode: Mode,
    /// ADD finished. A record that is not complete is a crashed or running ADD.
    pub complete: bool,
    pub attachments: Vec<Attachment>,
    /// What capture programmed (or is about to), for DEL/CHECK.
    pub capture: Option<Value>,
}

impl Record {
    pub fn to_json(&self) -> Value {
        let atts: Vec<Value> = self
            .attachments
            .iter()
            .map(|a| {
                json!({"ifname": a.ifname, "name": a.name, "conf": a.conf,
                       "runtimeConfig": a.runtime_config, "result": a.result, "started": a.started})
            })
            .collect();
        json!({
            "version": 1,
            "network": self.network,
            "cniVersion": self.cni_version,
            "containerID": self.container_id,
            "ifname": self.ifname,
            "netns": self.netns,
            "cniArgs": self.cni_args,
            "mode": match self.mode { Mode::Meta => "meta", Mode::Chained => "chained" },
            "complete": self.complete,
            "attachments": atts,
            "capture": self.capture,
        })
    }

    pub fn from_json(v: &Value) -> Result<Record> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let bad = |m: &str| CniError::new(code::STATE, format!("corrupt state: {m}"));
        let mut attachments = Vec::new();
        for a in v
            .get("attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let g = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            attachments.push(Attachment {
                ifname: g("ifname"),
                name: g("name"),
                conf: a
                    .get("conf")
                    .cloned()
                    .ok_or_else(|| bad("attachment without conf"))?,
                runtime_config: a.get("runtimeConfig").filter(|x| !x.is_null()).cloned(),
                result: a.get("result").filter(|x| !x.is_null()).cloned(),
                started: a.get("started").and_then(Value::as_bool).unwrap_or(true),
            });
        }
        let r = Record {
            network: s("network"),
            cni_version: s("cniVersion"),
            container_id: s("containerID"),
            ifname: s("ifname"),
            netns: s("netns"),
            cni_args: s("cniArgs"),
            mode: if s("mode") == "chained" {
                Mode::Chained
            } else {
                Mode::Meta
            },
            complete: v.get("complete").and_then(Value::as_bool).unwrap_or(false),
            attachments,
            capture: v.get("capture").filter(|x| !x.is_null()).cloned(),
        };
        if r.ifname.is_empty() || r.container_id.is_empty() {
            return Err(bad("missing ifname or containerID"));
        }
        Ok(r)
    }
}
