"""No pickle anywhere: no source file in the repository (tracked or new, tests and benches included)
imports pickle or its relatives, calls torch.load without weights_only=True, or lets numpy unpickle.
Unpickling runs arbitrary code: a crafted episode, checkpoint or network message would own the
machine that reads it (LeRobot's gRPC+pickle CVE is the example)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "jsonpickle"}
THIS = Path(__file__).resolve()


def python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).exists() and (ROOT / p).resolve() != THIS]


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            out.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if name == "load" and owner == "torch":
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    out.append(f"{where}: torch.load without weights_only=True")
            if name == "__import__" and node.args and isinstance(node.args[0], ast.Constant) \
                    and str(node.args[0].value).split(".")[0] in PICKLE_MODULES:
                out.append(f"{where}: __import__({node.args[0].value!r})")
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                out.append(f"{where}: allow_pickle={ast.unparse(ap)}")
            if name in ("load", "loads") and owner in PICKLE_MODULES:
                out.append(f"{where}: {owner}.{name}")
    return out


def test_no_pickle_in_any_source_file():
    files = python_files()
    assert len(files) > 50 and any(p.name == "codec.py" for p in files)  # the scan sees the tree
    found = [v for p in files for v in violations(p)]
    assert not found, "pickle (or an unpickling loader) in the tree:\n" + "\n".join(found)


def test_the_scan_catches_each_pattern(tmp_path):
    """The checker itself must fail on every pattern it is meant to catch."""
    bad = tmp_path / "bad.py"
    cases = {
        "import pickle": 1, "import cloudpickle as cp": 1, "from pickle import loads": 1, "import dill": 1,
        "import torch\ntorch.load('x.pt')": 1, "import torch\ntorch.load('x.pt', weights_only=False)": 1,
        "import numpy as np\nnp.load('x.npy', allow_pickle=True)": 1, "__import__('pickle')": 1,
        "import torch\ntorch.load('x.pt', weights_only=True)": 0, "import numpy as np\nnp.load('x.npy')": 0,
        "import json\njson.loads('1')": 0,
    }
    for src, n in cases.items():
        bad.write_text(src)
        found = violations_at(bad, tmp_path)
        assert len(found) == n, (src, found)


def violations_at(path: Path, root: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, root
    try:
        return violations(path)
    finally:
        ROOT = saved


def test_no_pickle_files_ship_in_the_repository():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    shipped = [p for p in out if Path(p).suffix in (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib")]
    assert not shipped, shipped
