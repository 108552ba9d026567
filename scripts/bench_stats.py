"""The Python half of scripts/bench-stats: numpy's statistics of every tensor of a checkpoint
(the reference), and the same statistics asked of the server over HTTP.

Run with a Python that has torch and numpy (Debian's /usr/bin/python3):

    bench_stats.py numpy FILE.pt OUT.json
        torch.load(FILE, map_location="cpu"), then for every tensor, timed: min, max, mean,
        std, NaN count and a 64-bin histogram over [min, max] with numpy's defaults
        (x.min(), x.max(), x.mean(), x.std(), np.count_nonzero(np.isnan(x)),
        np.histogram(x, bins=64, range=(min, max))). numpy has no bfloat16, so a bfloat16
        tensor is converted with t.float().numpy() inside the timed part. Writes every
        tensor's answers to OUT.json and prints one JSON line: load and compute seconds,
        seconds per step, bytes, peak RSS, numpy's SIMD features and BLAS (threadpoolctl).
    bench_stats.py api BASE ID OUT.json
        lists the tensors under the root (GET BASE/api/checkpoints/ID/node?path=, every page),
        then GETs BASE/api/checkpoints/ID/stats?path=P for each, one after the other over
        one keep-alive connection; writes the answers to OUT.json and prints one JSON line
        with the wall time, bytes (numel x element size) and any error
    bench_stats.py all BASE ID OUT.json
        POST BASE/api/checkpoints/ID/stats/all, then GET it every 5 ms until its state is
        done (or failed); prints one JSON line with the wall time and the last answer
    bench_stats.py compare NUMPY.json API.json
        compares the server's answers with numpy's: min and max exactly, mean and std within
        1e-5 of the std; histogram counts are compared bin by bin with numpy's (which bins
        float32 input with float32 edges, so a value next to an edge may land one bin over)
        and with np.histogram of the values widened to float64
    bench_stats.py npyhash FILE.pt PATH
        sha256 of the .npy data numpy would write for the tensor at PATH (a bfloat16 tensor
        converted to float32), to check a download bit for bit
"""

import hashlib
import http.client
import json
import os
import resource
import sys
import time
import urllib.parse

ELEMENT_SIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


def rss_kib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def numpy_features():
    import numpy as np

    out = {"numpy": np.__version__}
    try:
        from numpy.core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__

        out["baseline"] = list(__cpu_baseline__)
        out["dispatch"] = list(__cpu_dispatch__)
        # what numpy can use here: its dispatch targets the CPU has, plus the baseline
        out["used"] = [f for f in list(__cpu_baseline__) + list(__cpu_dispatch__) if __cpu_features__.get(f)]
    except ImportError as e:
        out["error"] = str(e)
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for p in threadpool_info()
        ]
    except ImportError:
        out["threadpools"] = "threadpoolctl not installed"
    out["env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
    return out


def numpy_stats(path, out_path):
    import numpy as np
    import torch

    before = rss_kib()
    t0 = time.perf_counter()
    sd = torch.load(path, map_location="cpu")
    load_s = time.perf_counter() - t0
    steps = dict.fromkeys(["convert", "min", "max", "mean", "std", "nan", "histogram"], 0.0)
    answers = {}
    nbytes = 0
    dtypes = set()
    total_t0 = time.perf_counter()
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor):
            continue
        dtypes.add(str(t.dtype))
        nbytes += t.numel() * t.element_size()
        c0 = time.perf_counter()
        x = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        c1 = time.perf_counter()
        mn = x.min()
        c2 = time.perf_counter()
        mx = x.max()
        c3 = time.perf_counter()
        mean = x.mean()
        c4 = time.perf_counter()
        std = x.std()
        c5 = time.perf_counter()
        nan = np.count_nonzero(np.isnan(x))
        c6 = time.perf_counter()
        counts, edges = np.histogram(x, bins=64, range=(mn, mx))
        c7 = time.perf_counter()
        for k, a, b in (("convert", c0, c1), ("min", c1, c2), ("max", c2, c3), ("mean", c3, c4),
                        ("std", c4, c5), ("nan", c5, c6), ("histogram", c6, c7)):
            steps[k] += b - a
        answers["/" + key.replace("~", "~0").replace("/", "~1")] = {
            "min": float(mn), "max": float(mx), "mean": float(mean), "std": float(std), "nan": int(nan),
            "counts": counts.tolist(), "edges": edges.tolist(), "numel": t.numel(),
        }
    compute_s = time.perf_counter() - total_t0
    # Untimed: numpy bins float32 input with float32 edges; the same histogram in float64
    # tells an edge rounding apart from a wrong count.
    for key, t in sd.items():
        if isinstance(t, torch.Tensor):
            a = answers["/" + key.replace("~", "~0").replace("/", "~1")]
            x = t.double().numpy()
            a["counts64"] = np.histogram(x, bins=64, range=(a["min"], a["max"]))[0].tolist()
    with open(out_path, "w") as f:
        json.dump(answers, f)
    print(json.dumps({
        "load_seconds": load_s,
        "compute_seconds": compute_s,
        "steps": steps,
        "bytes": nbytes,
        "tensors": len(answers),
        "dtypes": sorted(dtypes),
        "rss_before_kib": before,
        "peak_rss_kib": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss_kib()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "features": numpy_features(),
    }))


class Client:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)

    def request(self, method, target):
        self.conn.request(method, target)
        r = self.conn.getresponse()
        return r.status, r.read()


def q(path):
    return urllib.parse.quote(path, safe="/~")


def list_tensors(c, cid):
    """The root's tensor children: (path, dtype, numel), every page."""
    out = []
    target = "/api/checkpoints/%s/node?path=&limit=2000" % cid
    while target:
        status, body = c.request("GET", target)
        if status != 200:
            raise RuntimeError("GET %s answered HTTP %d: %s" % (target, status, body[:300].decode("utf-8", "replace")))
        node = json.loads(body)
        for ch in node.get("children", []):
            if ch.get("kind") in ("tensor", "ndarray"):
                out.append(ch["path"])
        target = node.get("next")
    tensors = []
    for p in out:  # dtype and numel are on the node itself
        status, body = c.request("GET", "/api/checkpoints/%s/node?path=%s&limit=1" % (cid, q(p)))
        if status != 200:
            raise RuntimeError("GET node %s answered HTTP %d" % (p, status))
        n = json.loads(body)
        tensors.append((p, n.get("dtype"), n.get("numel", 0)))
    return tensors


def api_stats(base, cid, out_path):
    c = Client(base)
    tensors = list_tensors(c, cid)
    answers, nbytes, first_error = {}, 0, None
    ms = []
    t0 = time.perf_counter()
    for p, dtype, numel in tensors:
        target = "/api/checkpoints/%s/stats?path=%s" % (cid, q(p))
        r0 = time.perf_counter()
        status, body = c.request("GET", target)
        ms.append((time.perf_counter() - r0) * 1000)
        if status != 200:
            first_error = {"path": p, "status": status, "body": body[:600].decode("utf-8", "replace"),
                           "request": "GET " + base + target}
            break
        answers[p] = json.loads(body)
        nbytes += numel * ELEMENT_SIZE.get(dtype, 0)
    dt = time.perf_counter() - t0
    with open(out_path, "w") as f:
        json.dump(answers, f)
    slow = sorted(zip(ms, [t[0] for t in tensors]), reverse=True)[:3]
    small = [m for m, (p, dtype, numel) in zip(ms, tensors) if numel * ELEMENT_SIZE.get(dtype, 0) < 1000000]
    print(json.dumps({"seconds": dt, "bytes": nbytes, "tensors": len(tensors), "answered": len(answers),
                      "error": first_error, "slowest_ms": [[round(m, 1), p] for m, p in slow],
                      "small": len(small), "small_seconds": sum(small) / 1000}))


def api_all(base, cid, out_path):
    c = Client(base)
    target = "/api/checkpoints/%s/stats/all" % cid
    t0 = time.perf_counter()
    status, body = c.request("POST", target)
    if status not in (200, 201, 202):
        print(json.dumps({"error": {"request": "POST " + base + target, "status": status,
                                    "body": body[:600].decode("utf-8", "replace")}}))
        return
    polls, last = 0, None
    while True:
        status, body = c.request("GET", target)
        polls += 1
        if status != 200:
            print(json.dumps({"error": {"request": "GET " + base + target, "status": status,
                                        "body": body[:600].decode("utf-8", "replace")}}))
            return
        last = json.loads(body)
        if last.get("state") in ("done", "failed", "error"):
            break
        if time.perf_counter() - t0 > 600:
            print(json.dumps({"error": {"request": "GET " + base + target, "status": status,
                                        "body": "still %r after 600 s" % last.get("state")}}))
            return
        time.sleep(0.005)
    dt = time.perf_counter() - t0
    with open(out_path, "w") as f:
        json.dump(last, f)
    brief = {k: v for k, v in last.items() if not isinstance(v, (list, dict))}
    print(json.dumps({"seconds": dt, "polls": polls, "state": last.get("state"), "answer": brief}))


def compare(numpy_path, api_path):
    with open(numpy_path) as f:
        want = json.load(f)
    with open(api_path) as f:
        got = json.load(f)
    agree, bins_off, moved, bins_off64, problems = 0, 0, 0, 0, []
    for p, w in want.items():
        g = got.get(p)
        if g is None:
            continue
        s = g.get("stats", g)  # the answer may wrap the statistics
        why = []
        if s.get("min") != w["min"] or s.get("max") != w["max"]:
            why.append("min/max %r/%r, numpy %r/%r" % (s.get("min"), s.get("max"), w["min"], w["max"]))
        tol = 1e-5 * max(w["std"], 1e-30)
        if s.get("mean") is None or abs(s["mean"] - w["mean"]) > tol + 1e-5 * abs(w["mean"]):
            why.append("mean %r, numpy %r" % (s.get("mean"), w["mean"]))
        if s.get("std") is None or abs(s["std"] - w["std"]) > tol:
            why.append("std %r, numpy %r" % (s.get("std"), w["std"]))
        if s.get("nan") != w["nan"]:
            why.append("nan %r, numpy %r" % (s.get("nan"), w["nan"]))
        counts = (s.get("histogram") or {}).get("counts") or []
        if len(counts) != len(w["counts"]):
            why.append("%d histogram bins, numpy %d" % (len(counts), len(w["counts"])))
        else:
            bins_off += sum(1 for a, b in zip(counts, w["counts"]) if a != b)
            moved += sum(abs(a - b) for a, b in zip(counts, w["counts"])) // 2
            bins_off64 += sum(1 for a, b in zip(counts, w["counts64"]) if a != b)
        if why:
            problems.append(p + ": " + "; ".join(why))
        else:
            agree += 1
    print(json.dumps({"compared": len([p for p in want if p in got]), "agree": agree,
                      "bins": 64 * len(want), "bins_differing": bins_off, "elements_moved": moved,
                      "bins_differing_float64": bins_off64, "problems": problems[:5]}))


def npy_hash(path, key):
    import torch

    sd = torch.load(path, map_location="cpu")
    t = sd[key.lstrip("/")]
    x = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    print(json.dumps({"sha256": hashlib.sha256(x.tobytes()).hexdigest(), "nbytes": x.nbytes,
                      "shape": list(x.shape), "descr": x.dtype.str}))


def main(argv):
    if len(argv) == 3 and argv[0] == "numpy":
        numpy_stats(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "api":
        api_stats(argv[1], argv[2], argv[3])
    elif len(argv) == 4 and argv[0] == "all":
        api_all(argv[1], argv[2], argv[3])
    elif len(argv) == 3 and argv[0] == "compare":
        compare(argv[1], argv[2])
    elif len(argv) == 3 and argv[0] == "npyhash":
        npy_hash(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
