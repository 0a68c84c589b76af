"""Learning methods as recipes: one object per method that says which phase comes next.

The live loop (learner/loop.py), the learning bench (bench/learning.py) and the demo's control
(vlaloop/demo.py) run the same recipe objects; only where the episodes come from differs (robots
through the ingest, or in-process rollouts: learner/recipes/inprocess.py). docs/learner.md lists
the recipes; a new one is one module here and one entry in registry.py.
"""
