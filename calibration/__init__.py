"""Camera intrinsics, hand-eye (ChArUco) and workspace limits -> calibration.yaml."""
