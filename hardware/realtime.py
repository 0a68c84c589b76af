"""Is this machine fit for libfranka's 1 kHz control loop? Checked BEFORE libfranka connects.

libfranka (under franky) opens its connection to the arm first and only refuses a kernel without
realtime capabilities when the first motion starts (``RealtimeException: Running kernel does not
have realtime capabilities``), deep in a traceback. The same two conditions are read here up
front, so the robot client and the calibration commands can stop with one line saying what to do:

* the kernel: libfranka reads ``/sys/kernel/realtime`` (present and ``1`` on a PREEMPT_RT kernel);
* the scheduler: libfranka raises its control thread to SCHED_FIFO priority 99, which needs
  CAP_SYS_NICE (root, or ``cap_add: SYS_NICE`` in docker) or an RLIMIT_RTPRIO of 99
  (``/etc/security/limits.conf``).

No franky import here: this module runs on any machine.
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

SYS_REALTIME = Path("/sys/kernel/realtime")
PROC_STATUS = Path("/proc/self/status")
CAP_SYS_NICE = 23  # bit of CapEff in /proc/<pid>/status
LIBFRANKA_PRIORITY = 99  # libfranka asks for sched_get_priority_max(SCHED_FIFO)
IGNORE_HINT = "for a bench test without motion set robot.franka_realtime: ignore"
DOC = "docs/real_robot.md, 'Realtime kernel'"


def kernel_is_realtime(sys_realtime: Path = SYS_REALTIME) -> bool:
    """libfranka's own test: the file exists and holds 1."""
    try:
        return sys_realtime.read_text().strip() == "1"
    except OSError:
        return False


def may_use_realtime_priority(proc_status: Path = PROC_STATUS, rtprio_limit: int | None = None) -> bool:
    """CAP_SYS_NICE in the effective capabilities, or an RLIMIT_RTPRIO up to libfranka's priority."""
    try:
        for line in proc_status.read_text().splitlines():
            if line.startswith("CapEff:") and int(line.split()[1], 16) >> CAP_SYS_NICE & 1:
                return True
    except (OSError, ValueError, IndexError):
        pass
    if rtprio_limit is None:
        rtprio_limit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    return rtprio_limit == resource.RLIM_INFINITY or rtprio_limit >= LIBFRANKA_PRIORITY


def realtime_problem(sys_realtime: Path = SYS_REALTIME, proc_status: Path = PROC_STATUS,
                     rtprio_limit: int | None = None) -> str | None:
    """None when libfranka will accept this machine; else one line with the fix."""
    if not kernel_is_realtime(sys_realtime):
        return (f"the running kernel ({platform.release()}) has no realtime capabilities ({sys_realtime} is "
                f"not 1), which libfranka needs for the arm's 1 kHz loop: boot a PREEMPT_RT kernel ({DOC}); "
                f"{IGNORE_HINT}")
    if not may_use_realtime_priority(proc_status, rtprio_limit):
        user = os.environ.get("USER") or str(os.geteuid())
        return (f"user {user} may not use realtime priority {LIBFRANKA_PRIORITY} (no CAP_SYS_NICE, RLIMIT_RTPRIO "
                f"too low), which libfranka needs: add `@realtime - rtprio 99` and `@realtime - memlock "
                f"unlimited` to /etc/security/limits.conf, put the user in group realtime and log in again "
                f"(docker: cap_add SYS_NICE, ulimits rtprio 99) ({DOC}); {IGNORE_HINT}")
    return None
