"""Configuration of the promotion gate (section ``server.promotion``; docs/promotion.md). Pydantic
only, so the server config can import it cheaply. Every field can be set from the environment,
e.g. ``VLALOOP_SERVER__PROMOTION__ENABLED=true``.

    server:
      promotion:
        enabled: true
        canary_fraction: 0.3
        margin: 0.10
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PromotionConfig(BaseModel):
    """When a version the learner published reaches every robot.

    The rule: each new episode is served, start to end, by the canary with probability
    ``canary_fraction``, else by the promoted version. Each version's success probability gets a
    Beta(prior_successes, prior_failures) prior, updated with the labelled episodes each served since
    the canary started (success / failure; discards do not count). With
    ``q = P(p_canary >= p_promoted - margin | labels)``, once both have ``min_episodes`` labels:
    promote when ``q >= promote_confidence``; roll back when ``q <= 1 - rollback_confidence``;
    when the canary has ``max_canary_episodes`` labels, promote if ``q >= promote_confidence``,
    else roll back."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = Field(default=False)
    """Off keeps the plain hot swap (every version LATEST names is served to every robot at once).
    On: a new version serves only a canary share until the rule above promotes or refuses it."""

    canary_fraction: float = Field(default=0.3, gt=0.0, le=0.5)
    """Share of new episodes served by the canary (drawn per episode, so both arms see the same
    robots, tasks and time of day). At most 0.5: the promoted version is the control and must get
    at least as many episodes."""

    margin: float = Field(default=0.10, ge=0.0, lt=1.0)
    """How much lower the canary's success rate may be and still count as "not worse" (absolute,
    e.g. 0.10 = ten percentage points). Zero asks for evidence that it is at least as good."""

    promote_confidence: float = Field(default=0.80, ge=0.5, lt=1.0)
    """Promote once P(p_canary >= p_promoted - margin) reaches this. 0.80 suits a lab: a version
    that is as good as the promoted one is typically promoted within the cap; raise it (and the cap)
    for a fleet where a worse version costs more."""

    rollback_confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """Roll back before the cap once P(p_canary < p_promoted - margin) reaches this: a clearly bad
    version is stopped after about ``min_episodes`` canary episodes."""

    min_episodes: int = Field(default=10, ge=1)
    """Labelled episodes both the canary and the promoted version need before any decision."""

    max_canary_episodes: int = Field(default=60, ge=1)
    """The cap: at this many labelled canary episodes the canary is decided either way (promote if
    the promote rule holds, else roll back), so a version never stays in canary for long and at most
    this many episodes are run by a version that is then refused."""

    prior_successes: float = Field(default=1.0, gt=0.0)
    """Beta prior pseudo-successes for each arm (1, 1 = uniform)."""

    prior_failures: float = Field(default=1.0, gt=0.0)
    """Beta prior pseudo-failures for each arm."""

    seed: int = Field(default=0)
    """Seed of the per-episode draw (canary or promoted), so a test run is reproducible."""

    @model_validator(mode="after")
    def _cap_after_minimum(self) -> PromotionConfig:
        if self.max_canary_episodes < self.min_episodes:
            raise ValueError(f"max_canary_episodes ({self.max_canary_episodes}) must be >= min_episodes "
                             f"({self.min_episodes})")
        return self
