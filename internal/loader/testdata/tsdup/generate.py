#!/usr/bin/python3
"""Writes TorchScript archives whose code file code/__torch__.py is there several times,
each copy returning a different number from forward(0), and expected.json: the number
torch.jit.load's module returns (so which copy torch compiles), with the copies in the
order of the central directory. Our loader must show the copy torch compiles, and say
which ones it does not. npz_in_folder.npz is the same for numpy.load: an .npz with a
member there twice, which numpy (zipfile) reads the last of. Run: /usr/bin/python3 generate.py (from this directory)."""
import io, json, os, tempfile, warnings, zipfile
import numpy, torch

class M(torch.nn.Module):
    def forward(self, x: int) -> int:
        return x + 1

def base():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.pt")
        torch.jit.save(torch.jit.script(M()), p)
        z = zipfile.ZipFile(p)
        return [(i, z.read(i)) for i in z.infolist()]

CODE = "m/code/__torch__.py"

def archive(order):
    """order: for each copy of the code file, the number it adds, placed in sequence where
    the first copy stood ('first'), or at the end of the archive ('end')."""
    entries = base()
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            late = []
            for info, data in entries:
                name = "m/" + info.filename.split("/", 1)[1]
                if name == CODE:
                    for where, n in order:
                        text = data.decode().replace("torch.add(x, 1)", "torch.add(x, %d)" % n).encode()
                        if where == "end":
                            late.append((name, text))
                        else:
                            z.writestr(name, text)
                else:
                    z.writestr(name, data)
            for name, text in late:
                z.writestr(name, text)
    return out.getvalue()

CASES = {
    "two_in_a_row.pt": [("first", 1), ("first", 2)],
    "three_in_a_row.pt": [("first", 1), ("first", 2), ("first", 3)],
    "one_at_the_end.pt": [("first", 1), ("end", 2)],
    "two_at_the_end.pt": [("first", 1), ("end", 2), ("end", 3)],
}

def npz_in_folder():
    """An .npz whose member d/x.npy is there four times (arrays [1] to [4]), in a folder as
    a torch archive's members are, and no data.pkl: numpy reads it, not torch."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for v in (1, 2, 3, 4):
                b = io.BytesIO()
                numpy.save(b, numpy.array([v], dtype="<i8"))
                z.writestr("d/x.npy", b.getvalue())
    return out.getvalue()

expected = {}
data = npz_in_folder()
with open("npz_in_folder.npz", "wb") as f:
    f.write(data)
expected["npz_in_folder.npz"] = {"numpy_load": int(numpy.load(io.BytesIO(data))["d/x"][0]), "copies": [1, 2, 3, 4]}
for name, order in CASES.items():
    data = archive(order)
    with open(name, "wb") as f:
        f.write(data)
    m = torch.jit.load(io.BytesIO(data))
    expected[name] = {"forward_0": m.forward(0), "copies": [n for _, n in order]}
with open("expected.json", "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")
print(expected)
