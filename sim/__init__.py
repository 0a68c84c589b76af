"""Simulators behind the `interface.robot` Arm/Camera interfaces: `sim.mock` (numpy, no dependencies)
and `sim.metaworld` (MetaWorld on MuJoCo: the `metaworld` extra, docs/metaworld.md).

The robot client drives them as backends, the learner evaluates policies in them, `vlaloop demos`
records scripted expert demonstrations from them, and the benches measure learning on them.
"""
