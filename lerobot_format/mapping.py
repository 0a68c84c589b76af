"""The mapping YAML of ``vlaloop import``: which of a dataset's keys is which vlaloop camera, state
and action, and in which units. Example (what `suggest` writes for a dataset it can read):

    robot_id: lerobot          # episodes go to RUN_DIR/episodes/<robot_id>/
    fps: 10                    # optional: refuse a dataset recorded at another rate
    cameras:                   # vlaloop camera name: the dataset's image or video key
      front: observation.images.front
    state:
      key: observation.state
      indices: [0, 1, 2, 3, 4, 5, 6]   # where x y z roll pitch yaw gripper are in that vector
      position_unit: m         # m, cm or mm
      angle_unit: rad          # rad or deg
      gripper: [0.0, 1.0]      # the dataset's values for closed and open
    action:
      key: action
      indices: [0, 1, 2, 3, 4, 5, 6]   # dx dy dz wx wy wz gripper (docs/action_convention.md)
      position_unit: m
      angle_unit: rad
      gripper: [0.0, 1.0]
    instruction: null          # null: each frame's task; or one instruction for every episode

The action must already be vlaloop's: end-effector translation and a BASE-frame rotation vector
per control step, the gripper absolute. Joint-space actions or absolute poses cannot be mapped by
units and indices; the importer refuses them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lerobot_format import layout
from protocol.messages import ID_PATTERN

POSITION_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
ANGLE_UNITS = {"rad": 1.0, "deg": math.pi / 180.0}
VECTOR_FIELDS = ("key", "indices", "position_unit", "angle_unit", "gripper")


class MappingError(ValueError):
    """The mapping cannot be used; the message says what to write."""


@dataclass
class VectorMap:
    """One 7-vector (state or action) taken from a dataset column."""

    key: str
    indices: list[int]
    position_unit: str = "m"
    angle_unit: str = "rad"
    gripper: tuple[float, float] = (0.0, 1.0)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """[N, D] dataset values -> [N, 7] in vlaloop's units (m, rad, gripper 0 closed .. 1 open)."""
        x = np.asarray(values, np.float64).reshape(len(values), -1)[:, self.indices]
        x[:, 0:3] *= POSITION_UNITS[self.position_unit]
        x[:, 3:6] *= ANGLE_UNITS[self.angle_unit]
        closed, opened = self.gripper
        x[:, 6] = (x[:, 6] - closed) / (opened - closed)
        return x


@dataclass
class Mapping:
    state: VectorMap
    action: VectorMap
    cameras: dict[str, str] = field(default_factory=dict)
    robot_id: str = "lerobot"
    fps: int | None = None
    instruction: str | None = None


def load(path: Path) -> Mapping:
    if not path.exists():
        raise MappingError(f"mapping file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MappingError(f"mapping file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise MappingError(f"mapping file {path} must be a mapping (robot_id, cameras, state, action)")
    return parse(data, str(path))


def parse(data: dict, where: str = "mapping") -> Mapping:
    unknown = set(data) - {"robot_id", "fps", "cameras", "state", "action", "instruction", "format"}
    if unknown:
        raise MappingError(f"{where}: unknown field(s) {sorted(unknown)}; the fields are robot_id, fps, cameras, "
                           f"state, action, instruction")
    for name in ("cameras", "state", "action"):
        if not isinstance(data.get(name), dict):
            raise MappingError(f"{where}: `{name}:` is missing or not a mapping; write e.g.\n{_EXAMPLES[name]}")
    robot_id = str(data.get("robot_id", "lerobot"))
    if not re.match(ID_PATTERN, robot_id):
        raise MappingError(f"{where}: robot_id {robot_id!r} must match {ID_PATTERN} (it names a directory)")
    for cam in data["cameras"]:
        if not re.match(ID_PATTERN, str(cam)):
            raise MappingError(f"{where}: camera name {cam!r} must match {ID_PATTERN}")
    fps = data.get("fps")
    return Mapping(state=_vector(data["state"], f"{where}: state"), action=_vector(data["action"], f"{where}: action"),
                   cameras={str(k): str(v) for k, v in data["cameras"].items()}, robot_id=robot_id,
                   fps=None if fps is None else int(fps), instruction=data.get("instruction"))


def _vector(d: dict, where: str) -> VectorMap:
    unknown = set(d) - set(VECTOR_FIELDS)
    if unknown:
        raise MappingError(f"{where}: unknown field(s) {sorted(unknown)}; the fields are {', '.join(VECTOR_FIELDS)}")
    if "key" not in d or "indices" not in d:
        raise MappingError(f"{where}: needs `key:` (the dataset column) and `indices:` (7 positions in it)")
    indices = d["indices"]
    if not (isinstance(indices, list) and len(indices) == 7 and all(isinstance(i, int) for i in indices)):
        raise MappingError(f"{where}: indices must be 7 integers (positions of the 7 entries in {d['key']}), "
                           f"got {indices!r}")
    vm = VectorMap(key=str(d["key"]), indices=indices, position_unit=str(d.get("position_unit", "m")),
                   angle_unit=str(d.get("angle_unit", "rad")), gripper=tuple(d.get("gripper", (0.0, 1.0))))
    if vm.position_unit not in POSITION_UNITS:
        raise MappingError(f"{where}: position_unit must be one of {list(POSITION_UNITS)}, got {vm.position_unit!r}")
    if vm.angle_unit not in ANGLE_UNITS:
        raise MappingError(f"{where}: angle_unit must be one of {list(ANGLE_UNITS)}, got {vm.angle_unit!r}")
    if len(vm.gripper) != 2 or vm.gripper[0] == vm.gripper[1]:
        raise MappingError(f"{where}: gripper must be [closed value, open value], two different numbers")
    return vm


def check_against(mapping: Mapping, features: dict[str, dict]) -> None:
    """Refuse a mapping that names what the dataset does not have, with the fix in the message."""
    images = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
    for cam, key in mapping.cameras.items():
        if key not in images:
            raise MappingError(f"cameras.{cam}: {key!r} is not an image or video key of the dataset; "
                               f"its image keys are {images}")
    if not mapping.cameras:
        raise MappingError(f"cameras: map at least one camera, e.g. `front: {images[0] if images else '<key>'}`")
    for name, vm in (("state", mapping.state), ("action", mapping.action)):
        ft = features.get(vm.key)
        vectors = [k for k, f in features.items() if f.get("dtype", "").startswith("float") and len(f["shape"]) == 1]
        if ft is None:
            raise MappingError(f"{name}.key: {vm.key!r} is not in the dataset; its float vectors are {vectors}")
        width = int(ft["shape"][0])
        if width < 7:
            wanted = " ".join(layout.STATE_NAMES if name == "state" else layout.ACTION_NAMES)
            raise MappingError(f"{name}.key: {vm.key} has {width} entries (names {ft.get('names')}), vlaloop's {name} "
                               f"is 7 end-effector numbers ({wanted}, docs/action_convention.md): joint-space "
                               f"data cannot be mapped by indices and units; convert it to the end effector first")
        bad = [i for i in vm.indices if not 0 <= i < width]
        if bad or len(ft["shape"]) != 1:
            raise MappingError(f"{name}.indices {vm.indices}: {vm.key} has {width} entries "
                               f"(names {ft.get('names')}); each index must be in 0..{width - 1}")


def suggest(features: dict[str, dict], fps: int) -> str:
    """A mapping for the dataset's keys, to review: the vector entries are taken in order only where
    the names are vlaloop's, otherwise the YAML says what to find."""
    images = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
    cams = "\n".join(f"  {_camera_name(k)}: {k}" for k in images) or "  front: <an image key>"
    return (f"robot_id: lerobot\nfps: {fps}\ncameras:\n{cams}\n"
            + _vector_yaml("state", layout.STATE_KEY, layout.STATE_NAMES, features)
            + _vector_yaml("action", layout.ACTION_KEY, layout.ACTION_NAMES, features)
            + "instruction: null\n")


def _vector_yaml(name: str, key: str, wanted: list[str], features: dict) -> str:
    ft = features.get(key, {})
    names = ft.get("names")
    names = names if isinstance(names, list) else None
    if names and all(n in names for n in wanted):
        indices = str([names.index(n) for n in wanted])
    else:
        indices = f"[?, ?, ?, ?, ?, ?, ?]   # the positions of {' '.join(wanted)} in {key} (names {names})"
    return (f"{name}:\n  key: {key if ft else '<a float vector key>'}\n  indices: {indices}\n"
            f"  position_unit: m\n  angle_unit: rad\n  gripper: [0.0, 1.0]\n")


def _camera_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", key.removeprefix(layout.IMAGE_PREFIX)) or "camera"
    return name if re.match(ID_PATTERN, name) else f"cam_{name}"[:64]


def identity(features: dict[str, dict]) -> Mapping | None:
    """The mapping of a dataset vlaloop exported (its own names and units), else None."""
    state, action = features.get(layout.STATE_KEY, {}), features.get(layout.ACTION_KEY, {})
    if state.get("names") != layout.STATE_NAMES or action.get("names") != layout.ACTION_NAMES:
        return None
    cams = {k.removeprefix(layout.IMAGE_PREFIX): k for k, f in features.items()
            if f.get("dtype") in ("video", "image") and k.startswith(layout.IMAGE_PREFIX)}
    return Mapping(state=VectorMap(layout.STATE_KEY, list(range(7))),
                   action=VectorMap(layout.ACTION_KEY, list(range(7))), cameras=cams)


_EXAMPLES = {
    "cameras": "cameras:\n  front: observation.images.front",
    "state": "state:\n  key: observation.state\n  indices: [0, 1, 2, 3, 4, 5, 6]\n  position_unit: m\n  angle_unit: rad",
    "action": "action:\n  key: action\n  indices: [0, 1, 2, 3, 4, 5, 6]\n  position_unit: m\n  angle_unit: rad",
}
