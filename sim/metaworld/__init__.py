"""MetaWorld (Sawyer, MuJoCo) as a vlaloop simulator: docs/metaworld.md.

Importing this package sets ``MUJOCO_GL=egl`` unless it is already set.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
