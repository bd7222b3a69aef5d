"""One control group per command: a memory limit and a process limit for all of its processes together.

Per-process rlimits let 4 processes take 4 times the memory; a control group counts them as one. `CommandGroup.create`
makes a child of the agent's own control group, sets memory (no swap) and process limits, and is removed after the
command. Which hierarchy is used is found once per process, preferring cgroup v2:
- v2: the unified hierarchy, when our group already delegates the memory and pids controllers to its children (a
  systemd user session with delegation, a container given its own cgroup namespace, root on a v2 host);
- v1: the separate memory and pids hierarchies, when our groups there are writable (root on a v1 host).
Either controller may be missing on its own; `CgroupSupport` says which ones work. Without any, the sandbox falls back
to per-process limits (documented in nanocode.agents.sandbox).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REMOVE_WAIT_S = 2.0  # a group can only be removed once its last process is gone


@dataclass(frozen=True)
class CgroupSupport:
    """Where new command groups go, per controller ("memory", "pids"), and which cgroup version provides them."""

    version: int | None = None
    parents: dict[str, Path] = field(default_factory=dict)

    @property
    def memory(self) -> bool:
        return "memory" in self.parents

    @property
    def pids(self) -> bool:
        return "pids" in self.parents


_SUPPORT: CgroupSupport | None = None


def support() -> CgroupSupport:
    """The controllers this process can use for its commands, probed once by making (and removing) a real group."""
    global _SUPPORT
    if _SUPPORT is None:
        _SUPPORT = _probe(_v2_parents()) or _probe(_v1_parents()) or CgroupSupport()
    return _SUPPORT


class CommandGroup:
    """The control group(s) of one command; `add` the launched process before it forks, `remove` after it ended."""

    def __init__(self, version: int, dirs: dict[str, Path]):
        self.version, self.dirs = version, dirs

    @classmethod
    def create(cls, memory_bytes: int, max_processes: int) -> CommandGroup:
        """A fresh group under the limits; raises OSError when the kernel refuses (the caller refuses the command)."""
        sup = support()
        name = f"nanocode-{uuid.uuid4().hex[:16]}"
        group = cls(sup.version, {})
        try:
            for controller, parent in sup.parents.items():
                path = parent / name
                if path not in group.dirs.values():  # v2: one directory holds both controllers
                    path.mkdir()
                group.dirs[controller] = path
            group._limit(memory_bytes, max_processes)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, memory_bytes: int, max_processes: int) -> None:
        if "memory" in self.dirs:
            mem = self.dirs["memory"]
            if self.version == 2:
                _write(mem / "memory.max", memory_bytes)
                if (mem / "memory.swap.max").exists():
                    _write(mem / "memory.swap.max", 0)
            else:
                _write(mem / "memory.limit_in_bytes", memory_bytes)
                if (mem / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no swapping past the limit
                    _write(mem / "memory.memsw.limit_in_bytes", memory_bytes)
        if "pids" in self.dirs:
            _write(self.dirs["pids"] / "pids.max", max_processes)

    def add(self, pid: int) -> None:
        for path in set(self.dirs.values()):
            _write(path / "cgroup.procs", pid)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in set(self.dirs.values()):
            try:
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return found

    def peak_memory_bytes(self) -> int | None:
        mem = self.dirs.get("memory")
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((mem / name).read_text()) if mem else None
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """Processes the kernel killed because the group hit its memory limit."""
        mem = self.dirs.get("memory")
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (mem / name).read_text().splitlines() if mem else ():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        """Remove the group (bounded wait: a process still exiting keeps it busy); a leftover empty group is harmless."""
        end = time.monotonic() + REMOVE_WAIT_S
        for path in set(self.dirs.values()):
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > end:
                        break
                    time.sleep(0.01)


def _write(path: Path, value: int | str) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _own_groups() -> dict[str, str]:
    """This process's group per hierarchy: {"memory": "/a/b", ..., "": "/x"} ("" is the v2 unified one)."""
    groups = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = path
    return groups


def _cgroup_mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fstype, super options) of every cgroup and cgroup2 mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, options = right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((left.split()[4], fstype, options.split(",")))
    return found


def _v2_parents() -> CgroupSupport | None:
    own = _own_groups().get("")
    mount = next((m for m, fstype, _ in _cgroup_mounts() if fstype == "cgroup2"), None)
    if own is None or mount is None:
        return None
    parent = Path(mount + own)
    try:
        delegated = (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    parents = {c: parent for c in ("memory", "pids") if c in delegated}
    return CgroupSupport(2, parents) if parents else None


def _v1_parents() -> CgroupSupport | None:
    own = _own_groups()
    parents = {}
    for mount, fstype, options in _cgroup_mounts():
        for controller in ("memory", "pids"):
            if fstype == "cgroup" and controller in options and controller in own:
                parents[controller] = Path(mount + own[controller])
    return CgroupSupport(1, parents) if parents else None


def _probe(candidate: CgroupSupport | None) -> CgroupSupport | None:
    """Keep the controllers in which a group can really be made, limited and removed."""
    if candidate is None:
        return None
    works = {}
    for controller, parent in candidate.parents.items():
        path = parent / f"nanocode-probe-{uuid.uuid4().hex[:16]}"
        try:
            path.mkdir()
        except OSError:
            continue
        try:
            limit = {"memory": "memory.max" if candidate.version == 2 else "memory.limit_in_bytes", "pids": "pids.max"}
            _write(path / limit[controller], 1 << 30 if controller == "memory" else 64)
            works[controller] = parent
        except OSError:
            pass
        finally:
            try:
                path.rmdir()
            except OSError:
                pass
    return CgroupSupport(candidate.version, works) if works else None


__all__ = ["CgroupSupport", "CommandGroup", "support"]
