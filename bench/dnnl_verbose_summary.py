#!/usr/bin/env python3
"""Sum oneDNN's own timings (DNNL_VERBOSE=1) over the last pass of `maskrcnn bench`.

    DNNL_VERBOSE=1 build/tools/maskrcnn bench --weights build/bench_v1_coco.pth \
        --threads 2 --reps 1 --warmup 2 IMAGE > verbose.txt 2>&1
    python3 bench/dnnl_verbose_summary.py verbose.txt

Prints ms per primitive kind (convolutions by implementation, the mask head's
14x14 ones apart; reorders by source and destination layout; matmuls) for the
pass that starts at the last stem convolution (3 input channels), i.e. one
photo's forward pass.
"""
import collections
import sys


def main(path):
    lines = [l.strip().split(",") for l in open(path) if l.startswith("onednn_verbose,exec")]
    starts = [i for i, f in enumerate(lines) if "ic3oc64" in f[9]]
    if not starts:
        sys.exit(f"{path}: no stem convolution (ic3oc64) in the verbose log")
    total, count = collections.defaultdict(float), collections.Counter()
    for f in lines[starts[-1]:]:
        prim, impl, mds, problem, ms = f[3], f[4], f[6], f[9], float(f[10])
        if prim == "reorder":
            key = "reorder " + " -> ".join(md.split("::")[1] if "::" in md else md for md in mds.split(" ")[:2])
        elif prim == "convolution":
            key = "conv " + impl + (" (mask head, 14x14)" if problem.startswith("mb100_") else "")
        else:
            key = prim + " " + impl
        total[key] += ms
        count[key] += 1
    print("oneDNN total %.1f ms" % sum(total.values()))
    for key, ms in sorted(total.items(), key=lambda kv: -kv[1]):
        print("%9.1f ms %4d  %s" % (ms, count[key], key))


if __name__ == "__main__":
    main(sys.argv[1])
