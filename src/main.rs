//! multimesh: a CNI meta-plugin (Multus-style delegation) that also programs
//! service-mesh TCP capture on every pod interface.
//!
//! With any CNI_* variable set it speaks CNI; otherwise it is a CLI.

use multimesh::cni::{self, Command, Env};
use multimesh::config::NetConf;
use multimesh::error::{code, CniError};
use multimesh::{attach, cli, log};
use std::io::{Read, Write};

fn main() {
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
    log::error(&e.to_string());
    print_json(&e.to_json(version));
    1
}

fn cni_main() -> i32 {
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
    let conf = match NetConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => return fail(&e, &version),
    };
    let env = match Env::from_env(cmd, |k| std::env::var(k).ok()) {
        Ok(e) => e,
        Err(e) => return fail(&e, &conf.cni_version),
    };
    log::init(
        conf.log_level,
        conf.log_to_stderr,
        conf.log_file.as_deref(),
        format!("{} {}/{}", cmd.as_str(), env.container_id, env.ifname),
    );
    log::debug("start");
    let res = match cmd {
        Command::Add => attach::add(&conf, &env).map(Some),
        Command::Del => attach::del(&conf, &env).map(|_| None),
        Command::Check => attach::check(&conf, &env).map(|_| None),
        Command::Gc => attach::gc(&conf, &env).map(|_| None),
        Command::Status => attach::status(&conf, &env).map(|_| None),
        Command::Version => unreachable!(),
    };
    match res {
        Ok(Some(result)) => {
            if print_json(&result) {
                log::debug("done");
                0
            } else {
                // Nothing reached the runtime: it will see a failure anyway.
                code::IO as i32
            }
        }
        Ok(None) => {
            log::debug("done");
            0
        }
        Err(e) => fail(&e, &conf.cni_version),
    }
}
