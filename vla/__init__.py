"""The VLA model shared by server and learner: backbone + pooler + heads, LoRA, normalization,
checkpoint registry, and the embedded tiny default."""
