"""Running one launched command to its end under the sandbox's limits (nanocode.agents.sandbox starts it).

`Supervisor.wait()` reads the command's merged output incrementally (kept up to a bound: a command that prints more
is stopped at once), enforces the wall-clock timeout, and every tick compares the system thread count with what it
saw (cheap) and, when that grew or at least once a second, counts the command's processes: its session, its PID
namespace and its control group, so setsid() escapees count too. Every WRITE_CHECK_S it adds up the bytes the
command's processes wrote to storage (/proc/PID/io `write_bytes`; the kernel adds a reaped child's count to its
parent's, so the live processes carry the whole command's total) and stops the command past max_write_bytes.
Whatever ends the command, every process of it is killed before wait() returns: background processes never outlive
their command.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field

from nanocode.agents.cgroups import CommandGroup

TICK_S = 0.02  # how often the supervisor looks at the clock and the process count
SCAN_EVERY_S = 1.0  # full /proc scans at least this often even when the system thread count looks calm
FIRST_SCAN_S = 0.1  # the first one this soon (most commands are done by then and need none)
WRITE_CHECK_S = 0.02  # how often the bytes written are added up (the overshoot is what the command writes meanwhile)
# util-linux unshare --fork re-raises its child's fatal signal, but cannot for SIGKILL and says this instead
UNSHARE_SIGKILL_NOTE = b"unshare: sigprocmask unblock failed: Invalid argument\n"


@dataclass(frozen=True)
class CommandResult:
    """A finished command: merged output (bounded), exit code, and why the sandbox stopped it, if it did."""

    output: str
    exit_code: int | None  # None when the sandbox killed the command
    stopped: str | None = None  # "timeout" | "output" | "processes" | "disk" | "refused" | "invalid" | None
    truncated: bool = False
    duration_s: float = 0.0
    stop_detail: str = field(default="", compare=False)
    peak_memory_bytes: int | None = field(default=None, compare=False)  # all processes together (control group)
    oom_kills: int = field(default=0, compare=False)  # processes the kernel killed at the memory limit


class Supervisor:
    """Reads a running command's output and enforces the timeout, output bound and process cap."""

    def __init__(
        self,
        proc: subprocess.Popen,
        timeout_s: float,
        max_output_bytes: int,
        max_processes: int,
        pid_namespace: bool,
        *,
        group: CommandGroup | None = None,
        max_write_bytes: int | None = None,
    ):
        self.proc = proc
        self.timeout_s = timeout_s
        self.max_output_bytes, self.max_processes = max_output_bytes, max_processes
        self.pid_namespace = pid_namespace
        self.group = group
        self.max_write_bytes = max_write_bytes
        self.ns_link: str | None = None  # the command's PID namespace, once unshare has made it
        self.known: set[int] = set()  # the members found by the last full scan
        self.written = 0  # the most bytes the command was seen to have written

    def wait(self) -> CommandResult:
        start = time.monotonic()
        deadline = start + self.timeout_s
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        kept, eof = bytearray(), False
        stopped, detail, truncated = None, "", False
        threads_seen, last_scan, last_write_check = _system_threads(), start - SCAN_EVERY_S + FIRST_SCAN_S, start
        limit = self.max_output_bytes
        while True:
            now = time.monotonic()
            if now >= deadline:
                stopped, detail = "timeout", f"timed out after {self.timeout_s:g} s"
                break
            ready, _, _ = select.select([] if eof else [fd], [], [], min(TICK_S, deadline - now))
            if ready:
                chunk = read_available(fd)
                eof = chunk == b""  # every writer closed the pipe; the command may still be running
                room = limit - len(kept)
                kept += (chunk or b"")[:room]
                if chunk and len(chunk) > room:
                    stopped, truncated = "output", True
                    detail = f"output exceeded {limit} bytes; command stopped"
                    break
            if _exited(self.proc.pid):  # done; a background child may still hold the pipe, it dies below
                break
            threads = _system_threads()
            if threads > threads_seen + self.max_processes // 2 or now - last_scan >= SCAN_EVERY_S:
                last_scan = now
                if len(self._members()) > self.max_processes:
                    stopped = "processes"
                    detail = f"too many processes (more than {self.max_processes}); command stopped"
                    break
                threads_seen = max(threads_seen, threads)
            if self.max_write_bytes is not None and now - last_write_check >= WRITE_CHECK_S:
                last_write_check = now
                if self._bytes_written() > self.max_write_bytes:
                    stopped = "disk"
                    detail = f"wrote more than {self.max_write_bytes} bytes; command stopped"
                    break
        self._kill_all()  # leftovers never outlive the command, whatever ended it
        if stopped is None and not eof:
            kept, truncated = self._drain(kept, limit)
        self.proc.wait()
        self.proc.stdout.close()
        code = None if stopped else _exit_code(self.proc.returncode)
        if self.pid_namespace and code == 1 and kept.endswith(UNSHARE_SIGKILL_NOTE):
            del kept[-len(UNSHARE_SIGKILL_NOTE) :]  # the namespace's init was SIGKILLed from outside
            code = 128 + signal.SIGKILL
        text = bytes(kept).decode("utf-8", errors="replace")
        peak, ooms = (self.group.peak_memory_bytes(), self.group.oom_kills()) if self.group else (None, 0)
        return CommandResult(text, code, stopped, truncated, time.monotonic() - start, detail, peak, ooms)

    def _bytes_written(self) -> int:
        """Bytes the command wrote to storage so far (tmpfs writes are bounded by their size instead)."""
        members = self.group.pids() if self.group is not None else set(self.known)
        total = 0
        for pid in members | {self.proc.pid}:
            try:
                with open(f"/proc/{pid}/io", "rb") as f:
                    for line in f:
                        if line.startswith(b"write_bytes:"):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                continue  # gone: its count went to the process that reaped it
        self.written = max(self.written, total)
        return self.written

    def _drain(self, kept: bytearray, limit: int) -> tuple[bytearray, bool]:
        """What the (now dead) command left in the pipe, still within the bound."""
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            chunk = read_available(fd)
            if not chunk:
                break
            room = limit - len(kept)
            kept += chunk[:room]
            if len(chunk) > room:
                return kept, True
        return kept, False

    def _members(self) -> set[int]:
        """The command's processes: its session (setsid() can leave it), its PID namespace and its control group
        (nothing can leave those)."""
        if self.pid_namespace and self.ns_link is None:
            try:
                link = os.readlink(f"/proc/{self.proc.pid}/ns/pid_for_children")
                if link != os.readlink("/proc/self/ns/pid_for_children"):
                    self.ns_link = link
            except OSError:
                pass
        in_group = self.group.pids() if self.group is not None else set()
        members = set()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.proc.pid:  # the launcher itself is ours, not the command's
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                state, _, _, session = stat[stat.rindex(b")") + 2 :].split()[:4]
                if state in (b"Z", b"X"):
                    continue  # already dead, only waiting to be reaped
                if (
                    int(name) in in_group
                    or int(session) == self.proc.pid
                    or (self.ns_link is not None and os.readlink(f"/proc/{name}/ns/pid") == self.ns_link)
                ):
                    members.add(int(name))
            except (OSError, ValueError, IndexError):
                continue  # the process ended while we looked
        self.known = members
        return members

    def _kill_all(self) -> None:
        """SIGKILL the process group, then every member still found, until none is left (bounded)."""
        end = time.monotonic() + 5.0
        while True:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            members = self._members()
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not members or time.monotonic() > end:
                return
            time.sleep(0.01)


def read_available(fd: int) -> bytes | None:
    """Up to 64 KiB from a non-blocking fd: b'' at end of file, None when nothing is there yet."""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None  # select woke us but nothing was there after all


def _exited(pid: int) -> bool:
    """Has the child exited? Checked without reaping it, so its pid (our process group and session id) cannot be
    reused while we still kill by it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _exit_code(returncode: int) -> int:
    """The exit code a shell would show: 128 + N for death by signal N (unshare re-raises its child's signal)."""
    return 128 - returncode if returncode < 0 else returncode


def _system_threads() -> int:
    """All threads on the machine (4th field of /proc/loadavg, 'running/total'): a cheap fork-bomb tripwire."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[1])
    except (OSError, ValueError, IndexError):
        return 0
