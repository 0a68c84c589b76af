"""How a RECAP iteration turns its advantages into SFT samples: the two recipe parts.

    indicator   RECAP (pi*0.6): each sample's instruction carries its advantage label as text
                ("Advantage: positive" / "negative"); the version is served with the positive
                indicator and classifier-free guidance (its metadata's advantage_conditioning)
    awr         the paper's baseline: the plain instruction, each sample drawn in proportion to
                its AWR weight (learner/recap/awr.py); the version is an ordinary policy

Both see the same value function, advantages and labels (learner/recap/phase.py). A new way to use
the advantages is one class here with these five members and one WEIGHTINGS entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from learner.recap.awr import AWRConfig, awr_weights, weight_summary
from learner.recap.labels import EpisodeValues
from vla.advantage import META_KEY, AdvantagePrompt, check_prompt_takes_indicator


@dataclass
class IndicatorWeighting:
    """RECAP's advantage-conditioned SFT."""
    guidance: float = 1.0
    """Beta served with the version (vla/advantage.py); 1 = no guidance pass."""
    name: str = "indicator"
    indicator = True  # the samples' instructions carry the label
    operator_weight = None  # no sample weights

    def check_backbone(self, preprocessor) -> None:
        """The backbone's prompt must take the indicator (ValueError otherwise)."""
        check_prompt_takes_indicator(preprocessor)

    def weigh(self, episodes: list[EpisodeValues]) -> dict:
        """Nothing to add to the labels: the positive/negative label is the conditioning."""
        return {}

    def run_time(self) -> dict:
        """The meta.json keys a version trained this way needs to be served."""
        return {META_KEY: AdvantagePrompt(indicator=True, guidance=self.guidance).to_meta()}

    def metrics(self, train_weights) -> dict:
        return {"recap_guidance": self.guidance}

    def summary(self, metrics: dict) -> str:
        return f"{100 * metrics.get('labels_positive_fraction', 0.0):.0f} % of steps positive"


@dataclass
class AWRWeighting:
    """AWR: advantage-weighted SFT on the plain prompt."""
    awr: AWRConfig = field(default_factory=AWRConfig)
    """AWR's temperature and clip (learner/recap/awr.py)."""
    name: str = "awr"
    indicator = False

    @property
    def operator_weight(self) -> float:
        """An operator-driven step weighs the clip (a correction, as RECAP labels it positive)."""
        return self.awr.clip

    def check_backbone(self, preprocessor) -> None:
        """Any backbone: nothing goes into the prompt."""

    def weigh(self, episodes: list[EpisodeValues]) -> dict:
        """Each episode's per-decision weights, and their summary for the labels file."""
        return awr_weights(episodes, self.awr)

    def run_time(self) -> dict:
        return {}  # an ordinary policy, even after a RECAP version

    def metrics(self, train_weights) -> dict:
        """How concentrated the SFT's draws are, per sample."""
        return {f"sft_{k}": v for k, v in weight_summary(train_weights, self.awr.clip).items()}

    def summary(self, metrics: dict) -> str:
        return f"weights' ESS {100 * metrics.get('sft_awr_ess_fraction', 0.0):.0f} % of the samples"


WEIGHTINGS = {
    "indicator": lambda lc: IndicatorWeighting(guidance=lc.recap.guidance),
    "awr": lambda lc: AWRWeighting(AWRConfig(temperature=lc.recap.awr_temperature, clip=lc.recap.awr_clip)),
}


def weighting_for(lc) -> IndicatorWeighting | AWRWeighting:
    """The weighting `lc.recap.weighting` names."""
    if lc.recap.weighting not in WEIGHTINGS:
        raise ValueError(f"recap weighting {lc.recap.weighting!r}: one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[lc.recap.weighting](lc)
