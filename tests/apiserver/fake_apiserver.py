#!/usr/bin/env python3
"""A fake kube-apiserver for multimesh's Kubernetes-mode tests.

Python 3 standard library only. HTTPS on 127.0.0.1, HTTP/1.1 keep-alive.

    fake_apiserver.py --dir DIR --cert server.pem --key server-key.pem
                      [--client-ca ca.pem] --port-file FILE [--port 0] [--verbose]
                      [--exit-on-stdin-eof]
    fake_apiserver.py --plain --dir DIR --port-file FILE [...]

--plain serves plain HTTP instead (no TLS, so no --cert/--key/--client-ca
and no client-certificate authentication; bearer tokens work as over
HTTPS): for testing clients that must refuse, or explicitly allow, an
http:// API server.

The chosen port is written to --port-file (temp file + rename) once the
socket listens. SIGTERM/SIGINT stop it cleanly (exit 0), and so does EOF on
stdin with --exit-on-stdin-eof (the harness holds the pipe's write end, so a
killed test process never leaves a server behind).

State: files under DIR, re-read on every request (tests edit them live).

  DIR/tokens              accepted bearer tokens, one per line ('#' comments
                          and blank lines ignored)
  DIR/objects/pods/<ns>/<name>.json   Pod objects
  DIR/objects/nads/<ns>/<name>.json   NetworkAttachmentDefinition objects
  DIR/objects/namespaces/<ns>.json    Namespace objects
  DIR/objects/nodes/<name>.json       Node objects
  DIR/objects/events/<ns>/<name>.json Events the clients POSTed (written by
                          the server)
  DIR/store-rv            written by the server: the last resourceVersion
                          its pod store handed out (kept across restarts,
                          so versions only grow)
  DIR/faults.json         optional fault injection, see below
  DIR/requests.log        written by the server: one JSON object per line
                          per request:
      {"method", "path", "query", "content_type",
       "auth": "token" | "cert" | "none" | "bad",
       "status": <int>,        0 when the connection was dropped ("down")
       "conn": <int>,          connection number (same on a kept-alive conn)
       "body": <str>}          only for requests that carry a body

Authentication: "Authorization: Bearer <t>" with t a line of DIR/tokens
("token"), else a client certificate verified against --client-ca
("cert"). A request with a bad token and no valid certificate is "bad"; one
with no credentials is "none". Unauthenticated requests get 401, except
that anonymous ("none") GET /healthz, /livez, /readyz and /version are
allowed (as the default system:public-info-viewer role does).

faults.json (every key optional):

  {
    "down": false,          true: every request is answered by closing the
                            connection without a response (the TLS handshake
                            still completes; the request is logged with
                            status 0). Checked first.
    "delay_ms": 0,          sleep this long before answering each request
    "status_conflicts": 0,  the next N writes (PATCH/PUT) to an existing
                            pods/status get 409 Conflict; the counter is
                            decremented and written back
    "expire_watches": 0,    the next N pod watches (open ones first, else
                            the next to start) end with an ERROR event,
                            410 Expired, and every resourceVersion before
                            that moment is compacted: a watch from one of
                            them gets 410 too, so the client must relist.
                            Decremented and written back.
    "fail": [               the next `count` requests matching an entry get
      {"method": "GET",         its status (entries are tried in order, the
       "path_prefix": "/api/",  first match with count > 0 is used and its
       "status": 500,           count decremented and written back).
       "count": 1,              method: optional ("*" or absent: any);
       "reason": "...",         path_prefix: optional (absent: any path);
       "message": "...",        reason/message: optional Status fields;
       "headers": {"Retry-After": "1"}}   headers: optional extra headers
    ]
  }

Order of evaluation per request: down, delay_ms, authentication (401),
fail, routing (404/405), status_conflicts (pods/status writes only, after
the pod is found), then the request itself.

Routes (JSON answers; errors are metav1.Status bodies like the real server):

  GET   /healthz, /livez, /readyz           "ok" (text/plain)
  GET   /version                            {"major":"1","minor":"31",...}
  GET   /api/v1/namespaces/{ns}/pods/{name}             the pod or 404
  GET   /api/v1/namespaces/{ns}/pods/{name}/status      the pod or 404
  PATCH /api/v1/namespaces/{ns}/pods/{name}/status
        Content-Type application/merge-patch+json          RFC 7386
                     application/strategic-merge-patch+json treated as a
                         merge patch: maps merge recursively, null deletes,
                         lists are replaced whole (no merge keys, no $patch
                         directives)
                     application/json-patch+json           RFC 6902 (add,
                         remove, replace, move, copy, test; ~0/~1 escapes)
                     anything else -> 415
        Malformed JSON -> 400 BadRequest; a patch that cannot be applied
        (bad op, missing path, failed test) -> 422 Invalid.
  PUT   /api/v1/namespaces/{ns}/pods/{name}/status      full replacement
        (name/namespace must match the URL -> else 400)
  GET   /api/v1/namespaces/{ns}                         the namespace or 404
  GET   /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}

  GET   /api/v1/pods, /api/v1/namespaces/{ns}/pods     PodList; query
        fieldSelector=spec.nodeName=NODE (the only selector) filters;
        metadata.resourceVersion is the store's current version.
        With watch=1 (or true): a watch, a chunked stream of JSON lines
        {"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": ...}
        of the changes after resourceVersion=N (absent or 0: every pod
        as ADDED first); timeoutSeconds=S ends it after S seconds
        (default 1800). A version older than the store keeps (or than an
        expiry, see expire_watches) gets one ERROR event, a Status with
        code 410 reason Expired, and the end of the stream.
  PATCH /api/v1/namespaces/{ns}/pods/{name}  the patch types as for
        pods/status; status changes are discarded (the main resource)
  DELETE /api/v1/namespaces/{ns}/pods/{name}  removes it, answers the pod
  GET   /api/v1/nodes/{name}, PATCH /api/v1/nodes/{name}   Node objects
  POST  /api/v1/namespaces/{ns}/events   stores the Event (name from
        metadata.name, else generateName or the involved object's name plus
        a counter), answers 201 with it

The pod store: pods are the files under objects/pods, whoever wrote them
(the tests edit them directly). Lists and watches see them through a store
that stats the files (at most every 50 ms) and turns each change into an
event with the next resourceVersion (a global counter, as etcd's); event
and list objects carry that version in metadata.resourceVersion. The last
10000 events are kept for watches.

Writes to pods/status: if the patched (or PUT) object carries
metadata.resourceVersion and it differs from the stored one -> 409 Conflict.
As the real status strategy does, spec changes are discarded (metadata,
e.g. annotations, and status are kept). metadata.resourceVersion is then
bumped (a string integer) and the file rewritten atomically; the new pod is
returned (200).

Anything else: 404 NotFound Status; a known path with a wrong method: 405.
An exception while handling a request gives a 500 Status, never a dead server.
"""

import argparse
import collections
import copy
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 8 * 1024 * 1024
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
ANON_PATHS = ("/healthz", "/livez", "/readyz", "/version")
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

VERBOSE = False
STATE_LOCK = threading.Lock()  # faults.json counters, object writes
LOG_LOCK = threading.Lock()
CONN_LOCK = threading.Lock()
CONN_COUNTER = [0]
EVENT_SEQ = [0]


def vlog(msg):
    if VERBOSE:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def body(self):
        st = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            st["details"] = self.details
        st["code"] = self.code
        return st


class DropConnection(Exception):
    pass


class PatchError(Exception):
    pass


# ---------------------------------------------------------------- files


def atomic_write(path, data):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, ".%s.%d.%d.tmp" % (os.path.basename(path), os.getpid(), threading.get_ident()))
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def read_json(path):
    """The parsed file, or None when it does not exist."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return json.loads(text)


# ---------------------------------------------------------------- patches


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("invalid JSON pointer %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _list_index(lst, tok, for_add):
    if tok == "-" and for_add:
        return len(lst)
    if not re.fullmatch(r"0|[1-9][0-9]*", tok):
        raise PatchError("invalid array index %r" % tok)
    i = int(tok)
    limit = len(lst) if for_add else len(lst) - 1
    if i > limit:
        raise PatchError("array index %d out of range" % i)
    return i


def _parent(doc, tokens):
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError("path component %r not found" % t)
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_list_index(cur, t, False)]
        else:
            raise PatchError("path component %r is not a container" % t)
    return cur


def _get(doc, tokens):
    if not tokens:
        return doc
    par = _parent(doc, tokens)
    t = tokens[-1]
    if isinstance(par, dict):
        if t not in par:
            raise PatchError("path %r not found" % "/".join(tokens))
        return par[t]
    if isinstance(par, list):
        return par[_list_index(par, t, False)]
    raise PatchError("path %r not found" % "/".join(tokens))


def _add(doc, tokens, value):
    if not tokens:
        return value
    par = _parent(doc, tokens)
    t = tokens[-1]
    if isinstance(par, dict):
        par[t] = value
    elif isinstance(par, list):
        par.insert(_list_index(par, t, True), value)
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def _remove(doc, tokens):
    if not tokens:
        raise PatchError("cannot remove the whole document")
    par = _parent(doc, tokens)
    t = tokens[-1]
    if isinstance(par, dict):
        if t not in par:
            raise PatchError("path %r not found" % "/".join(tokens))
        return par.pop(t)
    if isinstance(par, list):
        return par.pop(_list_index(par, t, False))
    raise PatchError("cannot remove from a scalar")


def json_patch(doc, ops):
    """RFC 6902."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError("operation without op or path: %r" % (op,))
        kind = op["op"]
        if not isinstance(op["path"], str):
            raise PatchError("path must be a string")
        path = _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError("%s operation without value" % kind)
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            if not path:
                doc = copy.deepcopy(op["value"])
            else:
                _get(doc, path)  # must exist
                _remove(doc, path)
                doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            if not isinstance(op.get("from"), str):
                raise PatchError("%s operation without from" % kind)
            src = _pointer(op["from"])
            if kind == "move":
                if path[: len(src)] == src and len(path) > len(src):
                    raise PatchError("cannot move a value into itself")
                val = _remove(doc, src)
            else:
                val = copy.deepcopy(_get(doc, src))
            doc = _add(doc, path, val)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError("test operation failed at %r" % op["path"])
        else:
            raise PatchError("unknown operation %r" % kind)
    return doc


# ---------------------------------------------------------------- pod store


HISTORY = 10000
SYNC_EVERY = 0.05


class PodStore:
    """The pods under DIR/objects/pods as lists and watches see them: each
    change of a file (mtime, size, inode) since the last look is an event
    with the next resourceVersion."""

    def __init__(self, root):
        self.root = root
        self.cond = threading.Condition()
        self.known = {}  # (ns, name) -> (signature, object with its rv)
        self.history = collections.deque(maxlen=HISTORY)  # (rv, type, obj)
        self.rv_file = os.path.join(root, "store-rv")
        try:
            with open(self.rv_file) as f:
                self.rv = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            self.rv = 0
        self.last_sync = 0.0
        with self.cond:
            self._sync()
            # Nothing before this start can be watched from: the history
            # of an earlier run of the server is gone.
            self.compacted = self.rv

    def _files(self):
        base = os.path.join(self.root, "objects", "pods")
        out = {}
        try:
            namespaces = sorted(os.listdir(base))
        except FileNotFoundError:
            return out
        for ns in namespaces:
            d = os.path.join(base, ns)
            try:
                names = sorted(os.listdir(d))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for f in names:
                if f.startswith(".") or not f.endswith(".json"):
                    continue
                try:
                    st = os.stat(os.path.join(d, f))
                except FileNotFoundError:
                    continue
                out[(ns, f[: -len(".json")])] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def _event(self, kind, obj):
        self.rv += 1
        obj = copy.deepcopy(obj)
        if isinstance(obj.get("metadata"), dict):
            obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, obj))
        return obj

    def _sync(self):
        """Turn file changes into events (the caller holds self.cond)."""
        self.last_sync = time.monotonic()
        files = self._files()
        changed = False
        for key, sig in files.items():
            old = self.known.get(key)
            if old is not None and old[0] == sig:
                continue
            try:
                obj = read_json(os.path.join(self.root, "objects", "pods", key[0], key[1] + ".json"))
            except ValueError:
                continue  # half-written by a test: next time
            if not isinstance(obj, dict):
                continue
            obj = self._event("ADDED" if old is None else "MODIFIED", obj)
            self.known[key] = (sig, obj)
            changed = True
        for key in [k for k in self.known if k not in files]:
            self._event("DELETED", self.known.pop(key)[1])
            changed = True
        if changed:
            atomic_write(self.rv_file, "%d\n" % self.rv)
            self.cond.notify_all()

    def sync(self, force=False):
        with self.cond:
            if force or time.monotonic() - self.last_sync >= SYNC_EVERY:
                self._sync()

    def expire(self):
        """Compact every version so far: watches from them get 410."""
        with self.cond:
            self._sync()
            self.rv += 1
            self.compacted = self.rv
            atomic_write(self.rv_file, "%d\n" % self.rv)
            self.cond.notify_all()

    def list(self, ns, node):
        with self.cond:
            self._sync()
            items = [
                o
                for (ons, _), (_, o) in sorted(self.known.items())
                if (ns is None or ons == ns) and (node is None or (o.get("spec") or {}).get("nodeName") == node)
            ]
            return str(self.rv), copy.deepcopy(items)

    def since(self, rv):
        """Events after rv, or None when rv is too old (410)."""
        with self.cond:
            if rv < self.compacted or (self.history and rv < self.history[0][0] - 1):
                return None
            return [e for e in self.history if e[0] > rv]


def gone_event(rv):
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version: %d" % rv,
            "reason": "Expired",
            "code": 410,
        },
    }


class Watch:
    """A pod watch to stream (see Handler.stream)."""

    def __init__(self, ns, node, rv, timeout):
        self.ns, self.node, self.rv, self.timeout = ns, node, rv, timeout


# ---------------------------------------------------------------- server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    sys_version = ""

    def version_string(self):
        return self.server_version
    timeout = 60  # idle keep-alive connections are closed after this
    # Headers and body go out in one write (see send) and with TCP_NODELAY:
    # otherwise Nagle + the client's delayed ACK stall every kept-alive
    # answer by ~40 ms.
    disable_nagle_algorithm = True

    # -- plumbing

    def setup(self):
        super().setup()
        with CONN_LOCK:
            CONN_COUNTER[0] += 1
            self.conn_id = CONN_COUNTER[0]

    def log_message(self, fmt, *args):
        vlog("%s - %s" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.serve()

    do_PATCH = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ApiError(400, "invalid chunked encoding")
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "request entity too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "invalid Content-Length")
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "request entity too large")
        return self.rfile.read(n)

    def auth_kind(self):
        d = self.server.state_dir
        authz = self.headers.get("Authorization")
        if authz is not None:
            parts = authz.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == "bearer":
                tok = parts[1].strip()
                try:
                    with open(os.path.join(d, "tokens")) as f:
                        toks = {
                            l.strip() for l in f if l.strip() and not l.strip().startswith("#")
                        }
                except FileNotFoundError:
                    toks = set()
                if tok and tok in toks:
                    return "token"
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError):
            cert = None
        if cert:
            return "cert"
        return "bad" if authz is not None else "none"

    def send(self, code, obj, headers=None, content_type="application/json"):
        if isinstance(obj, (bytes, str)):
            data = obj.encode() if isinstance(obj, str) else obj
        else:
            data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if self.close_connection:
            self.send_header("Connection", "close")
        head = b"".join(self._headers_buffer) + b"\r\n"
        self._headers_buffer = []
        self.wfile.write(head + (data if self.command != "HEAD" else b""))
        self.wfile.flush()

    def record(self, entry):
        line = (json.dumps(entry) + "\n").encode()
        path = os.path.join(self.server.state_dir, "requests.log")
        with LOG_LOCK:  # one write(2) per line: readers never see half a line
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    # -- request

    def serve(self):
        url = urlsplit(self.path)
        ctype = self.headers.get("Content-Type")
        entry = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "content_type": ctype,
            "auth": "none",
            "status": 0,
            "conn": self.conn_id,
        }
        try:
            entry["auth"] = self.auth_kind()
            try:
                body = self.read_body()
            except Exception:
                self.close_connection = True  # framing lost: answer, then close
                raise
            if body:
                entry["body"] = body[:65536].decode("utf-8", "replace")
            self.query = parse_qs(url.query, keep_blank_values=True)
            code, obj, headers, ctype_out = self.handle_api(url.path, entry["auth"], ctype, body)
            if isinstance(obj, Watch):
                entry["status"] = code
                self.record(entry)
                self.stream(obj)
                return
        except DropConnection:
            self.close_connection = True
            self.record(entry)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except ApiError as e:
            code, obj, headers, ctype_out = e.code, e.body(), e.headers, "application/json"
        except Exception as e:  # never let one request kill the server
            vlog("internal error: %r" % (e,))
            err = ApiError(500, "internal error: %s" % e)
            code, obj, headers, ctype_out = 500, err.body(), {}, "application/json"
        entry["status"] = code
        self.record(entry)
        self.send(code, obj, headers, ctype_out)

    def handle_api(self, path, auth, ctype, body):
        d = self.server.state_dir
        faults = read_json(os.path.join(d, "faults.json")) or {}
        if faults.get("down"):
            raise DropConnection()
        delay = faults.get("delay_ms") or 0
        if delay:
            time.sleep(delay / 1000.0)

        method = self.command
        if auth in ("bad", "none") and not (
            auth == "none" and method == "GET" and path in ANON_PATHS
        ):
            raise ApiError(401, "Unauthorized")

        self.injected_failure(method, path)

        if path in ("/healthz", "/livez", "/readyz"):
            self.allow(method, ("GET",))
            return 200, "ok", {}, "text/plain; charset=utf-8"
        if path == "/version":
            self.allow(method, ("GET",))
            return 200, {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2024-08-13T00:00:00Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            }, {}, "application/json"

        parts = path.split("/")[1:]
        # /api/v1/namespaces/{ns}
        if len(parts) == 4 and parts[:3] == ["api", "v1", "namespaces"]:
            ns = parts[3]
            if not NAME_RE.match(ns):
                raise not_found_path()
            self.allow(method, ("GET",))
            file = os.path.join(d, "objects", "namespaces", ns + ".json")
            return 200, self.load(file, "namespaces", ns, None), {}, "application/json"
        # /api/v1/pods, /api/v1/namespaces/{ns}/pods: list or watch
        if parts == ["api", "v1", "pods"] or (
            len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods"
        ):
            ns = parts[3] if len(parts) == 5 else None
            if ns is not None and not NAME_RE.match(ns):
                raise not_found_path()
            self.allow(method, ("GET",))
            return self.list_pods(ns)
        # /api/v1/namespaces/{ns}/pods/{name}[/status]
        if (
            len(parts) in (6, 7)
            and parts[:3] == ["api", "v1", "namespaces"]
            and parts[4] == "pods"
            and (len(parts) == 6 or parts[6] == "status")
        ):
            ns, name = parts[3], parts[5]
            if not (NAME_RE.match(ns) and NAME_RE.match(name)):
                raise not_found_path()
            file = os.path.join(d, "objects", "pods", ns, name + ".json")
            if len(parts) == 6:
                self.allow(method, ("GET", "PATCH", "DELETE"))
                if method == "PATCH":
                    new = self.write_object(file, "pods", ns, name, ctype, body, keep="status")
                    return 200, new, {}, "application/json"
                if method == "DELETE":
                    with STATE_LOCK:
                        obj = self.load(file, "pods", name, None)
                        os.unlink(file)
                    return 200, obj, {}, "application/json"
                return 200, self.load(file, "pods", name, None), {}, "application/json"
            self.allow(method, ("GET", "PATCH", "PUT"))
            if method == "GET":
                return 200, self.load(file, "pods", name, None), {}, "application/json"
            return 200, self.write_status(file, ns, name, ctype, body), {}, "application/json"
        # /api/v1/nodes/{name}
        if len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
            name = parts[3]
            if not NAME_RE.match(name):
                raise not_found_path()
            file = os.path.join(d, "objects", "nodes", name + ".json")
            self.allow(method, ("GET", "PATCH"))
            if method == "GET":
                return 200, self.load(file, "nodes", name, None), {}, "application/json"
            return 200, self.write_object(file, "nodes", None, name, ctype, body, keep=None), {}, "application/json"
        # /api/v1/namespaces/{ns}/events
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "events":
            ns = parts[3]
            if not NAME_RE.match(ns):
                raise not_found_path()
            self.allow(method, ("POST",))
            return 201, self.create_event(ns, ctype, body), {}, "application/json"
        # /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}
        if (
            len(parts) == 7
            and parts[:4] == ["apis", "k8s.cni.cncf.io", "v1", "namespaces"]
            and parts[5] == "network-attachment-definitions"
        ):
            ns, name = parts[4], parts[6]
            if not (NAME_RE.match(ns) and NAME_RE.match(name)):
                raise not_found_path()
            self.allow(method, ("GET",))
            file = os.path.join(d, "objects", "nads", ns, name + ".json")
            return (
                200,
                self.load(file, "network-attachment-definitions", name, "k8s.cni.cncf.io"),
                {},
                "application/json",
            )
        raise not_found_path()

    def allow(self, method, methods):
        if method not in methods:
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                headers={"Allow": ", ".join(methods)},
                details={},
            )

    def injected_failure(self, method, path):
        file = os.path.join(self.server.state_dir, "faults.json")
        with STATE_LOCK:
            faults = read_json(file) or {}
            for f in faults.get("fail") or []:
                if (f.get("count") or 0) <= 0:
                    continue
                m = f.get("method", "*")
                if m not in (None, "*") and m.upper() != method:
                    continue
                if not path.startswith(f.get("path_prefix") or ""):
                    continue
                f["count"] -= 1
                atomic_write(file, json.dumps(faults, indent=1))
                code = int(f.get("status", 500))
                raise ApiError(
                    code,
                    f.get("message") or "injected failure",
                    reason=f.get("reason"),
                    details={},
                    headers=f.get("headers"),
                )

    def load(self, file, kind, name, group):
        obj = read_json(file)
        if obj is None:
            raise not_found(kind, name, group)
        return obj

    def list_pods(self, ns):
        q = self.query
        node = None
        for sel in q.get("fieldSelector", []):
            if not sel.startswith("spec.nodeName="):
                raise ApiError(400, "unsupported field selector %r (only spec.nodeName=NODE)" % sel)
            node = sel[len("spec.nodeName="):]
        store = self.server.store
        if q.get("watch", ["false"])[-1] in ("1", "true"):
            try:
                rv = int(q.get("resourceVersion", ["0"])[-1] or "0")
                timeout = int(q.get("timeoutSeconds", ["1800"])[-1])
            except ValueError:
                raise ApiError(400, "resourceVersion and timeoutSeconds must be integers")
            return 200, Watch(ns, node, rv, timeout), {}, "application/json"
        rv, items = store.list(ns, node)
        return 200, {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }, {}, "application/json"

    def chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def expiry_due(self):
        """Take one expire_watches token from faults.json, if any."""
        file = os.path.join(self.server.state_dir, "faults.json")
        with STATE_LOCK:
            faults = read_json(file) or {}
            if (faults.get("expire_watches") or 0) <= 0:
                return False
            faults["expire_watches"] -= 1
            atomic_write(file, json.dumps(faults, indent=1))
        self.server.store.expire()
        return True

    def stream(self, w):
        """Serve a watch: chunked JSON lines until timeoutSeconds, an
        expiry, the server going down (faults) or the client leaving."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        store = self.server.store
        deadline = time.monotonic() + max(w.timeout, 0)

        def wanted(obj):
            md = obj.get("metadata") or {}
            return (w.ns is None or md.get("namespace") == w.ns) and (
                w.node is None or (obj.get("spec") or {}).get("nodeName") == w.node
            )

        try:
            rv = w.rv
            if rv == 0:
                rv, items = store.list(w.ns, w.node)
                rv = int(rv)
                for o in items:
                    self.chunk({"type": "ADDED", "object": o})
            while True:
                if self.expiry_due():
                    self.chunk(gone_event(rv))
                    break
                store.sync()
                events = store.since(rv)
                if events is None:
                    self.chunk(gone_event(rv))
                    break
                for erv, kind, obj in events:
                    if wanted(obj):
                        self.chunk({"type": kind, "object": obj})
                    rv = erv
                if time.monotonic() >= deadline:
                    break
                if (read_json(os.path.join(self.server.state_dir, "faults.json")) or {}).get("down"):
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                with store.cond:
                    store.cond.wait(SYNC_EVERY)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, ValueError):
            pass  # the client went away

    def create_event(self, ns, ctype, body):
        try:
            ev = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "error decoding event: %s" % e)
        if not isinstance(ev, dict) or not isinstance(ev.get("metadata", {}), dict):
            raise ApiError(400, "the body must be an Event object")
        md = ev.setdefault("metadata", {})
        if md.get("namespace", ns) != ns:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        md["namespace"] = ns
        with STATE_LOCK:
            EVENT_SEQ[0] += 1
            seq = EVENT_SEQ[0]
        if not md.get("name"):
            base = md.get("generateName") or (
                ((ev.get("involvedObject") or {}).get("name") or "event") + "."
            )
            md["name"] = "%s%x%x" % (base, int(time.time() * 1000), seq)
        if not NAME_RE.match(md["name"]):
            raise ApiError(422, 'Event "%s" is invalid: metadata.name' % md["name"])
        atomic_write(
            os.path.join(self.server.state_dir, "objects", "events", ns, md["name"] + ".json"),
            json.dumps(ev, indent=1),
        )
        return ev

    def write_status(self, file, ns, name, ctype, body):
        return self.write_object(file, "pods", ns, name, ctype, body, keep="spec")

    def write_object(self, file, kind, ns, name, ctype, body, keep):
        """PATCH (or PUT) of an object; `keep` names the part the write
        cannot change (pods/status: spec; pods: status)."""
        media = (ctype or "").split(";")[0].strip().lower()
        if self.command == "PATCH" and media not in PATCH_TYPES:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(PATCH_TYPES + ("application/apply-patch+yaml",)),
            )
        try:
            doc = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "error decoding patch: %s" % e)
        if doc is None:
            raise ApiError(400, "the request body is empty")
        with STATE_LOCK:
            old = self.load(file, kind, name, None)
            faults_file = os.path.join(self.server.state_dir, "faults.json")
            faults = read_json(faults_file) or {}
            if kind == "pods" and keep == "spec" and (faults.get("status_conflicts") or 0) > 0:
                faults["status_conflicts"] -= 1
                atomic_write(faults_file, json.dumps(faults, indent=1))
                raise conflict(name)
            if self.command == "PUT":
                if not isinstance(doc, dict):
                    raise ApiError(400, "the body must be a Pod object")
                md = doc.get("metadata") or {}
                if md.get("name", name) != name:
                    raise ApiError(
                        400,
                        "the name of the object (%s) does not match the name on the URL (%s)"
                        % (md.get("name"), name),
                    )
                if ns is not None and md.get("namespace", ns) != ns:
                    raise ApiError(
                        400, "the namespace of the provided object does not match the namespace sent on the request"
                    )
                new = doc
            elif media == "application/json-patch+json":
                try:
                    new = json_patch(old, doc)
                except PatchError as e:
                    raise ApiError(422, "the server rejected our request due to an error in our request: %s" % e,
                                   details={"name": name, "kind": kind})
            else:
                if not isinstance(doc, dict):
                    raise ApiError(400, "a merge patch must be a JSON object")
                new = merge_patch(old, doc)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise ApiError(422, '%s "%s" is invalid: metadata missing' % (kind, name),
                               details={"name": name, "kind": kind})
            old_rv = str((old.get("metadata") or {}).get("resourceVersion", "0"))
            new_rv = new["metadata"].get("resourceVersion")
            if new_rv not in (None, "") and str(new_rv) != old_rv:
                raise conflict(name)
            # pods/status never changes the spec (the real status strategy),
            # nor a pod write its status.
            if keep is not None:
                if keep in old:
                    new[keep] = old[keep]
                else:
                    new.pop(keep, None)
            new["metadata"]["name"] = name
            if ns is not None:
                new["metadata"]["namespace"] = ns
            try:
                new["metadata"]["resourceVersion"] = str(int(old_rv) + 1)
            except ValueError:
                new["metadata"]["resourceVersion"] = "1"
            atomic_write(file, json.dumps(new, indent=1))
            return new


def not_found(kind, name, group):
    full = kind + ("." + group if group else "")
    details = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return ApiError(404, '%s "%s" not found' % (full, name), details=details)


def not_found_path():
    return ApiError(404, "the server could not find the requested resource", details={})


def conflict(name):
    return ApiError(
        409,
        'Operation cannot be fulfilled on pods "%s": the object has been modified; '
        "please apply your changes to the latest version and try again" % name,
        details={"name": name, "kind": "pods"},
    )


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, ctx, state_dir):
        # ctx None: plain HTTP (--plain).
        self.ssl_ctx = ctx
        self.state_dir = state_dir
        self.store = PodStore(state_dir)
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's thread, not in accept.
        request.settimeout(10)
        if self.ssl_ctx is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            vlog("TLS handshake from %s failed: %s" % (client_address, e))
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if VERBOSE:
            super().handle_error(request, client_address)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description="fake kube-apiserver for tests")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--plain", action="store_true", help="serve plain HTTP, not HTTPS")
    ap.add_argument("--client-ca")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin reaches EOF (the parent died: no orphaned server)",
    )
    args = ap.parse_args()
    VERBOSE = args.verbose

    if args.plain:
        if args.cert or args.key or args.client_ca:
            ap.error("--plain takes no --cert, --key or --client-ca")
        ctx = None
    else:
        if not (args.cert and args.key):
            ap.error("--cert and --key are required (or --plain)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
        if args.client_ca:
            ctx.load_verify_locations(cafile=args.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL

    os.makedirs(os.path.join(args.dir, "objects", "pods"), exist_ok=True)
    for kind in ("nads", "nodes", "events"):
        os.makedirs(os.path.join(args.dir, "objects", kind), exist_ok=True)
    srv = Server(("127.0.0.1", args.port), ctx, os.path.abspath(args.dir))

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.exit_on_stdin_eof:

        def watch_stdin():
            # os.read, not sys.stdin: a daemon thread blocked inside a
            # buffered reader makes interpreter shutdown abort.
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            srv.shutdown()

        threading.Thread(target=watch_stdin, daemon=True).start()

    port = srv.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, args.port_file)
    vlog("listening on %s://127.0.0.1:%d" % ("http" if args.plain else "https", port))
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
