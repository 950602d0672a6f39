#!/usr/bin/env python3
"""Validate custom resources (kinds defined by a CRD) in Kubernetes manifests.

kubernetes-validate knows the built-in kinds only; for a kind such as
NetworkAttachmentDefinition it prints a WARN and moves on. This script finds
the CustomResourceDefinitions among the given files and validates every
resource of a kind they define against the CRD's openAPIV3Schema, the way the
API server does:

- the structural schema as JSON Schema (nullable, int-or-string honoured);
- with --strict, unknown fields are errors (additionalProperties: false on
  every object schema with properties, unless it preserves unknown fields),
  as `kubectl apply --validate=strict` rejects them;
- metadata against the built-in ObjectMeta schema that kubernetes-validate
  ships for the chosen Kubernetes version;
- names as DNS-1123 subdomains, namespaces as DNS-1123 labels.

And, for NetworkAttachmentDefinitions, what multimesh relies on: a non-empty
spec.config is a JSON CNI config (conf or conflist) with a cniVersion, and a
`multimesh.io/capture` annotation is "true" or "false".

Output: one `PASS file: Kind/name ...` line per validated resource, one
`ERROR file: Kind/name: path: message` line per problem; exit status 1 when
there was any error. `--dump` prints every document of the files as JSON
(for cross-checks by the Rust tests) instead of validating.

Needs the packages kubernetes-validate brings: PyYAML, jsonschema, referencing.
"""

import argparse
import json
import re
import sys

import jsonschema
import yaml
from referencing import Registry, Resource

from kubernetes_validate import utils as kv

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def load_docs(files):
    docs = []
    for f in files:
        with open(f) as fh:
            for i, d in enumerate(yaml.safe_load_all(fh)):
                if d is not None:
                    docs.append((f, i, d))
    return docs


def convert(s, strict):
    """A CRD structural schema as a JSON Schema (draft 2020-12)."""
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k.startswith("x-kubernetes-") or k == "nullable":
            continue
        if k == "properties":
            out[k] = {p: convert(x, strict) for p, x in v.items()}
        elif k in ("items", "not"):
            out[k] = convert(v, strict)
        elif k == "additionalProperties":
            out[k] = convert(v, strict) if isinstance(v, dict) else v
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [convert(x, strict) for x in v]
        else:
            out[k] = v
    if s.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if s.get("nullable") and "type" in out:
        t = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = t + ["null"]
    if (
        strict
        and s.get("type") == "object"
        and "properties" in s
        and "additionalProperties" not in s
        and not s.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def definitions(k8s_version, strict):
    """kubernetes-validate's built-in definitions for the newest schema
    version not newer than k8s_version (as kubernetes-validate picks)."""
    mm = kv.major_minor(k8s_version)
    versions = [v for v in kv.all_versions() if kv.major_minor(v) <= mm]
    if not versions:
        sys.exit("FATAL no built-in schemas for Kubernetes %s" % k8s_version)
    d = "v%s-local%s" % (versions[-1], "-strict" if strict else "")
    return kv.schema_contents("kubernetes-json-schema/%s/_definitions.json" % d, k8s_version)


def crds_of(docs):
    """{(group, version, kind): (crd name, schema)} for served versions."""
    crds = {}
    for f, _, d in docs:
        if d.get("kind") != "CustomResourceDefinition":
            continue
        spec = d.get("spec") or {}
        for v in spec.get("versions") or []:
            if not v.get("served", False):
                continue
            schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {}
            key = (spec.get("group"), v.get("name"), (spec.get("names") or {}).get("kind"))
            crds[key] = (d["metadata"]["name"], schema)
    return crds


def check_nad(d):
    errors = []
    ann = (d.get("metadata") or {}).get("annotations") or {}
    cap = ann.get("multimesh.io/capture")
    if cap is not None and cap not in ("true", "false"):
        errors.append(("metadata.annotations.multimesh.io/capture", "must be \"true\" or \"false\", not %r" % cap))
    config = (d.get("spec") or {}).get("config")
    if not isinstance(config, str):
        return errors  # the schema check reports it
    if not config:
        return errors  # found by name in the plugin's confDir
    try:
        c = json.loads(config)
    except ValueError as e:
        return errors + [("spec.config", "not JSON: %s" % e)]
    if not isinstance(c, dict):
        return errors + [("spec.config", "not a JSON object")]
    if not isinstance(c.get("cniVersion"), str):
        errors.append(("spec.config.cniVersion", "missing or not a string"))
    plugins = c.get("plugins")
    if plugins is not None:
        if not isinstance(plugins, list) or not plugins:
            errors.append(("spec.config.plugins", "must be a non-empty list"))
        else:
            for i, p in enumerate(plugins):
                if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
                    errors.append(("spec.config.plugins.%d" % i, "needs a type"))
    elif not isinstance(c.get("type"), str) or not c["type"]:
        errors.append(("spec.config", "needs a type (or plugins)"))
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", "--kubernetes-version", default="1.31.0")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--dump", action="store_true")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    try:
        docs = load_docs(a.files)
    except (OSError, yaml.YAMLError) as e:
        print("ERROR %s" % e)
        return 1
    if a.dump:
        json.dump([{"file": f, "index": i, "doc": d} for f, i, d in docs], sys.stdout)
        print()
        return 0

    registry = Resource.from_contents(definitions(a.kubernetes_version, a.strict)) @ Registry()
    crds = crds_of(docs)
    failed = 0
    for f, i, d in docs:
        if not isinstance(d, dict):
            print("ERROR %s: document %d: not a mapping" % (f, i))
            failed += 1
            continue
        kind = d.get("kind")
        meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
        name = meta.get("name")
        what = "%s/%s" % (kind, name)
        errors = []
        if not isinstance(name, str) or not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            errors.append(("metadata.name", "%r is not a DNS-1123 subdomain" % (name,)))
        ns = meta.get("namespace")
        if ns is not None and (not isinstance(ns, str) or not DNS1123_LABEL.match(ns) or len(ns) > 63):
            errors.append(("metadata.namespace", "%r is not a DNS-1123 label" % (ns,)))
        api = d.get("apiVersion")
        group, _, version = (api or "").rpartition("/")
        crd = crds.get((group, version, kind))
        if crd is not None:
            crd_name, crd_schema = crd
            schema = convert(crd_schema, a.strict)
            schema.setdefault("properties", {})["metadata"] = {"$ref": OBJECT_META}
            v = jsonschema.Draft202012Validator(schema, registry=registry)
            for e in sorted(v.iter_errors(d), key=lambda e: list(map(str, e.absolute_path))):
                errors.append((".".join(map(str, e.absolute_path)) or "(root)", e.message))
            if kind == "NetworkAttachmentDefinition" and group == "k8s.cni.cncf.io":
                errors += check_nad(d)
        for path, msg in errors:
            print("ERROR %s: %s: %s: %s" % (f, what, path, msg))
        failed += len(errors)
        if not errors and crd is not None:
            print("PASS %s: %s against CRD %s %s" % (f, what, crd_name, version))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
