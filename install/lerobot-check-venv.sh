#!/bin/sh
# The side environment in which LeRobot's own reader checks an export (docs/lerobot.md,
# lerobot_format/lerobot_reader_check.py). Outside the repository, never the project's .venv:
# lerobot 0.4.x wants torch < 2.11; it gets the project's CPU torch 2.13.0 here, with --no-deps.
#   sh install/lerobot-check-venv.sh [VENV_DIR]     (default /work/lerobot-venv)
set -e
VENV=${1:-/work/lerobot-venv}
python3 -m venv "$VENV"
PIP="$VENV/bin/pip install -q"
$PIP torch==2.13.0  # the CPU wheel (constraints-cpu.txt's pin); never a CUDA build
$PIP --no-deps lerobot==0.4.4
# what lerobot.datasets imports (its own pins where it has them)
$PIP 'datasets>=4,<5' 'huggingface-hub>=0.34.2,<0.36' 'pandas<3' pytz tzdata python-dateutil pyarrow 'av>=15,<16' \
     jsonlines 'packaging>=24.2,<26' draccus==0.10.0 einops termcolor deepdiff pillow accelerate
# LeRobot's default video decoder, the build for torch 2.13; it loads FFmpeg's shared libraries
$PIP --no-deps torchcodec==0.13.0
DEBS="libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libavfilter-dev" \
  sh "$(dirname "$0")/debian-packages.sh"
# what the check needs of vlaloop to read the store it compares with (episodes.store)
$PIP msgpack pydantic
echo "ready: PYTHONPATH=\$PWD HF_HUB_OFFLINE=1 $VENV/bin/python lerobot_format/lerobot_reader_check.py OUT_DIR RUN_DIR"
