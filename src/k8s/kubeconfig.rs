//! Where the API server is and how to authenticate: a kubeconfig file
//! (YAML or JSON) or the in-cluster service account.
//!
//! Supported: `server` (https, or http when the network config allows it:
//! see `k8s::api_config`), `certificate-authority(-data)`,
//! `insecure-skip-tls-verify` (only without a certificate authority: the
//! two together are refused), `tls-server-name`; users with `token`,
//! `tokenFile` (re-read on every request, so rotated bound service-account
//! tokens keep working) and `client-certificate(-data)` /
//! `client-key(-data)`. Exec and auth-provider plugins are refused: a CNI
//! plugin must not run arbitrary programs named in a file.

use crate::fields::{self, Object};
use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Everything needed to reach and authenticate to the API server.
#[derive(Clone)]
pub struct ApiConfig {
    pub scheme: Scheme,
    /// Host as written (an IP literal, `[v6]` without brackets, or a name).
    pub host: String,
    pub port: u16,
    /// Path prefix of the server URL (usually empty).
    pub base_path: String,
    /// PEM bytes of the CA bundle; None uses no roots (then TLS fails
    /// unless `insecure`).
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub tls_server_name: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// (certificate chain PEM, private key PEM)
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl ApiConfig {
    /// Plain HTTP to 127.0.0.1:`port`, no credentials: the API servers of
    /// unit tests.
    #[cfg(test)]
    pub(crate) fn test_loopback(port: u16) -> ApiConfig {
        ApiConfig {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port,
            base_path: String::new(),
            ca_pem: None,
            insecure: false,
            tls_server_name: None,
            token: None,
            token_file: None,
            client_cert: None,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    // Never print credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("insecure", &self.insecure)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl ApiConfig {
    /// The bearer token for the next request (file re-read every time).
    /// The bearer token, surrounding whitespace trimmed (a YAML block
    /// scalar or a token file ends with a newline); one with a control
    /// character inside is refused — it would break the request header.
    pub fn bearer(&self) -> Result<Option<String>, String> {
        let checked = |t: &str| -> Result<Option<String>, String> {
            let t = t.trim();
            if t.bytes().any(|b| b.is_ascii_control()) {
                return Err("the token has a control character in it".into());
            }
            Ok((!t.is_empty()).then(|| t.to_string()))
        };
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read token file {}: {e}", f.display()))?;
            if let Some(t) = checked(&t)? {
                return Ok(Some(t));
            }
        }
        match &self.token {
            Some(t) => checked(t),
            None => Ok(None),
        }
    }

    /// `host:port` for the Host header (IPv6 bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parse `https://host[:port][/prefix]`.
pub fn parse_server(url: &str) -> Result<(Scheme, String, u16, String), String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(format!(
            "server {url:?}: must start with https:// or http://"
        ));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let default_port = if scheme == Scheme::Https { 443 } else { 80 };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| format!("server {url:?}: unterminated [IPv6] host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p, url)?,
            None if after.is_empty() => default_port,
            None => return Err(format!("server {url:?}: junk after ]")),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), parse_port(p, url)?),
            None => (hostport.to_string(), default_port),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !host_ok {
        return Err(format!("server {url:?}: bad host"));
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?')
    {
        return Err(format!("server {url:?}: bad path"));
    }
    Ok((scheme, host, port, path.to_string()))
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("server {url:?}: bad port")),
    }
}

/// Standard base64 as kubeconfigs carry it (the base64 crate; padding
/// optional, whitespace ignored, the URL-safe alphabet accepted too).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine, GeneralPurpose};
    let config = general_purpose::GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let compact: String = s.split_ascii_whitespace().collect();
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard
        .decode(&compact)
        .or_else(|_| url_safe.decode(&compact))
        .map_err(|e| format!("invalid base64: {e}"))
}

fn read_file(base: &Path, p: &str, what: &str) -> Result<Vec<u8>, String> {
    let path = resolve(base, p);
    std::fs::read(&path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let pb = PathBuf::from(p);
    if pb.is_absolute() {
        pb
    } else {
        base.join(pb)
    }
}

/// A kubeconfig: the parts multimesh reads, and writes (`multimesh
/// install`). Other keys (`preferences`, `extensions`, a context's
/// `namespace`, ...) are ignored; a key multimesh reads with a value of
/// another type is refused, naming where (`users[0].user.token`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub clusters: Vec<Object<NamedCluster>>,
    pub users: Vec<Object<NamedUser>>,
    pub contexts: Vec<Object<NamedContext>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedCluster {
    pub name: Option<String>,
    pub cluster: Option<Object<Cluster>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedUser {
    pub name: Option<String>,
    pub user: Option<Object<User>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedContext {
    pub name: Option<String>,
    pub context: Option<Object<Context>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Cluster {
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(
        deserialize_with = "fields::boolean",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "tokenFile", skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Refused (a plugin must not run programs named in a file).
    #[serde(skip_serializing)]
    pub exec: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    pub auth_provider: Option<IgnoredAny>,
    /// Basic authentication: refused when the key is there at all.
    #[serde(deserialize_with = "present", skip_serializing)]
    pub username: bool,
    #[serde(deserialize_with = "present", skip_serializing)]
    pub password: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Context {
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The key is there (with any value, `null` too).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// The first entry named `name`, if it has its object.
fn named<'a, T>(
    list: impl IntoIterator<Item = (&'a Option<String>, &'a Option<Object<T>>)>,
    name: &str,
) -> Option<&'a T> {
    list.into_iter()
        .find(|(n, _)| n.as_deref() == Some(name))
        .and_then(|(_, t)| t.as_deref())
}

/// Load a kubeconfig file: its current context's cluster and user.
pub fn load(path: &Path) -> Result<ApiConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
    let v =
        super::yaml_to_json(&text).map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("/"));
    from_value(&v, base).map_err(|e| format!("kubeconfig {}: {e}", path.display()))
}

pub fn from_value(v: &Value, base: &Path) -> Result<ApiConfig, String> {
    let Object(kc) = fields::decode::<Object<Kubeconfig>>(v).map_err(|e| e.to_string())?;
    // An empty field is unset (as kubectl takes it).
    let set = |s: &Option<String>| s.clone().filter(|x| !x.is_empty());
    let ctx_name = match set(&kc.current_context) {
        Some(c) => c,
        None => match kc.contexts.as_slice() {
            [only] => only.name.clone(),
            _ => None,
        }
        .ok_or("no current-context (and not exactly one context)")?,
    };
    let ctx = named(kc.contexts.iter().map(|c| (&c.name, &c.context)), &ctx_name)
        .ok_or_else(|| format!("context {ctx_name:?} not found"))?;
    let cluster_name = ctx.cluster.as_deref().ok_or("context has no cluster")?;
    let cluster = named(
        kc.clusters.iter().map(|c| (&c.name, &c.cluster)),
        cluster_name,
    )
    .ok_or_else(|| format!("cluster {cluster_name:?} not found"))?;
    let user = match &ctx.user {
        Some(u) => Some(
            named(kc.users.iter().map(|c| (&c.name, &c.user)), u)
                .ok_or_else(|| format!("user {u:?} not found"))?,
        ),
        None => None,
    };
    let server = cluster.server.as_deref().ok_or("cluster has no server")?;
    let (scheme, host, port, base_path) = parse_server(server)?;
    let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);
    let ca_data = set(&cluster.certificate_authority_data);
    let ca_file = set(&cluster.certificate_authority);
    if insecure {
        // A CA says how to verify the server; skipping verification anyway
        // is a mistake (or an attack on the file), not a choice to honour.
        for (k, v) in [
            ("certificate-authority-data", &ca_data),
            ("certificate-authority", &ca_file),
        ] {
            if v.is_some() {
                return Err(format!(
                    "insecure-skip-tls-verify: true together with {k} is refused (remove one of them)"
                ));
            }
        }
    }
    let ca_pem = match (ca_data, ca_file) {
        (Some(d), _) => {
            Some(base64_decode(&d).map_err(|e| format!("certificate-authority-data: {e}"))?)
        }
        (None, Some(f)) => Some(read_file(base, &f, "certificate-authority")?),
        (None, None) => None,
    };
    let mut cfg = ApiConfig {
        scheme,
        host,
        port,
        base_path,
        ca_pem,
        insecure,
        tls_server_name: cluster.tls_server_name.clone(),
        token: None,
        token_file: None,
        client_cert: None,
    };
    if let Some(u) = user {
        for (refused, given) in [
            ("exec", u.exec.is_some()),
            ("auth-provider", u.auth_provider.is_some()),
        ] {
            if given {
                return Err(format!(
                    "user {refused} plugins are not supported (use a token, tokenFile or client certificate)"
                ));
            }
        }
        if u.username || u.password {
            return Err("basic authentication is not supported".into());
        }
        cfg.token = u.token.clone();
        cfg.token_file = u.token_file.as_deref().map(|f| resolve(base, f));
        let cert = match (&u.client_certificate_data, &u.client_certificate) {
            (Some(d), _) => {
                Some(base64_decode(d).map_err(|e| format!("client-certificate-data: {e}"))?)
            }
            (None, Some(f)) => Some(read_file(base, f, "client-certificate")?),
            _ => None,
        };
        let key = match (&u.client_key_data, &u.client_key) {
            (Some(d), _) => Some(base64_decode(d).map_err(|e| format!("client-key-data: {e}"))?),
            (None, Some(f)) => Some(read_file(base, f, "client-key")?),
            _ => None,
        };
        cfg.client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("client certificate and key must be given together".into()),
        };
    }
    Ok(cfg)
}

/// In-cluster configuration from `KUBERNETES_SERVICE_HOST`/`_PORT` and the
/// service-account directory. None when not in a cluster.
pub fn in_cluster(get: impl Fn(&str) -> Option<String>) -> Option<Result<ApiConfig, String>> {
    let host = get("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = get("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
    let token_file = dir.join("token");
    if !token_file.exists() {
        return None;
    }
    let url = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    Some((|| {
        let (scheme, host, port, base_path) = parse_server(&url)?;
        let ca = std::fs::read(dir.join("ca.crt"))
            .map_err(|e| format!("cannot read service account ca.crt: {e}"))?;
        Ok(ApiConfig {
            scheme,
            host,
            port,
            base_path,
            ca_pem: Some(ca),
            insecure: false,
            tls_server_name: None,
            token: None,
            token_file: Some(token_file),
            client_cert: None,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("https://127.0.0.1:6443").unwrap(),
            (Scheme::Https, "127.0.0.1".into(), 6443, String::new())
        );
        assert_eq!(
            parse_server("https://[2001:db8::1]/k8s/").unwrap(),
            (Scheme::Https, "2001:db8::1".into(), 443, "/k8s".into())
        );
        assert_eq!(parse_server("http://api").unwrap().2, 80);
        for bad in [
            "ftp://x",
            "https://",
            "https://a b",
            "https://x:0",
            "https://x:99999",
            "https://[::1",
            "https://x/a b",
            "https://x\r\nHost: evil",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8").unwrap(), b"hello");
        assert!(base64_decode("a*b").is_err());
    }

    #[test]
    fn kubeconfig_selects_current_context() {
        let v = json!({
            "clusters": [{"name": "a", "cluster": {"server": "https://198.51.100.1:1"}},
                         {"name": "b", "cluster": {"server": "https://198.51.100.2:2",
                            "certificate-authority-data": "aGVsbG8="}}],
            "users": [{"name": "u", "user": {"token": "t0k", "tokenFile": "tok"}}],
            "contexts": [{"name": "c", "context": {"cluster": "b", "user": "u"}}],
            "current-context": "c"
        });
        let c = from_value(&v, Path::new("/etc/x")).unwrap();
        assert_eq!(c.host, "198.51.100.2");
        assert_eq!(c.port, 2);
        assert_eq!(c.ca_pem.as_deref(), Some(&b"hello"[..]));
        assert_eq!(c.token_file, Some(PathBuf::from("/etc/x/tok")));
        assert!(
            !format!("{c:?}").contains("t0k"),
            "debug output leaks the token"
        );
        let mut bad = v.clone();
        bad["users"][0]["user"]["exec"] = json!({"command": "/bin/sh"});
        assert!(from_value(&bad, Path::new("/"))
            .unwrap_err()
            .contains("exec"));
        let mut bad = v.clone();
        bad["current-context"] = json!("nope");
        assert!(from_value(&bad, Path::new("/")).is_err());
    }

    #[test]
    fn insecure_skip_tls_verify() {
        let kc = |cluster: Value| {
            json!({
                "clusters": [{"name": "c", "cluster": cluster}],
                "contexts": [{"name": "x", "context": {"cluster": "c"}}],
            })
        };
        // Without a CA: accepted (the client warns when built).
        let c = from_value(
            &kc(json!({"server": "https://198.51.100.1", "insecure-skip-tls-verify": true})),
            Path::new("/"),
        )
        .unwrap();
        assert!(c.insecure && c.ca_pem.is_none());
        // With either CA field: refused, naming both fields, before the
        // CA file is read.
        for (k, v) in [
            ("certificate-authority-data", "aGVsbG8="),
            ("certificate-authority", "/nonexistent/ca.crt"),
        ] {
            let e = from_value(
                &kc(json!({"server": "https://198.51.100.1", "insecure-skip-tls-verify": true, k: v})),
                Path::new("/"),
            )
            .unwrap_err();
            assert!(
                e.contains("insecure-skip-tls-verify") && e.contains(k),
                "{e}"
            );
        }
        // false (or absent) with a CA is the normal case; an empty CA
        // field does not count as one.
        let c = from_value(
            &kc(
                json!({"server": "https://198.51.100.1", "insecure-skip-tls-verify": false,
                       "certificate-authority-data": "aGVsbG8="}),
            ),
            Path::new("/"),
        )
        .unwrap();
        assert!(!c.insecure);
        assert!(from_value(
            &kc(
                json!({"server": "https://198.51.100.1", "insecure-skip-tls-verify": true,
                       "certificate-authority": ""})
            ),
            Path::new("/"),
        )
        .is_ok());
        let e = from_value(
            &kc(json!({"server": "https://198.51.100.1", "insecure-skip-tls-verify": "true"})),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.contains("must be a boolean"), "{e}");
    }

    /// Keys multimesh does not read are ignored; one it reads with a
    /// value of another type, or an entry that is not an object, is
    /// refused naming where.
    #[test]
    fn shapes_and_types() {
        let kc = |user: Value| {
            json!({"apiVersion": "v1", "preferences": {}, "extensions": [{"name": "x"}],
                "clusters": [{"name": "c", "cluster": {"server": "https://198.51.100.1", "proxy-url": "x"}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "n"}}]})
        };
        let c = from_value(
            &kc(json!({"token": "t", "exec": null, "auth-provider": null})),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("t"));
        for (user, msg) in [
            (
                json!({"token": 5}),
                "users[0].user.token: invalid type: integer `5`, expected a string",
            ),
            (
                json!(["t"]),
                "users[0].user: invalid type: sequence, expected an object",
            ),
            (
                json!({"username": null}),
                "basic authentication is not supported",
            ),
            (
                json!({"password": "p"}),
                "basic authentication is not supported",
            ),
            (
                json!({"auth-provider": {"name": "gcp"}}),
                "user auth-provider plugins are not supported",
            ),
            (
                json!({"client-key-data": "aGVsbG8="}),
                "client certificate and key must be given together",
            ),
            (
                json!({"client-certificate-data": "*", "client-key-data": "aGVsbG8="}),
                "client-certificate-data: invalid base64",
            ),
        ] {
            let e = from_value(&kc(user.clone()), Path::new("/")).unwrap_err();
            assert!(e.starts_with(msg), "{user}: {e:?} is not {msg:?}");
        }
        let mut v = kc(json!({}));
        v["contexts"] = json!([["x", {"cluster": "c"}]]);
        let e = from_value(&v, Path::new("/")).unwrap_err();
        assert_eq!(e, "contexts[0]: invalid type: sequence, expected an object");
        for (k, val, msg) in [
            ("current-context", json!("y"), "context \"y\" not found"),
            (
                "contexts",
                json!([{"name": "x", "context": {"user": "u"}}]),
                "context has no cluster",
            ),
            (
                "contexts",
                json!([{"name": "x", "context": {"cluster": "d"}}]),
                "cluster \"d\" not found",
            ),
            (
                "contexts",
                json!([{"name": "x", "context": {"cluster": "c", "user": "v"}}]),
                "user \"v\" not found",
            ),
            (
                "contexts",
                json!([{"name": "x"}, {"name": "y"}]),
                "no current-context (and not exactly one context)",
            ),
            (
                "clusters",
                json!([{"name": "c", "cluster": {}}]),
                "cluster has no server",
            ),
            (
                "clusters",
                json!({"name": "c"}),
                "clusters: invalid type: map, expected a sequence",
            ),
        ] {
            let mut v = kc(json!({}));
            v[k] = val;
            assert_eq!(from_value(&v, Path::new("/")).unwrap_err(), msg, "{k}");
        }
        assert!(from_value(&json!([]), Path::new("/")).is_err());
    }

    #[test]
    fn reads_what_install_writes() {
        let dir = std::env::temp_dir().join(format!("mm-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), b"PEM").unwrap();
        for server in ["https://198.51.100.1:6443", "https://[2001:db8::1]:443"] {
            let text =
                crate::install::render_kubeconfig(server, &dir.join("ca.crt"), &dir.join("token"));
            let f = dir.join("kubeconfig");
            std::fs::write(&f, text).unwrap();
            let c = load(&f).unwrap();
            assert_eq!(c.authority(), server.trim_start_matches("https://"));
            assert_eq!(c.ca_pem.as_deref(), Some(&b"PEM"[..]));
            assert_eq!(c.token_file, Some(dir.join("token")));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn load_text(name: &str, text: &str) -> Result<ApiConfig, String> {
        let dir = std::env::temp_dir().join(format!("mm-kc-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config");
        std::fs::write(&f, text).unwrap();
        let r = load(&f);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    /// Kubeconfigs as kind, kubeadm, k3s and a cloud CLI write them (the
    /// shapes, with test values): several clusters, contexts and users,
    /// quoted and unquoted scalars, `preferences: {}`, block scalars,
    /// anchors with merge keys, comments, a document marker.
    #[test]
    fn kubeconfigs_as_the_tools_write_them() {
        let ca = "aGVsbG8="; // "hello"
        let kind = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://127.0.0.1:39091\n  name: kind-kind\n\
             contexts:\n- context:\n    cluster: kind-kind\n    user: kind-kind\n  name: kind-kind\ncurrent-context: kind-kind\nkind: Config\n\
             preferences: {{}}\nusers:\n- name: kind-kind\n  user:\n    client-certificate-data: {ca}\n    client-key-data: {ca}\n"
        );
        let c = load_text("kind", &kind).unwrap();
        assert_eq!(c.authority(), "127.0.0.1:39091");
        assert_eq!(c.ca_pem.as_deref(), Some(&b"hello"[..]));

        let kubeadm = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://198.51.100.10:6443\n  name: kubernetes\n\
             contexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\n\
             current-context: kubernetes-admin@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: kubernetes-admin\n  user:\n    \
             client-certificate-data: {ca}\n    client-key-data: {ca}\n"
        );
        assert_eq!(load_text("kubeadm", &kubeadm).unwrap().port, 6443);

        // k3s: "default" everywhere, a quoted current-context.
        let k3s = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://127.0.0.1:6443\n  name: default\n\
             contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: \"default\"\nkind: Config\n\
             preferences: {{}}\nusers:\n- name: default\n  user:\n    token: 'k10abc::server:def'\n"
        );
        let c = load_text("k3s", &k3s).unwrap();
        assert_eq!(c.bearer().unwrap().as_deref(), Some("k10abc::server:def"));

        // A cloud CLI's file: several contexts, a block-scalar CA, comments,
        // an anchor merged into a second cluster, a document marker.
        let cloud = "---\n# written by a cloud CLI\napiVersion: v1\nkind: Config\nclusters:\n\
             - name: prod\n  cluster: &base\n    server: https://203.0.113.5\n    tls-server-name: api.prod.example\n\
             \x20   certificate-authority-data: >-\n      aGVs\n      bG8=\n\
             - name: staging\n  cluster:\n    <<: *base\n    server: https://203.0.113.6:8443\n\
             contexts:\n- name: prod\n  context: {cluster: prod, user: ci}\n- name: staging\n  context: {cluster: staging, user: ci}\n\
             current-context: staging\nusers:\n- name: ci\n  user:\n    token: |\n      t0ken\n";
        let c = load_text("cloud", cloud).unwrap();
        assert_eq!(c.authority(), "203.0.113.6:8443");
        assert_eq!(
            c.ca_pem.as_deref(),
            Some(&b"hello"[..]),
            "merged from the anchor"
        );
        assert_eq!(c.bearer().unwrap().as_deref(), Some("t0ken"));

        // JSON is YAML too; broken YAML names where.
        let json = serde_json::json!({"apiVersion": "v1", "clusters": [{"name": "j",
            "cluster": {"server": "https://198.51.100.1"}}], "users": [{"name": "u", "user": {"token": "x"}}],
            "contexts": [{"name": "c", "context": {"cluster": "j", "user": "u"}}], "current-context": "c"});
        assert_eq!(load_text("json", &json.to_string()).unwrap().port, 443);
        let bad = "apiVersion: v1\nclusters:\n- name: b\n  cluster: {server: https://198.51.100.1}\n\
             users:\n- name: u\n  user: {token: \"a\\r\\nX-Evil: 1\"}\ncontexts:\n- name: c\n  context: {cluster: b, user: u}\n\
             current-context: c\n";
        assert!(load_text("crlf", bad).unwrap().bearer().is_err());
        let e = load_text("broken", "clusters: [\n  - a: b\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
    }
}
