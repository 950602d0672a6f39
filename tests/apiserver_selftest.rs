//! The fake kube-apiserver and its harness (tests/common/k8s.rs), checked
//! with real HTTPS requests made by curl. No multimesh involved.

mod common;

use common::k8s::{base64, ApiServer};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEP: &str = "\n@@mm-status@@";

/// One curl run: exit code, and (HTTP status, body) per URL answered.
struct Curl {
    exit: i32,
    answers: Vec<(u16, String)>,
    stderr: String,
}

impl Curl {
    fn one(&self) -> (u16, String) {
        assert_eq!(self.exit, 0, "curl failed: {}", self.stderr);
        assert_eq!(self.answers.len(), 1, "answers: {:?}", self.answers);
        self.answers[0].clone()
    }
    fn json(&self, status: u16) -> Value {
        let (s, body) = self.one();
        assert_eq!(s, status, "body: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }
}

/// curl with the server's CA and a 5 s limit; `args` add auth, method, URLs.
fn curl(srv: &ApiServer, args: &[&str]) -> Curl {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(srv.ca_pem())
        .args(["-w", &format!("{SEP}%{{http_code}}\n")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (apt-get install curl)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut answers = Vec::new();
    let mut rest = out.as_str();
    while let Some(i) = rest.find(SEP) {
        let body = rest[..i].to_string();
        let after = &rest[i + SEP.len()..];
        let nl = after.find('\n').unwrap_or(after.len());
        let code: u16 = after[..nl].parse().unwrap_or(0);
        if code != 0 {
            answers.push((code, body));
        }
        rest = &after[(nl + 1).min(after.len())..];
    }
    Curl {
        exit: o.status.code().unwrap_or(-1),
        answers,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn bearer(srv: &ApiServer) -> String {
    format!("Authorization: Bearer {}", srv.token)
}

fn get(srv: &ApiServer, path: &str) -> Curl {
    curl(srv, &["-H", &bearer(srv), &format!("{}{path}", srv.url)])
}

fn patch(srv: &ApiServer, path: &str, ctype: &str, body: &str) -> Curl {
    curl(
        srv,
        &[
            "-H",
            &bearer(srv),
            "-X",
            "PATCH",
            "-H",
            &format!("Content-Type: {ctype}"),
            "--data-binary",
            body,
            &format!("{}{path}", srv.url),
        ],
    )
}

const P1: &str = "/api/v1/namespaces/ns1/pods/p1";
const P1S: &str = "/api/v1/namespaces/ns1/pods/p1/status";
const MERGE: &str = "application/merge-patch+json";
const JSONP: &str = "application/json-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";

fn with_pod() -> ApiServer {
    let srv = ApiServer::start();
    srv.put_pod(&ApiServer::pod_json(
        "ns1",
        "p1",
        "uid-p1",
        json!({"sidecar.istio.io/status": "{}", "keep": "me"}),
        &["app", "istio-proxy"],
        &["istio-validation"],
    ));
    srv
}

fn assert_status(v: &Value, code: u64, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].is_string(), "{v}");
}

#[test]
fn token_auth_and_401() {
    let srv = with_pod();
    let pod = get(&srv, P1).json(200);
    assert_eq!(pod, srv.pod("ns1", "p1"));
    assert_eq!(pod["metadata"]["uid"], "uid-p1");
    assert_eq!(pod["spec"]["containers"][1]["name"], "istio-proxy");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "istio-validation");

    let bad = curl(
        &srv,
        &[
            "-H",
            "Authorization: Bearer wrong",
            &format!("{}{P1}", srv.url),
        ],
    )
    .json(401);
    assert_eq!(
        bad,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Unauthorized","reason":"Unauthorized","code":401})
    );
    assert_status(
        &curl(&srv, &[&format!("{}{P1}", srv.url)]).json(401),
        401,
        "Unauthorized",
    );

    // The tokens file is re-read on every request.
    srv.add_token("second-token");
    let c = curl(
        &srv,
        &[
            "-H",
            "Authorization: Bearer second-token",
            &format!("{}{P1}", srv.url),
        ],
    );
    assert_eq!(c.json(200)["metadata"]["name"], "p1");
    srv.set_tokens(&["only-this"]);
    assert_status(&get(&srv, P1).json(401), 401, "Unauthorized");

    let auth: Vec<_> = srv
        .requests()
        .iter()
        .map(|r| (r["auth"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        auth,
        vec![
            (json!("token"), json!(200)),
            (json!("bad"), json!(401)),
            (json!("none"), json!(401)),
            (json!("token"), json!(200)),
            (json!("bad"), json!(401)),
        ]
    );
    let r = &srv.requests()[0];
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], P1);
    assert_eq!(r["query"], "");
    assert_eq!(r["content_type"], Value::Null);
}

#[test]
fn client_certificate_auth() {
    let srv = with_pod();
    let (cert, key) = srv.client_cert();
    let c = curl(
        &srv,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &format!("{}{P1}", srv.url),
        ],
    );
    assert_eq!(c.json(200)["metadata"]["name"], "p1");
    // Bad token but a valid certificate: authenticated by the certificate.
    let c = curl(
        &srv,
        &[
            "-H",
            "Authorization: Bearer nope",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &format!("{}{P1}?resourceVersion=0", srv.url),
        ],
    );
    assert_eq!(c.json(200)["metadata"]["name"], "p1");
    let req = srv.requests();
    assert_eq!(req[0]["auth"], "cert");
    assert_eq!(req[1]["auth"], "cert");
    assert_eq!(req[1]["query"], "resourceVersion=0");
    // The server certificate chains to our CA only.
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{}/healthz", srv.url)])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // And it is valid for "localhost" as well as 127.0.0.1.
    let c = curl(
        &srv,
        &[
            "--resolve",
            &format!("localhost:{}:127.0.0.1", srv.port),
            &format!("https://localhost:{}/healthz", srv.port),
        ],
    );
    assert_eq!(c.one(), (200, "ok".to_string()));
}

#[test]
fn get_pod_nad_and_errors() {
    let srv = with_pod();
    let c = get(&srv, "/api/v1/namespaces/ns1/pods/nope");
    assert_eq!(
        c.json(404),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"pods \"nope\" not found","reason":"NotFound",
               "details":{"name":"nope","kind":"pods"},"code":404})
    );
    assert_eq!(get(&srv, P1S).json(200)["metadata"]["name"], "p1");

    let conf = r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}"#;
    srv.put_nad(
        "ns1",
        "macvlan-conf",
        Some(conf),
        json!({"multimesh.io/capture": "false"}),
    );
    srv.put_nad("ns1", "empty", None, Value::Null);
    let nad = get(
        &srv,
        "/apis/k8s.cni.cncf.io/v1/namespaces/ns1/network-attachment-definitions/macvlan-conf",
    )
    .json(200);
    assert_eq!(nad["kind"], "NetworkAttachmentDefinition");
    assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
    assert_eq!(nad["spec"]["config"], conf);
    assert_eq!(
        nad["metadata"]["annotations"]["multimesh.io/capture"],
        "false"
    );
    let empty = get(
        &srv,
        "/apis/k8s.cni.cncf.io/v1/namespaces/ns1/network-attachment-definitions/empty",
    )
    .json(200);
    assert_eq!(empty["spec"], json!({}));
    assert!(empty["metadata"].get("annotations").is_none());
    let c = get(
        &srv,
        "/apis/k8s.cni.cncf.io/v1/namespaces/ns2/network-attachment-definitions/macvlan-conf",
    );
    assert_eq!(
        c.json(404),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"network-attachment-definitions.k8s.cni.cncf.io \"macvlan-conf\" not found",
               "reason":"NotFound",
               "details":{"name":"macvlan-conf","group":"k8s.cni.cncf.io","kind":"network-attachment-definitions"},
               "code":404})
    );

    // Unknown paths, bad names, wrong methods.
    for p in [
        "/api/v1/namespaces/ns1/pods/p1/log",
        "/api/v1/nodes/n1/proxy",
        "/api/v1/namespaces/ns1/pods/..%2Fx",
        "/",
    ] {
        let v = get(&srv, p).json(404);
        assert_status(&v, 404, "NotFound");
        assert_eq!(
            v["message"],
            "the server could not find the requested resource"
        );
    }
    let c = curl(
        &srv,
        &[
            "-H",
            &bearer(&srv),
            "-X",
            "PUT",
            &format!("{}{P1}", srv.url),
        ],
    );
    assert_status(&c.json(405), 405, "MethodNotAllowed");
    let c = patch(&srv, "/api/v1/namespaces/ns1/pods", MERGE, "{}");
    assert_status(&c.json(405), 405, "MethodNotAllowed");

    // /version and /healthz: with a token, and anonymously.
    let v = get(&srv, "/version").json(200);
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("31"))
    );
    assert_eq!(v["gitVersion"], "v1.31.0-fake");
    assert_eq!(
        curl(&srv, &[&format!("{}/healthz", srv.url)]).one(),
        (200, "ok".into())
    );
    assert_eq!(get(&srv, "/healthz").one(), (200, "ok".into()));
}

#[test]
fn merge_patch_and_resource_version() {
    let srv = with_pod();
    let c = patch(
        &srv,
        P1S,
        MERGE,
        r#"{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[{\"name\":\"cluster\"}]","keep":null}},
            "spec":{"nodeName":"evil"},"status":{"podIP":"198.51.100.7"}}"#,
    );
    let new = c.json(200);
    assert_eq!(new, srv.pod("ns1", "p1"));
    assert_eq!(new["metadata"]["resourceVersion"], "2");
    let ann = &new["metadata"]["annotations"];
    assert_eq!(
        ann["k8s.v1.cni.cncf.io/network-status"],
        r#"[{"name":"cluster"}]"#
    );
    assert_eq!(ann["sidecar.istio.io/status"], "{}");
    assert!(ann.get("keep").is_none(), "null removes: {ann}");
    assert_eq!(new["status"]["podIP"], "198.51.100.7");
    assert_eq!(new["status"]["phase"], "Pending");
    assert_eq!(
        new["spec"]["nodeName"], "node-1",
        "pods/status never changes spec"
    );

    // A stale resourceVersion precondition: 409, nothing written.
    let c = patch(
        &srv,
        P1S,
        MERGE,
        r#"{"metadata":{"resourceVersion":"1","annotations":{"x":"y"}}}"#,
    );
    assert_eq!(
        c.json(409),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Operation cannot be fulfilled on pods \"p1\": the object has been modified; please apply your changes to the latest version and try again",
               "reason":"Conflict","details":{"name":"p1","kind":"pods"},"code":409})
    );
    assert_eq!(srv.pod("ns1", "p1")["metadata"]["resourceVersion"], "2");
    assert!(srv.pod("ns1", "p1")["metadata"]["annotations"]
        .get("x")
        .is_none());
    // The current one: accepted and bumped.
    let c = patch(
        &srv,
        P1S,
        &format!("{MERGE}; charset=utf-8"),
        r#"{"metadata":{"resourceVersion":"2","annotations":{"x":"y"}}}"#,
    );
    let new = c.json(200);
    assert_eq!(new["metadata"]["resourceVersion"], "3");
    assert_eq!(new["metadata"]["annotations"]["x"], "y");

    // Patch of a missing pod; bad bodies and types.
    assert_status(
        &patch(&srv, "/api/v1/namespaces/ns1/pods/gone/status", MERGE, "{}").json(404),
        404,
        "NotFound",
    );
    assert_status(
        &patch(&srv, P1S, MERGE, "{not json").json(400),
        400,
        "BadRequest",
    );
    assert_status(&patch(&srv, P1S, MERGE, "[1]").json(400), 400, "BadRequest");
    assert_status(
        &patch(&srv, P1S, "application/json", "{}").json(415),
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        &patch(&srv, P1S, "text/plain", "{}").json(415),
        415,
        "UnsupportedMediaType",
    );
    assert_eq!(srv.pod("ns1", "p1")["metadata"]["resourceVersion"], "3");

    let req = srv.requests();
    assert_eq!(req[0]["method"], "PATCH");
    assert_eq!(req[0]["content_type"], MERGE);
    assert!(req[0]["body"].as_str().unwrap().contains("network-status"));
    let statuses: Vec<u64> = req.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![200, 409, 200, 404, 400, 400, 415, 415]);
}

#[test]
fn json_patch_ops() {
    let srv = with_pod();
    let c = patch(
        &srv,
        P1S,
        JSONP,
        r#"[{"op":"test","path":"/metadata/resourceVersion","value":"1"},
            {"op":"add","path":"/metadata/annotations/k8s.v1.cni.cncf.io~1network-status","value":"[]"},
            {"op":"add","path":"/metadata/annotations/tilde~0key","value":"t"},
            {"op":"replace","path":"/metadata/annotations/keep","value":"replaced"},
            {"op":"remove","path":"/metadata/annotations/sidecar.istio.io~1status"},
            {"op":"add","path":"/status/conditions","value":[{"type":"B"}]},
            {"op":"add","path":"/status/conditions/0","value":{"type":"A"}},
            {"op":"add","path":"/status/conditions/-","value":{"type":"C"}}]"#,
    );
    let new = c.json(200);
    assert_eq!(new, srv.pod("ns1", "p1"));
    assert_eq!(new["metadata"]["resourceVersion"], "2");
    assert_eq!(
        new["metadata"]["annotations"],
        json!({"keep": "replaced", "k8s.v1.cni.cncf.io/network-status": "[]", "tilde~key": "t"})
    );
    assert_eq!(
        new["status"]["conditions"],
        json!([{"type":"A"},{"type":"B"},{"type":"C"}])
    );

    // Failing ops: 422, nothing written.
    for body in [
        r#"[{"op":"test","path":"/metadata/resourceVersion","value":"1"}]"#,
        r#"[{"op":"remove","path":"/metadata/annotations/absent"}]"#,
        r#"[{"op":"replace","path":"/metadata/nothere","value":1}]"#,
        r#"[{"op":"add","path":"/a/b/c","value":1}]"#,
        r#"[{"op":"frobnicate","path":"/metadata"}]"#,
        r#"[{"op":"add","path":"/status/conditions/9","value":1}]"#,
        r#"{"op":"add"}"#,
    ] {
        let v = patch(&srv, P1S, JSONP, body).json(422);
        assert_status(&v, 422, "Invalid");
    }
    assert_status(&patch(&srv, P1S, JSONP, "[").json(400), 400, "BadRequest");
    // A patch that sets a stale resourceVersion conflicts.
    let c = patch(
        &srv,
        P1S,
        JSONP,
        r#"[{"op":"replace","path":"/metadata/resourceVersion","value":"1"}]"#,
    );
    assert_status(&c.json(409), 409, "Conflict");
    assert_eq!(srv.pod("ns1", "p1"), new);
}

#[test]
fn strategic_merge_and_put() {
    let srv = with_pod();
    let mut pod = srv.pod("ns1", "p1");
    pod["status"]["conditions"] = json!([{"type": "A"}, {"type": "B"}]);
    srv.put_pod(&pod);
    let c = patch(
        &srv,
        P1S,
        SMP,
        r#"{"metadata":{"annotations":{"new":"v"}},"status":{"conditions":[{"type":"C"}]}}"#,
    );
    let new = c.json(200);
    assert_eq!(new["metadata"]["annotations"]["new"], "v");
    assert_eq!(new["metadata"]["annotations"]["keep"], "me");
    assert_eq!(
        new["status"]["conditions"],
        json!([{"type": "C"}]),
        "lists are replaced"
    );
    assert_eq!(new["metadata"]["resourceVersion"], "2");

    // PUT: resourceVersion checked, then replaced and bumped.
    let mut body = new.clone();
    body["metadata"]["annotations"] = json!({"only": "this"});
    body["metadata"]["resourceVersion"] = json!("1");
    let put = |b: &Value| {
        curl(
            &srv,
            &[
                "-H",
                &bearer(&srv),
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &b.to_string(),
                &format!("{}{P1S}", srv.url),
            ],
        )
    };
    assert_status(&put(&body).json(409), 409, "Conflict");
    body["metadata"]["resourceVersion"] = json!("2");
    let after = put(&body).json(200);
    assert_eq!(after["metadata"]["annotations"], json!({"only": "this"}));
    assert_eq!(after["metadata"]["resourceVersion"], "3");
    assert_eq!(srv.pod("ns1", "p1"), after);
    body["metadata"]["name"] = json!("other");
    body["metadata"]["resourceVersion"] = json!("3");
    assert_status(&put(&body).json(400), 400, "BadRequest");
}

#[test]
fn faults_conflicts_fail_delay_down() {
    let srv = with_pod();
    let ann = r#"{"metadata":{"annotations":{"a":"b"}}}"#;

    srv.set_faults(json!({"status_conflicts": 2}));
    assert_status(&patch(&srv, P1S, MERGE, ann).json(409), 409, "Conflict");
    assert_eq!(srv.faults()["status_conflicts"], 1);
    // GETs do not consume conflicts.
    get(&srv, P1).json(200);
    assert_status(&patch(&srv, P1S, MERGE, ann).json(409), 409, "Conflict");
    let ok = patch(&srv, P1S, MERGE, ann).json(200);
    assert_eq!(ok["metadata"]["resourceVersion"], "2");
    assert_eq!(srv.faults()["status_conflicts"], 0);

    srv.set_faults(json!({"fail": [
        {"method": "PATCH", "path_prefix": "/api/", "status": 503, "count": 5},
        {"method": "GET", "path_prefix": "/api/v1/namespaces/ns1/pods/", "status": 500, "count": 1},
        {"path_prefix": "/version", "status": 429, "count": 1, "headers": {"Retry-After": "1"}},
    ]}));
    assert_status(&get(&srv, P1).json(500), 500, "InternalError");
    get(&srv, P1).json(200);
    // Retry-After header comes through.
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-i", "--cacert"])
        .arg(srv.ca_pem())
        .args(["-H", &bearer(&srv), &format!("{}/version", srv.url)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(text.starts_with("http/1.1 429"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"reason\": \"toomanyrequests\""), "{text}");
    get(&srv, "/version").json(200);
    let f = srv.faults();
    assert_eq!(
        (
            f["fail"][0]["count"].as_u64(),
            f["fail"][1]["count"].as_u64(),
            f["fail"][2]["count"].as_u64()
        ),
        (Some(5), Some(0), Some(0))
    );

    srv.set_faults(json!({"delay_ms": 300}));
    let t = Instant::now();
    get(&srv, P1).json(200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    srv.clear_requests();
    srv.set_faults(json!({"down": true}));
    let c = get(&srv, P1);
    assert_eq!(c.exit, 52, "curl: empty reply expected: {}", c.stderr);
    assert!(c.answers.is_empty());
    let req = srv.requests();
    assert_eq!(req.len(), 1);
    assert_eq!(req[0]["status"], 0);
    srv.set_faults(json!({"down": false}));
    get(&srv, P1).json(200);
}

/// Two GETs of pod ns1/p1 in one curl call, both answered 200 with it.
fn two_gets_of_p1(srv: &ApiServer, u: &str) {
    let c = curl(srv, &["-H", &bearer(srv), u, u]);
    assert_eq!(c.exit, 0, "{}", c.stderr);
    assert_eq!(c.answers.len(), 2);
    assert!(c
        .answers
        .iter()
        .all(|(s, b)| *s == 200 && b.contains("\"uid-p1\"")));
}

#[test]
fn keep_alive_and_connection_close() {
    let srv = with_pod();
    let u = format!("{}{P1}", srv.url);
    two_gets_of_p1(&srv, &u);
    let req = srv.requests();
    assert_eq!(req.len(), 2);
    assert_eq!(
        req[0]["conn"], req[1]["conn"],
        "second request on the same connection"
    );

    srv.clear_requests();
    let c = curl(
        &srv,
        &["-H", &bearer(&srv), "-H", "Connection: close", &u, &u],
    );
    assert_eq!(c.answers.len(), 2, "{}", c.stderr);
    let req = srv.requests();
    assert_ne!(req[0]["conn"], req[1]["conn"], "Connection: close honoured");

    // A body on a kept-alive connection (PATCH then GET) stays in sync.
    srv.clear_requests();
    let c = curl(
        &srv,
        &[
            "-H",
            &bearer(&srv),
            "-X",
            "PATCH",
            "-H",
            &format!("Content-Type: {MERGE}"),
            "--data-binary",
            r#"{"metadata":{"annotations":{"k":"v"}}}"#,
            &format!("{}{P1S}", srv.url),
            "--next",
            "--cacert",
            srv.ca_pem().to_str().unwrap(),
            "-H",
            &bearer(&srv),
            &u,
        ],
    );
    assert_eq!(c.exit, 0, "{}", c.stderr);
    assert_eq!(c.answers.len(), 1, "-w applies to the first transfer only");
    let req = srv.requests();
    assert_eq!(req.len(), 2);
    assert_eq!(
        (req[0]["status"].as_u64(), req[1]["status"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(req[0]["conn"], req[1]["conn"]);
}

/// `--plain`: the same API over plain HTTP (bearer tokens, keep-alive,
/// writes); no TLS on the port.
#[test]
fn plain_http_option() {
    let srv = ApiServer::start_plain();
    assert!(srv.url.starts_with("http://127.0.0.1:"), "{}", srv.url);
    srv.put_pod(&ApiServer::pod_json(
        "ns1",
        "p1",
        "uid-p1",
        json!({}),
        &["app"],
        &[],
    ));
    let u = format!("{}{P1}", srv.url);
    two_gets_of_p1(&srv, &u);
    let req = srv.requests();
    assert_eq!(req[0]["auth"], "token");
    assert_eq!(req[0]["conn"], req[1]["conn"], "kept alive");
    assert_status(&curl(&srv, &[&u]).json(401), 401, "Unauthorized");
    let v = patch(
        &srv,
        P1S,
        MERGE,
        r#"{"metadata":{"annotations":{"k":"v"}}}"#,
    )
    .json(200);
    assert_eq!(v["metadata"]["annotations"]["k"], "v");
    assert_eq!(srv.pod("ns1", "p1")["metadata"]["resourceVersion"], "2");
    // No TLS on the port: an https client fails the handshake.
    let c = curl(&srv, &[&format!("https://127.0.0.1:{}/healthz", srv.port)]);
    assert_ne!(
        c.exit, 0,
        "https to a plain server answered: {:?}",
        c.answers
    );
    let c = curl(&srv, &[&format!("{}/healthz", srv.url)]);
    assert_eq!(c.one(), (200, "ok".to_string()), "still serving");
}

#[test]
fn concurrent_status_writes_serialise() {
    let srv = with_pod();
    let n = 8;
    std::thread::scope(|s| {
        for i in 0..n {
            let srv = &srv;
            s.spawn(move || {
                let body = format!(
                    r#"[{{"op":"add","path":"/metadata/annotations/k{i}","value":"{i}"}}]"#
                );
                patch(srv, P1S, JSONP, &body).json(200);
            });
        }
    });
    let pod = srv.pod("ns1", "p1");
    assert_eq!(pod["metadata"]["resourceVersion"], (1 + n).to_string());
    for i in 0..n {
        assert_eq!(
            pod["metadata"]["annotations"][format!("k{i}")],
            i.to_string()
        );
    }
}

#[test]
fn kubeconfigs_and_token_file() {
    let srv = ApiServer::start();
    let ca_b64 = base64(&std::fs::read(srv.ca_pem()).unwrap());
    let k = std::fs::read_to_string(srv.kubeconfig_token()).unwrap();
    assert!(k.contains(&format!("    server: {}\n", srv.url)), "{k}");
    assert!(
        k.contains(&format!("    certificate-authority-data: {ca_b64}\n")),
        "{k}"
    );
    assert!(k.contains(&format!("    token: {}\n", srv.token)), "{k}");
    assert!(
        k.contains("current-context: multimesh@fake-cluster\n"),
        "{k}"
    );

    let k = std::fs::read_to_string(srv.kubeconfig_token_file()).unwrap();
    assert!(
        k.contains(&format!("    tokenFile: {}\n", srv.token_file().display())),
        "{k}"
    );
    assert_eq!(
        std::fs::read_to_string(srv.token_file()).unwrap().trim(),
        srv.token
    );
    srv.set_token_file("rotated");
    assert_eq!(
        std::fs::read_to_string(srv.token_file()).unwrap().trim(),
        "rotated"
    );

    let (cert, key) = srv.client_cert();
    let kc = srv.kubeconfig_cert();
    let k = std::fs::read_to_string(&kc).unwrap();
    assert!(
        k.contains(&format!(
            "    certificate-authority: {}\n",
            srv.ca_pem().display()
        )),
        "{k}"
    );
    assert!(k.contains(&format!(
        "    client-certificate-data: {}\n",
        base64(&std::fs::read(&cert).unwrap())
    )));
    assert!(k.contains(&format!(
        "    client-key-data: {}\n",
        base64(&std::fs::read(&key).unwrap())
    )));
    let k2 = srv.kubeconfig_with("https://127.0.0.1:1", "token: a\nimpersonate: b");
    assert_ne!(k2, kc, "every kubeconfig gets its own file");
    let k = std::fs::read_to_string(k2).unwrap();
    assert!(
        k.contains("    server: https://127.0.0.1:1\n")
            && k.contains("    token: a\n    impersonate: b\n"),
        "{k}"
    );

    // Key files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        key,
        srv.dir.join("server-key.pem"),
        kc,
        srv.dir.join("tokens"),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }

    // The base64 encoder agrees with coreutils on every padding case.
    for data in [
        &b""[..],
        b"f",
        b"fo",
        b"foo",
        b"foob",
        b"fooba",
        b"foobar",
        &[0xff, 0xfe, 0x00, 0x7f],
    ] {
        let mut child = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            base64(data),
            String::from_utf8_lossy(&out.stdout),
            "{data:?}"
        );
    }

    // The certificates: v3, SAN, CA flags, validity started in the past.
    let text = |f: &std::path::Path| {
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let s = text(&srv.dir.join("server.pem"));
    assert!(s.contains("Version: 3 (0x2)"), "{s}");
    assert!(
        s.contains("IP Address:127.0.0.1") && s.contains("DNS:localhost"),
        "{s}"
    );
    assert!(
        s.contains("CA:FALSE") && s.contains("TLS Web Server Authentication"),
        "{s}"
    );
    let c = text(&cert);
    assert!(
        c.contains("CN = multimesh") && c.contains("O = system:nodes"),
        "{c}"
    );
    assert!(c.contains("TLS Web Client Authentication"), "{c}");
    let a = text(&srv.ca_pem());
    assert!(
        a.contains("CA:TRUE") && a.contains("Certificate Sign"),
        "{a}"
    );
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "0", "-in"])
        .arg(srv.dir.join("server.pem"))
        .output()
        .unwrap();
    assert!(o.status.success());
}

#[test]
fn stop_kills_server_and_removes_dir() {
    let mut srv = with_pod();
    let dir = srv.dir.clone();
    let port = srv.port;
    get(&srv, P1).json(200);
    // Some(0): it exited by itself on SIGTERM (within the 3 s before SIGKILL).
    let (code, stderr) = srv.stop_checked();
    assert_eq!(code, Some(0), "clean exit on SIGTERM; stderr:\n{stderr}");
    assert_eq!(stderr, "", "quiet unless --verbose");
    assert!(!dir.exists());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    srv.stop(); // idempotent

    // Two servers at once: own dirs, own ports, own tokens.
    let a = ApiServer::start();
    let b = ApiServer::start();
    assert_ne!(a.dir, b.dir);
    assert_ne!(a.port, b.port);
    assert_ne!(a.token, b.token);
    let c = curl(&a, &["-H", &bearer(&b), &format!("{}/version", a.url)]);
    assert_status(&c.json(401), 401, "Unauthorized");
}

/// A watch read with curl for `secs` seconds: its JSON lines.
fn watch_lines(srv: &ApiServer, query: &str, secs: u32) -> Vec<Value> {
    let o = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            &(secs + 5).to_string(),
            "--cacert",
        ])
        .arg(srv.ca_pem())
        .args(["-H", &bearer(srv)])
        .arg(format!("{}/api/v1/pods?{query}", srv.url))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn pod_on(ns: &str, name: &str, node: &str) -> Value {
    let mut p = ApiServer::pod_json(ns, name, &format!("uid-{name}"), Value::Null, &["app"], &[]);
    p["spec"]["nodeName"] = json!(node);
    p
}

/// Lists with a node field selector, watches (chunked JSON lines, growing
/// resourceVersions, ADDED/MODIFIED/DELETED, timeoutSeconds), the 410 that
/// forces a relist, pod PATCH and DELETE, nodes and events.
#[test]
fn list_watch_nodes_events() {
    let mut srv = ApiServer::start();
    srv.put_pod(&pod_on("ns1", "a", "node-1"));
    srv.put_pod(&pod_on("ns2", "b", "node-1"));
    srv.put_pod(&pod_on("ns1", "c", "node-2"));
    let l = get(&srv, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1").json(200);
    assert_eq!(l["kind"], "PodList");
    let names: Vec<&str> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let rv: u64 = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv >= 3, "{l}");
    let l = get(&srv, "/api/v1/namespaces/ns1/pods").json(200);
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    assert_status(
        &get(&srv, "/api/v1/pods?fieldSelector=metadata.name%3Da").json(400),
        400,
        "BadRequest",
    );

    // A watch from the list's version sees only later changes, each with
    // a larger resourceVersion, filtered by node.
    let q = format!(
        "fieldSelector=spec.nodeName%3Dnode-1&watch=1&resourceVersion={rv}&timeoutSeconds=3"
    );
    let h = std::thread::spawn({
        let url = srv.url.clone();
        let ca = srv.ca_pem();
        let tok = bearer(&srv);
        move || {
            let o = Command::new("curl")
                .args(["-sS", "-N", "--max-time", "8", "--cacert"])
                .arg(ca)
                .args(["-H", &tok])
                .arg(format!("{url}/api/v1/pods?{q}"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let c = patch(
        &srv,
        "/api/v1/namespaces/ns1/pods/a",
        MERGE,
        r#"{"metadata":{"labels":{"x":"y"}},"status":{"phase":"Failed"}}"#,
    )
    .json(200);
    assert_eq!(c["metadata"]["labels"]["x"], "y");
    assert_eq!(
        c["status"]["phase"], "Pending",
        "a pod PATCH leaves status alone"
    );
    srv.put_pod(&pod_on("ns1", "c2", "node-2")); // other node: not seen
    let d = curl(
        &srv,
        &[
            "-H",
            &bearer(&srv),
            "-X",
            "DELETE",
            &format!("{}/api/v1/namespaces/ns2/pods/b", srv.url),
        ],
    )
    .json(200);
    assert_eq!(d["metadata"]["name"], "b");
    assert!(!srv.has_pod("ns2", "b"));
    let out = h.join().unwrap();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("MODIFIED", "a"), ("DELETED", "b")], "{out}");
    let rvs: Vec<u64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs[0] > rv && rvs[1] > rvs[0], "{rvs:?}");
    assert_eq!(events[0]["object"]["metadata"]["labels"]["x"], "y");

    // From 0: every pod as ADDED first.
    let all = watch_lines(
        &srv,
        "watch=1&timeoutSeconds=1&fieldSelector=spec.nodeName%3Dnode-2",
        1,
    );
    let added: Vec<&str> = all
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["c", "c2"]);
    assert!(all.iter().all(|e| e["type"] == "ADDED"));

    // expire_watches: the next watch gets a 410 ERROR event, and so does
    // any later watch from a version before the expiry.
    srv.set_faults(json!({"expire_watches": 1}));
    let last = *rvs.last().unwrap();
    let ev = watch_lines(
        &srv,
        &format!("watch=1&resourceVersion={last}&timeoutSeconds=2"),
        2,
    );
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
    assert_eq!(srv.faults()["expire_watches"], 0);
    let again = watch_lines(
        &srv,
        &format!("watch=1&resourceVersion={last}&timeoutSeconds=1"),
        1,
    );
    assert_eq!(again[0]["object"]["code"], 410);
    let l = get(&srv, "/api/v1/pods").json(200);
    let now: u64 = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(now > last);
    let fine = watch_lines(
        &srv,
        &format!("watch=1&resourceVersion={now}&timeoutSeconds=1"),
        1,
    );
    assert!(fine.is_empty(), "{fine:?}");

    // A restart keeps the versions growing and forgets the history.
    srv.restart();
    let l = get(&srv, "/api/v1/pods").json(200);
    let after: u64 = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after > now, "{after} <= {now}");
    let old = watch_lines(
        &srv,
        &format!("watch=1&resourceVersion={now}&timeoutSeconds=1"),
        1,
    );
    assert_eq!(old[0]["object"]["code"], 410);

    // Nodes: GET and PATCH (a JSON patch removing a taint).
    srv.put_node(&json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "resourceVersion": "5"},
        "spec": {"taints": [{"key": "multimesh.io/not-ready", "effect": "NoSchedule"}]}}));
    let n = get(&srv, "/api/v1/nodes/node-1").json(200);
    assert_eq!(n["spec"]["taints"][0]["key"], "multimesh.io/not-ready");
    let n = patch(&srv, "/api/v1/nodes/node-1", JSONP,
        r#"[{"op":"test","path":"/spec/taints/0/key","value":"multimesh.io/not-ready"},{"op":"remove","path":"/spec/taints/0"}]"#).json(200);
    assert_eq!(n["spec"]["taints"], json!([]));
    assert_eq!(srv.node("node-1")["metadata"]["resourceVersion"], "6");
    assert_status(&get(&srv, "/api/v1/nodes/nope").json(404), 404, "NotFound");

    // Events: POSTed, stored, named.
    let e = curl(&srv, &["-H", &bearer(&srv), "-X", "POST", "-H", "Content-Type: application/json",
        "--data-binary", r#"{"involvedObject":{"kind":"Pod","name":"a","namespace":"ns1"},"reason":"Repaired","message":"m","type":"Normal"}"#,
        &format!("{}/api/v1/namespaces/ns1/events", srv.url)]).json(201);
    assert!(e["metadata"]["name"].as_str().unwrap().starts_with("a."));
    let stored = srv.events();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["reason"], "Repaired");
}
