"""nanocode installed from its wheel, without a clone: the wheel carries experiments/ and SOUL.md, and the CLI finds
them from any working directory.

The slow test builds the wheel offline (setuptools from the dev extra, no build isolation), installs it with
--no-deps into a fresh venv outside the clone that sees this venv's dependencies through .pth path lines (plain
paths: the .pth files in those directories, the editable install's finder among them, are not run), and from another
directory runs `nanocode config` and the debug experiment's tokenizer stage on a small slice of the embedded corpus.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "experiments/debug_cpu.gin"
# The tokenizer stage on ~200 documents of each embedded source: seconds instead of minutes.
SMALL = [
    "embedded_code.max_docs = 200",
    "embedded_prose.max_docs = 200",
    "TokenizerTraining.max_chars = 300_000",
]


def test_pyproject_lists_every_package():
    """pyproject.toml lists the packages (it maps nanocode.resources, so it cannot `find` them): a package under
    nanocode/ missing from the list would be missing from the wheel while an editable install still works."""
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "nanocode").rglob("*.py")}
    assert sorted(on_disk - declared) == [], "add these to [tool.setuptools] packages in pyproject.toml"
    assert sorted(declared - on_disk) == ["nanocode.resources"]


def _ignore(directory: str, names: list[str]) -> set[str]:
    top = Path(directory) == REPO
    return {
        n
        for n in names
        if n in ("__pycache__", "build", "dist") or n.endswith(".egg-info") or (top and n.startswith("."))
    }


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path, Path]:
    """(the fresh venv's bin directory, its environment, a working directory outside the clone, the wheel)."""
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env["NANOCODE_BASE_DIR"] = str(root / "workspace")
    env.pop("NANOCODE_GIN_PATH", None)

    # Build from a copy, so the clone gets no build/ or egg-info and concurrent runs do not share one.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_ignore)
    wheels = root / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        source,
        env,
    )
    (wheel,) = wheels.glob("nanocode-*.whl")

    venv_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], root, env)
    bin_dir = venv_dir / "bin"
    fresh = Path(
        _run(
            [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env
        ).stdout.strip()
    )
    # Every directory this interpreter imports from (its site-packages and what .pth files add to it), but none that
    # holds a nanocode package (the clone, which pytest puts on sys.path): only the wheel may provide nanocode.
    deps = [p for p in dict.fromkeys(sys.path) if p and Path(p).is_dir() and not (Path(p) / "nanocode").exists()]
    (fresh / "_nanocode_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    pip = [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-deps", "--no-index"]
    _run([*pip, "-q", str(wheel)], root, env)

    elsewhere = root / "elsewhere"  # no experiments/ and no SOUL.md here: they must come from the wheel
    elsewhere.mkdir()
    return bin_dir, env, elsewhere, wheel


@pytest.mark.slow
def test_wheel_ships_every_experiment_and_soul(installed):
    *_, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    resources = {n.removeprefix("nanocode/resources/") for n in names if n.startswith("nanocode/resources/")}
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "experiments").rglob("*.gin")} | {"SOUL.md"}
    assert resources == expected
    code = {p.relative_to(REPO).as_posix() for p in (REPO / "nanocode").rglob("*.py")}
    assert sorted(code - names) == []


@pytest.mark.slow
def test_installed_nanocode_runs_without_a_clone(installed):
    bin_dir, env, elsewhere, _ = installed
    python = str(bin_dir / "python")

    where = _run([python, "-c", "import nanocode; print(nanocode.__file__)"], elsewhere, env).stdout.strip()
    assert Path(where).is_relative_to(bin_dir.parent), f"imported {where}, not the wheel's nanocode"

    shown = _run([str(bin_dir / "nanocode"), "config", "--gin_file", EXPERIMENT], elsewhere, env).stdout
    assert "8192" in shown  # the debug tokenizer's vocabulary, from experiments/base/tokenizer/debug.gin

    soul = (
        "from nanocode import registry; from nanocode.core import config; registry.load_builtins(); "
        "c = registry.get('constitution', 'soul_md')(); "
        "print(c.path.relative_to(config.packaged_resources()), len(c.principles()))"
    )
    path, count = _run([python, "-c", soul], elsewhere, env).stdout.split()
    assert path == "SOUL.md" and int(count) >= 3

    params = [a for p in SMALL for a in ("--gin_param", p)]
    tok_train = [str(bin_dir / "nanocode"), "tok-train", "--prepare", "--quiet", "--gin_file", EXPERIMENT, *params]
    _run(tok_train, elsewhere, env)
    tokenizers = list(Path(env["NANOCODE_BASE_DIR"]).glob("*/tokenizer/tokenizer.json"))
    assert len(tokenizers) == 1 and (tokenizers[0].parent / "token_bytes.npy").is_file()
    assert not (elsewhere / "experiments").exists()
