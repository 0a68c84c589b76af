"""An online episode whose every chunk arrived late (first used at chunk_index > 0, as on a loaded
machine) holds no decision: the dataset returns it empty instead of failing the whole RL round."""

import numpy as np

from episodes.store import EpisodeStore
from learner.dataset import load_decisions
from protocol.images import encode_jpeg

CHUNK = 4


def _episode(store: EpisodeStore, episode_id: str, first_index: int) -> dict:
    frame = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    for step in range(3):
        first_use = step == 0
        record = {"state": [0.0] * 7, "action": [0.0] * 7, "chunk_index": first_index + step,
                  "action_chunk": [[0.1] * 7] * CHUNK if first_use else None,
                  "log_prob": -1.0 if first_use else None, "policy_version": 1}
        store.append_step("r1", episode_id, step, record, {"wrist": frame})
    store.finish("r1", episode_id, {"outcome": "success", "source": "online", "n_steps": 3})
    return store.read_meta("r1", episode_id)


def test_an_episode_without_a_decision_is_empty_not_an_error(tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    late = load_decisions(store, _episode(store, "late", first_index=1), CHUNK)
    assert len(late) == 0 and late.chunks.shape == (0, CHUNK, 7) and late.states.shape == (0, 7)
    on_time = load_decisions(store, _episode(store, "ontime", first_index=0), CHUNK)
    assert len(on_time) == 1 and on_time.chunks.shape == (1, CHUNK, 7)
