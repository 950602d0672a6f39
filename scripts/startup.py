#!/usr/bin/env python3
"""Start-up time of two multimesh binaries, paired: each answers
CNI_COMMAND=VERSION N times, the two alternating (order flipped every
round). Prints each median and the median of the paired differences.

    python3 scripts/startup.py BEFORE AFTER [N]
"""
import os
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = {"before": sys.argv[1], "after": sys.argv[2]}
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    env = dict(os.environ, CNI_COMMAND="VERSION")
    res = {k: [] for k in bins}
    for r in range(n):
        order = list(bins.items())
        if r % 2:
            order.reverse()
        for k, b in order:
            t = time.perf_counter()
            subprocess.run([b], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, check=True)
            res[k].append((time.perf_counter() - t) * 1000)
    for k, v in res.items():
        print(f"{k}: median {statistics.median(v):.3f} ms ({bins[k]})")
    d = [a - b for a, b in zip(res["after"], res["before"])]
    print(f"after - before, paired median: {statistics.median(d):+.3f} ms (N={n})")


if __name__ == "__main__":
    main()
