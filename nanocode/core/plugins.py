"""Plugin loading: a plugin is a module whose import registers components. No nanocode file changes.

Three ways in, all ending in an import: an `import my.module` line in a gin file (gin imports it while parsing),
the repeatable `--plugin=my.module` flag, and the `nanocode.plugins` entry-point group of installed packages.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from nanocode.core.errors import ConfigError

ENTRY_POINT_GROUP = "nanocode.plugins"


def import_plugin(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as e:  # any failure in a plugin's import is the plugin's, reported in one line
        raise ConfigError(f"plugin {module!r} failed to import: {type(e).__name__}: {e}") from e


def load_entry_point_plugins() -> list[str]:
    """Import every module registered under the `nanocode.plugins` entry-point group; returns their names."""
    loaded = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise ConfigError(
                f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}"
            ) from e
        loaded.append(ep.value)
    return loaded


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    load_entry_point_plugins()
    for m in modules:
        import_plugin(m)
