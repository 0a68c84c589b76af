"""Real hardware behind the `interface.robot` Arm/Camera interfaces: `franka` (franky) and
`realsense` (pyrealsense2). Used by the robot client and by the calibration tools; imported lazily,
so a machine without the drivers still runs everything on the simulators."""
