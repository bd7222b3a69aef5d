"""The sandboxed workspace: tool paths stay inside one directory, and commands run contained.

Paths. `Sandbox.resolve(path)` maps a tool's path argument to a real path inside `root`: relative paths are taken
from the root, `..` components and symlinks are resolved first, and anything that ends up outside the root (or holds
a NUL byte) raises `SandboxPathError` with a one-line reason, which the tools hand back as `error: ...`. The check
runs on the fully resolved path, so a symlink inside the workspace pointing at `/` is refused like `../../etc/passwd`.
(Tools run one at a time, so nothing can swap a symlink between the check and the open.)

Commands. `Sandbox.run(command)` runs `bash -c command` (watched to its end by nanocode.agents.supervisor) with:
- cwd = root and a scrubbed environment: a minimal PATH (the running Python's bin dir first, so `python` and
  `pytest` work), HOME = a private temporary directory (removed with the sandbox), TMPDIR inside it, LANG, TERM.
  None of the user's variables (tokens, keys, SSH agent) are passed on; `env=` adds chosen ones explicitly.
- a wall-clock timeout, after which every process of the command is killed (SIGKILL to its process group, plus each
  member found in /proc; in a PID namespace the namespace dies as a whole, taking setsid() escapees with it);
- rlimits set with `ulimit` in the launcher (hard and soft): address space, CPU seconds per process, file size,
  no core dumps, and RLIMIT_NPROC = the user's current process count + max_processes. The kernel exempts uid 0 from
  RLIMIT_NPROC, so as root the process cap comes from elsewhere:
- a process watchdog: every tick it reads the system thread count (/proc/loadavg, cheap) and, when that grew or at
  least once a second, counts the command's processes (its session plus its PID namespace) and kills them all when
  there are more than max_processes. In a PID namespace on Linux >= 6.14 the namespace's own `pid_max` adds a hard
  kernel cap (fork fails with EAGAIN beyond max(300, max_processes) processes), so even a fast fork bomb is bounded
  before the watchdog's next look;
- output (stdout and stderr merged in one pipe) read incrementally and kept up to max_output_bytes: a command that
  prints more is stopped at once (the agent can use a few KB at most; a command printing gigabytes is runaway), so a
  1 GB print costs one pipe's worth of reading, never 1 GB of memory;
- isolation with util-linux `unshare` where it works, probed once per (uid, options) from strongest to weakest:
  a new network namespace (only a down loopback: every connection fails, 127.0.0.1 included), a PID namespace with its
  own /proc (the command sees only its own processes, cannot signal or read the environ of the agent's), a mount
  namespace in which every mount except the workspace and HOME is read-only, and all capabilities dropped with
  `setpriv` (so a command running as root cannot remount, raise pid_max back, or nsenter out). Background processes
  never outlive their command. `Sandbox.isolation` says exactly what is in effect; nothing is claimed that was not
  set up, and `network=True` keeps the network on purpose.

Not contained, by design or by the OS: Bash can READ anything the user can read (there is no read jail; HOME and
/proc are the private ones above), and without `unshare` (containers without user namespaces) the network stays and
files outside the workspace are writable. Read/Edit/Grep never leave the root regardless.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from nanocode.agents.supervisor import CommandResult, Supervisor, read_available
from nanocode.core.errors import ConfigError, NanocodeError

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LAUNCH_ATTEMPTS = 3  # launches of one command whose launcher died before the command started
KERNEL_PID_CAP_MIN = 300  # pid_max cannot go below 301 (RESERVED_PIDS + 1)


class SandboxPathError(NanocodeError):
    """A tool path that is not inside the workspace (or not a path at all)."""


@dataclass(frozen=True)
class Isolation:
    """What containment a command actually gets on this machine (probed, never assumed)."""

    network_removed: bool = False  # own empty network namespace
    pid_namespace: bool = False  # own PID namespace and /proc; killing it kills every process in it
    readonly_outside: bool = False  # every mount but the workspace and HOME is read-only
    capabilities_dropped: bool = False  # root inside runs with no capabilities
    kernel_process_cap: int | None = None  # fork fails beyond this many processes (pid_max or RLIMIT_NPROC)

    def describe(self) -> str:
        cap = f"kernel process cap {self.kernel_process_cap}" if self.kernel_process_cap else "no kernel process cap"
        flags = [
            ("network removed", self.network_removed),
            ("pid namespace", self.pid_namespace),
            ("read-only outside workspace", self.readonly_outside),
            ("capabilities dropped", self.capabilities_dropped),
        ]
        return ", ".join(f"{name}: {'yes' if on else 'NO'}" for name, on in flags) + f", {cap}"


@dataclass(frozen=True)
class _Plan:
    """How to launch: the unshare prefix and the isolation it gives (prelude steps follow from the flags)."""

    prefix: tuple[str, ...]
    isolation: Isolation
    use_pid_max: bool


_PLAN_CACHE: dict[tuple, _Plan] = {}


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
        network: bool = False,
        readonly_outside: bool = True,
        isolate: bool = True,
        env: dict[str, str] | None = None,
    ):
        real = Path(os.path.realpath(os.fspath(root)))
        if not real.is_dir():
            raise ConfigError(f"sandbox root {os.fspath(root)!r} is not a directory")
        if real == Path("/"):
            raise ConfigError("sandbox root cannot be '/': it would contain everything")
        if timeout_s <= 0 or max_output_bytes <= 0 or max_processes <= 0:
            raise ConfigError("sandbox timeout_s, max_output_bytes and max_processes must be positive")
        self.root = real
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self.memory_bytes = memory_bytes
        self.cpu_s = cpu_s
        self.max_processes = max_processes
        self.max_file_bytes = max_file_bytes
        self.network = network
        self.readonly_outside = readonly_outside
        self.isolate = isolate  # False: no namespaces at all (limits, HOME and the watchdog still apply)
        self.extra_env = dict(env or {})
        self._home: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # -- paths ----------------------------------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike) -> Path:
        """The real path inside the root that `path` names; raises SandboxPathError when it would leave the root."""
        text = os.fspath(path)
        if not isinstance(text, str):
            raise SandboxPathError("path must be text")
        if "\x00" in text:
            raise SandboxPathError("path contains a NUL byte")
        if not text.strip():
            raise SandboxPathError("empty path")
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
        """The private HOME commands see: a fresh temporary directory, removed when the sandbox is closed."""
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
        """The containment commands get here. The kernel process cap is pid_max in the PID namespace, else
        RLIMIT_NPROC, which binds for every uid but 0."""
        plan = self._plan()
        caps = [self.max_processes] if os.geteuid() != 0 else []
        if plan.use_pid_max:
            caps.append(max(KERNEL_PID_CAP_MIN, self.max_processes))
        return dataclasses.replace(plan.isolation, kernel_process_cap=min(caps) if caps else None)

    def run(self, command: str, *, timeout_s: float | None = None) -> CommandResult:
        """Run `bash -c command` in the workspace under every limit above; never raises for a failing command."""
        if "\x00" in command:
            return CommandResult("", None, stopped="invalid", stop_detail="command contains a NUL byte")
        plan = self._plan()
        # The launcher writes one byte to a private pipe right before it hands over to the command. When `unshare`
        # dies before that (seen here about once in 40 launches from concurrent threads: "sigprocmask unblock
        # failed" and a SIGKILL), the command never ran, so launching again is safe; a command that started is never
        # run twice. The pipe is closed before the command starts, so the command cannot see or use it.
        for _ in range(LAUNCH_ATTEMPTS):
            started_r, started_w = os.pipe()
            try:
                argv = [*plan.prefix, *self._launcher(plan, command, started_w)]
                proc = subprocess.Popen(
                    argv,
                    cwd=self.root,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own session and process group: one killpg reaches the whole tree
                    close_fds=True,
                    pass_fds=(started_w,),
                )
                os.close(started_w)
                started_w = -1
                result = Supervisor(
                    proc,
                    timeout_s or self.timeout_s,
                    self.max_output_bytes,
                    self.max_processes,
                    plan.isolation.pid_namespace,
                ).wait()
                os.set_blocking(started_r, False)
                started = read_available(started_r)
            finally:
                os.close(started_r)
                if started_w >= 0:
                    os.close(started_w)
            if started or result.stopped:
                break
        return result

    def _launcher(self, plan: _Plan, command: str, started_fd: int | None = None) -> list[str]:
        """`bash -c PRELUDE` that sets limits (and, inside namespaces, pid_max and read-only mounts) then runs the
        command as a child of a capability-free bash, so the command is never PID 1 (PID 1 ignores most signals)."""
        iso, q = plan.isolation, shlex.quote
        lines = ["set -e"]
        if plan.use_pid_max:
            lines.append(f"echo {max(KERNEL_PID_CAP_MIN, self.max_processes) + 1} > /proc/sys/kernel/pid_max")
        if iso.readonly_outside:
            lines.append(f"mount --bind {q(str(self.root))} {q(str(self.root))}")
            lines.append(f"mount --bind {q(str(self.home))} {q(str(self.home))}")
            for mount_point, options in _mounts():
                if _is_within(mount_point, self.root) or _is_within(mount_point, self.home):
                    continue
                keep = ",".join(o for o in options if o not in ("rw", "ro"))
                lines.append(f"mount -o {q('remount,bind,ro' + (',' + keep if keep else ''))} {q(mount_point)}")
        lines += [
            f"cd {q(str(self.root))}",  # re-enter the root: the inherited cwd still points at the mount below the bind
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
        return ["/bin/bash", "--noprofile", "--norc", "-c", "\n".join(lines), "sandbox", command]

    def _plan(self) -> _Plan:
        """The strongest launch plan that works here, probed once per (uid, network, readonly_outside)."""
        key = (os.geteuid(), self.network, self.readonly_outside, self.isolate)
        if key not in _PLAN_CACHE:
            candidates = _candidate_plans(self.network, self.readonly_outside)
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


def _candidate_plans(network: bool, readonly: bool) -> list[_Plan]:
    """Launch plans from strongest to weakest; the last one (plain bash) needs nothing but bash."""
    unshare = shutil.which("unshare", path=SYSTEM_PATH)
    setpriv = shutil.which("setpriv", path=SYSTEM_PATH) is not None
    mount = shutil.which("mount", path=SYSTEM_PATH) is not None
    root = os.geteuid() == 0
    plans = []
    if unshare is not None and (setpriv or not root):  # a root command keeping its capabilities could undo it all
        user = () if root else ("--user", "--map-root-user")
        net = () if network else ("--net",)
        pid = ("--pid", "--fork", "--kill-child", "--mount-proc")
        pid_max = _pid_max_is_namespaced(unshare, user)
        if readonly and mount:
            plans.append(
                _Plan((unshare, *user, *net, *pid, "--"), Isolation(not network, True, True, setpriv), pid_max)
            )
        plans.append(_Plan((unshare, *user, *net, *pid, "--"), Isolation(not network, True, False, setpriv), pid_max))
        if net:
            plans.append(_Plan((unshare, *user, *net, "--"), Isolation(True, False, False, setpriv), False))
    if setpriv:
        plans.append(_Plan((), Isolation(capabilities_dropped=True), False))
    return [*plans, _Plan((), Isolation(), False)]


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


def _mounts() -> list[tuple[str, list[str]]]:
    """(mount point, per-mount options) of every mount, from /proc/self/mountinfo (octal escapes decoded)."""
    mounts = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            mounts.append((os.fsdecode(point), fields[5].decode("ascii", errors="replace").split(",")))
    return mounts


def _is_within(path: str, root: Path) -> bool:
    return os.path.commonpath([path, str(root)]) == str(root)


def _pid_max_is_namespaced(unshare: str, user: tuple[str, ...]) -> bool:
    """Can a PID namespace set its own pid_max (Linux >= 6.14) without touching the host's? Older kernels have one
    global pid_max, which root could lower for the whole machine: so check the version, then check the effect with
    a harmless change (one less than the namespace's value) and put the host's value back if it ever moved."""
    if not _kernel_at_least(6, 14):
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


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (major, minor)
    except (ValueError, IndexError):
        return False


__all__ = ["CommandResult", "Isolation", "Sandbox", "SandboxPathError"]
