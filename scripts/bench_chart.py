#!/usr/bin/env python3
"""Draw docs/bench.svg from the benchmark's results (docs/bench.json).

    python3 scripts/bench_chart.py docs/bench.json docs/bench.svg

Plain Python, no plotting library: the SVG is written by hand. Two panels,
each a set of horizontal bars (median) with a whisker to the p90 and the
value plus the ratio to the group's baseline printed after it:

  1. per pod, one at a time: the single-interface variants and the
     Kubernetes-mode scenario (ms per ADD+DEL);
  2. concurrency: N pods ADDed at once then DELed at once (wall ms).

scripts/bench_lib.py calls draw() at the end of a run; running this file by
hand re-renders the chart from saved results without measuring again.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

WIDTH = 960
LABEL_W = 330  # left column: row labels
PLOT_X = LABEL_W + 10
PLOT_W = 460  # bars; the rest of the width is for the value text
BAR_H = 16
ROW_H = 24
GROUP_GAP = 30  # group heading
PANEL_GAP = 40
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"

COLORS = {
    "base": "#8c8c8c",  # the bare delegate(s): the baseline of a group
    "mm": "#2f6db5",  # multimesh
    "other": "#d98b1f",  # references: exec hop only, or the rules without multimesh (init style, bare+rules)
}


def nice_step(span, target_ticks=6):
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_ms(v):
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def panel(out, y, title, axis_label, groups):
    """groups: [(heading, [row, ...])]; row: {label, median, p90, ratio, kind}.
    Appends SVG elements to out; returns the y below the panel."""
    rows = [r for _, rs in groups for r in rs if r.get("median") is not None]
    vmax = max([r["p90"] for r in rows] + [r["median"] for r in rows] + [1e-9])
    step = nice_step(vmax * 1.05)
    top = step * math.ceil(vmax * 1.05 / step)
    sx = lambda v: PLOT_X + PLOT_W * v / top

    out.append(text(20, y + 16, title, size=15, weight="bold"))
    y += 30
    plot_top = y
    body = []
    for heading, rs in groups:
        body.append(text(20, y + 16, heading, size=12.5, weight="bold", fill="#333"))
        y += GROUP_GAP
        for r in rs:
            cy = y + ROW_H / 2
            body.append(text(LABEL_W, cy + 4, r["label"], anchor="end"))
            if r.get("median") is None:
                body.append(text(PLOT_X + 4, cy + 4, r.get("missing", "not measured"),
                                 fill="#a00"))
                y += ROW_H
                continue
            color = COLORS.get(r.get("kind"), COLORS["mm"])
            x0, xm, xp = sx(0), sx(r["median"]), sx(r["p90"])
            body.append(f'<rect x="{x0:.1f}" y="{cy - BAR_H / 2:.1f}" width="{max(xm - x0, 1):.1f}" '
                        f'height="{BAR_H}" fill="{color}"/>')
            if xp > xm:
                body.append(f'<line x1="{xm:.1f}" y1="{cy:.1f}" x2="{xp:.1f}" y2="{cy:.1f}" '
                            f'stroke="#222" stroke-width="1.2"/>')
            body.append(f'<line x1="{xp:.1f}" y1="{cy - 5:.1f}" x2="{xp:.1f}" y2="{cy + 5:.1f}" '
                        f'stroke="#222" stroke-width="1.2"/>')
            label = f"{fmt_ms(r['median'])} ms"
            if r.get("ratio") is not None:
                label += f"  ({r['ratio']:.2f}x)"
            body.append(text(max(xp, xm) + 6, cy + 4, label, size=11.5))
            if r.get("chart_note"):  # a second line under the row's label
                body.append(text(LABEL_W, cy + 18, r["chart_note"], size=10.5, anchor="end",
                                 fill="#555"))
                y += 12
            y += ROW_H
        y += 4
    plot_bottom = y
    # Grid and axis under the bars.
    grid = []
    v = 0.0
    while v <= top + 1e-9:
        x = sx(v)
        grid.append(f'<line x1="{x:.1f}" y1="{plot_top:.1f}" x2="{x:.1f}" y2="{plot_bottom:.1f}" '
                    f'stroke="{"#999" if v == 0 else "#e3e3e3"}" stroke-width="1"/>')
        grid.append(text(x, plot_bottom + 15, f"{v:g}", size=11, anchor="middle", fill="#444"))
        v += step
    out.extend(grid)
    out.extend(body)
    out.append(f'<line x1="{PLOT_X}" y1="{plot_bottom:.1f}" x2="{PLOT_X + PLOT_W}" '
               f'y2="{plot_bottom:.1f}" stroke="#999"/>')
    out.append(text(PLOT_X + PLOT_W / 2, plot_bottom + 34, axis_label, size=12,
                    anchor="middle", fill="#333"))
    return plot_bottom + 34 + PANEL_GAP


def draw(res, path):
    meta = res["meta"]
    groups = res["groups"]
    per_pod = [(g["title"], g["rows"]) for g in groups if g["panel"] == "pod"]
    conc = [(g["title"], g["rows"]) for g in groups if g["panel"] == "conc"]
    cri = [(g["title"], g["rows"]) for g in groups if g["panel"] == "cri"]
    out = []
    y = 10
    out.append(text(20, y + 18, f"multimesh benchmark, {meta['date']}", size=17, weight="bold"))
    y += 24
    out.append(text(20, y + 16, f"N={meta['n']} ADD+DEL cycles per single-pod row, "
                    f"N={meta['k8s_n']} per Kubernetes-mode row, "
                    f"{meta['conc_rounds']} round{'s' if meta['conc_rounds'] > 1 else ''} per concurrency row; "
                    f"{meta['cpus']} CPUs, Linux {meta['kernel']}", size=11.5, fill="#444"))
    y += 20
    out.append(text(20, y + 16, "bar = median, whisker = p90, (x) = median / the group's "
                    "first row (the bare delegates)", size=11.5, fill="#444"))
    y += 20
    # Legend
    lx = 20
    for kind, name in (("base", "bare delegate(s)"), ("mm", "multimesh"),
                       ("other", "references: exec hop only; the rules without multimesh")):
        out.append(f'<rect x="{lx}" y="{y + 8}" width="12" height="12" fill="{COLORS[kind]}"/>')
        out.append(text(lx + 17, y + 18, name, size=11.5))
        lx += 17 + 7.0 * len(name) + 22
    y += 34
    if per_pod:
        y = panel(out, y, "One pod at a time: whole-process ADD + DEL",
                  "milliseconds per ADD+DEL cycle", per_pod)
    if conc:
        y = panel(out, y, "Concurrency: all pods ADDed at once, then all DELed at once",
                  "milliseconds wall time, ADD-all + DEL-all", conc)
    if cri:
        y = panel(out, y, "Kubelet's path: containerd's CRI runs the pod's network",
                  "milliseconds per RunPodSandbox + StopPodSandbox", cri)
    height = y - PANEL_GAP + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
           f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="{FONT}">',
           f'<rect x="0" y="0" width="{WIDTH}" height="{height:.0f}" fill="#ffffff"/>']
    svg += out
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        res = json.load(f)
    draw(res, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
