//! multimesh library: the modules behind the `multimesh` binary.
//!
//! - [`cni`]: the protocol (environment, versions, result conversion)
//! - [`config`]: the network configuration on stdin
//! - [`delegate`]: running delegate plugins like libcni
//! - [`attach`]: ADD/DEL/CHECK/GC/STATUS with rollback
//! - [`state`]: atomic per-container state under cniDir
//! - [`capture`]: the rule plan, its renderers and backends
//! - [`netns`]: entering pod network namespaces safely
//! - [`netlink`]: NETLINK_ROUTE requests (which interfaces a pod netns has)
//! - [`k8s`]: Kubernetes mode (API client, pod annotations, network-status)
//! - [`cli`]: the command line for people (`rules`, `inspect`, `install`)
//! - [`flags`]: strict subcommand flags (lexopt)
//! - [`logging`]: the `log` facade's sink (stderr, logFile)
//! - [`install`]: node-side install (binary, kubeconfig, wrapping conflist)
//! - [`validate`]: the in-pod check that outbound TCP is captured
//! - [`agent`]: the node agent (`multimesh agent`): install, readiness,
//!   metrics, and repair of pods that started without capture
//! - [`journal`]: the CNI call journal the plugin appends for the agent

pub mod agent;
pub mod attach;
pub mod capture;
pub mod cli;
pub mod cni;
pub mod config;
pub mod delegate;
pub mod error;
pub mod fields;
pub mod flags;
pub mod install;
pub mod journal;
pub mod k8s;
pub mod logging;
pub mod netlink;
pub mod netns;
pub mod networks;
pub mod state;
pub mod validate;
