#!/usr/bin/env python3
"""Benchmark driver for scripts/bench.sh (not meant to be run by hand).

It runs *inside* the node netns (bench.sh starts it with `ip netns exec`), so
every plugin process it spawns with subprocess is already where a runtime
would run it, and the timings contain no wrapper process. Pod network
namespaces are created here (`ip netns add` in this process's mount
namespace), one fresh namespace per ADD+DEL cycle, outside the timed region;
used ones are deleted only between phases, because the kernel tears a netns
down asynchronously and that work would otherwise land inside later timings.

Variants (whole-process ADD then DEL into a fresh pod netns):
  bare          the reference bridge plugin (host-local IPAM), run directly
  mm-nocap      multimesh, the same bridge as its only delegate, capture off
  mm-ipt-legacy multimesh + capture, iptables backend, legacy variant
  mm-ipt-nft    multimesh + capture, iptables backend, nft variant
  mm-nftables   multimesh + capture, nftables backend
  init-style    bare bridge ADD, then the same rules as one iptables-legacy
                process per rule (nsenter into the pod netns), bridge DEL

All variants run once per iteration, in an order rotated every iteration,
so machine noise lands on all of them alike.
"""

import argparse
import concurrent.futures
import datetime
import ipaddress
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

REF = "/usr/lib/cni"
BRIDGE = REF + "/bridge"
NSENTER = "/usr/bin/nsenter"
TIME = "/usr/bin/time"
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
CNI_TIMEOUT = 60  # seconds, any single plugin call
TOOL_TIMEOUT = 15  # seconds, ip / iptables / nft
SETTLE = 1.0  # seconds after deleting a phase's pod netns


class BenchError(Exception):
    pass


def tool(path):
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        p = os.path.join(d, path)
        if os.access(p, os.X_OK):
            return p
    raise BenchError(f"{path} not found")


IP = tool("ip")
IPT_LEGACY = tool("iptables-legacy")
IPT_LEGACY_RESTORE = tool("iptables-legacy-restore")
IPT_LEGACY_SAVE = tool("iptables-legacy-save")
IPT_NFT_RESTORE = tool("iptables-nft-restore")
IPT_NFT_SAVE = tool("iptables-nft-save")
NFT = tool("nft")


def run(argv, stdin=b"", timeout=TOOL_TIMEOUT, env=None, check=True):
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                           env=env if env is not None else BASE_ENV)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout}s: {' '.join(argv)}")
    if check and p.returncode != 0:
        raise BenchError(f"failed ({p.returncode}): {' '.join(argv)}\n"
                         f"stdout: {p.stdout.decode(errors='replace')}\n"
                         f"stderr: {p.stderr.decode(errors='replace')}")
    return p


class Rss:
    """Optionally wraps every process in /usr/bin/time -f %M and keeps the max.

    %M is the maximum resident set size (KiB) of the process and of the
    descendants it waited for, i.e. the largest member of the process tree."""

    def __init__(self, tmp, enabled):
        self.enabled = enabled
        self.file = os.path.join(tmp, f"rss.{os.getpid()}")
        self.max_kib = 0

    def wrap(self, argv):
        if not self.enabled:
            return argv
        return [TIME, "-f", "%M", "-o", self.file] + argv

    def collect(self):
        if not self.enabled:
            return
        with open(self.file) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        self.max_kib = max(self.max_kib, int(lines[-1]))


class Bench:
    def __init__(self, a):
        self.a = a
        self.rel = os.path.join(a.repo, "target", "release")
        self.mm = os.path.join(self.rel, "multimesh")
        self.tmp = a.tmp
        self.ipam = os.path.join(self.tmp, "ipam")
        self.cnidir = os.path.join(self.tmp, "cni")
        for d in (self.ipam, self.cnidir):
            os.makedirs(d, exist_ok=True)
        self.pod_seq = 0
        self.live_pods = set()
        self.bridge_conf = {
            "cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "mmb0",
            "isGateway": True,
            "ipam": {"type": "host-local", "dataDir": self.ipam,
                     "ranges": [[{"subnet": "198.51.100.0/24", "gateway": "198.51.100.1"}]]},
        }
        self.bridge_bytes = json.dumps(self.bridge_conf).encode()
        caps = {
            "mm-nocap": {"enabled": False},
            "mm-ipt-legacy": {"backend": "iptables", "iptablesVariant": "legacy"},
            "mm-ipt-nft": {"backend": "iptables", "iptablesVariant": "nft"},
            "mm-nftables": {"backend": "nftables"},
        }
        self.mm_bytes = {k: json.dumps(self.meta(v)).encode() for k, v in caps.items()}
        self.rules_v4, self.rules_nft = self.load_rules()
        self.rule_argvs = self.per_rule_argvs(self.rules_v4)

    # ---------------------------------------------------------------- configs
    def meta(self, capture, delegate=None, bin_dir=REF):
        return {"cniVersion": "1.0.0", "name": "mm", "type": "multimesh",
                "cniDir": self.cnidir, "binDir": bin_dir,
                "delegates": [delegate or self.bridge_conf], "capture": capture}

    def load_rules(self):
        conf = os.path.join(self.tmp, "rules.conf")
        with open(conf, "w") as f:
            json.dump(self.meta({"backend": "iptables", "iptablesVariant": "legacy"}), f)
        v4 = run([self.mm, "rules", "--config", conf]).stdout.decode()
        nft = run([self.mm, "rules", "--config", conf, "--backend", "nftables"]).stdout.decode()
        return v4, nft

    @staticmethod
    def per_rule_argvs(payload):
        """iptables-restore payload -> one iptables-legacy argv per rule."""
        out = []
        table = None
        for line in payload.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line == "COMMIT":
                continue
            if line.startswith("*"):
                table = line[1:]
                if table != "nat":
                    raise BenchError(f"unexpected table {table}")
                continue
            if line.startswith(":"):
                chain = line[1:].split()[0]
                out.append(["-N", chain])
            elif line.startswith("-N ") or line.startswith("-A "):
                out.append(shlex.split(line))
            else:
                raise BenchError(f"unexpected line in rules payload: {line!r}")
        # -w: wait for the node's xtables lock instead of failing on contention.
        return [[IPT_LEGACY, "-w", "10", "-t", "nat"] + w for w in out]

    # ---------------------------------------------------------------- netns
    def new_pod(self):
        self.pod_seq += 1
        name = f"mmbench-pod-{self.a.tag}-{self.pod_seq}"
        run([IP, "netns", "add", name])
        self.live_pods.add(name)
        return name, f"/run/netns/{name}"

    def del_pod(self, name):
        run([IP, "netns", "del", name], check=False)
        self.live_pods.discard(name)

    def new_pods(self, n):
        return [self.new_pod() for _ in range(n)]

    def drop_pods(self):
        """Delete every pod netns, then give the kernel's asynchronous
        namespace teardown time to finish before anything else is timed."""
        for p in sorted(self.live_pods):
            self.del_pod(p)
        time.sleep(SETTLE)

    # ---------------------------------------------------------------- CNI
    def cni(self, plugin, cmd, conf, netns, cid, rss=None):
        env = dict(BASE_ENV, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=netns,
                   CNI_IFNAME="eth0", CNI_PATH=REF,
                   CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}")
        argv = rss.wrap([plugin]) if rss else [plugin]
        try:
            p = subprocess.run(argv, input=conf, capture_output=True, env=env, timeout=CNI_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{plugin} {cmd} {cid}: timed out after {CNI_TIMEOUT}s")
        if p.returncode != 0:
            raise BenchError(f"{os.path.basename(plugin)} {cmd} {cid} failed ({p.returncode}): "
                             f"{p.stdout.decode(errors='replace').strip()} "
                             f"{p.stderr.decode(errors='replace').strip()}")
        if rss:
            rss.collect()
        if cmd == "ADD":
            try:
                res = json.loads(p.stdout)
            except ValueError:
                raise BenchError(f"{plugin} ADD {cid}: result is not JSON: {p.stdout!r}")
            if not res.get("ips"):
                raise BenchError(f"{plugin} ADD {cid}: no ips in result: {res}")
        return p

    def cycle(self, variant, netns, cid, rss=None):
        """One ADD+DEL; returns (ADD seconds, DEL seconds). Only plugin and
        tool processes run between the clock reads."""
        if variant in ("bare", "init-style"):
            plugin, conf = BRIDGE, self.bridge_bytes
        else:
            plugin, conf = self.mm, self.mm_bytes[variant]
        t0 = time.perf_counter()
        self.cni(plugin, "ADD", conf, netns, cid, rss)
        if variant == "init-style":
            for argv in self.rule_argvs:
                full = [NSENTER, f"--net={netns}"] + argv
                run(rss.wrap(full) if rss else full)
                if rss:
                    rss.collect()
        t1 = time.perf_counter()
        self.cni(plugin, "DEL", conf, netns, cid, rss)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    # ---------------------------------------------------------------- checks
    def in_pod(self, netns, argv, check=True):
        return run([NSENTER, f"--net={netns}"] + argv, check=check).stdout.decode()

    def rules_present(self, netns):
        """Which capture rule sets exist in a pod netns."""
        found = []
        if "MULTIMESH" in self.in_pod(netns, [IPT_LEGACY_SAVE, "-t", "nat"], check=False):
            found.append("legacy")
        if "MULTIMESH" in self.in_pod(netns, [IPT_NFT_SAVE, "-t", "nat"], check=False):
            found.append("nft")
        if "multimesh" in self.in_pod(netns, [NFT, "list", "tables"], check=False):
            found.append("nftables")
        return found

    def sanity(self, variants):
        """One untimed ADD, verified, then DEL, verified, per variant (also warms caches)."""
        expect = {"bare": [], "mm-nocap": [], "mm-ipt-legacy": ["legacy"],
                  "mm-ipt-nft": ["nft"], "mm-nftables": ["nftables"], "init-style": ["legacy"]}
        for v in variants:
            name, ns = self.new_pod()
            cid = f"sanity-{v}"
            plugin, conf = (BRIDGE, self.bridge_bytes) if v in ("bare", "init-style") \
                else (self.mm, self.mm_bytes[v])
            self.cni(plugin, "ADD", conf, ns, cid)
            if v == "init-style":
                for argv in self.rule_argvs:
                    run([NSENTER, f"--net={ns}"] + argv)
            addr = self.in_pod(ns, [IP, "-o", "-4", "addr", "show", "dev", "eth0"])
            if "198.51.100." not in addr:
                raise BenchError(f"sanity {v}: eth0 has no 198.51.100.x address: {addr}")
            got = self.rules_present(ns)
            if got != expect[v]:
                raise BenchError(f"sanity {v}: capture rules after ADD {got}, expected {expect[v]}")
            self.cni(plugin, "DEL", conf, ns, cid)
            if v.startswith("mm-"):
                left = self.rules_present(ns)
                if left:
                    raise BenchError(f"sanity {v}: rules left after DEL: {left}")
            links = self.in_pod(ns, [IP, "-o", "link"])
            if "eth0" in links:
                raise BenchError(f"sanity {v}: eth0 still in pod after DEL")
            self.del_pod(name)
        # The per-rule loop must program exactly what one restore programs.
        a, an = self.new_pod()
        b, bn = self.new_pod()
        run([NSENTER, f"--net={an}", IPT_LEGACY_RESTORE, "--noflush"], stdin=self.rules_v4.encode())
        for argv in self.rule_argvs:
            run([NSENTER, f"--net={bn}"] + argv)
        sa = self.in_pod(an, [IPT_LEGACY_SAVE, "-t", "nat"])
        sb = self.in_pod(bn, [IPT_LEGACY_SAVE, "-t", "nat"])
        strip = lambda s: [l for l in s.splitlines() if not l.startswith("#")]
        if strip(sa) != strip(sb):
            raise BenchError(f"per-rule loop differs from restore:\n{sa}\n---\n{sb}")
        self.del_pod(a)
        self.del_pod(b)

    # ---------------------------------------------------------------- runs
    def run_cycles(self, variants, n):
        times = {v: [] for v in variants}
        for i in range(n):
            k = i % len(variants)
            order = variants[k:] + variants[:k]
            pods = self.new_pods(len(order))
            for v, (name, ns) in zip(order, pods):
                times[v].append(self.cycle(v, ns, f"bench-{v}-{i}"))
        # The kernel tears a netns down asynchronously (cleanup_net, under
        # the rtnl lock), which would land inside later timings: the used
        # pod namespaces are only deleted once the phase is over.
        self.drop_pods()
        # (add, del) pairs -> cycle totals, ADD alone, DEL alone
        return ({v: [a + d for a, d in t] for v, t in times.items()},
                {v: [a for a, _ in t] for v, t in times.items()},
                {v: [d for _, d in t] for v, t in times.items()})

    def run_rule_steps(self, n):
        """Rule programming alone, each into a fresh netns, through nsenter."""
        lockf = os.path.join(self.tmp, "xtables.lock")
        lock_env = dict(BASE_ENV, XTABLES_LOCKFILE=lockf)
        steps = {
            "iptables-legacy-restore --noflush (1 process)":
                lambda ns: run([NSENTER, f"--net={ns}", IPT_LEGACY_RESTORE, "--noflush", "-w", "10"],
                               stdin=self.rules_v4.encode(), env=lock_env),
            "iptables-nft-restore --noflush (1 process)":
                lambda ns: run([NSENTER, f"--net={ns}", IPT_NFT_RESTORE, "--noflush", "-w", "10"],
                               stdin=self.rules_v4.encode(), env=lock_env),
            "nft -f - (1 process)":
                lambda ns: run([NSENTER, f"--net={ns}", NFT, "-f", "-"], stdin=self.rules_nft.encode()),
            f"iptables-legacy per rule ({len(self.rule_argvs)} processes)":
                lambda ns: [run([NSENTER, f"--net={ns}"] + argv) for argv in self.rule_argvs],
        }
        names = list(steps)
        times = {k: [] for k in names}
        for i in range(n):
            k = i % len(names)
            order = names[k:] + names[:k]
            pods = self.new_pods(len(order))
            for s, (name, ns) in zip(order, pods):
                t0 = time.perf_counter()
                steps[s](ns)
                times[s].append(time.perf_counter() - t0)
        self.drop_pods()
        return times

    def run_dispatch(self, n):
        """multimesh's own cost: mm-recorder (touches no netns) directly vs
        multimesh with mm-recorder as its only delegate, capture off."""
        rec_path = os.path.join(self.rel, "mm-recorder")
        rec = {"cniVersion": "1.0.0", "name": "rec", "type": "mm-recorder"}
        rec_bytes = json.dumps(rec).encode()
        mm_bytes = json.dumps(self.meta({"enabled": False}, rec, self.rel)).encode()
        name, ns = self.new_pod()
        variants = [("mm-recorder alone", rec_path, rec_bytes),
                    ("multimesh + mm-recorder", self.mm, mm_bytes)]
        times = {v[0]: [] for v in variants}
        for i in range(n):
            k = i % 2
            for label, plugin, conf in variants[k:] + variants[:k]:
                cid = f"dispatch-{i}"
                t0 = time.perf_counter()
                self.cni(plugin, "ADD", conf, ns, cid)
                self.cni(plugin, "DEL", conf, ns, cid)
                times[label].append(time.perf_counter() - t0)
        self.drop_pods()
        return times

    def run_rss(self):
        out = {}
        # Per variant: the largest process of one ADD+DEL cycle.
        for v in self.variants:
            rss = Rss(self.tmp, True)
            name, ns = self.new_pod()
            self.cycle(v, ns, f"rss-{v}", rss)
            self.del_pod(name)
            out[v] = rss.max_kib
        # multimesh itself: the delegate is the tiny mm-recorder, so the
        # tree's largest member is multimesh.
        rec = {"cniVersion": "1.0.0", "name": "rec", "type": "mm-recorder"}
        extra = {}
        for label, cap in (("multimesh alone (mm-recorder delegate, capture off)", {"enabled": False}),
                           ("multimesh + iptables-legacy-restore child (mm-recorder delegate)",
                            {"backend": "iptables", "iptablesVariant": "legacy"}),
                           ("multimesh + nft child (mm-recorder delegate)", {"backend": "nftables"})):
            conf = json.dumps(self.meta(cap, rec, self.rel)).encode()
            per_cmd = {}
            for cmd in ("ADD", "DEL"):
                vals = []
                for j in range(3):
                    name, ns = self.new_pod()
                    cid = f"rss-rec-{len(extra)}-{cmd}-{j}"
                    if cmd == "DEL":
                        self.cni(self.mm, "ADD", conf, ns, cid)
                    r = Rss(self.tmp, True)
                    self.cni(self.mm, cmd, conf, ns, cid, r)
                    if cmd == "ADD":
                        self.cni(self.mm, "DEL", conf, ns, cid)
                    self.del_pod(name)
                    vals.append(r.max_kib)
                per_cmd[cmd] = max(vals)
            extra[label] = per_cmd
        per_cmd = {}
        for cmd in ("ADD", "DEL"):
            vals = []
            for j in range(3):
                name, ns = self.new_pod()
                cid = f"rss-bridge-{cmd}-{j}"
                if cmd == "DEL":
                    self.cni(BRIDGE, "ADD", self.bridge_bytes, ns, cid)
                r = Rss(self.tmp, True)
                self.cni(BRIDGE, cmd, self.bridge_bytes, ns, cid, r)
                if cmd == "ADD":
                    self.cni(BRIDGE, "DEL", self.bridge_bytes, ns, cid)
                self.del_pod(name)
                vals.append(r.max_kib)
            per_cmd[cmd] = max(vals)
        extra["bare bridge (+ host-local child)"] = per_cmd
        return out, extra

    def run_concurrency(self, pods, rounds):
        variants = ["bare", "mm-ipt-legacy", "mm-nftables"]
        res = {v: {"add": [], "del": [], "fail": 0} for v in variants}
        for r in range(rounds):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                nss = self.new_pods(pods)
                if v == "bare":
                    plugin, conf = BRIDGE, self.bridge_bytes
                else:
                    plugin, conf = self.mm, self.mm_bytes[v]

                def call(cmd, idx):
                    try:
                        self.cni(plugin, cmd, conf, nss[idx][1], f"conc-{v}-{r}-{idx}")
                        return None
                    except BenchError as e:
                        return str(e)

                with concurrent.futures.ThreadPoolExecutor(max_workers=pods) as ex:
                    t0 = time.perf_counter()
                    errs = list(ex.map(lambda i: call("ADD", i), range(pods)))
                    t1 = time.perf_counter()
                    errs += list(ex.map(lambda i: call("DEL", i), range(pods)))
                    t2 = time.perf_counter()
                fails = [e for e in errs if e]
                for e in fails[:3]:
                    print(f"  concurrency failure ({v}): {e}", file=sys.stderr)
                res[v]["fail"] += len(fails)
                res[v]["add"].append(t1 - t0)
                res[v]["del"].append(t2 - t1)
                for name, _ in nss:
                    self.del_pod(name)
        return res

    # ---------------------------------------------------------------- leaks
    def leaks(self):
        out = []
        for root, dirs, files in os.walk(self.ipam):
            for f in files:
                try:
                    ipaddress.ip_address(f)
                    out.append(f"ipam allocation: {os.path.join(root, f)}")
                except ValueError:
                    pass
        for e in os.listdir(self.cnidir):
            if e != "iptables-variant":
                out.append(f"multimesh state: {os.path.join(self.cnidir, e)}")
        links = run([IP, "-o", "link", "show"]).stdout.decode()
        for l in links.splitlines():
            name = l.split(": ")[1].split("@")[0]
            if name.startswith("veth"):
                out.append(f"node veth: {name}")
        for p in sorted(self.live_pods):
            out.append(f"pod netns: {p}")
        return out

    def cleanup(self):
        for p in list(self.live_pods):
            self.del_pod(p)


def ms(x):
    return x * 1000.0


def p90(xs):
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--conc-rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="scripts/bench.sh")
    ap.add_argument("--binsize", default="?")
    ap.add_argument("--linkage", default="?")
    a = ap.parse_args()

    b = Bench(a)
    b.variants = ["bare", "mm-nocap", "mm-ipt-legacy", "mm-ipt-nft", "mm-nftables", "init-style"]
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    def progress(s):
        print(f"[bench] {s}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        progress("sanity pass (one verified ADD+DEL per variant)")
        b.sanity(b.variants)
        progress(f"ADD+DEL cycles: {a.n} iterations x {len(b.variants)} variants, round-robin")
        times, t_add, t_del = b.run_cycles(b.variants, a.n)
        progress(f"rule programming alone: {a.n} iterations x 4")
        steps = b.run_rule_steps(a.n)
        progress(f"multimesh dispatch cost: {a.n} iterations x 2")
        dispatch = b.run_dispatch(a.n)
        progress("peak RSS")
        rss, rss_extra = b.run_rss()
        progress(f"concurrency: {a.conc} pods x {a.conc_rounds} rounds x 3 variants")
        conc = b.run_concurrency(a.conc, a.conc_rounds)
        leaks = b.leaks()
    finally:
        b.cleanup()

    uname = os.uname()
    say("# multimesh benchmark")
    say()
    say(f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"- command: `{a.command}` (N={a.n}, concurrency {a.conc} pods x {a.conc_rounds} rounds)")
    say(f"- machine: {os.cpu_count()} CPUs, Linux {uname.release}; plugins from {REF}")
    say(f"- multimesh release binary: {a.binsize} bytes, {a.linkage}")
    say("- every cycle: ADD into a fresh pod netns, then DEL; plugin processes spawned directly "
        "by a python driver already inside the node netns (no wrapper in the timing); "
        "variants interleaved round-robin, order rotated each iteration")
    say()
    say("## ADD+DEL cycle (whole processes)")
    say()
    say("| variant | median ms | p90 ms | median / bare | ADD median ms | DEL median ms "
        "| peak RSS KiB (largest process) |")
    say("|---|---:|---:|---:|---:|---:|---:|")
    bare_med = statistics.median(times["bare"])
    desc = {
        "bare": "bare bridge (host-local)",
        "mm-nocap": "multimesh + bridge, capture off",
        "mm-ipt-legacy": "multimesh + bridge, iptables legacy",
        "mm-ipt-nft": "multimesh + bridge, iptables nft",
        "mm-nftables": "multimesh + bridge, nftables",
        "init-style": f"init-container style (bridge + {len(b.rule_argvs)} iptables-legacy)",
    }
    for v in b.variants:
        med = statistics.median(times[v])
        say(f"| {desc[v]} | {ms(med):.1f} | {ms(p90(times[v])):.1f} | {med / bare_med:.2f}x "
            f"| {ms(statistics.median(t_add[v])):.1f} | {ms(statistics.median(t_del[v])):.1f} | {rss[v]} |")
    say()
    say("Overhead over bare (median): " + ", ".join(
        f"{v} {ms(statistics.median(times[v]) - bare_med):+.1f} ms" for v in b.variants[1:]))
    say()
    say("Notes: multimesh runs the bridge as a child process, so its cycle contains the bare "
        "cycle; with capture, its ADD also programs the rules (one restore / `nft -f`) and "
        "its DEL removes them again, while the init-container style only adds them (they go "
        "with the netns). init-style's ADD column includes its per-rule loop. Peak RSS here "
        "is the largest single process of one cycle (under `/usr/bin/time -f %M`), i.e. "
        "usually the Go bridge plugin; multimesh's own RSS is in the RSS section below.")
    say()
    say("## Rule programming alone (fresh netns, via nsenter)")
    say()
    say("| step | median ms | p90 ms | vs per-rule loop |")
    say("|---|---:|---:|---:|")
    loop_key = [k for k in steps if "per rule" in k][0]
    loop_med = statistics.median(steps[loop_key])
    for k, xs in steps.items():
        med = statistics.median(xs)
        say(f"| {k} | {ms(med):.1f} | {ms(p90(xs)):.1f} | {med / loop_med:.2f}x |")
    say()
    say("## multimesh's own cost (delegate mm-recorder, which touches no netns; capture off)")
    say()
    say("| ADD+DEL | median ms | p90 ms |")
    say("|---|---:|---:|")
    for k, xs in dispatch.items():
        say(f"| {k} | {ms(statistics.median(xs)):.2f} | {ms(p90(xs)):.2f} |")
    say()
    say("## Peak RSS (`/usr/bin/time -f %M`, KiB, max of 3 runs)")
    say()
    say("| process tree | ADD | DEL |")
    say("|---|---:|---:|")
    for k, v in rss_extra.items():
        say(f"| {k} | {v['ADD']} | {v['DEL']} |")
    say()
    say(f"## Concurrency: {a.conc} pods ADD at once, then DEL at once (median of {a.conc_rounds} rounds)")
    say()
    say("| variant | ADD wall ms | DEL wall ms | total ms | total / bare | failures |")
    say("|---|---:|---:|---:|---:|---:|")
    bare_tot = statistics.median([x + y for x, y in zip(conc["bare"]["add"], conc["bare"]["del"])])
    for v, r in conc.items():
        tot = statistics.median([x + y for x, y in zip(r["add"], r["del"])])
        say(f"| {desc[v]} | {ms(statistics.median(r['add'])):.0f} | {ms(statistics.median(r['del'])):.0f} "
            f"| {ms(tot):.0f} | {tot / bare_tot:.2f}x | {r['fail']} |")
    say()
    say("## Leak check")
    say()
    if leaks:
        for l in leaks:
            say(f"- LEAK: {l}")
    else:
        say("- nothing left: no IPAM allocations, no multimesh state (besides the "
            "`iptables-variant` cache), no veths in the node netns, no pod netns")
    say()
    say(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    fails = sum(r["fail"] for r in conc.values())
    if leaks or fails:
        print(f"[bench] FAILED: {len(leaks)} leaks, {fails} concurrency failures", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"[bench] error: {e}", file=sys.stderr)
        sys.exit(1)
