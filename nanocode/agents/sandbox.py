"""The sandboxed workspace: tool paths stay inside one directory, and commands run contained.

Paths. Read/Edit/Grep do not go through a path string: nanocode.agents.tools.paths opens each component relative to
the directory before it (O_NOFOLLOW, symlinks followed only while they stay under the root), so a symlink swapped
between a check and an open cannot lead outside. `Sandbox.resolve(path)` is the string-level check for display and
callers that only name a path: anything that resolves outside `root` (or holds a NUL byte) raises `SandboxPathError`.

Commands. `Sandbox.run(command)` runs `bash -c command` (watched to its end by nanocode.agents.supervisor). Where the
host allows (util-linux `unshare`, plus user namespaces when not root), every command gets:
- a private filesystem (nanocode.agents.jail): a fresh tmpfs root holding only the workspace (read-write, except its
  `.git`, which is read-only so no hook can be planted), the system directories /usr /bin /sbin /lib* and a short
  list of /etc entries (read-only), the running Python's prefixes (read-only, so `python` and `pytest` work), a fresh
  /tmp, /run, /dev/shm and HOME (tmpfs, `scratch_bytes` each, gone after the command), a minimal /dev (null, zero,
  full, random, urandom, tty) and its own /proc. The home directory, /var, /mnt, other users' files, the host's /tmp
  and /run and every UNIX socket file in them (docker.sock, the session bus, an ssh-agent) do not exist there;
  the old root is detached, not just hidden;
- a new network namespace (only a down loopback: every connection fails, abstract UNIX sockets included), unless
  `network=True` asks for the network on purpose;
- a PID namespace: the command sees and signals only its own processes, and killing the namespace kills them all,
  setsid() escapees included;
- all capabilities dropped with `setpriv` (no_new_privs too), so root inside cannot remount, unmount or nsenter out.
Everywhere, and whether or not namespaces work:
- a scrubbed environment: a minimal PATH (the running Python's bin dir first), HOME and TMPDIR private, LANG, TERM;
  none of the user's variables (tokens, keys, SSH agent) are passed on; `env=` adds chosen ones explicitly;
- whole-command limits in a control group of its own (nanocode.agents.cgroups, v2 or else v1, when the host lets us
  make one): `memory_bytes` for all processes together (no swap; tmpfs pages count too) and `max_processes`;
- per-process rlimits: address space (also `memory_bytes`, so one huge allocation fails cleanly), CPU seconds, file
  size (`max_file_bytes`), no core dumps, RLIMIT_NPROC for non-root users;
- a watchdog (the supervisor): the wall-clock timeout, the process count (a backstop to the control group), the
  bytes written to storage by all processes together (`max_write_bytes`, checked every tick), and output kept up to
  `max_output_bytes` (a command printing more is stopped). Whatever ends a command, all its processes are killed.
`Sandbox.isolation` says exactly what is in effect here; nothing is claimed that was not set up.

Hosts without namespaces (containers without user namespaces, no `unshare`): commands would see every file, socket
and the network the user can reach, so they are refused with a one-line reason unless the caller opts in with
`allow_unisolated=True` (then they run with the limits and the watchdog only; `nanocode agent --allow-unisolated`,
or NANOCODE_ALLOW_UNISOLATED=1 for every model-driven command: agent, eval, rl). `isolate=False` asks for that weak mode
on purpose (trusted, scripted commands) and needs the same opt-in. Without a usable control group, memory and
processes are bounded per process only: at most `memory_bytes` x `max_processes` in all.

Not contained: the workspace itself is writable (a command can change any file in it but `.git`, and when the
workspace has no `.git`, create one); what the user later runs from it (a Makefile, a test) is theirs to trust, and a
socket file kept inside the workspace is reachable. With `network=True`, abstract UNIX sockets and every host the
user can reach are too. The bytes-written bound counts storage writes (tmpfs is bounded by its size and the memory
limit instead) and may overshoot by what a command writes in one check interval. Namespaces share the host's kernel:
a kernel exploit is out of scope. Read/Edit/Grep never leave the root regardless.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

from nanocode.agents import cgroups
from nanocode.agents.cgroups import CommandGroup
from nanocode.agents.isolation import SYSTEM_PATH, Isolation, LaunchPlan, candidate_plans
from nanocode.agents.supervisor import CommandResult, Supervisor, read_available
from nanocode.core.errors import ConfigError, NanocodeError

LAUNCH_ATTEMPTS = 3  # launches of one command whose launcher died before the command started
KERNEL_PID_CAP_MIN = 300  # pid_max cannot go below 301 (RESERVED_PIDS + 1)
ALLOW_UNISOLATED_ENV = "NANOCODE_ALLOW_UNISOLATED"  # "1": the user's opt-in to commands without isolation
JAIL = Path(__file__).with_name("jail.py")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc entries programs need to start, resolve users and names, and find certificates; nothing with secrets
ETC_ENTRIES = (
    "alternatives", "ca-certificates", "debian_version", "gitconfig", "group", "host.conf", "hosts", "inputrc",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias", "localtime", "mime.types", "nsswitch.conf",
    "os-release", "passwd", "protocols", "python3", "resolv.conf", "services", "shells", "ssl", "terminfo", "timezone",
)  # fmt: skip
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}


class SandboxPathError(NanocodeError):
    """A tool path that is not inside the workspace (or not a path at all)."""


_PLAN_CACHE: dict[tuple, LaunchPlan] = {}


def check_path_text(text: object) -> str:
    """A tool's path argument as text, or SandboxPathError: not text, a NUL byte, or empty."""
    if not isinstance(text, str):
        raise SandboxPathError("path must be text")
    if "\x00" in text:
        raise SandboxPathError("path contains a NUL byte")
    if not text.strip():
        raise SandboxPathError("empty path")
    return text


class Sandbox:
    """A workspace directory that tools cannot leave and commands run contained in (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        timeout_s: float = 30.0,
        max_output_bytes: int = 64 * 1024,
        memory_bytes: int = 4 * 1024**3,
        cpu_s: int = 60,
        max_processes: int = 128,
        max_file_bytes: int = 256 * 1024**2,
        max_write_bytes: int = 1024**3,
        scratch_bytes: int = 256 * 1024**2,
        network: bool = False,
        isolate: bool = True,
        allow_unisolated: bool | None = None,
        env: dict[str, str] | None = None,
    ):
        real = Path(os.path.realpath(os.fspath(root)))
        if not real.is_dir():
            raise ConfigError(f"sandbox root {os.fspath(root)!r} is not a directory")
        if real == Path("/"):
            raise ConfigError("sandbox root cannot be '/': it would contain everything")
        limits = (timeout_s, max_output_bytes, max_processes, memory_bytes, max_write_bytes, scratch_bytes)
        if min(limits) <= 0:
            raise ConfigError("sandbox timeouts, limits and sizes must be positive")
        self.root = real
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self.memory_bytes = memory_bytes
        self.cpu_s = cpu_s
        self.max_processes = max_processes
        self.max_file_bytes = max_file_bytes
        self.max_write_bytes = max_write_bytes
        self.scratch_bytes = scratch_bytes
        self.network = network
        self.isolate = isolate  # False: no namespaces at all (limits, HOME and the watchdog still apply)
        if allow_unisolated is None:  # the user's standing opt-in, for commands started deep inside eval/rl
            allow_unisolated = os.environ.get(ALLOW_UNISOLATED_ENV) == "1"
        self.allow_unisolated = allow_unisolated  # run commands even where they cannot be isolated
        self.extra_env = dict(env or {})
        self._home: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # -- paths ----------------------------------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike) -> Path:
        """The real path inside the root that `path` names; raises SandboxPathError when it would leave the root."""
        text = check_path_text(os.fspath(path))
        candidate = Path(text) if os.path.isabs(text) else self.root / text
        real = Path(os.path.realpath(candidate))  # resolves `..` and every symlink that exists
        if real != self.root and self.root not in real.parents:
            raise SandboxPathError(f"path is outside the workspace: {text}")
        return real

    def contains(self, path: str | os.PathLike) -> bool:
        try:
            self.resolve(path)
        except SandboxPathError:
            return False
        return True

    # -- environment ----------------------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """The private HOME commands see: a temporary directory removed when the sandbox is closed. With a private
        root, each command gets a fresh tmpfs at this path (and the host directory only serves to build the root)."""
        if self._home is None:
            self._home = Path(tempfile.mkdtemp(prefix="nanocode-home-"))
            (self._home / "tmp").mkdir()
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._home), True)
        return self._home

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": f"{os.path.dirname(sys.executable)}:{SYSTEM_PATH}",
            "HOME": str(self.home),
            "TMPDIR": str(self.home / "tmp"),
            "PWD": str(self.root),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SHELL": "/bin/bash",
            "USER": "nanocode",
            "LOGNAME": "nanocode",
        }
        env.update(self.extra_env)
        return env

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._home = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------------------------------------
    @property
    def isolation(self) -> Isolation:
        """The containment commands get here. The kernel process cap is the pids cgroup, else pid_max in the PID
        namespace, else RLIMIT_NPROC, which binds for every uid but 0."""
        plan, groups = self._plan(), cgroups.support()
        caps = [self.max_processes] if os.geteuid() != 0 or groups.pids else []
        if plan.use_pid_max:
            caps.append(max(KERNEL_PID_CAP_MIN, self.max_processes))
        return dataclasses.replace(
            plan.isolation,
            kernel_process_cap=min(caps) if caps else None,
            memory_limit=self.memory_bytes if groups.memory else None,
            cgroup_version=groups.version if groups.memory or groups.pids else None,
        )

    def unisolated_reason(self) -> str | None:
        """Why commands would run without isolation here (None when they are isolated)."""
        if not self.isolate:
            return "namespaces are turned off for this sandbox (isolate=False)"
        iso = self._plan().isolation
        missing = [
            name
            for name, ok in [
                ("a private root", iso.private_root),
                ("a PID namespace", iso.pid_namespace),
                ("dropped capabilities (setpriv)", iso.capabilities_dropped),
                ("a network namespace", iso.network_removed or self.network),
            ]
            if not ok
        ]
        return (
            f"this host cannot give commands {', '.join(missing)} (needs unshare and namespaces)" if missing else None
        )

    def run(self, command: str, *, timeout_s: float | None = None) -> CommandResult:
        """Run `bash -c command` in the workspace under every limit above; never raises for a failing command."""
        if "\x00" in command:
            return CommandResult("", None, stopped="invalid", stop_detail="command contains a NUL byte")
        reason = self.unisolated_reason()
        if reason is not None and not self.allow_unisolated:
            detail = f"refused: {reason}; allow_unisolated=True runs commands without isolation"
            return CommandResult("", None, stopped="refused", stop_detail=detail)
        plan = self._plan()
        # The launcher writes one byte to a private pipe right before it hands over to the command. When `unshare`
        # dies before that (seen here about once in 40 launches from concurrent threads: "sigprocmask unblock
        # failed" and a SIGKILL), the command never ran, so launching again is safe; a command that started is never
        # run twice. The pipe is closed before the command starts, so the command cannot see or use it.
        for _ in range(LAUNCH_ATTEMPTS):
            try:
                group = self._new_group()
            except OSError as e:
                detail = f"refused: cannot create the command's control group: {e.strerror or e}"
                return CommandResult("", None, stopped="refused", stop_detail=detail)
            try:
                result, started = self._launch(plan, command, group, timeout_s or self.timeout_s)
            finally:
                if group is not None:
                    group.remove()
            if started or result.stopped:
                break
        return result

    def _new_group(self) -> CommandGroup | None:
        groups = cgroups.support()
        return CommandGroup.create(self.memory_bytes, self.max_processes) if groups.parents else None

    def _launch(
        self, plan: LaunchPlan, command: str, group: CommandGroup | None, timeout_s: float
    ) -> tuple[CommandResult, bytes | None]:
        """One launch: (the result, whether the command started). With a control group, a gate holds the launcher
        until it is in the group, so every process of the command is born inside it."""
        started_r, started_w = os.pipe()
        gate_r, gate_w = os.pipe() if group is not None else (-1, -1)
        try:
            hold = f'read -r _ <&{gate_r} || exit 125; exec "$@" {gate_r}<&-'
            gate = ["/bin/bash", "--noprofile", "--norc", "-c", hold, "gate"]
            argv = [*(gate if group else []), *plan.prefix, *self._launcher(plan, command, started_w)]
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and process group: one killpg reaches the whole tree
                close_fds=True,
                pass_fds=(started_w, gate_r) if group else (started_w,),
            )
            os.close(started_w)
            started_w = -1
            if group is not None:
                os.close(gate_r)
                gate_r = -1
                try:
                    group.add(proc.pid)
                    os.write(gate_w, b"go\n")
                except OSError:
                    pass  # the gate reads end of file and exits: the command never starts, the next launch tries
                os.close(gate_w)
                gate_w = -1
            result = Supervisor(
                proc,
                timeout_s,
                self.max_output_bytes,
                self.max_processes,
                plan.isolation.pid_namespace,
                group=group,
                max_write_bytes=self.max_write_bytes,
            ).wait()
            os.set_blocking(started_r, False)
            return result, read_available(started_r)
        finally:
            for fd in (started_r, started_w, gate_r, gate_w):
                if fd >= 0:
                    os.close(fd)

    def _launcher(self, plan: LaunchPlan, command: str, started_fd: int | None = None) -> list[str]:
        """`bash -c PRELUDE` that sets limits (and pid_max when no jail does it) then runs the command as a child of
        a capability-free bash, so the command is never PID 1 (PID 1 ignores most signals). With a private root, the
        jail builds it first and execs the prelude inside it."""
        iso, q = plan.isolation, shlex.quote
        lines = ["set -e"]
        if plan.use_pid_max and not plan.jail:
            lines.append(f"echo {max(KERNEL_PID_CAP_MIN, self.max_processes) + 1} > /proc/sys/kernel/pid_max")
        lines += [
            f"cd {q(str(self.root))}",
            "ulimit -c 0",
            f"ulimit -v {max(1, self.memory_bytes // 1024)}",
            f"ulimit -t {max(1, int(self.cpu_s))}",
            f"ulimit -f {max(1, self.max_file_bytes // 1024)}",
        ]
        if os.geteuid() != 0:  # the kernel never applies RLIMIT_NPROC to uid 0
            lines.append(f"ulimit -u {_user_process_count() + self.max_processes}")
        lines.append("set +e")
        if started_fd is not None:
            lines.append(f"printf . >&{started_fd}; exec {started_fd}>&-")
        drop = "setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- " if iso.capabilities_dropped else ""
        lines.append(
            f'exec {drop}/bin/bash --noprofile --norc -c \'/bin/bash --noprofile --norc -c "$1"; exit $?\' sh "$1"'
        )
        prelude = ["/bin/bash", "--noprofile", "--norc", "-c", "\n".join(lines), "sandbox", command]
        if not plan.jail:
            return prelude
        steps = [word for step in self._jail_steps(plan) for word in step]
        return [sys.executable, "-I", "-S", str(JAIL), str(self.home), str(self.root), *steps, "--", *prelude]

    def _jail_steps(self, plan: LaunchPlan) -> list[list[str]]:
        """The private root, as steps for nanocode.agents.jail (parents before children)."""
        root, home, scratch = str(self.root), str(self.home), str(self.scratch_bytes)
        pid_max = max(KERNEL_PID_CAP_MIN, self.max_processes) + 1 if plan.use_pid_max else 0
        steps = [
            *(step for step in _system_binds() if not _is_within(step[1], self.root)),  # the workspace wins
            ["tmpfs", "/tmp", scratch, "1777", "nodev"],
            ["tmpfs", "/run", str(1024**2), "755", "nodev"],
            ["tmpfs", "/dev", str(1024**2), "755", "dev"],  # the device nodes bound into it must work
            ["tmpfs", "/dev/shm", scratch, "1777", "nodev"],
            *(["bind", f"/dev/{d}", f"/dev/{d}", "rw"] for d in DEVICES if os.path.exists(f"/dev/{d}")),
            *(["symlink", f"/dev/{name}", target] for name, target in DEV_LINKS.items()),
            ["proc", "/proc", str(pid_max)],
            ["tmpfs", home, scratch, "700", "nodev"],
            ["dir", f"{home}/tmp"],
            ["bind", root, root, "rw"],
        ]
        git = self.root / ".git"
        if git.exists() and not git.is_symlink():
            steps.append(["bind", str(git), str(git), "ro"])
        steps.sort(key=lambda step: Path(step[1]).parts)  # stable: a tmpfs goes before what is made inside it
        return steps

    def _plan(self) -> LaunchPlan:
        """The strongest launch plan that works here, probed once per (uid, network, isolate)."""
        key = (os.geteuid(), self.network, self.isolate)
        if key not in _PLAN_CACHE:
            candidates = candidate_plans(self.network)
            if not self.isolate:
                candidates = candidates[-1:]
            for plan in candidates:
                argv = [*plan.prefix, *self._launcher(plan, "exit 0")]
                try:
                    done = subprocess.run(argv, cwd=self.root, env=self.environment(), capture_output=True, timeout=20)
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if done.returncode == 0 and not done.stdout and not done.stderr:
                    _PLAN_CACHE[key] = plan
                    break
            _PLAN_CACHE.setdefault(key, candidates[-1])  # plain bash: if even that fails, the command will say why
        return _PLAN_CACHE[key]


@functools.cache
def _system_binds() -> tuple[list[str], ...]:
    """Read-only binds of the system directories, the /etc entries and the Python prefixes that exist here."""
    binds = [["bind", d, d, "ro"] for d in SYSTEM_DIRS if os.path.lexists(d)]
    binds += [["bind", f"/etc/{e}", f"/etc/{e}", "ro"] for e in ETC_ENTRIES if os.path.lexists(f"/etc/{e}")]
    for prefix in _python_prefixes():
        if not any(_is_within(prefix, Path(d)) for d in SYSTEM_DIRS):
            binds.append(["bind", prefix, prefix, "ro"])
    return tuple(binds)


def _python_prefixes() -> list[str]:
    """The running Python's install and virtual-environment prefixes (bound read-only into the private root)."""
    found = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    found.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(os.path.realpath(p) for p in found)


def _user_process_count() -> int:
    """Processes of our real uid now: RLIMIT_NPROC counts them all, so the command's allowance sits on top."""
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                continue
    return count


def _is_within(path: str, root: Path) -> bool:
    return os.path.commonpath([path, str(root)]) == str(root)


__all__ = ["CommandResult", "Isolation", "Sandbox", "SandboxPathError"]
