"""Named registries of components, one per kind.

A component (a tokenizer class, a data mixture, a preference objective...) is registered under a name with a
decorator. The registry is plain Python: `get("preference_objective", "ipo")` works in a notebook without gin.
Every registration is also mirrored into gin as `nanocode.<kind>.<name>` (short form `<name>` when unambiguous),
with `gin.register`, which leaves the class untouched so research forks can subclass it safely.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import gin

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that no component of that kind was registered under."""

    def __str__(self) -> str:  # KeyError quotes its message; we want a plain sentence
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """Raised when a name is registered twice without replace=True."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any

    @property
    def doc(self) -> str:
        """First line of the component's docstring, for `nanocode list`."""
        doc = (getattr(self.obj, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else "(no description)"

    @property
    def source(self) -> str:
        return f"{getattr(self.obj, '__module__', '?')}.{getattr(self.obj, '__qualname__', self.name)}"


class Registry:
    """The components of one kind, by name. `base` is the interface every entry must implement (or None)."""

    def __init__(self, kind: str, base: type | None = None, doc: str = ""):
        self.kind = kind
        self.base = base
        self.doc = doc
        self._entries: dict[str, Entry] = {}

    # -- registration ---------------------------------------------------------------------------------------------
    def register(self, name: str | None = None, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("gpt")`. A name defaults to the object's lowercase __name__."""

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__.lower(), obj, replace=replace)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, replace: bool = False) -> None:
        if not name.isidentifier():
            raise ValueError(f"{self.kind} name {name!r} is not a valid identifier (gin needs one)")
        if self.base is not None and isinstance(obj, type) and not issubclass(obj, self.base):
            raise TypeError(f"{self.kind} {name!r}: {obj.__qualname__} does not subclass {self.base.__qualname__}")
        old = self._entries.get(name)
        if old is not None and old.obj is not obj and not replace:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered by {old.source}; pass replace=True to shadow it"
            )
        self._entries[name] = Entry(self.kind, name, obj)
        _gin_register(self.kind, name, obj)

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)
        _gin_unregister(self.kind, name)

    # -- lookup ---------------------------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(known) or 'none'})"

    @contextlib.contextmanager
    def temporary(self, name: str, obj: Any) -> Iterator[Any]:
        """Register `obj` for the duration of a `with` block (tests), restoring whatever was there before."""
        previous = self._entries.get(name)
        self.add(name, obj, replace=True)
        try:
            yield obj
        finally:
            self.remove(name)
            if previous is not None:
                self.add(name, previous.obj)


_REGISTRIES: dict[str, Registry] = {}


def new_kind(kind: str, base: type | None = None, doc: str = "") -> Registry:
    """Create the registry for a component kind (done once, in nanocode.core.kinds)."""
    if kind in _REGISTRIES:
        raise DuplicateNameError(f"component kind {kind!r} already exists")
    _REGISTRIES[kind] = Registry(kind, base, doc)
    return _REGISTRIES[kind]


def kind(name: str) -> Registry:
    try:
        return _REGISTRIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown component kind {name!r}{hint} (kinds: {', '.join(kinds())})") from None


def kinds() -> list[str]:
    return sorted(_REGISTRIES)


def register(kind_name: str, name: str | None = None, *, replace: bool = False) -> Callable[[T], T]:
    """`@register("preference_objective", "my_loss")` — the decorator plugins use."""
    return kind(kind_name).register(name, replace=replace)


def get(kind_name: str, name: str) -> Any:
    return kind(kind_name).get(name)


def names(kind_name: str) -> list[str]:
    return kind(kind_name).names()


def register_config(obj: T, name: str | None = None, module: str = "nanocode") -> T:
    """Expose a top-level experiment dataclass (or function) to gin as `nanocode.<Name>`, leaving it untouched.

    Safe at any time, also after a config was finalized (a plugin imported late), unlike a bare gin.register.
    """
    with gin.unlock_config():
        gin.register(name or obj.__name__, module=module)(obj)
    return obj


# -- the gin mirror -------------------------------------------------------------------------------------------------
def _gin_module(kind_name: str) -> str:
    return f"nanocode.{kind_name}"


def _gin_register(kind_name: str, name: str, obj: Any) -> None:
    _gin_unregister(kind_name, name)  # replace=True already passed the registry's own check
    with gin.unlock_config():
        gin.register(name, module=_gin_module(kind_name))(obj)


def _gin_unregister(kind_name: str, name: str) -> None:
    selector = f"{_gin_module(kind_name)}.{name}"
    registry = gin.config._REGISTRY  # gin 0.5.0 has no public unregister
    if selector in registry:
        info = registry.pop(selector)
        if gin.config._INVERSE_REGISTRY.get(info.wrapped) is info:
            del gin.config._INVERSE_REGISTRY[info.wrapped]
