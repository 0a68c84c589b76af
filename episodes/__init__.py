"""The files the learner writes and the server reads: the episode store, crash-safe writes, status.

- `episodes.store` -- one directory per episode: ``meta.json`` and an append-only ``steps.log``.
- `episodes.durable` -- atomic, fsynced writes (temp file + rename + directory fsync).
- `episodes.status` -- the learner's ``status.json`` (phase, progress, success rates, history).
"""
