"""MetaWorld (Sawyer, MuJoCo) as a vlaloop simulator: docs/metaworld.md.

Importing this package sets ``MUJOCO_GL=egl`` and ``LP_NUM_THREADS=0`` unless they are set.
``LP_NUM_THREADS=0`` makes Mesa's llvmpipe rasterise in the calling thread: a 96 px frame is too
small to gain from its helper threads, and waking them costs more than it saves (measured with
``python -m bench.metaworld_throughput``, docs/metaworld.md); env worker processes are the
parallelism instead.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")
