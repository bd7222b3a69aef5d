"""Build the files of one small repository: a module of helpers, a report module that uses some of them, a test
script, and a README.

Layouts: "flat" (`stock.py`, `report.py`, `test_stock.py` side by side) or "package" (`inventory/stock.py`,
`inventory/report.py`, `inventory/__init__.py`, with `test_stock.py` at the root). Tests are plain functions that a
`__main__` block calls in order, so `python test_stock.py` runs them (pytest would collect them too) and prints
`N tests passed`: its output is the same on every run, where unittest and pytest print timings.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, field

from nanocode.agents.tasks.functions import Family, make_records, py, subst
from nanocode.agents.tasks.vocab import REPORT_MODULES, Domain

MAX_FILE_LINES = 100  # everything fits one default Read (100 lines)


@dataclass
class Repo:
    domain: Domain
    layout: str
    module_path: str  # e.g. "stock.py" or "inventory/stock.py"
    report_path: str
    test_path: str
    import_module: str  # "stock" or "inventory.stock"
    families: list[Family]  # in file order
    files: dict[str, str] = field(default_factory=dict)

    @property
    def test_command(self) -> str:
        return f"python {self.test_path}"

    def line_of(self, path: str, text: str) -> int:
        """1-based line number of the first line of `path` containing `text`."""
        for i, line in enumerate(self.files[path].split("\n"), start=1):
            if text in line:
                return i
        raise KeyError(f"{text!r} not in {path}")

    def names(self) -> list[str]:
        """Public names of the module: constants, then functions."""
        consts = re.findall(r"^([A-Z][A-Z0-9_]*) = ", self.files[self.module_path], re.M)
        return consts + [f.fn(self.domain) for f in self.families]


def build_repo(
    d: Domain,
    rng: random.Random,
    families: list[Family],
    *,
    sources: dict[str, str] | None = None,
    report_families: list[Family] | None = None,
) -> Repo:
    """A repository over domain `d` with one function per family (`sources` overrides a family's source by key:
    a planted bug or a stub). `report_families` are the ones report.py uses (default: up to two with a summary)."""
    sources = sources or {}
    if d.module in sys.stdlib_module_names or d.repo in sys.stdlib_module_names:
        raise AssertionError(f"domain {d.repo}: module name shadows the standard library")
    layout = "package" if rng.random() < 0.35 else "flat"
    report = rng.choice(REPORT_MODULES)
    prefix = f"{d.repo}/" if layout == "package" else ""
    repo = Repo(
        domain=d,
        layout=layout,
        module_path=f"{prefix}{d.module}.py",
        report_path=f"{prefix}{report}.py",
        test_path=f"test_{d.module}.py",
        import_module=f"{d.repo}.{d.module}" if layout == "package" else d.module,
        families=list(families),
    )
    if report_families is None:
        usable = [f for f in families if f.summary is not None and f.key not in sources]
        report_families = rng.sample(usable, min(2, len(usable)))
    report_import = f"{d.repo}.{report}" if layout == "package" else report

    repo.files[repo.module_path] = _module(d, rng, families, sources)
    repo.files[repo.report_path] = _report(d, repo, report_families)
    repo.files[repo.test_path] = _tests(d, rng, repo, report_import, report_families)
    if layout == "package":
        repo.files[f"{d.repo}/__init__.py"] = f'"""The {d.repo} package."""\n'
    repo.files["README.md"] = (
        f"# {d.repo}\n\nsmall helpers for {d.ents}: `{repo.module_path}` has the functions and "
        f"`{repo.report_path}` builds one-line summaries.\n\nrun the tests with `{repo.test_command}`.\n"
    )
    for path, text in repo.files.items():
        if text.count("\n") >= MAX_FILE_LINES:
            raise AssertionError(f"{path} has {text.count(chr(10))} lines; a default Read shows {MAX_FILE_LINES}")
    return repo


_MODULE_DOCS = (
    "Helpers for working with {ents}.",
    "Small functions over lists of {ents}.",
    "{ent} records: totals, lookups and friends.",
    "Utilities for the {repo} {ents}.",
)


def _module(d: Domain, rng: random.Random, families: list[Family], sources: dict[str, str]) -> str:
    doc = rng.choice(_MODULE_DOCS).format(ents=d.ents, ent=d.ent, repo=d.repo)
    head = f'"""{doc[0].upper()}{doc[1:]}"""\n'
    constants = "".join(subst(f.constants, d) for f in families if f.constants)
    bodies = [sources.get(f.key, f.source(d)) for f in families]
    return head + (f"\n{constants}" if constants else "") + "\n\n" + "\n\n".join(bodies)


def _report(d: Domain, repo: Repo, families: list[Family]) -> str:
    parts = [subst(f.summary, d) for f in families if f.summary]
    used = sorted(n for n in repo.names() if any(re.search(rf"\b{n}\b", p) for p in parts))
    lines = [f'"""One-line summaries of {d.ents}."""', ""]
    if used:
        lines += [f"from {repo.import_module} import {', '.join(used)}", ""]
    lines += ["", f"def summarize({d.ents}):", f'    """A one-line summary of the {d.ents}."""', "    parts = ["]
    lines += [f"        {p}," for p in parts] or ['        f"{len(' + d.ents + ")} " + d.ents + '",']
    lines += ["    ]", '    return "; ".join(parts)', ""]
    return "\n".join(lines)


def _tests(d: Domain, rng: random.Random, repo: Repo, report_import: str, report_families: list[Family]) -> str:
    fns = [f.fn(d) for f in repo.families]
    needed = sorted(set(fns))
    lines = [f"from {repo.import_module} import {', '.join(needed)}", f"from {report_import} import summarize", ""]
    names = []
    for f in repo.families:
        name = f"test_{f.fn(d)}"
        names.append(name)
        lines += ["", f"def {name}():"]
        for call, expected in f.cases(d, rng):
            lines.append(f"    {statement(call, expected)}")
        lines.append("")
    sample = make_records(d, rng, 2)
    lines += ["", "def test_summarize():", f"    assert isinstance(summarize({py(sample)}), str)", ""]
    names.append("test_summarize")
    lines += ["", 'if __name__ == "__main__":']
    lines += [f"    {n}()" for n in names]
    lines += [f'    print("{len(names)} tests passed")', ""]
    return _wrap_long_records("\n".join(lines))


def _wrap_long_records(text: str) -> str:
    """Put each record of a long `xs = [{...}, {...}]` assignment on its own line, as a formatter would."""
    out = []
    for line in text.split("\n"):
        m = re.fullmatch(r"(    \w+ = )\[(\{.*\})\]", line)
        if m and len(line) > 100:
            out.append(m.group(1) + "[")
            out += [f"        {{{rec}}}," for rec in m.group(2)[1:-1].split("}, {")]
            out.append("    ]")
        else:
            out.append(line)
    return "\n".join(out)


def statement(call: str, expected: str) -> str:
    """A test line: an assignment when nothing is expected, else an assert (`is` for None, as linters want)."""
    if expected == "":
        return call
    return f"assert {call} is None" if expected == "None" else f"assert {call} == {expected}"
