//! Running delegate plugins the way libcni does: a single conf, or a
//! conflist whose plugins run in order with prevResult (DEL in reverse).

use crate::cni::{self, Command};
use crate::error::{code, CniError, Result};
use crate::netns::{run_limited, seconds, Limits, Stop, ToolOutput};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set in every delegate's environment. A multimesh that finds it runs as
/// another multimesh's delegate: it takes nothing from its config but the
/// version and prevResult, runs nothing, locks nothing and passes the
/// result through (`main.rs`).
pub const NESTED_ENV: &str = "MULTIMESH_DELEGATE";

/// Longest a single delegate call may run before its process group is
/// killed, unless the config says otherwise (`delegateTimeout`).
pub const DELEGATE_TIMEOUT: Duration = Duration::from_secs(120);
// (`delegateTimeout` when not given: the fixed timeout multimesh had
// before it was configurable.)
/// Budget for all delegate ADDs of one ADD, unless the config says
/// otherwise (`addTimeout`).
pub const ADD_TIMEOUT: Duration = Duration::from_secs(240);
// (`addTimeout` when not given: two slow delegates' worth.)

/// How long delegates may run: every call at most `delegate_timeout`, and
/// the ADD calls of one invocation together at most `add_timeout`, counted
/// from the first of them. DEL (also ADD's rollback), CHECK and STATUS
/// calls get `delegate_timeout` whatever is left of the budget, so cleanup
/// can still happen after the budget is spent.
#[derive(Debug)]
pub struct Bounds {
    pub delegate_timeout: Duration,
    pub add_timeout: Duration,
    add_started: OnceLock<Instant>,
}

impl Bounds {
    pub fn new(delegate_timeout: Duration, add_timeout: Duration) -> Bounds {
        Bounds {
            delegate_timeout,
            add_timeout,
            add_started: OnceLock::new(),
        }
    }

    /// The timeout of the next call of `cmd`, and whether the ADD budget
    /// (rather than `delegate_timeout`) sets it. None: the budget is spent.
    fn timeout_for(&self, cmd: Command) -> Option<(Duration, bool)> {
        if !matches!(cmd, Command::Add) {
            return Some((self.delegate_timeout, false));
        }
        let started = *self.add_started.get_or_init(Instant::now);
        let left = self.add_timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            None
        } else if left < self.delegate_timeout {
            Some((left, true))
        } else {
            Some((self.delegate_timeout, false))
        }
    }

    fn exhausted(&self, t: &str, what: &str) -> CniError {
        CniError::new(
            code::DELEGATE_FAILED,
            format!(
                "ADD budget exhausted: the delegates of this ADD ran for addTimeout ({}); plugin {t:?} {what}",
                seconds(self.add_timeout)
            ),
        )
    }
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds::new(DELEGATE_TIMEOUT, ADD_TIMEOUT)
    }
}

/// A delegate network: one plugin or a chain of plugins.
#[derive(Debug, Clone)]
pub struct Delegate {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Map<String, Value>>,
}

/// A plugin `type` must be a bare file name: no path separator, no `..`.
pub fn validate_type(t: &str) -> Result<()> {
    if t.is_empty() || t.contains('/') || t.contains("..") || t.contains('\0') || t.starts_with('.')
    {
        return Err(CniError::config(format!(
            "plugin type {t:?} is not a bare plugin name (no '/', no '..')"
        )));
    }
    Ok(())
}

impl Delegate {
    /// Parse a conf or conflist object. `default_version` fills a missing cniVersion.
    pub fn from_value(v: &Value, default_version: &str) -> Result<Delegate> {
        let obj = v
            .as_object()
            .ok_or_else(|| CniError::config("delegate: must be a JSON object"))?;
        let version = match obj.get("cniVersion") {
            None => default_version.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(CniError::config("delegate: cniVersion must be a string")),
        };
        // No name is the same as an empty one (the record stores "" then,
        // and DEL must read back what ADD wrote).
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(CniError::config("delegate: name must be a string")),
        };
        let plugins: Vec<Map<String, Value>> = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(CniError::config(format!(
                        "delegate {name:?}: plugins list is empty"
                    )));
                }
                list.iter()
                    .map(|p| {
                        p.as_object().cloned().ok_or_else(|| {
                            CniError::config(format!("delegate {name:?}: plugin is not an object"))
                        })
                    })
                    .collect::<Result<_>>()?
            }
            Some(_) => {
                return Err(CniError::config(format!(
                    "delegate {name:?}: plugins must be a list"
                )))
            }
            None => vec![obj.clone()],
        };
        cni::check_version(&version).map_err(|e| e.context(format!("delegate {name:?}")))?;
        for p in &plugins {
            let t = p.get("type").and_then(Value::as_str).ok_or_else(|| {
                CniError::config(format!("delegate {name:?}: plugin without a type"))
            })?;
            validate_type(t).map_err(|e| e.context(format!("delegate {name:?}")))?;
        }
        Ok(Delegate {
            name,
            version,
            plugins,
        })
    }

    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
    }
}

/// What every delegate call of one multimesh invocation shares.
pub struct Runner {
    pub bin_dir: PathBuf,
    /// CNI_PATH as the runtime gave it.
    pub cni_path: String,
    pub container_id: String,
    pub netns: String,
    pub args: String,
    /// The runtime's CNI_IFNAME: the cluster network's interface. Calls on
    /// any other interface get CNI_ARGS without the per-interface requests
    /// (see `PER_INTERFACE_ARGS`).
    pub cluster_ifname: String,
    /// Timeouts: per call and the ADD budget.
    pub bounds: Bounds,
}

/// CNI_ARGS keys that request something for the one interface the runtime
/// asked for: `IP` (host-local/static) and `MAC` (bridge, macvlan, ...), as
/// podman sends for `--ip` / `--mac-address`. Like the runtime's
/// runtimeConfig (`ips`, `mac`), they belong to the cluster network; handed
/// to net1, net2, ... as well they would request the same address on every
/// network (host-local fails: "failed to allocate all requested IPs").
const PER_INTERFACE_ARGS: &[&str] = &["IP", "MAC"];

impl Runner {
    /// CNI_ARGS for a call on `ifname`: all of them for the cluster network,
    /// all but `PER_INTERFACE_ARGS` for the others.
    pub fn args_for(&self, ifname: &str) -> String {
        if ifname == self.cluster_ifname {
            return self.args.clone();
        }
        self.args
            .split(';')
            .filter(|kv| {
                let key = kv.split_once('=').map_or(*kv, |(k, _)| k);
                !PER_INTERFACE_ARGS.contains(&key)
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    fn search_path(&self) -> String {
        if self.cni_path.is_empty() {
            self.bin_dir.display().to_string()
        } else {
            format!("{}:{}", self.bin_dir.display(), self.cni_path)
        }
    }

    /// Find a plugin binary: binDir first, then CNI_PATH.
    pub fn find(&self, t: &str) -> Result<PathBuf> {
        validate_type(t)?;
        let dirs = std::iter::once(self.bin_dir.clone()).chain(
            self.cni_path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        );
        for d in dirs {
            let p = d.join(t);
            if is_executable(&p) {
                return Ok(p);
            }
        }
        Err(CniError::new(
            code::PLUGIN_NOT_FOUND,
            format!(
                "plugin {t:?} not found in binDir {} or CNI_PATH {:?}",
                self.bin_dir.display(),
                self.cni_path
            ),
        ))
    }

    /// Does any plugin of `d` resolve to this very program (whatever its
    /// file name)? Run as a delegate it would be a nested multimesh.
    pub fn runs_multimesh(&self, d: &Delegate) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(me) = std::fs::metadata("/proc/self/exe") else {
            return false;
        };
        d.types().any(|t| {
            t == "multimesh"
                || self
                    .find(t)
                    .ok()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .is_some_and(|m| m.dev() == me.dev() && m.ino() == me.ino())
        })
    }

    /// Check every plugin of a delegate can be found, before anything runs.
    pub fn resolve(&self, d: &Delegate) -> Result<()> {
        for t in d.types() {
            self.find(t)?;
        }
        Ok(())
    }

    fn exec(&self, cmd: Command, t: &str, ifname: &str, stdin: &[u8]) -> Result<ToolOutput> {
        let bin = self.find(t)?;
        let mut c = std::process::Command::new(&bin);
        c.env("CNI_COMMAND", cmd.as_str())
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", self.args_for(ifname))
            .env("CNI_PATH", self.search_path())
            .env(NESTED_ENV, "1");
        log::debug!("exec {} {} ifname={ifname}", bin.display(), cmd.as_str());
        let (timeout, by_budget) = self
            .bounds
            .timeout_for(cmd)
            .ok_or_else(|| self.bounds.exhausted(t, "was not started"))?;
        let started = Instant::now();
        let out = run_limited(c, stdin, Limits::delegate(timeout)).map_err(|e| {
            CniError::new(
                code::DELEGATE_FAILED,
                format!("cannot run plugin {t:?}: {e}"),
            )
        })?;
        log::debug!(
            "plugin {t} {}: {} after {:.1} ms",
            cmd.as_str(),
            out.status
                .map_or("killed".to_string(), |c| format!("exit {c}")),
            started.elapsed().as_secs_f64() * 1e3
        );
        if !out.stderr.trim().is_empty() {
            // At most Limits::STDERR kept, and the log cuts the line shorter.
            log::debug!("plugin {t} stderr: {}", out.stderr.trim());
        }
        if out.ok() {
            return Ok(out);
        }
        // Killed by us: whatever it printed is cut or incomplete.
        match out.stopped {
            Some(Stop::Timeout(_)) if by_budget => {
                return Err(self.bounds.exhausted(
                    t,
                    &format!("was killed after {} (its process group)", seconds(timeout)),
                ));
            }
            Some(Stop::Timeout(_)) => {
                return Err(CniError::new(
                    code::DELEGATE_FAILED,
                    format!(
                        "plugin {t:?} timed out after {} (delegateTimeout); its process group was killed",
                        seconds(timeout)
                    ),
                ));
            }
            Some(stop) => {
                return Err(CniError::new(
                    code::DELEGATE_FAILED,
                    format!("plugin {t:?} {stop}; its process group was killed"),
                ));
            }
            None => {}
        }
        // A failed plugin prints a CNI error on stdout; anything else is a
        // crash, a kill or garbage.
        let parsed: Option<CniError> = serde_json::from_str::<Value>(out.stdout.trim())
            .ok()
            .and_then(|v| CniError::from_json(&v));
        Err(match parsed {
            Some(e) => e,
            None => CniError::new(
                code::DELEGATE_FAILED,
                format!("plugin {t:?} failed ({})", out.failure()),
            ),
        })
    }

    /// ADD a delegate on `ifname`; returns the final result.
    pub fn add(
        &self,
        d: &Delegate,
        ifname: &str,
        rc: Option<&Map<String, Value>>,
    ) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for p in &d.plugins {
            let t = p.get("type").and_then(Value::as_str).unwrap_or("");
            let stdin = cni::plugin_stdin(p, &d.name, &d.version, rc, prev.as_ref())?;
            let out = self
                .exec(Command::Add, t, ifname, &stdin)
                .map_err(|e| e.context(format!("delegate {:?} ({t}) ADD on {ifname}", d.name)))?;
            let trimmed = out.stdout.trim();
            if trimmed.is_empty() && prev.is_some() {
                continue;
            }
            let v: Value = serde_json::from_str(trimmed).map_err(|e| {
                CniError::new(
                    code::DELEGATE_FAILED,
                    format!(
                        "delegate {:?} ({t}) ADD on {ifname}: invalid result: {e}",
                        d.name
                    ),
                )
            })?;
            if !v.is_object() {
                return Err(CniError::new(
                    code::DELEGATE_FAILED,
                    format!(
                        "delegate {:?} ({t}) ADD on {ifname}: result is not an object",
                        d.name
                    ),
                ));
            }
            // A result multimesh cannot read (a cniVersion it does not speak
            // or that is not a string, an ips entry that is not an object)
            // fails the ADD here, with rollback, not after the attachment
            // was recorded as complete.
            if let Err(e) = cni::convert_result(&v, &d.version) {
                return Err(CniError::new(
                    code::DELEGATE_FAILED,
                    format!(
                        "delegate {:?} ({t}) ADD on {ifname}: invalid result: {}",
                        d.name, e.msg
                    ),
                ));
            }
            prev = Some(v);
        }
        prev.ok_or_else(|| CniError::new(code::DELEGATE_FAILED, "delegate produced no result"))
    }

    /// DEL a delegate (plugins in reverse). Every plugin is called even when
    /// one fails; the first error is returned.
    pub fn del(
        &self,
        d: &Delegate,
        ifname: &str,
        rc: Option<&Map<String, Value>>,
        prev: Option<&Value>,
    ) -> Result<()> {
        let mut first: Option<CniError> = None;
        for p in d.plugins.iter().rev() {
            let t = p.get("type").and_then(Value::as_str).unwrap_or("");
            // A cached result from another version is converted; DEL must
            // not fail on a result it cannot convert, so drop it then.
            let prev_ok = prev.filter(|pr| cni::convert_result(pr, &d.version).is_ok());
            let res = cni::plugin_stdin(p, &d.name, &d.version, rc, prev_ok)
                .and_then(|stdin| self.exec(Command::Del, t, ifname, &stdin));
            if let Err(e) = res {
                let e = e.context(format!("delegate {:?} ({t}) DEL on {ifname}", d.name));
                log::error!("{e}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK a delegate with its cached result (skipped below 0.4.0, as the
    /// spec defines CHECK from 0.4.0 on).
    pub fn check(
        &self,
        d: &Delegate,
        ifname: &str,
        rc: Option<&Map<String, Value>>,
        prev: &Value,
    ) -> Result<()> {
        if !cni::version_at_least(&d.version, "0.4.0") {
            return Ok(());
        }
        for p in &d.plugins {
            let t = p.get("type").and_then(Value::as_str).unwrap_or("");
            let stdin = cni::plugin_stdin(p, &d.name, &d.version, rc, Some(prev))?;
            self.exec(Command::Check, t, ifname, &stdin)
                .map_err(|e| e.context(format!("delegate {:?} ({t}) CHECK on {ifname}", d.name)))?;
        }
        Ok(())
    }

    /// STATUS (1.1.0 delegates only).
    pub fn status(&self, d: &Delegate) -> Result<()> {
        self.resolve(d)?;
        if !cni::version_at_least(&d.version, "1.1.0") {
            return Ok(());
        }
        for p in &d.plugins {
            let t = p.get("type").and_then(Value::as_str).unwrap_or("");
            let stdin = cni::plugin_stdin(p, &d.name, &d.version, None, None)?;
            self.exec(Command::Status, t, "", &stdin)
                .map_err(|e| e.context(format!("delegate {:?} ({t}) STATUS", d.name)))?;
        }
        Ok(())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_must_be_bare_names() {
        for bad in ["../bridge", "/bin/sh", "a/b", "..", "x..y", "", ".hidden"] {
            assert_eq!(
                validate_type(bad).unwrap_err().code,
                code::INVALID_CONFIG,
                "{bad}"
            );
        }
        assert!(validate_type("bridge").is_ok());
        assert!(validate_type("host-local").is_ok());
    }

    #[test]
    fn per_interface_args_go_to_the_cluster_network_only() {
        let r = Runner {
            bin_dir: PathBuf::from("/nonexistent"),
            cni_path: String::new(),
            container_id: "c".into(),
            netns: String::new(),
            args: "IgnoreUnknown=1;K8S_POD_NAME=web;IP=198.51.100.50;MAC=02:00:00:00:00:42;IPX=1"
                .into(),
            cluster_ifname: "eth0".into(),
            bounds: Bounds::default(),
        };
        assert_eq!(r.args_for("eth0"), r.args);
        assert_eq!(r.args_for("net1"), "IgnoreUnknown=1;K8S_POD_NAME=web;IPX=1");
    }

    #[test]
    fn parses_conf_and_conflist() {
        let d =
            Delegate::from_value(&json!({"name": "a", "type": "bridge", "x": 1}), "1.0.0").unwrap();
        assert_eq!(d.plugins.len(), 1);
        assert_eq!(d.version, "1.0.0");
        let d = Delegate::from_value(
            &json!({"name": "l", "cniVersion": "0.4.0", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}),
            "1.0.0",
        )
        .unwrap();
        assert_eq!(d.types().collect::<Vec<_>>(), ["bridge", "portmap"]);
        assert!(Delegate::from_value(&json!({"name": "l", "plugins": []}), "1.0.0").is_err());
        assert!(Delegate::from_value(&json!({"name": "l", "type": "../x"}), "1.0.0").is_err());
        assert!(Delegate::from_value(
            &json!({"name": "l", "type": "x", "cniVersion": "0.2.0"}),
            "1.0.0"
        )
        .is_err());
    }

    #[test]
    fn add_calls_share_a_budget_other_calls_do_not() {
        let b = Bounds::new(Duration::from_secs(120), Duration::from_millis(300));
        // The budget starts with the first ADD call and caps its timeout.
        let (t, by_budget) = b.timeout_for(Command::Add).unwrap();
        assert!(by_budget && t <= Duration::from_millis(300), "{t:?}");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(b.timeout_for(Command::Add), None);
        // DEL (rollback), CHECK and STATUS still get delegateTimeout.
        for c in [Command::Del, Command::Check, Command::Status] {
            assert_eq!(b.timeout_for(c), Some((Duration::from_secs(120), false)));
        }
        let e = b.exhausted("slow", "was not started");
        assert_eq!(e.code, code::DELEGATE_FAILED);
        assert!(
            e.msg.contains("ADD budget exhausted") && e.msg.contains("addTimeout (0.3 s)"),
            "{}",
            e.msg
        );
        // A budget larger than what is left of delegateTimeout does not cap.
        let b = Bounds::new(Duration::from_secs(5), Duration::from_secs(240));
        assert_eq!(
            b.timeout_for(Command::Add),
            Some((Duration::from_secs(5), false))
        );
    }
}
