"""One YAML file per deployment, parsed into pydantic models; every field can be overridden by an
environment variable ``VLALOOP_<SECTION>__<FIELD>`` (e.g. ``VLALOOP_SERVER__PORT=8001``,
``VLALOOP_RUN_DIR=runs/x``). Defaults run the embedded demo."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployment.learner import LearnerConfig
from deployment.model import ModelConfig
from deployment.reward_model import RewardModelConfig
from deployment.robot import RobotConfig
from deployment.server import ServerConfig

ENV_PREFIX = "VLALOOP_"


class ConfigError(ValueError):
    pass


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    run_dir: str = "runs/demo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    robot: RobotConfig = Field(default_factory=RobotConfig)
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig)

    def config_hash(self) -> str:
        """Hash of what must agree between robot and learner (model I/O), sent in `hello`."""
        m = self.model
        shared = {"cameras": m.cameras, "image_size": m.image_size, "chunk": m.chunk,
                  "action_dim": m.action_dim, "state_dim": m.state_dim}
        return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        try:  # YAML scalars: numbers, booleans, lists
            node[path[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[path[-1]] = raw
    return data


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None,
                **overrides: Any) -> DeploymentConfig:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must contain a mapping")
    data = _apply_env(data, dict(os.environ if environ is None else environ))
    for k, v in overrides.items():
        if v is not None:
            data[k] = v
    try:
        return DeploymentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid configuration:\n{e}") from None
