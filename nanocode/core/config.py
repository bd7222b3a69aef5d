"""Gin wiring: search paths, parsing with one-line errors, and the resolved config written into every run.

Gin only wires. Components are plain classes registered by name (nanocode.core.registry); each stage has one
top-level configurable (its experiment dataclass) that the CLI builds right after parsing, so every unknown name,
typo or missing value fails before any compute. Nothing gin-wrapped reaches jitted code.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import gin

from nanocode.core.errors import ConfigError
from nanocode.core.io import write_text
from nanocode.core.plugins import load_plugins


class _QuietGinPathProbe(logging.Filter):
    """gin logs an ERROR for every search path that does not hold an included file while it probes them in
    order; finding the file in a later path is normal, so drop those lines (a file found nowhere still errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith("resource_reader.py") and str(record.msg).startswith("Path not found"))


logging.getLogger().addFilter(_QuietGinPathProbe())
for _handler in logging.getLogger().handlers:
    _handler.addFilter(_QuietGinPathProbe())


def repo_root() -> Path:
    """The checkout that holds `experiments/` (the parent of the `nanocode` package); only a clone has one."""
    return Path(__file__).resolve().parents[2]


def packaged_resources() -> Path:
    """Where an installed wheel keeps its copies of `experiments/` and `SOUL.md`, in the clone's layout: the
    `nanocode.resources` data package (pyproject.toml maps it to the repo root). A clone has no such directory."""
    return Path(__file__).resolve().parents[1] / "resources"


def resource_root() -> Path:
    """The directory holding `experiments/` and `SOUL.md`: the wheel's packaged copies when installed from one,
    else the clone (an editable install or a bare checkout reads them in place)."""
    packaged = packaged_resources()
    return packaged if packaged.is_dir() else repo_root()


def search_paths() -> list[Path]:
    """Where `include '...'` and --gin_file look: cwd, the clone or the installed package's resources
    (resource_root), then $NANOCODE_GIN_PATH (os.pathsep list)."""
    paths = [Path.cwd(), resource_root()]
    paths += [Path(p) for p in os.environ.get("NANOCODE_GIN_PATH", "").split(os.pathsep) if p]
    return paths


def find_gin_file(name: str) -> Path:
    p = Path(name).expanduser()
    if p.is_absolute():
        if p.is_file():
            return p
    else:
        for root in search_paths():
            if (root / p).is_file():
                return (root / p).resolve()
    raise ConfigError(f"gin file {name!r} not found (searched: {', '.join(str(r) for r in search_paths())})")


_GIN_LOCATION = re.compile(r'In file "([^"]+)", line (\d+)')


_MISSING_MACRO = re.compile(r"No bindings specified for '([\w.]+)/gin\.macro'")


def one_line(exc: BaseException) -> str:
    """Squash a gin exception (which spans lines and points at the file) into one line: file:line: reason."""
    text = str(exc)
    macro = _MISSING_MACRO.search(text)
    if macro:  # a file that expects a macro from another file given before it
        return (
            f"macro %{macro.group(1)} is used but never bound: add the gin file that defines it "
            f'or --gin_param "{macro.group(1)} = ..."'
        )
    where = _GIN_LOCATION.search(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason_lines = [ln for ln in lines if not _GIN_LOCATION.search(ln) and not ln.startswith("^")]
    reason = reason_lines[0] if reason_lines else type(exc).__name__
    # gin appends the offending source line after the location; keep it as the binding when present
    binding = ""
    if where:
        after = text[where.end() :].strip().splitlines()
        binding = after[0].strip() if after and not after[0].strip().startswith("^") else ""
    reason = reason.rstrip(".")
    prefix = f"{where.group(1)}:{where.group(2)}: " if where else ""
    suffix = f" [{binding}]" if binding and binding not in reason else ""
    return f"{prefix}{type(exc).__name__}: {reason}{suffix}"


def parse(
    gin_files: Sequence[str] = (), gin_params: Sequence[str] = (), plugins: Sequence[str] = (), *, finalize: bool = True
) -> None:
    """Load plugins, then parse gin files and bindings (later ones win). Raises ConfigError in one line."""
    load_plugins(tuple(plugins))
    gin.clear_config()
    for root in search_paths():
        if str(root) not in gin.config._LOCATION_PREFIXES:  # gin keeps a global list; add each once
            gin.add_config_file_search_path(str(root))
    files = [str(find_gin_file(f)) for f in gin_files]
    where = ""
    try:
        for f in files:  # one at a time, so an error gin reports without a location still names its file
            where = f
            gin.parse_config_file(f)
        where = "--gin_param"
        gin.parse_config(list(gin_params))
        where = ""
        if finalize:
            gin.finalize()
    except ConfigError:
        raise
    except Exception as e:  # gin raises ValueError/KeyError/ImportError/SyntaxError with file and line inside
        message = one_line(e)
        if where and not _GIN_LOCATION.search(str(e)):
            message = f"{where}: {message}"
        raise ConfigError(message) from e


_MISSING_ARGUMENTS = re.compile(
    r"(\w+)\.__init__\(\) missing \d+ required (?:keyword-only |positional )?arguments?: (.+)"
)


def unbound(exc: BaseException) -> str | None:
    """'SFTTraining.batch_size is not bound' for the TypeError a configurable built with a binding missing raises."""
    match = _MISSING_ARGUMENTS.search(str(exc).splitlines()[0]) if isinstance(exc, TypeError) else None
    if match is None:
        return None
    names = [f"{match.group(1)}.{n}" for n in re.findall(r"'(\w+)'", match.group(2))]
    return f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} not bound"


def build(configurable: type | object, what: str = ""):
    """Call a top-level configurable (an experiment dataclass) with its gin bindings, errors in one line."""
    fn = gin.get_configurable(configurable)
    try:
        return fn()
    except ConfigError as e:  # gin appends "In call to configurable ..." lines: keep the one-line reason
        raise ConfigError(str(e).splitlines()[0]) from e
    except Exception as e:
        missing = unbound(e)
        if missing:
            raise ConfigError(missing) from e
        name = what or getattr(configurable, "__name__", str(configurable))
        raise ConfigError(f"building {name}: {one_line(e)}") from e


def config_str() -> str:
    """Every binding that was parsed (the resolved config of the experiment)."""
    return gin.config_str()


def write_config(run_dir: str | Path) -> Path:
    """Write the resolved config as `config.gin` into a run directory (atomically); returns its path."""
    path = Path(run_dir) / "config.gin"
    write_text(path, config_str())
    return path
