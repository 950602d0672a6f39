//! The agent's Prometheus metrics (prometheus-client: its registry and its
//! OpenMetrics text encoder), served on `/metrics`.
//!
//! - `multimesh_repairs_total{mode,outcome}`: pods found without capture
//!   and what was done (outcome `repaired`, `labelled`, `deleted`,
//!   `detected` in mode off, `failed`)
//! - `multimesh_pods_watched`: pods of this node the agent watches
//! - `multimesh_installed`: 1 while the last install pass succeeded
//! - `multimesh_install_passes_total{outcome}`: `ok` or `failed`
//! - `multimesh_watch_restarts_total{reason}`: `expired` (410),
//!   `error`, `ended` (the server closed it)
//! - `multimesh_cni_calls_total{command,code}` and
//!   `multimesh_cni_call_duration_seconds{command}`: every CNI call the
//!   plugin journaled (`crate::journal`), by command and CNI error code.

use crate::journal::Call;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub command: &'static str,
    pub code: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub repairs: Family<RepairLabels, Counter>,
    pub pods_watched: Gauge,
    pub installed: Gauge,
    pub install_passes: Family<OutcomeLabel, Counter>,
    pub watch_restarts: Family<ReasonLabel, Counter>,
    pub cni_calls: Family<CallLabels, Counter>,
    pub cni_latency: Family<CommandLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("multimesh");
        let repairs = Family::<RepairLabels, Counter>::default();
        let pods_watched = Gauge::default();
        let installed = Gauge::default();
        let install_passes = Family::<OutcomeLabel, Counter>::default();
        let watch_restarts = Family::<ReasonLabel, Counter>::default();
        let cni_calls = Family::<CallLabels, Counter>::default();
        let cni_latency =
            Family::<CommandLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "repairs",
            "Meshed pods found without capture, by repair mode and outcome",
            repairs.clone(),
        );
        registry.register(
            "pods_watched",
            "Pods of this node the agent watches",
            pods_watched.clone(),
        );
        registry.register(
            "installed",
            "1 while the last install pass succeeded",
            installed.clone(),
        );
        registry.register(
            "install_passes",
            "Install passes by outcome",
            install_passes.clone(),
        );
        registry.register(
            "watch_restarts",
            "Pod watches restarted, by reason",
            watch_restarts.clone(),
        );
        registry.register(
            "cni_calls",
            "CNI calls of the plugin on this node, by command and CNI error code (0: success)",
            cni_calls.clone(),
        );
        registry.register(
            "cni_call_duration_seconds",
            "CNI call latency of the plugin on this node, by command",
            cni_latency.clone(),
        );
        Metrics {
            registry,
            repairs,
            pods_watched,
            installed,
            install_passes,
            watch_restarts,
            cni_calls,
            cni_latency,
        }
    }

    pub fn repair(&self, mode: &'static str, outcome: &'static str) {
        self.repairs
            .get_or_create(&RepairLabels { mode, outcome })
            .inc();
    }

    pub fn cni_call(&self, c: &Call) {
        self.cni_calls
            .get_or_create(&CallLabels {
                command: c.command,
                code: c.code,
            })
            .inc();
        self.cni_latency
            .get_or_create(&CommandLabel { command: c.command })
            .observe(c.seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.repair("repair", "repaired");
        m.cni_call(&Call {
            command: "ADD",
            code: 0,
            seconds: 0.02,
        });
        m.pods_watched.set(3);
        let t = m.encode();
        for want in [
            "multimesh_repairs_total{mode=\"repair\",outcome=\"repaired\"} 1",
            "multimesh_pods_watched 3",
            "multimesh_cni_calls_total{command=\"ADD\",code=\"0\"} 1",
            "multimesh_cni_call_duration_seconds_count{command=\"ADD\"} 1",
            "# EOF",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
    }
}
