#!/usr/bin/python3
"""A load generator for `maskrcnn serve`, on loopback only, bounded in requests
and in time.

usage: serve_load.py URL SERVER_PID --concurrency C --requests N --max-seconds S
                     [--rss-after K] IMAGE...

C client threads, each with its own keep-alive connection, POST the images in
turn (request i sends IMAGE[i % len]) until N requests are sent or S seconds
have passed. Prints one JSON line: throughput (images/s over the wall time),
latency percentiles (ms), the server's own timing_ms means, counts by status (200, 503, other, lost: no answer),
the server's peak RSS (VmHWM) and its RSS after K requests and at the end.
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse


def rss_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("pid", type=int)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, required=True)
    ap.add_argument("--rss-after", type=int, default=0)
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    url = urllib.parse.urlparse(a.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("serve_load: loopback only, not %s" % url.hostname)
    bodies = [open(p, "rb").read() for p in a.images]

    lock = threading.Lock()
    state = {"next": 0, "done": 0, "rss_after": None}
    latencies, statuses, stages = [], {}, {}
    deadline = time.monotonic() + a.max_seconds

    def take():
        with lock:
            if state["next"] >= a.requests or time.monotonic() > deadline:
                return -1
            state["next"] += 1
            return state["next"] - 1

    def record(status, ms, timing=None):
        with lock:
            for k, v in (timing or {}).items():
                stages.setdefault(k, []).append(v)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(ms)
            state["done"] += 1
            if a.rss_after and state["done"] == a.rss_after:
                state["rss_after"] = rss_kb(a.pid, "VmRSS")

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        while True:
            i = take()
            if i < 0:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body=bodies[i % len(bodies)],
                             headers={"Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                body = r.read()
                status = r.status
                timing = json.loads(body).get("timing_ms") if status == 200 else None
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
            except Exception:
                status, timing = "lost", None
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
            record(status, (time.perf_counter() - t0) * 1e3, timing)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    ok = statuses.get(200, 0)
    print(json.dumps({
        "concurrency": a.concurrency,
        "requests": state["done"],
        "seconds": round(wall, 2),
        "images_per_s": round(ok / wall, 3) if wall > 0 else 0,
        "mean_ms": round(statistics.mean(latencies), 1) if latencies else None,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "status_200": ok,
        "status_503": statuses.get(503, 0),
        "status_other": sum(v for k, v in statuses.items() if k not in (200, 503, "lost")),
        "lost": statuses.get("lost", 0),
        "server_ms": {k: round(statistics.mean(v), 1) for k, v in stages.items()},
        "rss_after_mb": round(state["rss_after"] / 1024, 1) if state["rss_after"] else None,
        "rss_end_mb": round(rss_kb(a.pid, "VmRSS") / 1024, 1),
        "peak_rss_mb": round(rss_kb(a.pid, "VmHWM") / 1024, 1),
    }))


if __name__ == "__main__":
    main()
