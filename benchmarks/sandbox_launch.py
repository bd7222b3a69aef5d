"""Launch overhead of one sandboxed command: the median wall time of `true`, per way of isolating it.

Rows: nanocode's Sandbox.run in its strongest mode (private root by the jail, network and PID namespaces, control
group), the same Sandbox without namespaces, the bare launchers without the supervisor (util-linux unshare + the jail
and bubblewrap, given the same policy), and, with --before FILE, the Sandbox of an earlier sandbox.py (read-only
remounts of every host mount instead of a private root).

    .venv/bin/python benchmarks/sandbox_launch.py --runs 20 [--before /tmp/sandbox_orig.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nanocode.agents.isolation import candidate_plans
from nanocode.agents.sandbox import JAIL, Sandbox


def median_ms(fn, runs: int) -> float:
    fn()  # warm: probes and caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bwrap_argv(sandbox: Sandbox) -> list[str]:
    """bubblewrap with the jail's policy: the same read-only binds, tmpfs, minimal /dev, fresh /proc, no network."""
    argv = ["bwrap", "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    plan = candidate_plans(network=False)[0]
    for step in sandbox._jail_steps(plan):
        kind, dest = step[0], step[1]
        if kind == "bind" and os.path.islink(step[2]):
            argv += ["--symlink", os.readlink(step[2]), dest]
        elif kind == "bind" and dest.startswith("/dev/"):
            continue  # --dev below makes the same minimal /dev
        elif kind == "bind":
            argv += ["--ro-bind" if step[3] == "ro" else "--bind", step[2], dest]
        elif kind == "tmpfs" and dest == "/dev":
            argv += ["--dev", "/dev"]
        elif kind == "tmpfs" and dest != "/dev/shm":
            argv += ["--size", str(step[2]), "--tmpfs", dest]
        elif kind == "proc":
            argv += ["--proc", dest]
        elif kind == "dir":
            argv += ["--dir", dest]
    return [*argv, "--chdir", str(sandbox.root), "--", "/bin/true"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--before", help="an earlier sandbox.py to measure beside this one")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as root:
        (Path(root) / ".git").mkdir()
        with Sandbox(root) as sb:
            print("isolation:", sb.isolation.describe())
            rows.append(("Sandbox.run, private root (this sandbox)", median_ms(lambda: sb.run("true"), args.runs)))
            plan = candidate_plans(network=False)[0]
            steps = [word for step in sb._jail_steps(plan) for word in step]
            jail = [*plan.prefix, sys.executable, "-I", "-S", str(JAIL), str(sb.home), root, *steps, "--", "/bin/true"]
            rows.append(("unshare + jail.py, bare", median_ms(lambda: subprocess.run(jail, check=True), args.runs)))
            if shutil.which("bwrap"):
                bwrap = bwrap_argv(sb)
                rows.append(
                    ("bwrap, same policy, bare", median_ms(lambda: subprocess.run(bwrap, check=True), args.runs))
                )
        with Sandbox(root, isolate=False, allow_unisolated=True) as sb:
            rows.append(("Sandbox.run, no namespaces", median_ms(lambda: sb.run("true"), args.runs)))
        if args.before:
            spec = importlib.util.spec_from_file_location("sandbox_before", args.before)
            before = sys.modules["sandbox_before"] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(before)
            with before.Sandbox(root) as sb:
                rows.append(("Sandbox.run, before (read-only remounts)", median_ms(lambda: sb.run("true"), args.runs)))
    print(f"\n| launcher | median ms per `true` ({args.runs} runs) |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
