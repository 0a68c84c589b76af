"""vlaloop: deploy a VLA on a real arm and keep improving it while the robot works."""

__version__ = "0.1.0"
