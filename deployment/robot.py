"""Robot client configuration (section `robot`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskOption(BaseModel):
    """A task the operator page may give this robot for its next episode."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, description="stored with each episode as its task")
    instruction: str = Field(default="", max_length=512, description="the instruction the policy gets; empty: "
                             "a simulator draws one of the task's own per episode")


class RobotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key in the YAML or env is an error
    robot_id: str = Field(default="mock0", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                          description="letters, digits, _ and -: it names directories in the episode store")
    backend: Literal["mock", "metaworld", "franka"] = "mock"
    server_url: str = "http://127.0.0.1:8000"
    learner_addr: str = "tcp://127.0.0.1:5555"
    token: str = ""
    rate_hz: float = Field(default=10.0, gt=0, le=1000)
    max_steps: int = 60
    mode: Literal["sample", "greedy", "auto"] = Field(
        default="auto", description="sample: exploration episodes; greedy: evaluation episodes; auto: "
                                    "greedy evaluation while the learner is in its SFT phase, else sample")
    task: str = "reach"
    split: Literal["train", "held_out", "all", "demo", "rl"] = Field(
        default="train", description="mock: the (task, colour) split episodes are drawn from "
                                     "(robot_client/backends/mock/tasks.py)")
    calibration: str | None = Field(default=None, description="path to calibration.yaml")
    label_timeout_s: float = 120.0
    franka_host: str = "172.16.0.2"
    franka_realtime: Literal["enforce", "ignore"] = Field(
        default="enforce", description="enforce: refuse to start on a kernel without realtime capabilities "
        "(libfranka needs PREEMPT_RT, docs/real_robot.md); ignore: bench tests only, a warning every episode")
    camera_serials: list[str] = Field(default_factory=list,
                                      description="RealSense serials, in the order of model.cameras")

    # --- control loop
    execution: Literal["open_loop", "ensemble"] = Field(
        default="open_loop", description="open_loop: run each chunk to its end; ensemble: query every "
        "step and average all chunks that cover the step (ACT temporal ensembling)")
    ensemble_decay: float = Field(default=0.1, ge=0, description="weight exp(-decay * age_in_steps); "
                                  "0 = plain mean")
    prefetch_steps: int = Field(default=0, ge=0, description="open_loop: send the next query this many "
                                "steps before the chunk runs out")
    reply_budget: float = Field(default=0.6, gt=0, le=0.95, description="fraction of a control period "
                                "the loop waits for a reply to this tick's observation before moving on")
    reply_deadline_s: float = Field(default=1.0, gt=0, description="a reply older than this (from "
                                    "capture) is dropped and never executed")
    watchdog_periods: float = Field(default=2.0, gt=0, description="hold when no fresh action arrived for "
                                    "this many control periods after the current chunk ran out")
    starve_abort_s: float = Field(default=3.0, gt=0, description="a watchdog hold (slow server) that lasts "
                                  "this long aborts the episode; a dead server aborts at once")
    first_action_grace_s: float = Field(default=5.0, ge=0, description="extra wait for an episode's first "
                                        "action (a cold server)")
    probe_interval_s: float = Field(default=0.025, gt=0, description="/healthz probe while no request is "
                                    "in flight; bounds how late a dead server is noticed")
    server_silence_s: float = Field(default=1.0, gt=0, description="a server that answers nothing (probes "
                                    "time out, no /v1/act reply) this long is taken as gone; a refused "
                                    "connection counts at once. A busy machine's slow probe alone is not")
    server_retry_s: float = Field(default=0.5, gt=0, description="retry interval while the server is down")
    realtime_priority: int = Field(default=50, ge=0, le=99, description="SCHED_FIFO priority of the control "
                                   "loop thread (Linux, needs CAP_SYS_NICE or root; refused -> a warning and "
                                   "normal scheduling); 0 = normal scheduling")
    max_frame_age_s: float = Field(default=0.3, gt=0, description="hold instead of acting on a frame older "
                                   "than this (capture time vs now)")
    camera_grace_s: float = Field(default=2.0, ge=0, description="cameras unusable this long (beyond "
                                  "reply_deadline_s) abort the episode")
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    episodes: int = Field(default=0, ge=0, description="stop after this many episodes; 0 = run forever")
    seed: int = 0
    eval_every: int = Field(default=0, ge=0, description="every Nth episode is a greedy evaluation episode "
                            "(purpose 'eval', never trained on); 0 = never")
    instruction: str = Field(default="", description="franka: the task instruction given to the policy")
    tasks: list[TaskOption] = Field(default_factory=list, description="the tasks the operator page may set for "
                                    "the next episode (name + instruction); empty: robot.task alone (franka: "
                                    "with robot.instruction; a simulator: each of its own tasks)")
    record_demos: int = Field(default=0, ge=0, description="first record this many demonstrations by teleop "
                              "(episodes the operator labels success): only an operator drives, the policy is "
                              "never asked, the server may have no checkpoint; then run the policy")
    operator: str = Field(default="", max_length=64, description="who drives with a device at the robot "
                          "(stored with each demonstration); the page's operators name themselves")
    scene_reset: Literal["auto", "operator", "default"] = Field(
        default="default", description="after an episode the arm goes home; operator: the robot then waits for "
        "the operator's ready (page button, gamepad Start, SpaceMouse right button) before the next episode; "
        "auto: at once (the simulator resets the scene); default: operator on franka, auto on simulators")
    dry_run: bool = Field(default=False, description="everything but motion: the arm holds where it would "
                          "move and never homes; episodes end aborted (stored, never trained on)")

    # --- interventions (docs/teleop.md)
    teleop: Literal["none", "gamepad", "spacemouse", "hand", "scripted"] = Field(
        default="none", description="a device at the robot the operator can take over with (a dead-man "
        "button: released, the policy drives), a SpaceMouse (drives while the puck is deflected); the operator "
        "page can always take over through the server; hand (record_demos only): the operator moves the arm "
        "by hand (the Franka's guiding mode) and its pose changes are recorded. "
        "scripted (simulators only): the simulator's expert takes over when the policy leaves its path "
        "(robot_client/scripted_operator.py, settings in scripted_operator)")
    teleop_deadline_s: float = Field(default=0.5, gt=0, le=5, description="an operator's command older than "
                                     "this holds the arm (a closed page, a dead link, an unplugged device)")
    teleop_lost_abort_s: float = Field(default=3.0, gt=0, description="holding on a stale operator command "
                                       "this long aborts the episode")
    teleop_linear_speed: float = Field(default=0.1, gt=0, le=1, description="m/s at full intent (a held key, "
                                       "a stick at its end); the SafetyFilter's step limit still applies")
    teleop_angular_speed: float = Field(default=0.5, gt=0, le=5, description="rad/s at full intent")
    teleop_wait_reply: bool = Field(default=True, description="while the page drives, wait (within the reply "
                                    "budget) for the reply to this tick's query, which carries the newest command")
    gamepad_index: int = Field(default=0, ge=0, description="which joystick (pygame numbering) to use")
    spacemouse_mapping: dict = Field(default_factory=dict, description="overrides of "
                                     "robot_client.spacemouse.SpaceMouseMapping fields (signs, dead zone, buttons)")
    gamepad_mapping: dict = Field(default_factory=dict, description="overrides of "
                                  "robot_client.teleop.GamepadMapping fields (axes, buttons, dead zone)")
    scripted_operator: dict = Field(default_factory=dict, description="teleop scripted: overrides of "
                                    "sim.intervener.InterventionConfig fields (budget_fraction, max_takeovers, "
                                    "segment_steps, ...)")

    # --- streaming to the learner
    outbox_dir: str | None = Field(default=None, description="default: <run_dir>/outbox/<robot_id>")
    outbox_max_bytes: int = Field(default=2 * 1024**3, gt=0)
    outbox_warn_fraction: float = Field(default=0.8, gt=0, le=1)
    ack_timeout_s: float = Field(default=3.0, gt=0)

    # --- hardware
    relative_dynamics_factor: float = Field(default=0.15, gt=0, le=1, description="franka speed scale")
    gripper_speed: float = Field(default=0.05, gt=0, description="m/s")
    gripper_force: float = Field(default=20.0, gt=0, description="N, when grasping")
    camera_width: int = 640
    camera_height: int = 480
    camera_fps: int = 30

    def operator_resets(self) -> bool:
        """Whether the robot waits for the operator's ready between episodes (scene_reset)."""
        return self.scene_reset == "operator" or (self.scene_reset == "default" and self.backend == "franka")
