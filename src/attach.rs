//! Attachments: ADD, DEL, CHECK, GC and STATUS for both ways of running.
//!
//! Meta-plugin: run the networks `networks` lists (the cluster network,
//! `defaultNetworks`, the pod's requests) as delegates while capture is
//! programmed alongside on its own thread. Chained: program capture only
//! and pass prevResult through.
//!
//! Failure handling: state is written before the first delegate runs and
//! after each one returns, so whatever ADD did can always be undone — by
//! ADD's own rollback, by DEL, or by the next ADD finding a crashed one.
//!
//! Repairs (`repair`, for the node agent): capture programmed into the
//! netns of a pod whose ADD multimesh never saw (it ran before multimesh
//! was installed). The repair is recorded like a chained ADD's capture,
//! in a container directory named by the netns (`repair-<netns key>`,
//! network `multimesh-repair`, so no runtime's GC of its own network
//! touches it) and as an owner of the netns's capture. The pod's own DEL
//! finds no record of its container; it then looks for a repair of the
//! netns CNI_NETNS names and releases it (`release_repair`), so the rules
//! and the record go with the pod.

use crate::capture::{self, CaptureConfig, Setup};
use crate::cni::{self, Env};
use crate::config::NetConf;
use crate::delegate::{Delegate, Runner};
use crate::error::{code, combine, CniError, Result};
use crate::k8s;
use crate::netns::NetNs;
use crate::networks::{self, Network};
use crate::state::{self, Attachment, ContainerLock, Mode, NetnsOwners, Record};
use serde_json::{Map, Value};
use std::path::Path;

fn runner(conf: &NetConf, env: &Env) -> Runner {
    Runner {
        bin_dir: conf.bin_dir.clone(),
        cni_path: env.path.clone(),
        container_id: env.container_id.clone(),
        netns: env.netns.clone(),
        args: env.args.clone(),
        cluster_ifname: env.ifname.clone(),
        bounds: crate::delegate::Bounds::new(conf.delegate_timeout, conf.add_timeout),
    }
}

fn attachments_of(networks: &[Network]) -> Vec<Attachment> {
    networks
        .iter()
        .map(|p| Attachment {
            ifname: p.ifname.clone(),
            name: p.delegate.name.clone(),
            conf: if p.delegate.plugins.len() == 1 && p.delegate.plugins[0].get("plugins").is_none()
            {
                let mut m = p.delegate.plugins[0].clone();
                m.insert("name".into(), p.delegate.name.clone().into());
                m.insert("cniVersion".into(), p.delegate.version.clone().into());
                Value::Object(m)
            } else {
                serde_json::json!({"name": p.delegate.name, "cniVersion": p.delegate.version,
                    "plugins": p.delegate.plugins})
            },
            runtime_config: p.runtime_config.clone().map(Value::Object),
            result: None,
            started: false,
        })
        .collect()
}

fn rc_of(a: &Attachment) -> Option<Map<String, Value>> {
    a.runtime_config
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
}

/// Undo a record: capture (alongside, if this attachment is its last
/// owner) and delegates in reverse. Every step is tried. An attachment
/// whose ADD never succeeded gets a best-effort DEL (its error logged, not
/// returned) and is dropped; on other errors the record keeps what is left
/// and the errors are returned (first in `msg`, the rest in `details`), so a
/// later DEL can finish the job.
fn teardown(rec: &mut Record, lock: &ContainerLock, run: &Runner, netns: &str) -> Result<()> {
    let mut errors: Vec<CniError> = Vec::new();
    if let (None, Some(k)) = (&rec.capture, &rec.netns_key) {
        // Owned once, but nothing of it is in the netns (a refused step).
        NetnsOwners::of(lock).remove(k, lock, &rec.ifname);
    }
    // Capture is released on its own thread while the delegates' DELs run:
    // neither depends on the other, and removing an nftables table waits
    // for an RCU grace period that need not hold the DELs up.
    let mut remaining = Vec::new();
    let share = rec
        .capture
        .clone()
        .map(|c| (c, rec.netns_key.clone(), rec.ifname.clone()));
    let released = std::thread::scope(|s| {
        let h = share.as_ref().map(|(c, key, ifname)| {
            s.spawn(move || {
                timed("removal", || {
                    release_capture(c, key.as_deref(), netns, lock, ifname)
                })
            })
        });
        for a in rec.attachments.iter().rev() {
            if !a.started {
                continue;
            }
            let res = Delegate::from_value(&a.conf, &rec.cni_version)
                .and_then(|d| run.del(&d, &a.ifname, rc_of(a).as_ref(), a.result.as_ref()));
            match res {
                Ok(()) => {}
                Err(e) if a.result.is_none() => log::error!(
                    "{}: ADD never succeeded; its DEL failed too and is not retried: {e}",
                    a.ifname
                ),
                Err(e) => {
                    errors.push(e);
                    remaining.push(a.clone());
                }
            }
        }
        h.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(CniError::new(code::CAPTURE_APPLY, "capture thread failed"))
            })
        })
    });
    match released {
        Some(Ok(())) => rec.capture = None,
        // Capture's error first, as when it was removed first.
        Some(Err(e)) => errors.insert(0, e),
        None => {}
    }
    remaining.reverse();
    rec.attachments = remaining;
    match combine(errors) {
        None => lock.delete(&rec.ifname),
        Some(e) => {
            let _ = lock.save(rec);
            Err(e)
        }
    }
}

/// Give up this attachment's share of the capture in `netns` (recorded as
/// `c`, owned under `key`): under the netns lock, drop its owner marker and
/// remove the rules unless another attachment still owns them. Ok when the
/// capture is gone, kept for another owner, or gone with the netns.
fn release_capture(
    c: &Value,
    key: Option<&str>,
    netns: &str,
    lock: &ContainerLock,
    ifname: &str,
) -> Result<()> {
    let owners = NetnsOwners::of(lock);
    let ns = match netns.is_empty() {
        true => None,
        false => NetNs::open(Path::new(netns))?,
    };
    let Some(ns) = ns else {
        // Gone with the netns (or DEL without one: nothing to reach).
        if let Some(k) = key {
            owners.remove(k, lock, ifname);
        }
        return Ok(());
    };
    let key = key.map(String::from).or_else(|| ns.key().ok());
    let _held = ns.lock()?;
    if let Some(k) = &key {
        owners.remove(k, lock, ifname);
        if owners.others(k, lock, ifname) {
            log::info!("capture kept: another attachment of this netns owns it");
            return Ok(());
        }
    }
    match Setup::from_json(c) {
        Ok(p) => {
            log::debug!("capture: removing");
            capture::remove(&p, &ns, lock.dir())?;
            log::debug!("capture: removed");
            Ok(())
        }
        Err(e) => {
            // Written by another version, say: the rules go with the netns;
            // a DEL that can never succeed would be worse.
            log::error!("capture record unreadable, not removed: {e}");
            Ok(())
        }
    }
}

/// Run a capture step, logging how long it took (debug).
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = std::time::Instant::now();
    let r = f();
    log::debug!(
        "capture: {what} took {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    r
}

fn lock(conf: &NetConf, env: &Env, create: bool) -> Result<Option<ContainerLock>> {
    ContainerLock::acquire(&conf.cni_dir, &env.container_id, create)
}

/// How a capture step programs: `capture::apply` (the whole plan) or
/// `capture::add_ipv6` (the IPv6 part after a single-stack apply).
type CaptureStep = fn(&Setup, &NetNs, &Path) -> std::result::Result<(), capture::ApplyError>;

/// Make this attachment an owner of capture in `ns` (the caller holds the
/// netns lock): the record names the capture and the netns first (so a
/// crash leaves a trace for DEL), then the owner marker points at it.
fn own_capture(p: &Setup, rec: &mut Record, lk: &ContainerLock, ns: &NetNs) -> Result<()> {
    let key = ns.key()?;
    rec.capture = Some(p.to_json());
    rec.netns_key = Some(key.clone());
    lk.save(rec)?;
    NetnsOwners::of(lk).add(&key, lk, &rec.ifname)
}

/// Programme capture for a record, as an owner of the netns's capture.
fn add_capture(
    p: &Setup,
    rec: &mut Record,
    lk: &ContainerLock,
    ns: &NetNs,
    step: CaptureStep,
) -> Result<()> {
    let _held = ns.lock()?;
    own_capture(p, rec, lk, ns)?;
    log::debug!("capture: programming");
    match step(p, ns, lk.dir()) {
        Ok(()) => {
            log::debug!("capture: programmed");
            Ok(())
        }
        Err(f) => {
            if f.clean {
                // Nothing of it is in the netns: nothing for rollback to remove.
                rec.capture = None;
                lk.save(rec)?;
            }
            Err(f.error)
        }
    }
}

/// Run the networks' delegates in order, recording each result in the
/// record's journal (one appended line per step, `append_step`). The last
/// result is saved with the next step's write (completion): one write fewer
/// per ADD.
fn run_delegates(
    run: &Runner,
    networks: &[Network],
    rec: &mut Record,
    lk: &ContainerLock,
) -> Result<()> {
    for (i, p) in networks.iter().enumerate() {
        let res = run.add(&p.delegate, &p.ifname, p.runtime_config.as_ref())?;
        rec.attachments[i].result = Some(res);
        if let Some(next) = rec.attachments.get_mut(i + 1) {
            next.started = true;
            lk.append_step(rec, i)?;
        }
    }
    Ok(())
}

fn open_netns(env: &Env) -> Result<NetNs> {
    NetNs::open(Path::new(&env.netns))?
        .ok_or_else(|| CniError::new(code::NETNS, format!("netns {} does not exist", env.netns)))
}

fn new_record(conf: &NetConf, env: &Env, mode: Mode, attachments: Vec<Attachment>) -> Record {
    Record {
        network: conf.name.clone(),
        cni_version: conf.cni_version.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        cni_args: env.args.clone(),
        mode,
        complete: false,
        attachments,
        capture: None,
        netns_key: None,
    }
}

fn readiness(conf: &NetConf, code_: u32) -> Result<()> {
    if let Some(f) = &conf.readiness_indicator_file {
        if !f.exists() {
            return Err(CniError::new(
                code_,
                format!(
                    "readiness indicator file {} does not exist yet",
                    f.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Kubernetes mode: configured, and CNI_ARGS names a pod. Reads the pod.
fn k8s_session(conf: &NetConf, env: &Env) -> Result<Option<k8s::Session>> {
    let Some(pod) = k8s::PodRef::from_args(&env.args) else {
        return Ok(None);
    };
    let Some(cfg) = k8s::api_config(conf) else {
        return Ok(None);
    };
    let s = k8s::Session::open(cfg?, pod)?;
    log::debug!("k8s: pod read");
    Ok(Some(s))
}

pub fn add(conf: &NetConf, env: &Env) -> Result<Value> {
    readiness(conf, code::TRY_AGAIN)?;
    let ns = open_netns(env)?;
    let run = runner(conf, env);
    let mut session = k8s_session(conf, env)?;
    let static_capture = || conf.capture.enabled.then(|| conf.capture.clone());
    let (networks, capture_cfg) = match (conf.is_meta(), session.as_mut()) {
        (true, Some(s)) => {
            let pn = networks::pod::for_pod(conf, &env.ifname, s)?;
            (pn.networks, pn.capture)
        }
        (true, None) => (networks::from_config(conf, &env.ifname)?, static_capture()),
        (false, Some(s)) => (Vec::new(), s.capture(&conf.capture)?),
        (false, None) => (Vec::new(), static_capture()),
    };
    // Refuse before anything runs: every plugin must be found, and a
    // NetworkAttachmentDefinition may not run multimesh (nor, when the
    // admin lists them, any type not in allowedNetworkTypes).
    for x in &networks {
        if x.nad {
            check_nad_types(conf, &run, x)?;
        }
        run.resolve(&x.delegate)?;
    }
    let lk = lock(conf, env, true)?
        .ok_or_else(|| CniError::new(code::STATE, "state directory vanished"))?;
    if let Some(mut old) = lk.load(&env.ifname)? {
        if old.complete && old.mode == Mode::Meta {
            return Err(CniError::new(
                code::ALREADY_ATTACHED,
                format!(
                    "container {} already has {} attached by multimesh; DEL it first",
                    env.container_id, env.ifname
                ),
            ));
        }
        if !(old.complete && old.mode == Mode::Chained) {
            // A crashed or interrupted ADD: undo it first. (A repeated
            // chained ADD needs nothing undone: programming converges.)
            log::info!("found an unfinished ADD; undoing it");
            teardown(&mut old, &lk, &run, &env.netns).map_err(|e| {
                CniError::new(
                    code::TRY_AGAIN,
                    format!("cleaning up an earlier ADD failed: {e}"),
                )
            })?;
        }
    }
    if !conf.is_meta() {
        return add_chained(conf, env, &lk, &ns, &run, capture_cfg.as_ref());
    }
    let (result, results) = add_meta(conf, env, &lk, &ns, &run, &networks, capture_cfg.as_ref())?;
    if let Some(s) = session.as_mut() {
        // As Multus: a failed status write is logged, not fatal — the pod's
        // networks work; the annotation is informational.
        let entries = network_status(&networks, &results);
        match s.write_status(&entries) {
            Ok(()) => log::debug!("k8s: network-status written"),
            Err(e) => log::error!("network-status not written: {e}"),
        }
        log::info!("k8s: {} API requests", s.requests());
    }
    Ok(result)
}

fn check_nad_types(conf: &NetConf, run: &Runner, x: &Network) -> Result<()> {
    let nad = &x.status_name;
    if run.runs_multimesh(&x.delegate) {
        return Err(CniError::config(format!(
            "NetworkAttachmentDefinition {nad}: its config runs multimesh, which cannot run under multimesh"
        )));
    }
    let allowed = &conf.allowed_network_types;
    if let Some(t) = x
        .delegate
        .types()
        .find(|t| !allowed.is_empty() && !allowed.iter().any(|a| a == t))
    {
        return Err(CniError::config(format!(
            "NetworkAttachmentDefinition {nad}: plugin type {t:?} is not in allowedNetworkTypes"
        )));
    }
    Ok(())
}

/// Multus's network-status: one entry per attachment; `default` on the
/// cluster network, or on the network the pod gave the default route.
fn network_status(networks: &[Network], results: &[Option<Value>]) -> Vec<Value> {
    let any_gw = networks.iter().any(|p| !p.default_route.is_empty());
    networks
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (p, r))| {
            let default = if any_gw {
                !p.default_route.is_empty()
            } else {
                i == 0
            };
            let r = r
                .as_ref()
                .and_then(|r| cni::convert_result(r, "1.0.0").ok());
            k8s::pod::status_entry(&p.status_name, &p.ifname, r.as_ref(), default)
        })
        .collect()
}

/// Move the default route of each requested gateway's family to its
/// interface (Multus's `default-route`), over netlink in the pod netns.
fn set_default_routes(ns: &NetNs, networks: &[Network]) -> Result<()> {
    let routes: Vec<(String, std::net::IpAddr)> = networks
        .iter()
        .flat_map(|p| p.default_route.iter().map(|gw| (p.ifname.clone(), *gw)))
        .collect();
    crate::netlink::set_default_routes(ns, routes)?.map_err(|e| CniError::new(code::POD_REQUEST, e))
}

#[allow(clippy::type_complexity)]
fn add_meta(
    conf: &NetConf,
    env: &Env,
    lk: &ContainerLock,
    ns: &NetNs,
    run: &Runner,
    networks: &[Network],
    capture_cfg: Option<&CaptureConfig>,
) -> Result<(Value, Vec<Option<Value>>)> {
    let mut rec = new_record(conf, env, Mode::Meta, attachments_of(networks));
    let others = lk.records();
    for a in &rec.attachments {
        if others
            .iter()
            .any(|r| r.ifname == a.ifname || r.attachments.iter().any(|x| x.ifname == a.ifname))
        {
            return Err(CniError::new(
                code::ALREADY_ATTACHED,
                format!(
                    "interface {} is already attached to container {}",
                    a.ifname, env.container_id
                ),
            ));
        }
    }
    if let Some(a) = rec.attachments.first_mut() {
        a.started = true;
    }
    // Capture is programmed while the delegates run, on its own thread (the
    // tool it execs enters the pod netns in the forked child): its rules
    // name interfaces, which need not exist yet, and nothing a delegate
    // does in the pod netns depends on them. It starts single-stack;
    // when a result brings IPv6, the IPv6 part follows the delegates.
    // Recorded before it starts, so a crash leaves a trace for DEL.
    let early = match capture_cfg {
        Some(cfg) => Some(Setup::resolve(cfg, false, lk.dir())?),
        None => None,
    };
    let fail = |rec: &mut Record, e: CniError| -> CniError {
        log::error!("ADD failed, rolling back: {e}");
        if let Err(re) = teardown(rec, lk, run, &env.netns) {
            log::error!("rollback incomplete (DEL will retry): {re}");
        }
        e
    };
    // Touch only our own: an interface this ADD would create that already
    // exists in the pod netns (another container's, say) fails the ADD
    // before any delegate runs — a rollback would DEL the other's. The
    // netns is listed (over netlink, on its own thread) while the record
    // is written. Capture belongs to the netns: its lock is held while
    // this attachment becomes an owner and programs it, so a DEL of
    // another owner cannot remove it in between (released before any
    // rollback, which takes it again).
    let names: Vec<String> = networks.iter().map(|p| p.ifname.clone()).collect();
    let (present, held, owned) = std::thread::scope(|s| {
        let listing = s.spawn(|| crate::netlink::existing_links(ns, &names));
        let held = match &early {
            Some(_) => ns.lock().map(Some),
            None => Ok(None),
        };
        let owned = match (&held, &early) {
            (Err(_), _) => Ok(()),
            (Ok(_), Some(p)) => own_capture(p, &mut rec, lk, ns),
            (Ok(_), None) => lk.save(&rec),
        };
        let present = listing
            .join()
            .unwrap_or_else(|_| Err(CniError::new(code::NETNS, "netlink thread failed")));
        (present, held, owned)
    });
    let held = held?; // nothing was written
    let refused = match present {
        Ok(p) if p.is_empty() => owned.err(),
        Ok(p) => Some(CniError::new(
            code::ALREADY_ATTACHED,
            format!(
                "interface {} already exists in netns {}; nothing was run",
                p.join(", "),
                env.netns
            ),
        )),
        Err(e) => Some(e.context(format!("netns {}", env.netns))),
    };
    if let Some(e) = refused {
        // Nothing has run yet: undo only what is on disk (a record, an
        // owner marker), no delegate DEL, no capture removal.
        drop(held);
        rec.attachments.iter_mut().for_each(|a| a.started = false);
        rec.capture = None;
        return Err(fail(&mut rec, e));
    }
    let (delegated, captured) = std::thread::scope(|s| {
        let capture = early.as_ref().map(|p| {
            log::debug!("capture: programming (alongside the delegates)");
            s.spawn(|| timed("apply", || capture::apply(p, ns, lk.dir())))
        });
        let delegated = run_delegates(run, networks, &mut rec, lk);
        let captured = capture.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(capture::ApplyError {
                    error: CniError::new(code::CAPTURE_APPLY, "capture thread failed"),
                    clean: false,
                })
            })
        });
        (delegated, captured)
    });
    drop(held);
    match captured {
        Some(Err(f)) => {
            if f.clean {
                // Nothing of it is in the netns: nothing for rollback to remove.
                rec.capture = None;
            }
            if let Err(e) = delegated {
                log::error!("capture failed too: {}", f.error);
                return Err(fail(&mut rec, e));
            }
            return Err(fail(&mut rec, f.error));
        }
        Some(Ok(())) => log::debug!("capture: programmed"),
        None => {}
    }
    if let Err(e) = delegated {
        return Err(fail(&mut rec, e));
    }
    if networks.iter().any(|p| !p.default_route.is_empty()) {
        if let Err(e) = set_default_routes(ns, networks) {
            return Err(fail(&mut rec, e));
        }
    }
    if let Some(p) = &early {
        let ipv6 = rec
            .attachments
            .iter()
            .filter_map(|a| a.result.as_ref())
            .any(cni::result_has_ipv6);
        if ipv6 {
            let p6 = Setup {
                ipv6: true,
                ..p.clone()
            };
            if let Err(e) = add_capture(&p6, &mut rec, lk, ns, capture::add_ipv6) {
                return Err(fail(&mut rec, e));
            }
        }
    }
    rec.complete = true;
    if let Err(e) = lk.save(&rec) {
        return Err(fail(&mut rec, e));
    }
    let first = rec.attachments[0].result.clone().unwrap_or(Value::Null);
    let results = rec.attachments.iter().map(|a| a.result.clone()).collect();
    Ok((cni::convert_result(&first, &conf.cni_version)?, results))
}

fn add_chained(
    conf: &NetConf,
    env: &Env,
    lk: &ContainerLock,
    ns: &NetNs,
    run: &Runner,
    capture_cfg: Option<&CaptureConfig>,
) -> Result<Value> {
    let out = match &conf.prev_result {
        // Passed on in the config's version (unchanged when it is already,
        // as libcni sends it); one without a usable cniVersion is refused
        // rather than echoed as a result no runtime can read.
        Some(p) => {
            cni::convert_result(p, &conf.cni_version).map_err(|e| e.context("prevResult"))?
        }
        None => cni::empty_result(&conf.cni_version),
    };
    let mut rec = new_record(conf, env, Mode::Chained, Vec::new());
    if let Some(cfg) = capture_cfg {
        let ipv6 = conf.prev_result.as_ref().is_some_and(cni::result_has_ipv6)
            || lk.records().iter().any(|r| {
                r.capture
                    .as_ref()
                    .and_then(|c| Setup::from_json(c).ok())
                    .is_some_and(|p| p.ipv6)
            });
        let added = Setup::resolve(cfg, ipv6, lk.dir())
            .and_then(|p| add_capture(&p, &mut rec, lk, ns, capture::apply));
        if let Err(e) = added {
            let _ = teardown(&mut rec, lk, run, &env.netns);
            return Err(e);
        }
    }
    rec.complete = true;
    lk.save(&rec)?;
    Ok(out)
}

pub fn del(conf: &NetConf, env: &Env) -> Result<()> {
    let mut run = runner(conf, env);
    let lk = lock(conf, env, true)?
        .ok_or_else(|| CniError::new(code::STATE, "state directory vanished"))?;
    let loaded = match lk.load(&env.ifname) {
        Ok(r) => r,
        Err(e) if e.code == code::STATE => {
            // A record that cannot be read (e.g. truncated by a power loss:
            // records are renamed into place but not fsync'ed) must not make
            // DEL fail forever: fall back to the config, as without state.
            log::error!("DEL: ignoring unreadable state: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let mut rec = match loaded {
        Some(r) => r,
        None => {
            // No state (never added, already deleted, or cniDir lost): do
            // what the config says, as Multus does, so IPs are not leaked —
            // but without the netns: nothing says the interfaces there are
            // this container's (an ADD refused because another container
            // has eth0 leaves no record, and its DEL must not remove the
            // other's eth0). IPAM releases by container ID; interfaces go
            // with the netns.
            run.netns.clear();
            let atts = if conf.is_meta() {
                match networks::from_config(conf, &env.ifname) {
                    Ok(p) => {
                        let mut a = attachments_of(&p);
                        a.iter_mut().for_each(|x| x.started = true);
                        a
                    }
                    Err(e) => {
                        log::error!("DEL without state: {e}");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let r = new_record(
                conf,
                env,
                if conf.is_meta() {
                    Mode::Meta
                } else {
                    Mode::Chained
                },
                atts,
            );
            if !env.netns.is_empty() {
                // The agent may have repaired this netns (the pod's ADD
                // went to the primary plugin alone): release that first.
                let key = NetNs::open(Path::new(&env.netns))
                    .ok()
                    .flatten()
                    .and_then(|ns| ns.key().ok());
                if let Some(k) = key {
                    if let Err(e) = release_repair(&conf.cni_dir, &k, Some(&env.netns)) {
                        log::error!("DEL: repaired capture not released: {e}");
                    }
                }
            }
            if conf.capture.enabled {
                // Nothing says capture was ever programmed: remove what may
                // be there, best effort, unless another attachment of this
                // netns owns it. A missing or failing tool must not fail
                // this DEL for good (the runtime would retry it forever);
                // the rules live in the pod netns, which goes away with the
                // pod.
                let p = Setup {
                    config: conf.capture.clone(),
                    variant: conf.capture.variant,
                    ipv6: true,
                };
                if let Err(e) = remove_unowned_capture(&p, &env.netns, &lk, &env.ifname) {
                    log::error!("DEL without state: capture not removed: {e}");
                }
            }
            r
        }
    };
    teardown(&mut rec, &lk, &run, &env.netns)
}

/// DEL without state: remove capture from `netns` unless an attachment
/// owns it.
fn remove_unowned_capture(p: &Setup, netns: &str, lk: &ContainerLock, ifname: &str) -> Result<()> {
    if netns.is_empty() {
        return Ok(());
    }
    let Some(ns) = NetNs::open(Path::new(netns))? else {
        return Ok(()); // gone, and the rules with it
    };
    let _held = ns.lock()?;
    let owners = NetnsOwners::of(lk);
    let key = ns.key()?;
    owners.remove(&key, lk, ifname);
    if owners.others(&key, lk, ifname) {
        log::info!("DEL without state: capture kept, other attachments own it");
        return Ok(());
    }
    capture::remove(p, &ns, lk.dir())
}

/// The network name of repair records (never a runtime's network).
pub const REPAIR_NETWORK: &str = "multimesh-repair";
/// The "interface" a repair record is filed under (the whole netns).
const REPAIR_IFNAME: &str = "repair";
const REPAIR_PREFIX: &str = "repair-";

/// What `repair` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repaired {
    /// Capture programmed and recorded.
    Programmed,
    /// Nothing to do: multimesh already owns this netns's capture (an
    /// ADD's or an earlier repair).
    AlreadyOwned,
}

fn repair_runner(netns: &str) -> Runner {
    Runner {
        bin_dir: Default::default(),
        cni_path: String::new(),
        container_id: String::new(),
        netns: netns.to_string(),
        args: String::new(),
        cluster_ifname: REPAIR_IFNAME.into(),
        bounds: crate::delegate::Bounds::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        ),
    }
}

/// Program capture `cfg` into `ns` (reached as `netns_path`) for a pod
/// whose ADD multimesh never saw, exactly as a chained ADD does (the same
/// `Setup`, backend and ownership), and record it under cniDir so that
/// the pod's DEL removes it (`release_repair`). `cni_args` names the pod
/// (K8S_POD_NAMESPACE/NAME/UID) for the agent's later clean-up. On
/// failure nothing stays: neither rules nor record.
pub fn repair(
    cni_dir: &Path,
    ns: &NetNs,
    netns_path: &str,
    cfg: &CaptureConfig,
    ipv6: bool,
    cni_args: &str,
) -> Result<Repaired> {
    let key = ns.key()?;
    let lk = ContainerLock::acquire(cni_dir, &format!("{REPAIR_PREFIX}{key}"), true)?
        .ok_or_else(|| CniError::new(code::STATE, "state directory vanished"))?;
    let run = repair_runner(netns_path);
    if let Some(mut old) = lk.load(REPAIR_IFNAME)? {
        if old.complete {
            return Ok(Repaired::AlreadyOwned);
        }
        // An interrupted repair: undo it, then start again.
        teardown(&mut old, &lk, &run, netns_path)?;
    }
    {
        let _held = ns.lock()?;
        if NetnsOwners::of(&lk).any(&key) {
            return Ok(Repaired::AlreadyOwned);
        }
    }
    let mut rec = Record {
        network: REPAIR_NETWORK.into(),
        cni_version: cni::SUPPORTED_VERSIONS
            .last()
            .copied()
            .unwrap_or("1.0.0")
            .into(),
        container_id: format!("{REPAIR_PREFIX}{key}"),
        ifname: REPAIR_IFNAME.into(),
        netns: netns_path.into(),
        cni_args: cni_args.into(),
        mode: Mode::Chained,
        complete: false,
        attachments: Vec::new(),
        capture: None,
        netns_key: None,
    };
    let added = Setup::resolve(cfg, ipv6, lk.dir())
        .and_then(|p| add_capture(&p, &mut rec, &lk, ns, capture::apply));
    if let Err(e) = added {
        if let Err(re) = teardown(&mut rec, &lk, &run, netns_path) {
            log::error!("repair rollback incomplete: {re}");
        }
        return Err(e);
    }
    rec.complete = true;
    if let Err(e) = lk.save(&rec) {
        let _ = teardown(&mut rec, &lk, &run, netns_path);
        return Err(e);
    }
    Ok(Repaired::Programmed)
}

/// Release the repair of netns `key`, if there is one: remove its capture
/// (unless another attachment owns it too) and its record. `netns` is the
/// path to reach it (DEL's CNI_NETNS); None: the path the record names, if
/// that still is netns `key` (else only the record and owner marker go:
/// the netns, and its rules, are gone). Ok(false): no repair of `key`.
pub fn release_repair(cni_dir: &Path, key: &str, netns: Option<&str>) -> Result<bool> {
    let Some(lk) = ContainerLock::acquire(cni_dir, &format!("{REPAIR_PREFIX}{key}"), false)? else {
        return Ok(false);
    };
    let Some(mut rec) = lk.load(REPAIR_IFNAME)? else {
        return Ok(false);
    };
    let path = match netns {
        Some(p) => p.to_string(),
        None => {
            let same = NetNs::open(Path::new(&rec.netns))
                .ok()
                .flatten()
                .and_then(|ns| ns.key().ok())
                .is_some_and(|k| k == key);
            if same {
                rec.netns.clone()
            } else {
                String::new()
            }
        }
    };
    teardown(&mut rec, &lk, &repair_runner(&path), &path)?;
    Ok(true)
}

/// Every repair record under cniDir: (netns key, record).
pub fn repairs(cni_dir: &Path) -> Vec<(String, Record)> {
    let mut out = Vec::new();
    for dir in state::container_dirs(cni_dir) {
        let Some(key) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(REPAIR_PREFIX))
            .map(String::from)
        else {
            continue;
        };
        if let Ok(Some(lk)) = ContainerLock::acquire_dir(dir, false) {
            if let Ok(Some(rec)) = lk.load(REPAIR_IFNAME) {
                out.push((key, rec));
            }
        }
    }
    out
}

pub fn check(conf: &NetConf, env: &Env) -> Result<()> {
    let lk = lock(conf, env, false)?.ok_or_else(|| no_state(env))?;
    let rec = lk.load(&env.ifname)?.ok_or_else(|| no_state(env))?;
    if !rec.complete {
        return Err(CniError::new(
            code::NO_STATE,
            "ADD did not complete for this attachment",
        ));
    }
    // Every interface the delegates' results put in the pod netns (an
    // `interfaces` entry with a `sandbox`) is still there (one netlink
    // dump), before the delegates check their own.
    let names: Vec<String> = rec
        .attachments
        .iter()
        .filter_map(|a| a.result.as_ref()?.get("interfaces")?.as_array())
        .flatten()
        .filter(|i| {
            i.get("sandbox")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
        .filter_map(|i| i.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    // The netns is opened once, when anything here looks into it.
    let ns = if names.is_empty() && rec.capture.is_none() {
        None
    } else {
        Some(open_netns(env)?)
    };
    if let (Some(ns), false) = (&ns, names.is_empty()) {
        let present = crate::netlink::link_names(ns)?;
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !present.contains(n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::NETNS,
                format!(
                    "interface {} is gone from netns {}",
                    missing.join(", "),
                    env.netns
                ),
            ));
        }
    }
    let run = runner(conf, env);
    for a in &rec.attachments {
        let d = Delegate::from_value(&a.conf, &rec.cni_version)?;
        let prev = a.result.as_ref().ok_or_else(|| no_state(env))?;
        run.check(&d, &a.ifname, rc_of(a).as_ref(), prev)?;
    }
    if let (Some(c), Some(ns)) = (&rec.capture, &ns) {
        let p = Setup::from_json(c)?;
        capture::check(&p, ns, lk.dir())?;
    }
    Ok(())
}

fn no_state(env: &Env) -> CniError {
    CniError::new(
        code::NO_STATE,
        format!(
            "no multimesh state for container {} interface {}",
            env.container_id, env.ifname
        ),
    )
}

/// GC: tear down this network's records not in the valid list.
pub fn gc(conf: &NetConf, env: &Env) -> Result<()> {
    let valid = conf
        .raw
        .get("cni.dev/valid-attachments")
        .or_else(|| conf.raw.get("cni.dev/attachments"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_valid = |cid: &str, ifname: &str| {
        valid.iter().any(|a| {
            a.get("containerID").and_then(Value::as_str) == Some(cid)
                && a.get("ifname").and_then(Value::as_str) == Some(ifname)
        })
    };
    // Every stale attachment is tried; one that fails does not stop the
    // others, and every failure is reported (first in msg, rest in details).
    let mut errors = Vec::new();
    for dir in state::container_dirs(&conf.cni_dir) {
        let lk = match ContainerLock::acquire_dir(dir, false) {
            Ok(Some(lk)) => lk,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for mut rec in lk.records() {
            let cid = rec.container_id.clone();
            if rec.network != conf.name || is_valid(&cid, &rec.ifname) {
                continue;
            }
            log::info!("GC: removing {cid}/{}", rec.ifname);
            let run = Runner {
                container_id: cid.clone(),
                netns: rec.netns.clone(),
                args: rec.cni_args.clone(),
                cluster_ifname: rec.ifname.clone(),
                ..runner(conf, env)
            };
            let netns = rec.netns.clone();
            if let Err(e) = teardown(&mut rec, &lk, &run, &netns) {
                errors.push(e.context(format!("GC of {cid}/{}", rec.ifname)));
            }
        }
    }
    // Owner markers whose record went some other way (a cniDir edited by
    // hand, say) would keep a later netns with a reused inode from losing
    // its capture: GC drops them.
    NetnsOwners::new(&conf.cni_dir).prune();
    match combine(errors) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// STATUS: ready when the readiness file exists and every delegate's
/// plugins are installed (and, for 1.1.0 delegates, report ready).
pub fn status(conf: &NetConf, env: &Env) -> Result<()> {
    readiness(conf, code::NOT_AVAILABLE)?;
    if conf.is_meta() {
        let run = runner(conf, env);
        let networks = match networks::from_config(conf, "eth0") {
            Ok(p) => p,
            // Kubernetes mode: the cluster network may be a NAD, which
            // STATUS (no pod, no API call) cannot resolve; check the rest.
            Err(_) if conf.kubeconfig.is_some() => Vec::new(),
            Err(e) => return Err(e),
        };
        for p in networks {
            run.status(&p.delegate).map_err(|e| {
                if e.code == code::PLUGIN_NOT_FOUND {
                    CniError::new(code::NOT_AVAILABLE, e.msg)
                } else {
                    e
                }
            })?;
        }
    }
    Ok(())
}
