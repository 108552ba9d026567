"""The Python half of scripts/bench: make the GPT-2-medium-shaped checkpoint with real torch,
time torch.load, and time warm requests to the server over one keep-alive connection.

Run with a Python that has torch (Debian's /usr/bin/python3 with python3-torch):

    bench.py generate OUT.pt [--dtype float32|bfloat16]
        writes OUT.pt with torch.save (zip format) and OUT.pt.json with its facts
    bench.py load FILE.pt
        prints one JSON line: torch.load(FILE, map_location="cpu") wall time and this
        process's RSS before the load and at its peak (ru_maxrss)
    bench.py get URL N
        GETs URL N times over one HTTP/1.1 keep-alive connection (http.client) and prints
        one JSON line with the wall time of each request, from sending it to the last
        byte of the body, in milliseconds
    bench.py port
        prints a free TCP port on 127.0.0.1

"load" is meant to run in a fresh process each time, so the peak RSS is the load's own.
"""

import json
import os
import resource
import sys
import time

# LAYOUT_VERSION changes whenever the generated file would change, so that scripts/bench
# regenerates a cached copy made by an older version of this script.
LAYOUT_VERSION = 1

# GPT-2 medium (HF "gpt2-medium" config).
N_LAYER, D, VOCAB, N_CTX = 24, 1024, 50257, 1024


def gpt2_state_dict(dtype):
    """A state dict laid out like the original HF gpt2-medium pytorch_model.bin, plus the
    lm_head.weight that GPT2LMHeadModel.state_dict() adds (tied to wte.weight: two tensors,
    one storage). Conv1D weights are [in, out] as in HF. attn.bias is the causal-mask
    buffer old checkpoints carry (float, [1, 1, n_ctx, n_ctx])."""
    import torch
    from collections import OrderedDict

    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        t = torch.empty(*shape, dtype=torch.float32)
        t.normal_(0.0, 0.02, generator=g)
        return t.to(dtype)

    def ones(n):
        return torch.ones(n, dtype=dtype)

    mask = torch.tril(torch.ones(N_CTX, N_CTX, dtype=dtype)).view(1, 1, N_CTX, N_CTX)
    sd = OrderedDict()
    sd["wte.weight"] = randn(VOCAB, D)
    sd["wpe.weight"] = randn(N_CTX, D)
    for i in range(N_LAYER):
        p = "h.%d." % i
        sd[p + "ln_1.weight"] = ones(D)
        sd[p + "ln_1.bias"] = randn(D)
        sd[p + "attn.bias"] = mask.clone()
        sd[p + "attn.c_attn.weight"] = randn(D, 3 * D)
        sd[p + "attn.c_attn.bias"] = randn(3 * D)
        sd[p + "attn.c_proj.weight"] = randn(D, D)
        sd[p + "attn.c_proj.bias"] = randn(D)
        sd[p + "ln_2.weight"] = ones(D)
        sd[p + "ln_2.bias"] = randn(D)
        sd[p + "mlp.c_fc.weight"] = randn(D, 4 * D)
        sd[p + "mlp.c_fc.bias"] = randn(4 * D)
        sd[p + "mlp.c_proj.weight"] = randn(4 * D, D)
        sd[p + "mlp.c_proj.bias"] = randn(D)
    sd["ln_f.weight"] = ones(D)
    sd["ln_f.bias"] = randn(D)
    sd["lm_head.weight"] = sd["wte.weight"].view(VOCAB, D)  # tied: same storage
    # nn.Module.state_dict() records each module's version in _metadata; keep it so the
    # pickle looks like a real one.
    meta = OrderedDict()
    meta[""] = {"version": 1}
    for name in ["wte", "wpe", "h"] + ["h.%d" % i for i in range(N_LAYER)]:
        meta[name] = {"version": 1}
    for i in range(N_LAYER):
        for m in ["ln_1", "attn", "attn.c_attn", "attn.c_proj", "ln_2", "mlp", "mlp.c_fc", "mlp.c_proj"]:
            meta["h.%d.%s" % (i, m)] = {"version": 1}
    meta["ln_f"] = {"version": 1}
    meta["lm_head"] = {"version": 1}
    sd._metadata = meta
    return sd


def generate(out, dtype_name):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    t0 = time.perf_counter()
    sd = gpt2_state_dict(dtype)
    t1 = time.perf_counter()
    # torch names the archive's top folder after the file, so save under the final name in
    # a scratch folder and move it into place: a cached file is always complete.
    partial = os.path.join(os.path.dirname(os.path.abspath(out)), ".partial-%d" % os.getpid())
    os.makedirs(partial, exist_ok=True)
    tmp = os.path.join(partial, os.path.basename(out))
    torch.save(sd, tmp)  # zip format, the default since torch 1.6
    os.replace(tmp, out)
    os.rmdir(partial)
    t2 = time.perf_counter()
    storages = {t.storage().data_ptr() for t in sd.values()}
    facts = {
        "layout_version": LAYOUT_VERSION,
        "torch": torch.__version__,
        "dtype": dtype_name,
        "tensors": len(sd),
        "storages": len(storages),
        "parameters": sum(t.numel() for t in sd.values()),
        "parameters_unique": sum(t.numel() for k, t in sd.items() if k != "lm_head.weight"),
        "learned_parameters": sum(
            t.numel() for k, t in sd.items() if k != "lm_head.weight" and not k.endswith(".attn.bias")
        ),
        "size": os.path.getsize(out),
        "fill_seconds": round(t1 - t0, 2),
        "save_seconds": round(t2 - t1, 2),
    }
    with open(out + ".json", "w") as f:
        json.dump(facts, f, indent=1)
        f.write("\n")
    print(json.dumps(facts))


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def load(path):
    import torch

    before = rss_kib()
    t0 = time.perf_counter()
    sd = torch.load(path, map_location="cpu")
    dt = time.perf_counter() - t0
    after = rss_kib()
    # ru_maxrss (KiB on Linux) can lag the last pages touched; the peak is at least now.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, after)
    print(json.dumps({
        "seconds": dt,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "peak_rss_kib": peak,
        "tensors": len(sd),
        "torch": torch.__version__,
    }))


def get(url, n):
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    target = u.path + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    ms, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", target)
        r = conn.getresponse()
        body = r.read()
        ms.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            print(json.dumps({"error": "HTTP %d: %s" % (r.status, body[:300].decode("utf-8", "replace"))}))
            return 1
        size = len(body)
    conn.close()
    print(json.dumps({"ms": ms, "bytes": size}))
    return 0


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def main(argv):
    if len(argv) >= 2 and argv[0] == "generate":
        dtype = "float32"
        if len(argv) == 4 and argv[2] == "--dtype":
            dtype = argv[3]
        elif len(argv) != 2:
            sys.exit(__doc__)
        generate(argv[1], dtype)
    elif len(argv) == 2 and argv[0] == "load":
        load(argv[1])
    elif len(argv) == 3 and argv[0] == "get":
        sys.exit(get(argv[1], int(argv[2])))
    elif argv == ["port"]:
        free_port()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
