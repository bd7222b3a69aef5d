"""The registry with nanocode's built-in components loaded: the plain-Python entry point (no gin needed).

    >>> import nanocode.registry as registry
    >>> registry.get("preference_objective", "ipo")

Built-ins are found by importing every module of the component packages once, so a new component file only needs
its `@register` decorator — there is no list to keep in sync.
"""

from __future__ import annotations

import importlib
import pkgutil

from nanocode.core import registry as _core
from nanocode.core.registry import (  # noqa: F401  (re-exported API)
    DuplicateNameError,
    Registry,
    UnknownNameError,
    kinds,
    new_kind,
    register,
)

COMPONENT_PACKAGES = (
    "nanocode.data",
    "nanocode.models",
    "nanocode.optim",
    "nanocode.align",
    "nanocode.agents",
    "nanocode.train",
    "nanocode.evals",
)
# Components that live in `core` itself (imported by name: the rest of core is not a component package).
CORE_COMPONENT_MODULES = ("nanocode.core.mesh",)
_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for module_name in CORE_COMPONENT_MODULES:
        importlib.import_module(module_name)
    for package_name in COMPONENT_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as e:
            if e.name == package_name:
                continue  # a package that does not exist yet in this checkout
            raise
        for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
            importlib.import_module(info.name)
    _loaded = True


def kind(name: str) -> Registry:
    load_builtins()
    return _core.kind(name)


def get(kind_name: str, name: str):
    load_builtins()
    return _core.get(kind_name, name)


def names(kind_name: str) -> list[str]:
    load_builtins()
    return _core.names(kind_name)
