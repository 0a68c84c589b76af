"""Hardware backends behind the `Arm` and `Camera` interfaces (franka, realsense, mock)."""
