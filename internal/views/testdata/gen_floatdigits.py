#!/usr/bin/env python3
"""Writes floatdigits.json: how few digits values of the narrow float dtypes print with,
as the real libraries say, for floatdigits_test.go.

    /usr/bin/python3 internal/views/testdata/gen_floatdigits.py            # the committed file
    /usr/bin/python3 internal/views/testdata/gen_floatdigits.py --all OUT  # every bit pattern

For each value the file records the dtype's bit pattern (an unsigned integer) and:

- float16: numpy's str() and repr() of the np.float16 scalar (numpy's own shortest
  round-trip digits), and "check": the shortest f"{v:.{p}g}" for which
  np.float16(float(s)) has the same bits (numpy converts a double to half directly), s
  from the same candidates as for bfloat16.
- bfloat16: for p = 1, 2, ... the torch check
  torch.tensor(float(s), dtype=torch.bfloat16).view(torch.int16) == bits of s =
  f"{v:.{p}g}", then of v rounded down and up to p digits (see candidates); "p" is the
  first p that passes and "str" that string, "g" the f"{v:.{p}g}" that passed when that is
  another (longer) string.
- float8_*: torch 1.13 has no float8 dtypes and ml_dtypes is not installed, so there is no
  library to ask: these entries are computed here with exact rational arithmetic (decode by
  the OCP / fnuz definitions, round to nearest even); float8_e5m2's decoding is checked
  against numpy, as its bit patterns are the top bytes of float16's.

"round_float16" and "round_bfloat16" are conversions to check a rounding function
with: np.float16(x) of a double x, and torch's float32 -> bfloat16 of an x that is exactly
a float32 (so that torch rounds once; from a double torch rounds to float32 first).
x is Python's repr of the double, which reads back exactly.
"""

import json
import math
import sys
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from fractions import Fraction

import numpy as np
import torch

RNG = np.random.default_rng(20240607)


def f16_bits(x):
    return int(np.array([x], dtype=np.float16).view(np.uint16)[0])


def f16_value(bits):
    return float(np.array([bits], dtype=np.uint16).view(np.float16)[0])


def bf16_bits(x):
    return int(torch.tensor(x, dtype=torch.bfloat16).view(torch.int16).item()) & 0xFFFF


def bf16_value(bits):
    b = bits - 0x10000 if bits >= 0x8000 else bits
    return float(torch.tensor(b, dtype=torch.int16).view(torch.bfloat16).item())


def candidates(v):
    """For p = 1..9: f"{v:.{p}g}", then v's exact decimal rounded down and up to p digits.
    When the nearest p digits do not read back, the p-digit decimal on v's other side may
    (float16's 2**-6 = 0.015625 prints as 0.01563, as numpy prints it: 0.01562 does not
    read back as 0.015625)."""
    out = []
    for p in range(1, 10):
        out.append((p, f"{v:.{p}g}"))
        if math.isfinite(v):
            for r in (ROUND_FLOOR, ROUND_CEILING):
                out.append((p, "{:g}".format(Context(prec=p, rounding=r).plus(Decimal(v)))))
    return out


def interesting(maxv, min_normal, min_sub, scales, extra):
    """Float64 inputs: special values, powers of two, extremes, random normals."""
    xs = [0.0, -0.0, math.inf, -math.inf, math.nan, 0.1, -0.1, 1 / 3, -1 / 3, 2 / 3, 0.2, 0.3,
          0.5, 1.0, -1.0, 2.0, 3.0, 10.0, 100.0, 1000.0, 0.01, 0.001, 1e-4, math.pi, math.e,
          maxv, -maxv, min_normal, -min_normal, min_sub, -min_sub, min_normal - min_sub, 2 * min_sub, 3 * min_sub]
    e = math.frexp(min_sub)[1] - 1
    while 2.0 ** e <= maxv:
        xs.append(2.0 ** e)
        e += 1
    xs += extra
    for s in scales:
        xs += [float(x) for x in RNG.standard_normal(40) * s]
    return xs


def float16_entries(bits_list):
    out = []
    for b in bits_list:
        h = np.array([b], dtype=np.uint16).view(np.float16)[0]
        v = float(h)
        e = {"bits": b, "str": str(h), "repr": repr(h)}
        if not math.isnan(v):
            for p, s in candidates(v):
                if f16_bits(float(s)) == b:
                    e["check"], e["p"] = s, p
                    break
        out.append(e)
    return out


def bfloat16_entries(bits_list):
    out = []
    for b in bits_list:
        v = bf16_value(b)
        e = {"bits": b}
        if math.isnan(v):
            e["str"] = "nan"
        else:
            for p, s in candidates(v):
                t = torch.tensor(float(s), dtype=torch.bfloat16).view(torch.int16).item() & 0xFFFF
                if t == b:
                    e["p"], e["str"] = p, s
                    break
            for p, s in candidates(v):
                t = torch.tensor(float(s), dtype=torch.bfloat16).view(torch.int16).item() & 0xFFFF
                if s == f"{v:.{p}g}" and t == b:
                    if s != e["str"]:
                        e["g"] = s
                    break
        out.append(e)
    return out


# float8 by exact arithmetic: (exponent bits, mantissa bits, bias, kind)
FLOAT8 = {
    "float8_e4m3fn": (4, 3, 7, "fn"),
    "float8_e5m2": (5, 2, 15, "ieee"),
    "float8_e4m3fnuz": (4, 3, 8, "fnuz"),
    "float8_e5m2fnuz": (5, 2, 16, "fnuz"),
}


def f8_decode(b, eb, mb, bias, kind):
    """The value of bit pattern b as a Fraction, or a float for nan and inf."""
    sign = -1 if b & 0x80 else 1
    exp = (b >> mb) & ((1 << eb) - 1)
    man = b & ((1 << mb) - 1)
    top = (1 << eb) - 1
    if kind == "fnuz" and b == 0x80:
        return math.nan
    if kind == "ieee" and exp == top:
        return sign * math.inf if man == 0 else math.nan
    if kind == "fn" and exp == top and man == (1 << mb) - 1:
        return math.nan
    if exp == 0:
        v = Fraction(man, 1 << mb) * Fraction(2) ** (1 - bias)
    else:
        v = (1 + Fraction(man, 1 << mb)) * Fraction(2) ** (exp - bias)
    if v == 0 and sign < 0:
        return -0.0
    return sign * v


def round_exact(x, mb, emin):
    """x (a float) rounded to nearest even at mb+1 significant bits, exponent >= emin
    (subnormals below), no upper bound: a Fraction (or ±0.0)."""
    f = Fraction(x)
    if f == 0:
        return x
    s = -1 if f < 0 else 1
    f = abs(f)
    e = f.numerator.bit_length() - f.denominator.bit_length()
    while Fraction(2) ** e > f:
        e -= 1
    while Fraction(2) ** (e + 1) <= f:
        e += 1
    q = Fraction(2) ** (max(e, emin) - mb)
    n = f / q
    k = math.floor(n)
    r = n - k
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and k % 2 == 1):
        k += 1
    if k == 0:
        return -0.0 if s < 0 else 0.0
    return s * k * q


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def float8_entries(name):
    eb, mb, bias, kind = FLOAT8[name]
    emin = 1 - bias
    out = []
    for b in range(256):
        v = f8_decode(b, eb, mb, bias, kind)
        e = {"bits": b}
        if isinstance(v, float) and math.isnan(v):
            e["str"] = "nan"
        elif isinstance(v, float) and math.isinf(v):
            e["p"], e["str"] = 1, "inf" if v > 0 else "-inf"
        else:
            fv = float(v)
            for p, s in candidates(fv):
                x = float(s)
                if same(round_exact(x, mb, emin), v if v != 0 else fv):
                    e["p"], e["str"] = p, s
                    break
        out.append(e)
    if name == "float8_e5m2":  # its bit patterns are float16's top bytes
        for b in range(256):
            v = f8_decode(b, eb, mb, bias, kind)
            h = f16_value(b << 8)
            assert same(float(v), h) or (math.isnan(h) and isinstance(v, float) and math.isnan(v)), (b, v, h)
    return out


def unique_bits(values, to_bits):
    seen, out = set(), []
    for x in values:
        b = to_bits(x)
        if b not in seen:
            seen.add(b)
            out.append(b)
    return out


def round_float16_cases():
    xs = []
    # midpoints between neighbours and the doubles right next to them
    for b in [0x3C00, 0x3C01, 0x0000, 0x0001, 0x0002, 0x03FF, 0x0400, 0x7BFE, 0x7BFF, 0x3555, 0x5000, 0x2E66]:
        lo, hi = f16_value(b), f16_value(b + 1)
        m = (lo + hi) / 2  # exact in double
        xs += [m, math.nextafter(m, -math.inf), math.nextafter(m, math.inf), -m]
    xs += [2.0 ** -25, math.nextafter(2.0 ** -25, 1), 2.0 ** -26, 65519.0, math.nextafter(65520.0, 0), 65520.0, 1e5, 1e300, 5e-324,
           0.1, 1 / 3, -0.0, math.inf, -math.inf]
    xs += [float(x) for x in RNG.standard_normal(60)]
    xs += [float(x) for x in RNG.standard_normal(40) * 1e-6]
    xs += [float(x) for x in RNG.standard_normal(40) * 3e4]
    return [{"x": repr(x), "bits": f16_bits(x)} for x in xs]


def round_bfloat16_cases():
    f32 = lambda x: float(np.float32(x))
    up = lambda x: float(np.nextafter(np.float32(x), np.float32(math.inf)))
    down = lambda x: float(np.nextafter(np.float32(x), np.float32(-math.inf)))
    xs = []
    for b in [0x3F80, 0x3F81, 0x0000, 0x0001, 0x007F, 0x0080, 0x7F7E, 0x7F7F, 0x3DCC, 0x4049]:
        lo, hi = bf16_value(b), bf16_value(b + 1)
        m = (lo + hi) / 2  # exact in float32
        assert f32(m) == m
        xs += [m, down(m), up(m), -m]
    xs += [f32(0.1), f32(1 / 3), -0.0, math.inf, -math.inf, float(np.finfo(np.float32).max), 2.0 ** -149, 2.0 ** -134, 2.0 ** -133]
    xs += [f32(x) for x in RNG.standard_normal(60)]
    xs += [f32(x) for x in RNG.standard_normal(30) * 1e-38]
    xs += [f32(x) for x in RNG.standard_normal(30) * 1e37]
    out = []
    for x in xs:
        t = torch.tensor([x], dtype=torch.float32).to(torch.bfloat16).view(torch.int16).item() & 0xFFFF
        out.append({"x": repr(x), "bits": t})
    return out


def main():
    full = len(sys.argv) > 2 and sys.argv[1] == "--all"
    if full:
        f16 = list(range(0x10000))
        bf16 = list(range(0x10000))
    else:
        f16 = unique_bits(interesting(65504.0, 2.0 ** -14, 2.0 ** -24,
                                      [3e-7, 1e-5, 1e-3, 0.02, 1, 30, 1000, 2e4],
                                      [65500.0, 16992.0, 2049.0, 1e4, 0.0999755859375, 6.1e-5, 1.001, 0.999]), f16_bits)
        f16 += unique_bits([int(b) for b in RNG.integers(0, 0x10000, 120)], lambda b: b)
        f16 = list(dict.fromkeys(f16))
        bf16 = unique_bits(interesting(float(torch.finfo(torch.bfloat16).max), 2.0 ** -126, 2.0 ** -133,
                                       [1e-39, 1e-30, 1e-8, 1e-3, 0.02, 1, 30, 1e3, 1e6, 1e20, 1e37],
                                       [1020.0, 1024.0, 3.14, 0.1001, 255.0, 257.0, 65504.0]), bf16_bits)
        bf16 += [int(b) for b in RNG.integers(0, 0x10000, 120)]
        bf16 = list(dict.fromkeys(bf16))
    doc = {
        "about": "Written by gen_floatdigits.py (numpy %s, torch %s); see its docstring." % (np.__version__, torch.__version__),
        "float16": float16_entries(f16),
        "bfloat16": bfloat16_entries(bf16),
    }
    for name in FLOAT8:
        doc[name] = float8_entries(name)
    doc["round_float16"] = round_float16_cases()
    doc["round_bfloat16"] = round_bfloat16_cases()
    # numpy's own digits and the check's agree (the rule the Go code follows)
    bad = [e for e in doc["float16"] if "check" in e and float(e["check"]) != float(e["str"])]
    if bad:
        print("numpy's str and the check differ for %d float16 values, e.g. %s" % (len(bad), bad[:3]), file=sys.stderr)
    path = sys.argv[2] if full else __file__.rsplit("/", 1)[0] + "/floatdigits.json"
    with open(path, "w") as f:
        json.dump(doc, f, indent=0, separators=(",", ":"))
        f.write("\n")
    print("wrote %s: %s" % (path, ", ".join("%d %s" % (len(v), k) for k, v in doc.items() if isinstance(v, list))))


if __name__ == "__main__":
    main()
