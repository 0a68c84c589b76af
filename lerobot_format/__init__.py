"""LeRobot's dataset format (v3.0): export the episode store as a LeRobotDataset, import one as
demonstrations. docs/lerobot.md maps every field.

- `lerobot_format.layout` -- the v3.0 layout: paths, info.json, features, the tasks table.
- `lerobot_format.video` -- one mp4 per camera and file (PyAV): encode, and decode an episode's frames.
- `lerobot_format.stats` -- per-feature statistics (meta/stats.json and each episode's).
- `lerobot_format.run_dir` -- reading a run's store safely (a live learner, a corrupt episode).
- `lerobot_format.exporter` -- `vlaloop export --format lerobot RUN_DIR OUT_DIR`.
- `lerobot_format.reader` -- reading a local dataset (v3.0 or v2.1), checked as it goes.
- `lerobot_format.mapping` -- the YAML that says which dataset key is which camera, state, action.
- `lerobot_format.importer` -- `vlaloop import --format lerobot DATASET_DIR RUN_DIR --mapping map.yaml`.

Torch-free: numpy, pyarrow and PyAV only (`lerobot_format.lerobot_reader_check` is a script for a side
environment with LeRobot installed, docs/lerobot.md).
"""
