"""RECAP's advantage indicator at run time (pi*0.6): what a version needs to be served right.

A version trained with advantage conditioning (learner/recap/) saw its instruction followed by
``"\\nAdvantage: positive"`` or ``"\\nAdvantage: negative"`` -- or, with some probability, by
nothing (so the unconditioned policy is learnt too). At run time the server asks for "positive".
With a guidance weight beta != 1 (classifier-free guidance on the Gaussian chunk head) it also runs
the unconditioned prompt in the same batch and acts on

    mean = mean_u + beta * (mean_pos - mean_u)

(beta 1: the positive policy itself; beta > 1: further in the direction "positive" moves the mean).
The log-std is the head's own, unchanged.

What a version needs travels in its checkpoint metadata under ``advantage_conditioning``:
``{"format": 1, "indicator": true, "guidance": 1.5}``. A version without the key (every version
before RECAP) is served exactly as before: the instruction untouched, one forward pass. The server,
the openpi / OpenVLA drop-ins and the learner's evaluation all act through ``vla.policy.Policy``,
which reads the key, so they all serve a version the same way.

The indicator is text, so it works with every backbone family -- provided the backbone's prompt can
take it: `check_prompt_takes_indicator` refuses a tokenizer that cannot tell "positive" from
"negative" (both unknown tokens, or cut off by a length limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

META_KEY = "advantage_conditioning"
FORMAT = 1
POSITIVE, NEGATIVE = "positive", "negative"


@dataclass(frozen=True)
class AdvantagePrompt:
    """How a RECAP version is prompted at run time."""

    indicator: bool = True
    """Append "Advantage: positive" to every instruction."""
    guidance: float = 1.0
    """Beta of classifier-free guidance; 1.0 = the positive policy, no extra pass."""

    def to_meta(self) -> dict:
        return {"format": FORMAT, "indicator": self.indicator, "guidance": self.guidance}

    @property
    def guided(self) -> bool:
        return self.indicator and self.guidance != 1.0


def from_meta(meta: dict) -> AdvantagePrompt | None:
    """The version's run-time prompting, or None for a version trained without an indicator.
    Raises ValueError for metadata this code cannot serve right (another format, unknown fields,
    a guidance weight that is no finite number >= 0): serving it the old way would be wrong."""
    raw = meta.get(META_KEY)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{META_KEY} must be an object, got {raw!r}")
    if raw.get("format") != FORMAT:
        raise ValueError(f"{META_KEY} format {raw.get('format')!r} is not supported (this code serves format {FORMAT})")
    unknown = set(raw) - {"format", "indicator", "guidance"}
    if unknown:
        raise ValueError(f"{META_KEY} has unknown field(s) {sorted(unknown)}")
    indicator, guidance = raw.get("indicator", True), raw.get("guidance", 1.0)
    if not isinstance(indicator, bool):
        raise ValueError(f"{META_KEY}.indicator must be true or false, got {indicator!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or guidance < 0:
        raise ValueError(f"{META_KEY}.guidance must be a finite number >= 0, got {guidance!r}")
    if not indicator:
        return None  # trained with the indicator but served without it: the unconditioned policy
    return AdvantagePrompt(indicator=True, guidance=float(guidance))


def with_indicator(instruction: str, label: str | None) -> str:
    """The instruction as the model sees it: followed by the advantage indicator, or unchanged
    (label None: the unconditioned prompt)."""
    if label is None:
        return instruction
    if label not in (POSITIVE, NEGATIVE):
        raise ValueError(f"advantage label must be {POSITIVE!r} or {NEGATIVE!r}, got {label!r}")
    return f"{instruction}\nAdvantage: {label}"


def _read_ids(preprocessor, text: str) -> list[int]:
    """The token ids the model reads of an instruction: the prompt's, or -- where a language encoder
    reads the words (vla/language.py) -- the encoder's."""
    read = getattr(preprocessor, "instruction_ids", None)
    return read(text) if read else preprocessor.text_inputs(text)["input_ids"].tolist()


def check_prompt_takes_indicator(preprocessor, instruction: str = "pick up the red block") -> None:
    """Raise ValueError if the backbone's prompt cannot carry the indicator: the token ids with
    "positive", with "negative" and without an indicator must all differ, and the indicator's
    words must not be the tokenizer's unknown token."""
    ids = {label: _read_ids(preprocessor, with_indicator(instruction, label)) for label in (POSITIVE, NEGATIVE, None)}
    if ids[POSITIVE] == ids[NEGATIVE] or ids[POSITIVE] == ids[None]:
        raise ValueError("the backbone's prompt cannot take the advantage indicator: 'Advantage: positive', "
                         "'Advantage: negative' and no indicator give the same tokens (a length limit "
                         "or an unknown-token vocabulary)")
    read_unknown = getattr(preprocessor, "unknown_token_id", None)  # a language encoder's own tokenizer
    unk = read_unknown() if read_unknown else getattr(preprocessor.processor.tokenizer, "unk_token_id", None)
    if unk is not None and any(ids[label].count(unk) > ids[None].count(unk) for label in (POSITIVE, NEGATIVE)):
        raise ValueError("the backbone's tokenizer reads the advantage indicator as unknown tokens "
                         f"(id {unk}): it cannot carry 'Advantage: positive/negative'")
