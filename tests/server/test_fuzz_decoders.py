"""Bounded property-based fuzzing of the hostile-input decoders (the /v1/act body, the drop-ins'
state check, the importer's path templates and vlaloop/meta): only the refusal type escapes and
whatever is accepted is within the limits. The long run: python -m bench.fuzz_hostile."""

from __future__ import annotations

import pytest

from bench.fuzz_hostile import PROPERTIES

EXAMPLES = 150  # per property: a few seconds in all


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_decoder_property(name):
    PROPERTIES[name](EXAMPLES)()
