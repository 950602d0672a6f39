//! The command line for people: `--version`, `--help` and one module per
//! subcommand: [`rules`], [`inspect`], `install` ([`crate::install`]).

mod inspect;
mod rules;

pub use inspect::escape_controls;

const HELP: &str = "\
multimesh - CNI meta-plugin with service-mesh TCP capture on every pod interface

Usage:
  multimesh --version
  multimesh --help
  multimesh rules --config FILE [--ipv6] [--backend iptables|nftables]
                 [--pod POD.json|yaml | --annotations FILE]
      Print the capture rules multimesh would program for a network config
      (FILE or - for stdin), without touching the system. --pod applies a
      pod's mesh annotations and decides, as Kubernetes mode does, whether
      it is captured at all; --annotations applies an annotation map (JSON
      or YAML) as if the pod were meshed.
  multimesh inspect --netns PATH
      Show what multimesh programmed in a pod network namespace.
  multimesh install [--bin-dir DIR] [--cni-conf-dir DIR] [--api-server URL]
                    [--capture-backend B] [--capture-profile P] [--watch SECONDS]
                    [--uninstall] ...
      Install on this node (DaemonSet init container): copy the binary to
      /opt/cni/bin, write a kubeconfig and /etc/cni/net.d/00-multimesh.conflist
      wrapping the primary network config. All options: multimesh install --help
  multimesh validate [--profile istio|linkerd] [--timeout S] [--port P] ...
      In a pod (init container multimesh-validation): check that its outbound
      TCP is captured; exit 95 naming what is missing. multimesh validate --help
  multimesh agent [every install option] [--listen ADDR:PORT] [--node-name N]
                  [--repair-mode repair|label|delete|off] ...
      The node agent (DaemonSet): install and keep installed, /healthz,
      /readyz, /metrics, remove the node's not-ready taint, repair meshed
      pods that started without capture. All options: multimesh agent --help

As a CNI plugin it is run by the container runtime with CNI_COMMAND set;
see README.md and docs/ for the configuration.
";

pub fn main(args: Vec<String>) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.first().copied() {
        Some("--version" | "-V" | "version") => {
            println!(
                "multimesh {} (CNI {})",
                env!("CARGO_PKG_VERSION"),
                crate::cni::SUPPORTED_VERSIONS.join(", ")
            );
            0
        }
        Some("--help" | "-h" | "help") | None => {
            print!("{HELP}");
            if a.is_empty() {
                2
            } else {
                0
            }
        }
        Some("rules") => report(rules::main(&a[1..])),
        Some("inspect") => report(inspect::main(&a[1..])),
        Some("install") => crate::install::main(&a[1..]),
        Some("validate") => crate::validate::main(&a[1..]),
        Some("agent") => crate::agent::main(&a[1..]),
        Some(other) => {
            eprintln!("multimesh: unknown command {other:?}\n\n{HELP}");
            2
        }
    }
}

fn report(r: Result<String, String>) -> i32 {
    match r {
        Ok(s) => {
            print!("{s}");
            0
        }
        Err(e) => {
            eprintln!("multimesh: {e}");
            1
        }
    }
}
