"""What containment this host allows: the launch plans a sandboxed command can use, strongest first, and the
`Isolation` each one gives.

A plan is an `unshare` prefix (user, mount, network and PID namespaces as available), whether the jail builds a
private root, and whether the PID namespace can cap its own pid_max. `Sandbox` tries them in order once per process
and keeps the first that starts a command cleanly; the last (plain bash) needs nothing, and claims nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Isolation:
    """What containment a command actually gets on this machine (probed, never assumed)."""

    network_removed: bool = False  # own empty network namespace
    pid_namespace: bool = False  # own PID namespace and /proc; killing it kills every process in it
    private_root: bool = False  # a fresh root: only the workspace, read-only system dirs, no host sockets or home
    readonly_outside: bool = False  # no host file outside the workspace can be written
    capabilities_dropped: bool = False  # root inside runs with no capabilities
    kernel_process_cap: int | None = None  # fork fails beyond this many processes (pids cgroup, pid_max or NPROC)
    memory_limit: int | None = None  # bytes for all processes of a command together (a memory cgroup)
    cgroup_version: int | None = None  # the control group hierarchy the whole-command limits come from

    def describe(self) -> str:
        cap = f"kernel process cap {self.kernel_process_cap}" if self.kernel_process_cap else "no kernel process cap"
        memory = (
            f"memory limit {self.memory_limit} bytes per command (cgroup v{self.cgroup_version})"
            if self.memory_limit
            else "memory limited per process only"
        )
        flags = [
            ("network removed", self.network_removed),
            ("pid namespace", self.pid_namespace),
            ("private root", self.private_root),
            ("read-only outside workspace", self.readonly_outside),
            ("capabilities dropped", self.capabilities_dropped),
        ]
        return ", ".join(f"{name}: {'yes' if on else 'NO'}" for name, on in flags) + f", {cap}, {memory}"


@dataclass(frozen=True)
class LaunchPlan:
    """How to launch: the unshare prefix, the isolation it gives, and whether the jail builds a private root."""

    prefix: tuple[str, ...]
    isolation: Isolation
    use_pid_max: bool
    jail: bool = False


def candidate_plans(network: bool) -> list[LaunchPlan]:
    """Launch plans from strongest to weakest; the last one (plain bash) needs nothing but bash."""
    unshare = shutil.which("unshare", path=SYSTEM_PATH)
    setpriv = shutil.which("setpriv", path=SYSTEM_PATH) is not None
    root = os.geteuid() == 0
    plans = []
    if unshare is not None and (setpriv or not root):  # a root command keeping its capabilities could undo it all
        user = () if root else ("--user", "--map-root-user")
        net = () if network else ("--net",)
        pid = ("--pid", "--fork", "--kill-child")
        pid_max = pid_max_is_namespaced(unshare, user)
        jailed = Isolation(not network, True, True, True, setpriv)
        plans.append(LaunchPlan((unshare, *user, "--mount", *net, *pid, "--"), jailed, pid_max, jail=True))
        partial = Isolation(not network, True, False, False, setpriv)
        plans.append(LaunchPlan((unshare, *user, *net, *pid, "--mount-proc", "--"), partial, pid_max))
        if net:
            plans.append(LaunchPlan((unshare, *user, *net, "--"), Isolation(True, False, False, False, setpriv), False))
    if setpriv:
        plans.append(LaunchPlan((), Isolation(capabilities_dropped=True), False))
    return [*plans, LaunchPlan((), Isolation(), False)]


def pid_max_is_namespaced(unshare: str, user: tuple[str, ...]) -> bool:
    """Can a PID namespace set its own pid_max (Linux >= 6.14) without touching the host's? Older kernels have one
    global pid_max, which root could lower for the whole machine: so check the version, then check the effect with
    a harmless change (one less than the namespace's value) and put the host's value back if it ever moved."""
    if not kernel_at_least(6, 14):
        return False
    path = "/proc/sys/kernel/pid_max"
    script = f"v=$(cat {path}) && echo $((v - 1)) > {path}"
    host = Path(path).read_text()
    try:
        done = subprocess.run(
            [unshare, *user, "--pid", "--fork", "--mount-proc", "--", "/bin/sh", "-c", script],
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if Path(path).read_text() != host:
        Path(path).write_text(host)
        return False
    return done.returncode == 0


def kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (major, minor)
    except (ValueError, IndexError):
        return False
