//! `multimesh install`: put multimesh on a node the way Multus's thin-plugin
//! entrypoint does, from a DaemonSet's init container or by hand.
//!
//! One pass: copy the binary into the CNI bin directory, copy the service
//! account's token and CA to a host directory and write a kubeconfig that
//! points at those copies, then write `00-multimesh.conflist` into the CNI
//! config directory with the node's primary network config embedded as the
//! first delegate. The primary's own file is left where it is: the runtime
//! takes the lexically first file, so `00-` wins, and removing ours puts the
//! node back as it was.
//!
//! Every file is written atomically (temp file in the same directory, fsync,
//! chmod, rename) and only when its bytes would change, so a second pass
//! writes nothing and the runtime's directory watch does not fire. `--watch`
//! repeats the pass (the token rotates, the primary plugin rewrites its
//! config) until SIGTERM.

use crate::capture::CaptureConfig;
use crate::config::NetConf;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The file written into the CNI config directory.
pub const CONF_NAME: &str = "00-multimesh.conflist";
/// The network name of that conflist (as Multus's `multus-cni-network`).
pub const NETWORK_NAME: &str = "multimesh-cni-network";
/// The installed binary's file name in the bin directory.
pub const BIN_NAME: &str = "multimesh";

pub const HELP: &str = "\
multimesh install - install multimesh on this node (DaemonSet init container)

Usage: multimesh install [OPTIONS]

Copies the binary into the CNI bin directory, writes a kubeconfig for the
service account, and writes CNI-CONF-DIR/00-multimesh.conflist wrapping the
node's primary network config (the lexically first *.conf, *.conflist or
*.json there that is not multimesh's own). The primary's file is kept; 00-
sorts first, so the runtime uses multimesh. Files are replaced atomically and
only when their content changes: running it again changes nothing.

Options (default in brackets):
  --bin-src PATH                binary to install [/proc/self/exe]
  --bin-dir DIR                 CNI plugin directory [/opt/cni/bin]
  --cni-conf-dir DIR            the runtime's CNI config directory [/etc/cni/net.d]
  --multimesh-conf-dir DIR      multimesh's own files: kubeconfig, token and CA
                                copies, net.d/ (the conflist's confDir)
                                [/etc/cni/multimesh]
  --kubeconfig-out PATH         kubeconfig to write [MULTIMESH-CONF-DIR/multimesh.kubeconfig]
  --service-account-dir DIR     token and ca.crt to use; they are copied to
                                MULTIMESH-CONF-DIR/serviceaccount/ (a host path
                                the plugin can read), the kubeconfig points there
                                [/var/run/secrets/kubernetes.io/serviceaccount]
  --api-server URL              [https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]
  --state-dir DIR               the conflist's cniDir [/var/lib/cni/multimesh]
  --capture-backend B           iptables or nftables [iptables]
  --capture-profile P           istio or linkerd [istio]
  --cni-version V               the conflist's cniVersion [the primary's]
  --log-level L                 panic, error, verbose or debug [not set: error]
  --log-file PATH               the plugin's log file [not set: stderr only]
  --primary-conf NAME           use this file in CNI-CONF-DIR as the primary
                                instead of the lexically first one
  --wait-for-primary SECONDS    poll this long for a primary config to appear [0]
  --watch SECONDS               after installing, repeat every SECONDS (token
                                rotation, primary config changes) until SIGTERM
  --uninstall                   remove the conflist, kubeconfig, token/CA copies
                                and the binary that install wrote
  -h, --help                    this text

Exit status 0 on success, 1 with a message on stderr on any error.
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub bin_src: PathBuf,
    pub bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub multimesh_conf_dir: PathBuf,
    pub kubeconfig_out: PathBuf,
    pub service_account_dir: PathBuf,
    /// None only with --uninstall (not needed there).
    pub api_server: Option<String>,
    pub state_dir: PathBuf,
    pub capture_backend: String,
    pub capture_profile: String,
    pub cni_version: Option<String>,
    pub log_level: Option<String>,
    pub log_file: Option<String>,
    pub primary_conf: Option<String>,
    pub wait_for_primary: Duration,
    pub watch: Option<Duration>,
    pub uninstall: bool,
}

/// Entry point from the CLI; returns the exit status.
pub fn main(args: &[&str]) -> i32 {
    if args.iter().any(|a| *a == "-h" || *a == "--help") {
        print!("{HELP}");
        return 0;
    }
    let o = match parse_args(args, |k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("multimesh install: {e}\n(see multimesh install --help)");
            return 1;
        }
    };
    let first = if o.uninstall {
        uninstall(&o)
    } else {
        install(&o)
    };
    match first {
        Ok(lines) => print_lines(&lines),
        Err(e) => {
            eprintln!("multimesh install: {e}");
            return 1;
        }
    }
    if let Some(every) = o.watch {
        watch(&o, every);
    }
    0
}

pub fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "multimesh install: {l}");
    }
    let _ = out.flush();
}

/// The options `install` takes with a value (`agent` takes them too).
pub const VALUE_FLAGS: &[&str] = &[
    "bin-src",
    "bin-dir",
    "cni-conf-dir",
    "multimesh-conf-dir",
    "kubeconfig-out",
    "service-account-dir",
    "api-server",
    "state-dir",
    "capture-backend",
    "capture-profile",
    "cni-version",
    "log-level",
    "log-file",
    "primary-conf",
    "wait-for-primary",
    "watch",
];

/// Parse the options; `env` reads the environment (for the API server).
pub fn parse_args(args: &[&str], env: impl Fn(&str) -> Option<String>) -> Result<Options, String> {
    let flags = crate::flags::Flags::parse(args, VALUE_FLAGS, &["uninstall"])?
        .ok_or("--help is handled by the caller")?;
    from_flags(&flags, env)
}

/// The install options among parsed `flags` (others are ignored).
pub fn from_flags(
    flags: &crate::flags::Flags,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Options, String> {
    for n in VALUE_FLAGS {
        if flags.value(n) == Some("") {
            return Err(format!("--{n}: empty value"));
        }
    }
    let uninstall = flags.switch("uninstall");
    let get = |n: &str| flags.value(n.trim_start_matches("--"));
    let path = |n: &str, d: &str| PathBuf::from(get(n).unwrap_or(d));
    let secs = |n: &str| -> Result<Option<Duration>, String> {
        get(n)
            .map(|v| {
                v.parse::<u32>()
                    .map(|s| Duration::from_secs(s.into()))
                    .map_err(|_| format!("{n}: {v:?} is not a number of seconds"))
            })
            .transpose()
    };
    let multimesh_conf_dir = path("--multimesh-conf-dir", "/etc/cni/multimesh");
    let capture_backend = get("--capture-backend").unwrap_or("iptables").to_string();
    let capture_profile = get("--capture-profile").unwrap_or("istio").to_string();
    // The same validation the plugin applies to its config.
    CaptureConfig::from_json(Some(
        &json!({"backend": capture_backend, "profile": capture_profile}),
    ))
    .map_err(|e| e.msg)?;
    let cni_version = get("--cni-version").map(String::from);
    if let Some(v) = &cni_version {
        crate::cni::check_version(v).map_err(|e| format!("--cni-version: {}", e.msg))?;
    }
    let log_level = get("--log-level").map(String::from);
    if let Some(l) = &log_level {
        if crate::logging::Level::parse(l).is_none() {
            return Err(format!(
                "--log-level: {l:?} is not one of panic, error, verbose, debug"
            ));
        }
    }
    let primary_conf = get("--primary-conf").map(String::from);
    if let Some(p) = &primary_conf {
        if p.contains('/') || p == "." || p == ".." {
            return Err(format!(
                "--primary-conf: {p:?} must be a file name in --cni-conf-dir"
            ));
        }
        if p == CONF_NAME {
            return Err(format!(
                "--primary-conf: {CONF_NAME} is multimesh's own file"
            ));
        }
    }
    let watch = secs("--watch")?;
    if watch == Some(Duration::ZERO) {
        return Err("--watch: the interval must be at least 1 second".into());
    }
    if uninstall && watch.is_some() {
        return Err("--watch cannot be combined with --uninstall".into());
    }
    let api_server = match get("--api-server") {
        Some(u) => Some(check_url(u)?),
        None => match (
            env("KUBERNETES_SERVICE_HOST"),
            env("KUBERNETES_SERVICE_PORT"),
        ) {
            (Some(h), Some(p)) if !h.is_empty() && !p.is_empty() => Some(server_url(&h, &p)?),
            _ if uninstall => None,
            _ => {
                return Err("no API server: give --api-server URL or set \
                     KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"
                    .into())
            }
        },
    };
    Ok(Options {
        bin_src: path("--bin-src", "/proc/self/exe"),
        bin_dir: path("--bin-dir", crate::config::DEFAULT_BIN_DIR),
        cni_conf_dir: path("--cni-conf-dir", "/etc/cni/net.d"),
        kubeconfig_out: get("--kubeconfig-out")
            .map(PathBuf::from)
            .unwrap_or_else(|| multimesh_conf_dir.join("multimesh.kubeconfig")),
        multimesh_conf_dir,
        service_account_dir: path(
            "--service-account-dir",
            "/var/run/secrets/kubernetes.io/serviceaccount",
        ),
        api_server,
        state_dir: path("--state-dir", crate::config::DEFAULT_CNI_DIR),
        capture_backend,
        capture_profile,
        cni_version,
        log_level,
        log_file: get("--log-file").map(String::from),
        primary_conf,
        wait_for_primary: secs("--wait-for-primary")?.unwrap_or(Duration::ZERO),
        watch,
        uninstall,
    })
}

/// `https://HOST:PORT`, an IPv6 host in brackets.
pub fn server_url(host: &str, port: &str) -> Result<String, String> {
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("KUBERNETES_SERVICE_PORT {port:?} is not a port"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    check_url(&format!("https://{h}:{port}"))
}

/// An API server URL we are willing to write into a kubeconfig: https only
/// (the kubeconfig carries the service account's token; the plugin refuses
/// plain http unless its config opts in, which install never does).
fn check_url(u: &str) -> Result<String, String> {
    let rest = u
        .strip_prefix("https://")
        .ok_or_else(|| format!("API server {u:?}: must start with https://"))?;
    if rest.is_empty()
        || !u
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '#'))
    {
        return Err(format!("API server {u:?}: not a valid URL"));
    }
    Ok(u.to_string())
}

fn own_dir_files(o: &Options) -> (PathBuf, PathBuf, PathBuf) {
    let sa = o.multimesh_conf_dir.join("serviceaccount");
    (sa.join("token"), sa.join("ca.crt"), sa)
}

/// One install pass. Returns what it did, a line per file.
pub fn install(o: &Options) -> Result<Vec<String>, String> {
    // Every input is read and checked before anything is written.
    let (primary_path, primary) = wait_primary(o)?;
    let api_server = o
        .api_server
        .as_deref()
        .ok_or("no API server: give --api-server URL")?;
    let conflist = render_conflist(o, &primary)?;
    let bin = std::fs::read(&o.bin_src)
        .map_err(|e| format!("cannot read the binary {}: {e}", o.bin_src.display()))?;
    let read_sa = |f: &str| {
        let p = o.service_account_dir.join(f);
        let b = std::fs::read(&p)
            .map_err(|e| format!("service account {f}: cannot read {}: {e}", p.display()))?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Err(format!("service account {f}: {} is empty", p.display()));
        }
        Ok(b)
    };
    let token = read_sa("token")?;
    let ca = read_sa("ca.crt")?;
    let (token_dst, ca_dst, sa_dir) = own_dir_files(o);
    let kubeconfig = render_kubeconfig(api_server, &ca_dst, &token_dst);

    // Everything the conflist refers to is in place before the conflist.
    let mut done = Vec::new();
    mkdir(&o.bin_dir, 0o755)?;
    let bin_dst = o.bin_dir.join(BIN_NAME);
    done.push(report(&bin_dst, write_if_changed(&bin_dst, &bin, 0o755)?));
    mkdir(&o.multimesh_conf_dir, 0o755)?;
    mkdir(&sa_dir, 0o700)?;
    done.push(report(
        &token_dst,
        write_if_changed(&token_dst, &token, 0o600)?,
    ));
    done.push(report(&ca_dst, write_if_changed(&ca_dst, &ca, 0o644)?));
    if let Some(d) = o.kubeconfig_out.parent() {
        mkdir(d, 0o755)?;
    }
    done.push(report(
        &o.kubeconfig_out,
        write_if_changed(&o.kubeconfig_out, kubeconfig.as_bytes(), 0o600)?,
    ));
    mkdir(&o.multimesh_conf_dir.join("net.d"), 0o755)?;
    mkdir(&o.state_dir, 0o700)?;

    mkdir(&o.cni_conf_dir, 0o755)?;
    let conflist_path = o.cni_conf_dir.join(CONF_NAME);
    let changed = write_if_changed(&conflist_path, &conflist, 0o644)?;
    done.push(format!(
        "{} (primary: {})",
        report(&conflist_path, changed),
        primary_path.display()
    ));
    Ok(done)
}

fn report(p: &Path, changed: bool) -> String {
    format!(
        "{} {}",
        if changed { "wrote" } else { "unchanged" },
        p.display()
    )
}

/// Remove what install wrote. Files already gone are fine.
pub fn uninstall(o: &Options) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    let conflist = o.cni_conf_dir.join(CONF_NAME);
    // The conflist first: no new pod uses multimesh from here on.
    if let Ok(b) = std::fs::read(&conflist) {
        let ours = serde_json::from_slice::<Value>(&b)
            .ok()
            .is_some_and(|v| is_multimesh(&v));
        if !ours {
            return Err(format!(
                "{} is not a multimesh config: not removing it",
                conflist.display()
            ));
        }
    }
    let (token, ca, sa_dir) = own_dir_files(o);
    for p in [
        conflist,
        o.kubeconfig_out.clone(),
        token,
        ca,
        o.bin_dir.join(BIN_NAME),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => done.push(format!("removed {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done.push(format!("absent {}", p.display()))
            }
            Err(e) => return Err(format!("cannot remove {}: {e}", p.display())),
        }
    }
    // Only if empty: the directory may hold files we did not write.
    let _ = std::fs::remove_dir(&sa_dir);
    Ok(done)
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Catch SIGTERM and SIGINT from here on (`terminating` tells): as PID 1
/// of a container their default action would be ignored.
pub fn catch_terminate() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: installing a handler is unsafe in nix because the
        // handler runs asynchronously; `on_terminate` only stores to an
        // atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &act) };
    }
}

/// Has SIGTERM or SIGINT arrived (after `catch_terminate`)?
pub fn terminating() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}

/// The lines of an install pass that wrote something.
pub fn changed(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| l.starts_with("wrote"))
        .collect()
}

/// Repeat the install pass every `every` until SIGTERM/SIGINT. A failed
/// pass is reported and retried; what is installed stays.
fn watch(o: &Options, every: Duration) {
    catch_terminate();
    let quick = Options {
        wait_for_primary: Duration::ZERO,
        ..o.clone()
    };
    println!(
        "multimesh install: watching every {}s until SIGTERM",
        every.as_secs()
    );
    loop {
        let until = Instant::now() + every;
        while Instant::now() < until {
            if terminating() {
                println!("multimesh install: terminating");
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match install(&quick) {
            Ok(lines) => print_lines(&changed(lines)),
            Err(e) => eprintln!("multimesh install: {e} (keeping what is installed)"),
        }
    }
}

/// Find the primary config, polling up to `wait_for_primary`.
fn wait_primary(o: &Options) -> Result<(PathBuf, Value), String> {
    let deadline = Instant::now() + o.wait_for_primary;
    loop {
        match find_primary(&o.cni_conf_dir, o.primary_conf.as_deref()) {
            Ok(Some(found)) => return Ok(found),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Ok(None) => {
                let what = match &o.primary_conf {
                    Some(n) => format!("{n} (--primary-conf)"),
                    None => "a *.conf, *.conflist or *.json file".into(),
                };
                let waited = if o.wait_for_primary.is_zero() {
                    String::new()
                } else {
                    format!(" after waiting {}s", o.wait_for_primary.as_secs())
                };
                return Err(format!(
                    "no primary network config in {}{waited}: expected {what} \
                     written by the cluster's network plugin (other than {CONF_NAME})",
                    o.cni_conf_dir.display()
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// True when a conf or conflist has multimesh as its main plugin.
fn is_multimesh(v: &Value) -> bool {
    let main = v
        .get("plugins")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .unwrap_or(v);
    main.get("type").and_then(Value::as_str) == Some("multimesh")
}

/// A loadable CNI config: a conflist with plugins that all have a type, or
/// a single conf with a type; every type a bare plugin name (the wrapped
/// primary becomes multimesh's first delegate, which refuses a path).
fn usable(v: &Value) -> Result<(), &'static str> {
    if !v.is_object() {
        return Err("not a JSON object");
    }
    let has_type = |p: &Value| {
        p.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    };
    let bare = |p: &Value| {
        p.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| crate::delegate::validate_type(t).is_ok())
    };
    match v.get("plugins") {
        Some(Value::Array(ps)) if ps.is_empty() => Err("empty plugins list"),
        Some(Value::Array(ps)) if !ps.iter().all(has_type) => {
            Err("plugins: every plugin needs a type")
        }
        Some(Value::Array(ps)) if ps.iter().all(bare) => Ok(()),
        Some(Value::Array(_)) => Err("plugins: a type is a path, not a bare plugin name"),
        Some(_) => Err("plugins: every plugin needs a type"),
        None if !has_type(v) => Err("no type and no plugins"),
        None if bare(v) => Ok(()),
        None => Err("type is a path, not a bare plugin name"),
    }
}

/// The primary network config in `dir`: the lexically first `*.conf`,
/// `*.conflist` or `*.json` that loads and is not multimesh's own (the way
/// the runtime picks; unreadable or invalid files are skipped with a note on
/// stderr, as the runtime skips them). `explicit` names the file instead.
pub fn find_primary(
    dir: &Path,
    explicit: Option<&str>,
) -> Result<Option<(PathBuf, Value)>, String> {
    let load = |p: &Path| -> Result<Value, String> {
        let b = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let v: Value = serde_json::from_slice(&b)
            .map_err(|e| format!("{}: not valid JSON: {e}", p.display()))?;
        usable(&v).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(v)
    };
    if let Some(name) = explicit {
        let p = dir.join(name);
        if !p.exists() {
            return Ok(None);
        }
        let v = load(&p)?;
        if is_multimesh(&v) {
            return Err(format!(
                "{}: --primary-conf names a multimesh config",
                p.display()
            ));
        }
        return Ok(Some((p, v)));
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n != CONF_NAME
                && [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|x| n.ends_with(x) && n.len() > x.len())
        })
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        if !p.is_file() {
            continue;
        }
        match load(&p) {
            Ok(v) if is_multimesh(&v) => {}
            Ok(v) => return Ok(Some((p, v))),
            Err(e) => eprintln!("multimesh install: skipping {e}"),
        }
    }
    Ok(None)
}

/// The capabilities the primary's plugins declare (true ones), in order of
/// first appearance: the runtime passes these to multimesh, which hands them
/// to the cluster network.
pub fn capabilities_union(primary: &Value) -> Map<String, Value> {
    let plugins: Vec<&Value> = match primary.get("plugins").and_then(Value::as_array) {
        Some(ps) => ps.iter().collect(),
        None => vec![primary],
    };
    let mut caps = Map::new();
    for p in plugins {
        if let Some(Value::Object(c)) = p.get("capabilities") {
            for (k, v) in c {
                if v == &Value::Bool(true) {
                    caps.insert(k.clone(), Value::Bool(true));
                }
            }
        }
    }
    caps
}

/// `00-multimesh.conflist`: multimesh as the one plugin of the list.
#[derive(Serialize)]
struct Conflist<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    name: &'a str,
    plugins: [&'a Plugin<'a>; 1],
}

/// multimesh's entry in the conflist, with the primary as its cluster
/// network (the first delegate) and the primary's capabilities.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Plugin<'a> {
    #[serde(rename = "type")]
    typ: &'a str,
    kubeconfig: &'a str,
    cni_dir: &'a str,
    conf_dir: &'a str,
    bin_dir: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_file: Option<&'a str>,
    delegates: [&'a Value; 1],
    capture: CaptureKeys<'a>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    capabilities: Map<String, Value>,
}

/// The `capture` keys install sets.
#[derive(Serialize)]
struct CaptureKeys<'a> {
    backend: &'a str,
    profile: &'a str,
}

/// The `00-multimesh.conflist` bytes for a primary config.
pub fn render_conflist(o: &Options, primary: &Value) -> Result<Vec<u8>, String> {
    let version = match &o.cni_version {
        Some(v) => v.clone(),
        None => primary
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or("the primary config has no cniVersion: give --cni-version")?
            .to_string(),
    };
    crate::cni::check_version(&version).map_err(|e| {
        format!(
            "{} (the primary's cniVersion; --cni-version overrides it)",
            e.msg
        )
    })?;
    let conf_dir = o.multimesh_conf_dir.join("net.d");
    let plugin = Plugin {
        typ: BIN_NAME,
        kubeconfig: path_str(&o.kubeconfig_out)?,
        cni_dir: path_str(&o.state_dir)?,
        conf_dir: path_str(&conf_dir)?,
        bin_dir: path_str(&o.bin_dir)?,
        log_level: o.log_level.as_deref(),
        log_file: o.log_file.as_deref(),
        delegates: [primary],
        capture: CaptureKeys {
            backend: &o.capture_backend,
            profile: &o.capture_profile,
        },
        capabilities: capabilities_union(primary),
    };
    // Never write a config the plugin itself would refuse: check it the way
    // the runtime will hand it over (cniVersion and name from the list).
    let mut as_run = match serde_json::to_value(&plugin) {
        Ok(Value::Object(m)) => m,
        _ => return Err("cannot encode the conflist".into()),
    };
    as_run.insert("cniVersion".into(), version.clone().into());
    as_run.insert("name".into(), NETWORK_NAME.into());
    NetConf::parse(&serde_json::to_vec(&as_run).unwrap_or_default())
        .map_err(|e| format!("generated config refused: {}", e.msg))?;
    let list = Conflist {
        cni_version: &version,
        name: NETWORK_NAME,
        plugins: [&plugin],
    };
    let mut b = serde_json::to_vec_pretty(&list).map_err(|e| e.to_string())?;
    b.push(b'\n');
    Ok(b)
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{}: path is not UTF-8", p.display()))
}

/// A kubeconfig that reads the token file on every use (a rotated token keeps
/// working) and trusts the cluster CA file: the kubeconfig types the plugin
/// reads, written by serde_norway (which quotes what must be quoted).
pub fn render_kubeconfig(server: &str, ca: &Path, token: &Path) -> String {
    use crate::fields::Object;
    use crate::k8s::kubeconfig::{
        Cluster, Context, Kubeconfig, NamedCluster, NamedContext, NamedUser, User,
    };
    let kc = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![Object(NamedCluster {
            name: Some("local".into()),
            cluster: Some(Object(Cluster {
                server: Some(server.into()),
                certificate_authority: Some(ca.to_string_lossy().into_owned()),
                ..Cluster::default()
            })),
        })],
        users: vec![Object(NamedUser {
            name: Some("multimesh".into()),
            user: Some(Object(User {
                token_file: Some(token.to_string_lossy().into_owned()),
                ..User::default()
            })),
        })],
        contexts: vec![Object(NamedContext {
            name: Some("multimesh-context".into()),
            context: Some(Object(Context {
                cluster: Some("local".into()),
                user: Some("multimesh".into()),
            })),
        })],
        current_context: Some("multimesh-context".into()),
    };
    let yaml = serde_norway::to_string(&kc).unwrap_or_default();
    format!(
        "# Written by multimesh install. tokenFile is a host copy of the service\n\
         # account token, kept current by `multimesh install --watch`.\n{yaml}"
    )
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    if p.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(|e| format!("cannot create {}: {e}", p.display()))
}

/// Replace `path` with `bytes` and `mode` atomically, unless it already has
/// exactly those. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_file()
            && meta.permissions().mode() & 0o7777 == mode
            && meta.len() == bytes.len() as u64
            && same_content(path, bytes)
        {
            return Ok(false);
        }
    }
    crate::state::replace_file(path, bytes, mode, true)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(true)
}

/// Does the file hold exactly `bytes`? Compared a block at a time: the
/// agent repeats install passes, and the binary is megabytes.
fn same_content(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut block = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        match f.read(&mut block) {
            Ok(0) => return at == bytes.len(),
            Ok(n) => {
                if bytes.get(at..at + n) != Some(&block[..n]) {
                    return false;
                }
                at += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(h: Option<&str>, p: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let (h, p) = (h.map(String::from), p.map(String::from));
        move |k| match k {
            "KUBERNETES_SERVICE_HOST" => h.clone(),
            "KUBERNETES_SERVICE_PORT" => p.clone(),
            _ => None,
        }
    }

    #[test]
    fn api_server_from_env() {
        let o = parse_args(&[], env(Some("198.51.100.1"), Some("443"))).unwrap();
        assert_eq!(o.api_server.as_deref(), Some("https://198.51.100.1:443"));
        let o = parse_args(&[], env(Some("2001:db8::1"), Some("6443"))).unwrap();
        assert_eq!(o.api_server.as_deref(), Some("https://[2001:db8::1]:6443"));
        let e = parse_args(&[], env(None, None)).unwrap_err();
        assert!(e.contains("--api-server"), "{e}");
        assert!(parse_args(&[], env(Some("h"), Some("x"))).is_err());
        // --uninstall does not need one.
        assert!(parse_args(&["--uninstall"], env(None, None)).is_ok());
        let o = parse_args(&["--api-server=https://k8s.example:6443"], env(None, None)).unwrap();
        assert_eq!(o.api_server.as_deref(), Some("https://k8s.example:6443"));
        assert!(parse_args(&["--api-server", "ftp://x"], env(None, None)).is_err());
        assert!(parse_args(&["--api-server", "https://x\"y"], env(None, None)).is_err());
        assert!(parse_args(
            &["--api-server", "http://198.51.100.1:8080"],
            env(None, None)
        )
        .is_err());
    }

    #[test]
    fn options() {
        let e = env(Some("198.51.100.1"), Some("443"));
        let o = parse_args(&[], &e).unwrap();
        assert_eq!(o.bin_src, PathBuf::from("/proc/self/exe"));
        assert_eq!(
            o.kubeconfig_out,
            PathBuf::from("/etc/cni/multimesh/multimesh.kubeconfig")
        );
        let o = parse_args(&["--multimesh-conf-dir", "/x"], &e).unwrap();
        assert_eq!(o.kubeconfig_out, PathBuf::from("/x/multimesh.kubeconfig"));
        for bad in [
            &["--nope"][..],
            &["--bin-dir"],
            &["--bin-dir", "a", "--bin-dir", "b"],
            &["--capture-backend", "ebpf"],
            &["--capture-profile", "cilium"],
            &["--cni-version", "0.2.0"],
            &["--wait-for-primary", "-1"],
            &["--watch", "0"],
            &["--watch", "5", "--uninstall"],
            &["--primary-conf", "../x.conf"],
            &["--log-level", "loud"],
        ] {
            assert!(parse_args(bad, &e).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capabilities() {
        let p = json!({"plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true, "x": false}},
        ]});
        assert_eq!(
            Value::Object(capabilities_union(&p)),
            json!({"portMappings": true, "bandwidth": true})
        );
        let c = json!({"type": "bridge", "capabilities": {"ips": true}});
        assert_eq!(Value::Object(capabilities_union(&c)), json!({"ips": true}));
    }

    /// What `render_kubeconfig` writes reads back as written, whatever
    /// the paths look like to YAML.
    #[test]
    fn kubeconfig_values_read_back() {
        for (server, ca, token) in [
            ("https://[2001:db8::1]:6443", "/a/b.crt", "/t"),
            ("https://198.51.100.1", "/a b/ca", "/yes"),
            ("https://x", "/123", "/a#b: c"),
            ("https://x", "/ca\n- evil", "/\"q\""),
        ] {
            let text = render_kubeconfig(server, Path::new(ca), Path::new(token));
            let v = crate::k8s::yaml_to_json(&text).unwrap();
            assert_eq!(v["clusters"][0]["cluster"]["server"], server, "{text}");
            assert_eq!(
                v["clusters"][0]["cluster"]["certificate-authority"], ca,
                "{text}"
            );
            assert_eq!(v["users"][0]["user"]["tokenFile"], token, "{text}");
            assert_eq!(v["current-context"], "multimesh-context");
        }
    }

    #[test]
    fn multimesh_configs_are_recognised() {
        assert!(is_multimesh(&json!({"type": "multimesh"})));
        assert!(is_multimesh(&json!({"plugins": [{"type": "multimesh"}]})));
        // multimesh chained after the main plugin: that one is the primary.
        assert!(!is_multimesh(
            &json!({"plugins": [{"type": "bridge"}, {"type": "multimesh"}]})
        ));
        assert!(usable(&json!({"plugins": []})).is_err());
        assert!(usable(&json!({"name": "x"})).is_err());
        assert!(usable(&json!({"plugins": [{"type": "bridge"}]})).is_ok());
        for t in ["/bin/sh", "../bridge", "a/b"] {
            assert!(usable(&json!({"type": t})).is_err(), "{t}");
            assert!(usable(&json!({"plugins": [{"type": "bridge"}, {"type": t}]})).is_err());
        }
    }
}
