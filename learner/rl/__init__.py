"""Head-only RL algorithms, one readable file each (ppo.py, sac.py), behind the interface in base.py;
algorithms.py builds the one the config names. ppo_whole.py is the whole-model baseline of the bench."""
