//! CNI errors: the spec's codes plus multimesh's own (100+, see docs/errors.md).

use serde_json::{json, Value};
use std::fmt;

/// Error codes. 1–11 are the CNI spec's; 50 is the spec's "plugin not
/// available" (STATUS); 100+ are multimesh's own and documented in
/// docs/errors.md.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// A delegate failed without a usable CNI error (crash, signal, garbage).
    pub const DELEGATE_FAILED: u32 = 100;
    /// A delegate plugin binary was not found in binDir / CNI_PATH.
    pub const PLUGIN_NOT_FOUND: u32 = 101;
    /// Reading or writing multimesh state under cniDir failed.
    pub const STATE: u32 = 102;
    /// Programming or removing capture rules failed.
    pub const CAPTURE_APPLY: u32 = 103;
    /// CHECK: the capture rules in the pod netns differ from the plan.
    pub const CAPTURE_DRIFT: u32 = 104;
    /// The pod network namespace could not be opened or entered.
    pub const NETNS: u32 = 105;
    /// ADD for a container/interface that multimesh already attached.
    pub const ALREADY_ATTACHED: u32 = 106;
    /// CHECK: no state for this container/interface.
    pub const NO_STATE: u32 = 107;
    /// Kubernetes mode: the pod is missing or its UID differs from K8S_POD_UID.
    pub const POD_IDENTITY: u32 = 108;
    /// Kubernetes mode: the API server refused the request (401/403/other
    /// 4xx) or gave an unusable answer. (Unreachable, 429 and 5xx are 11.)
    pub const API: u32 = 109;
    /// Kubernetes mode: what the pod asks for is invalid — a malformed
    /// networks/default-network/mesh annotation, a network that does not
    /// exist or that namespace isolation forbids, duplicate interfaces.
    pub const POD_REQUEST: u32 = 110;
}

/// A CNI error: the spec's `code`, `msg` and `details`. Displayed as
/// `[code] msg (details)`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("[{code}] {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

pub type Result<T> = std::result::Result<T, CniError>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }
    /// Prefix the message with context, keeping code and details.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
    /// Parse a plugin's error JSON; None when it is not one.
    pub fn from_json(v: &Value) -> Option<Self> {
        let code = v.get("code")?.as_u64()?;
        Some(CniError {
            code: u32::try_from(code).unwrap_or(code::DELEGATE_FAILED),
            msg: v
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            details: v
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    }
}

/// Errors of a best-effort sequence (teardown, GC), as netavark's error
/// list: every step is tried; the first error is reported with its code and
/// message, the others follow in `details`.
pub fn combine(errors: Vec<CniError>) -> Option<CniError> {
    let mut it = errors.into_iter();
    let first = it.next()?;
    let rest: Vec<String> = it.map(|e| e.to_string()).collect();
    if rest.is_empty() {
        return Some(first);
    }
    let n = rest.len() + 1;
    let mut details = first.details.clone();
    for r in rest {
        if !details.is_empty() {
            details.push_str("; ");
        }
        details.push_str(&r);
    }
    Some(CniError {
        msg: format!("{n} steps failed, first: {}", first.msg),
        details,
        code: first.code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_keeps_the_first_and_lists_the_rest() {
        assert_eq!(combine(vec![]), None);
        let one = CniError::new(7, "a");
        assert_eq!(combine(vec![one.clone()]), Some(one));
        let c = combine(vec![
            CniError::new(11, "first"),
            CniError::new(100, "second"),
            CniError::new(102, "third"),
        ])
        .unwrap();
        assert_eq!(c.code, 11);
        assert_eq!(c.msg, "3 steps failed, first: first");
        assert_eq!(c.details, "[100] second; [102] third");
    }
}
