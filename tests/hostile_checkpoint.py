"""A hostile checkpoint, as whoever can write one file under checkpoints/ would leave it: a complete
version whose meta.json points its backbone at a model dir that ships code (an ``auto_map`` entry and
a ``configuration_evil.py`` that writes a marker file when imported), with the matching backbone hash
and ``model_config.trust_remote_code: true``. Used by the registry and the server tests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

EVIL_CODE = '''\
from pathlib import Path
Path({marker!r}).write_text("imported")
from transformers import PaliGemmaConfig


class EvilConfig(PaliGemmaConfig):
    pass
'''


def evil_backbone(source: Path, target: Path, marker: Path) -> Path:
    """A copy of the model dir `source` that runs code when transformers imports its config."""
    shutil.copytree(source, target)
    (target / "configuration_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (target / "config.json").write_text(json.dumps(config))
    (target / ".vlaloop-complete").unlink(missing_ok=True)
    return target


def publish_evil_version(registry, marker: Path, outside: Path | None = None) -> int:
    """Copy the newest full version to the next number with a code-carrying backbone -- in `outside`
    (an absolute backbone_dir) or, without it, inside the version (backbone_dir "backbone") -- and
    point LATEST at it. Returns the new version number."""
    from vla.backbone import backbone_hash
    from vla.tiny import default_tiny_dir, ensure_tiny_backbone

    good = max(v for v in registry.versions() if registry.read_meta(v)["kind"] == "full")
    bad = max(registry.versions()) + 1
    tmp = registry.root / f".tmp-evil-{os.getpid()}"
    shutil.copytree(registry.path(good), tmp)
    source = ensure_tiny_backbone(default_tiny_dir(0), seed=0)
    backbone = evil_backbone(source, outside if outside is not None else tmp / "backbone", marker)
    meta = json.loads((tmp / "meta.json").read_text())
    meta.update(version=bad, base_version=bad, parent=good, backbone_id="someone/evil-vlm",
                backbone_hash=backbone_hash(backbone),
                backbone_dir=str(backbone) if outside is not None else "backbone")
    meta["model_config"]["trust_remote_code"] = True
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.rename(tmp, registry.path(bad))
    latest = registry.root / ".tmp-LATEST-evil"
    latest.write_text(f"{bad}\n")
    os.replace(latest, registry.root / "LATEST")
    return bad
