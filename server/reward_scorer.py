"""Applies the learner's reward model to an episode as it ends (deployment section ``reward_model``).

The server sees every decision of every episode (each /v1/act request is one), so it keeps the last
few observations per robot and, when the robot reports the episode ended (``/awaiting``), computes
their backbone features with the serving policy and P(success) with the classifier the learner
published in ``runs/<run>/reward_model.json``. The features are the learner's only when the serving
trunk is the one the classifier was fitted on; otherwise (an SFT phase changed the trunk and the
learner has not refitted yet) the episode is not scored and waits for the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deployment.reward_model import REWARD_MODEL_FILE, RewardModelConfig
from vla.success_classifier import SuccessClassifier, episode_input

log = logging.getLogger(__name__)

KEEP_OBSERVATIONS = 16  # per robot; more than any sensible last_k


@dataclass
class Score:
    p: float | None  # P(success); None when not scored
    label: str | None  # the auto label ("success" | "failure") when confident, else None
    reason: str  # why it was (not) scored


class RewardScorer:
    def __init__(self, run_dir: str | Path, config: RewardModelConfig):
        self.config = config
        self.path = Path(run_dir) / REWARD_MODEL_FILE
        self._recent: dict[str, tuple[str, deque]] = {}  # robot -> (episode, last observations)
        self._model: SuccessClassifier | None = None
        self._signature: tuple[int, int] | None = None
        self.scores: dict[tuple[str, str], Score] = {}

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    def observe(self, robot_id: str, episode_id: str, observation: Any) -> None:
        """One decision's observation (the act route calls this for every request)."""
        if not self.enabled:
            return
        episode, recent = self._recent.get(robot_id, (None, None))
        if episode != episode_id or recent is None:
            recent = deque(maxlen=KEEP_OBSERVATIONS)
            self._recent[robot_id] = (episode_id, recent)
        recent.append(observation)

    def forget(self, robot_id: str) -> None:
        """The robot registry forgot this robot: drop its recent observations."""
        self._recent.pop(robot_id, None)

    def classifier(self) -> SuccessClassifier | None:
        """The published classifier, re-read when the file changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._model, self._signature = None, None
            return None
        signature = (st.st_mtime_ns, st.st_size)
        if signature != self._signature:
            try:
                self._model = SuccessClassifier.from_json(json.loads(self.path.read_text())["classifier"])
            except (OSError, ValueError, KeyError) as e:
                log.error("reward model %s unreadable (%s); episodes wait for the operator", self.path, e)
                self._model = None
            self._signature = signature
        return self._model

    async def score(self, robot_id: str, episode_id: str, policy: Any, worker: Executor) -> Score:
        """P(success) of the episode that just ended, and its auto label if confident."""
        try:
            score = await self._score(robot_id, episode_id, policy, worker)
        except Exception as e:  # noqa: BLE001 - a scoring failure must not cost the robot its label
            log.exception("reward model: scoring %s/%s failed", robot_id, episode_id)
            score = Score(None, None, f"scoring failed: {type(e).__name__}: {e}")
        self.scores[(robot_id, episode_id)] = score
        while len(self.scores) > 4096:
            self.scores.pop(next(iter(self.scores)))
        return score

    async def _score(self, robot_id: str, episode_id: str, policy: Any, worker: Executor) -> Score:
        if not self.enabled:
            return Score(None, None, "reward model off")
        if (robot_id, episode_id) in self.scores:  # a robot re-posting /awaiting after a retry
            return self.scores[(robot_id, episode_id)]
        model = self.classifier()
        if model is None:
            return Score(None, None, "no reward model fitted yet")
        episode, recent = self._recent.get(robot_id, (None, None))
        if episode != episode_id or not recent:
            return Score(None, None, "no observations of this episode seen by this server")
        if policy is None:
            return Score(None, None, "no policy loaded")
        from vla.policy import trunk_key  # torch: imported once a policy is serving

        if trunk_key(policy) != model.trunk_key:
            return Score(None, None, f"serving trunk {trunk_key(policy)} is not the reward model's {model.trunk_key}")
        obs = list(recent)[-model.config.last_k:]
        loop = asyncio.get_running_loop()
        feats = await loop.run_in_executor(worker, lambda: policy.features(obs).float().cpu().numpy())
        x = episode_input(feats, np.stack([o.state for o in obs]), model.config)
        p = float(model.predict_proba(x))
        label = model.decide(p, self.config.auto_threshold) if self.config.mode == "auto" else None
        return Score(p, label, "scored")
