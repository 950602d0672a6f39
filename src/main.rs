//! multimesh: a CNI meta-plugin (Multus-style delegation) that also programs
//! service-mesh TCP capture on every pod interface.
//!
//! With any CNI_* variable set it speaks CNI; otherwise it is a CLI.

use multimesh::cni::{self, Command, Env};
use multimesh::config::NetConf;
use multimesh::error::{code, CniError};
use multimesh::{attach, cli, logging};
use serde_json::Value;
use std::io::{Read, Write};

fn main() {
    logging::install();
    let is_cni = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("CNI_"));
    let status = if is_cni {
        cni_main()
    } else {
        cli::main(std::env::args().skip(1).collect())
    };
    std::process::exit(status);
}

/// The version to answer in when the config could not tell us.
const FALLBACK_VERSION: &str = "1.1.0";

fn print_json(v: &serde_json::Value) -> bool {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v).is_ok()
        && out.write_all(b"\n").is_ok()
        && out.flush().is_ok()
}

fn fail(e: &CniError, version: &str) -> i32 {
    log::error!("{e}");
    print_json(&e.to_json(version));
    1
}

fn cni_main() -> i32 {
    let started = std::time::Instant::now();
    let cmd_str = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdin = Vec::with_capacity(64 * 1024);
    let _ = std::io::stdin().read_to_end(&mut stdin);
    // The version for error output: the config's if it has a usable one.
    let declared = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|x| x.as_str())
                .map(String::from)
        })
        .filter(|v| cni::SUPPORTED_VERSIONS.contains(&v.as_str()));
    let version = declared
        .clone()
        .unwrap_or_else(|| FALLBACK_VERSION.to_string());
    let cmd = match Command::parse(&cmd_str) {
        Some(c) => c,
        None if cmd_str.is_empty() => {
            return fail(
                &CniError::env("required environment variable CNI_COMMAND is missing"),
                &version,
            )
        }
        None => {
            return fail(
                &CniError::env(format!("CNI_COMMAND {cmd_str:?} is not a CNI command")),
                &version,
            )
        }
    };
    if cmd == Command::Version {
        // VERSION answers even for a config it would refuse.
        print_json(&cni::version_output(&version));
        return 0;
    }
    if std::env::var_os(multimesh::delegate::NESTED_ENV).is_some() {
        return nested_main(cmd, &stdin, &version);
    }
    let conf = match NetConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => return fail(&e, &version),
    };
    let env = match Env::from_env(cmd, |k| std::env::var(k).ok()) {
        Ok(e) => e,
        Err(e) => {
            let status = fail(&e, &conf.cni_version);
            multimesh::journal::append(&conf.cni_dir, cmd.as_str(), e.code, started.elapsed());
            return status;
        }
    };
    logging::init(
        conf.log_level,
        conf.log_to_stderr,
        conf.log_file.as_deref(),
        format!("{} {}/{}", cmd.as_str(), env.container_id, env.ifname),
    );
    log::debug!("start");
    let (status, outcome) = run(cmd, &conf, &env);
    // For the node agent's metrics, after the answer is out.
    multimesh::journal::append(&conf.cni_dir, cmd.as_str(), outcome, started.elapsed());
    status
}

/// Run a command and print its answer: the exit status, and the CNI error
/// code (0 for success) for the journal.
fn run(cmd: Command, conf: &NetConf, env: &Env) -> (i32, u32) {
    let res = match cmd {
        Command::Add => attach::add(conf, env).map(Some),
        Command::Del => attach::del(conf, env).map(|_| None),
        Command::Check => attach::check(conf, env).map(|_| None),
        Command::Gc => attach::gc(conf, env).map(|_| None),
        Command::Status => attach::status(conf, env).map(|_| None),
        Command::Version => unreachable!(),
    };
    match res {
        Ok(Some(result)) => {
            if print_json(&result) {
                log::debug!("done");
                (0, 0)
            } else {
                // Nothing reached the runtime: it will see a failure anyway.
                (code::IO as i32, code::IO)
            }
        }
        Ok(None) => {
            log::debug!("done");
            (0, 0)
        }
        Err(e) => (fail(&e, &conf.cni_version), e.code),
    }
}

/// multimesh run as another multimesh's delegate (`NESTED_ENV` is set by
/// the outer one): the outer multimesh already runs every network and
/// programs capture for the whole netns, so this one does nothing. It takes
/// nothing from its config — no delegates, kubeconfig, paths or log file —
/// but the version and prevResult, which it passes through as a chained
/// plugin would; it locks nothing, so it cannot wait on the outer one.
fn nested_main(cmd: Command, stdin: &[u8], version: &str) -> i32 {
    logging::init(
        logging::Level::Verbose,
        true,
        None,
        format!("{} (delegate of multimesh)", cmd.as_str()),
    );
    let conf: Value = match serde_json::from_slice(stdin) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return fail(
                &CniError::new(code::DECODE, "network config must be a JSON object"),
                version,
            )
        }
    };
    if conf.get("delegates").is_some() || conf.get("clusterNetwork").is_some() {
        log::info!(
            "run as a delegate of multimesh: delegates and paths in this config are ignored"
        );
    }
    if cmd != Command::Add {
        return 0;
    }
    let result = match conf.get("prevResult").filter(|p| !p.is_null()) {
        Some(p) => match cni::convert_result(p, version) {
            Ok(r) => r,
            Err(e) => return fail(&e.context("prevResult"), version),
        },
        None => cni::empty_result(version),
    };
    if print_json(&result) {
        0
    } else {
        code::IO as i32
    }
}
