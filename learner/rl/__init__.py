"""Head-only RL algorithms, one readable file each."""
