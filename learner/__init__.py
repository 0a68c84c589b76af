"""Learner: ingest, episode store, feature cache, RL (head) and SFT (LoRA) phases."""
