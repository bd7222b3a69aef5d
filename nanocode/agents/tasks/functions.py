"""Function families: small helpers over records, with their tests.

A `Family` is a template for one function over a `Domain` (`total_$num($ents)` becomes `total_quantity(items)`):
its source, docstring, test cases (the expected values are computed here in Python, so tests are right by
construction), hidden cases, names it may be renamed to, and a line for the report module. The bugs a task can
plant in them are in nanocode.agents.tasks.bugs.

Families are split in two disjoint sets: TRAIN_FAMILIES (here) appear only in training repositories and EVAL_FAMILIES
(nanocode.agents.tasks.heldout_functions) only in held-out eval repositories (as targets and as distractors), so the
eval asks for code the model never saw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Any

from nanocode.agents.tasks.vocab import WORDS, Domain

Record = dict[str, Any]
Cases = list[tuple[str, str]]  # (call source, expected value source)


def py(value: Any) -> str:
    """A Python literal in the house style (double-quoted strings, as black writes them)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py(k)}: {py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(py(v) for v in value) + "]"
    return repr(value)


class Raw(str):
    """Source text to embed as is (e.g. `items[2]`), not as a string literal."""


def subst(text: str, d: Domain) -> str:
    """Fill `$ent`, `$a_ent` ("an item"), `$ents`, `$num`, `$label`, `$NUM`, `$low`, `$high` from the domain."""
    a_ent = f"{'an' if d.ent[0] in 'aeiou' else 'a'} {d.ent}"
    return Template(text).substitute(
        ent=d.ent, a_ent=a_ent, ents=d.ents, num=d.num, label=d.label, NUM=d.num.upper(), low=d.low, high=d.high
    )


def make_records(d: Domain, rng: random.Random, n: int | None = None) -> list[Record]:
    """n records with distinct labels and distinct positive values."""
    n = n or rng.randint(3, 5)
    labels = rng.sample(WORDS, n)
    values = rng.sample(range(max(d.low, 1), d.high + 1), n)
    return [{d.label: lab, d.num: v} for lab, v in zip(labels, values)]


@dataclass(frozen=True)
class Family:
    key: str
    name: str  # function name template
    params: str
    doc: str
    body: str  # indented by 4, may span lines
    cases: Callable[[Domain, random.Random], Cases]
    hidden: Callable[[Domain, random.Random], Cases]
    aliases: tuple[str, ...]  # names a rename task may give it
    summary: str | None  # an f-string fragment for report.summarize (None: not used there)
    how: str  # what an implementation does, for the final message of an implement task
    constants: str = ""  # module-level lines the function relies on

    def fn(self, d: Domain) -> str:
        return subst(self.name, d)

    def signature(self, d: Domain) -> str:
        return f"def {self.fn(d)}({subst(self.params, d)}):"

    def docstring(self, d: Domain) -> str:
        return f'    """{subst(self.doc, d)}"""'

    def source(self, d: Domain) -> str:
        return f"{self.signature(d)}\n{self.docstring(d)}\n{self.code(d)}\n"

    def code(self, d: Domain) -> str:
        """The body, indented as inside the function (the literal starts with a newline for readability)."""
        return subst(self.body.lstrip("\n"), d)

    def stub(self, d: Domain) -> str:
        return f"{self.signature(d)}\n{self.docstring(d)}\n    raise NotImplementedError\n"


def records_var(d: Domain, records: list[Record]) -> str:
    return f"{d.ents} = {py(records)}"


# -- training families --------------------------------------------------------------------------------------------
def _total_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng)
    return [
        (records_var(d, rs), ""),
        (f"total_{d.num}({d.ents})", py(sum(r[d.num] for r in rs))),
        (f"total_{d.num}([])", "0"),
    ]


def _total_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 2)
    return [
        (f"total_{d.num}({py(rs)})", py(sum(r[d.num] for r in rs))),
        (f"total_{d.num}({py(rs[:1])})", py(rs[0][d.num])),
    ]


def _count_over_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 5)
    limit = sorted(r[d.num] for r in rs)[2]  # one record sits exactly at the limit: `>=` would count it
    fn = f"count_{d.ents}_over"
    return [
        (records_var(d, rs), ""),
        (f"{fn}({d.ents}, {limit})", py(sum(r[d.num] > limit for r in rs))),
        (f"{fn}([], {limit})", "0"),
    ]


def _count_over_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    top = max(r[d.num] for r in rs)
    fn = f"count_{d.ents}_over"
    return [(f"{fn}({py(rs)}, {top})", "0"), (f"{fn}({py(rs)}, 0)", py(len(rs)))]


def _find_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    i = rng.randint(1, len(rs) - 1)  # not the first record: a loop that gives up early misses it
    fn = f"find_{d.ent}"
    return [
        (records_var(d, rs), ""),
        (f"{fn}({d.ents}, {py(rs[i][d.label])})", f"{d.ents}[{i}]"),
        (f'{fn}({d.ents}, "missing")', "None"),
    ]


def _find_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 3)
    fn = f"find_{d.ent}"
    return [(f"{fn}({py(rs)}, {py(rs[-1][d.label])})", py(rs[-1])), (f'{fn}([], "x")', "None")]


def _largest_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    i = max(range(len(rs)), key=lambda k: rs[k][d.num])
    return [
        (records_var(d, rs), ""),
        (f"largest_{d.ent}({d.ents})", f"{d.ents}[{i}]"),
        (f"largest_{d.ent}([])", "None"),
    ]


def _largest_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 3)
    return [
        (f"largest_{d.ent}({py(rs)})", py(max(rs, key=lambda r: r[d.num]))),
        (f"largest_{d.ent}({py(rs[:1])})", py(rs[0])),
    ]


def _share(r: Record, rs: list[Record], d: Domain) -> float:
    total = sum(x[d.num] for x in rs)
    return round(100 * r[d.num] / total, 1) if total else 0.0


def _share_cases(d: Domain, rng: random.Random) -> Cases:
    while True:  # a share whose exact and floor-divided percentages differ, so `//` fails the test
        rs = make_records(d, rng, 3)
        total = sum(r[d.num] for r in rs)
        if _share(rs[0], rs, d) != round(100 * rs[0][d.num] // total, 1):
            break
    fn = f"{d.num}_share"
    return [
        (records_var(d, rs), ""),
        (f"{fn}({d.ents}[0], {d.ents})", py(_share(rs[0], rs, d))),
        (f"{fn}({d.ents}[0], [])", "0.0"),
    ]


def _share_hidden(d: Domain, rng: random.Random) -> Cases:
    while True:
        rs = make_records(d, rng, 4)
        if _share(rs[1], rs, d) != round(100 * rs[1][d.num] // sum(r[d.num] for r in rs), 1):
            break
    return [(f"{d.num}_share({py(rs[1])}, {py(rs)})", py(_share(rs[1], rs, d)))]


def _clean_cases(d: Domain, rng: random.Random) -> Cases:
    a, b = rng.sample(WORDS, 2)
    fn = f"clean_{d.label}"
    return [(f"{fn}({py('  ' + a.title() + ' ')})", py(a)), (f"{fn}({py(b.upper())})", py(b))]


def _clean_hidden(d: Domain, rng: random.Random) -> Cases:
    a = rng.choice(WORDS)
    return [(f"clean_{d.label}({py(chr(9) + a.capitalize() + chr(10))})", py(a))]


def _average_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    return [
        (records_var(d, rs), ""),
        (f"average_{d.num}({d.ents})", py(sum(r[d.num] for r in rs) / len(rs))),
        (f"average_{d.num}([])", "0.0"),
    ]


def _average_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 3)
    return [(f"average_{d.num}({py(rs)})", py(sum(r[d.num] for r in rs) / len(rs)))]


def _paginate_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 5)
    size = rng.choice((2, 3))
    pages = [rs[i : i + size] for i in range(0, len(rs), size)]
    return [(records_var(d, rs), ""), (f"paginate({d.ents}, {size})", py(pages)), ("paginate([], 3)", "[]")]


def _paginate_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    return [(f"paginate({py(rs)}, 4)", py([rs])), (f"len(paginate({py(rs)}, 1))", "4")]


TOTAL = Family(
    key="total",
    name="total_$num",
    params="$ents",
    doc="Sum of the $num of all $ents.",
    body="""
    total = 0
    for $ent in $ents:
        total += $ent["$num"]
    return total""",
    cases=_total_cases,
    hidden=_total_hidden,
    aliases=("sum_$num", "${num}_total", "compute_total_$num"),
    summary='f"total $num {total_$num($ents)}"',
    how="it adds up the $num of every $ent, starting from 0",
)
COUNT_OVER = Family(
    key="count_over",
    name="count_${ents}_over",
    params="$ents, limit",
    doc="How many $ents have their $num strictly above limit.",
    body="""
    count = 0
    for $ent in $ents:
        if $ent["$num"] > limit:
            count += 1
    return count""",
    cases=_count_over_cases,
    hidden=_count_over_hidden,
    aliases=("count_above_limit", "num_${ents}_over", "${ents}_over_limit"),
    summary='f"over {${NUM}_THRESHOLD}: {count_${ents}_over($ents, ${NUM}_THRESHOLD)}"',
    how="it counts the $ents whose $num is strictly above the limit",
    constants="${NUM}_THRESHOLD = $high\n",  # the report's limit: an upper-case name a rename can copy
)
FIND = Family(
    key="find",
    name="find_$ent",
    params="$ents, $label",
    doc="The first $ent whose $label matches, or None when there is none.",
    body="""
    for $ent in $ents:
        if $ent["$label"] == $label:
            return $ent
    return None""",
    cases=_find_cases,
    hidden=_find_hidden,
    aliases=("lookup_$ent", "get_$ent", "${ent}_by_$label"),
    summary=None,
    how="it walks the $ents and returns the first one whose $label matches, else `None`",
)
LARGEST = Family(
    key="largest",
    name="largest_$ent",
    params="$ents",
    doc="The $ent with the highest $num, or None when there are no $ents.",
    body="""
    best = None
    for $ent in $ents:
        if best is None or $ent["$num"] > best["$num"]:
            best = $ent
    return best""",
    cases=_largest_cases,
    hidden=_largest_hidden,
    aliases=("biggest_$ent", "max_$ent", "top_$ent"),
    summary='f"largest {largest_$ent($ents)}"',
    how="it keeps the $ent with the highest $num seen so far",
)
SHARE = Family(
    key="share",
    name="${num}_share",
    params="$ent, $ents",
    doc="Percentage (0-100) of the total $num held by this $ent, rounded to one decimal.",
    body="""
    total = sum(other["$num"] for other in $ents)
    if total == 0:
        return 0.0
    return round(100 * $ent["$num"] / total, 1)""",
    cases=_share_cases,
    hidden=_share_hidden,
    aliases=("${num}_percent", "percent_of_$num", "${ent}_share"),
    summary=None,
    how="it divides the $ent's $num by the total and rounds the percentage to one decimal",
)
CLEAN = Family(
    key="clean",
    name="clean_$label",
    params="text",
    doc="The $label with surrounding whitespace removed, in lowercase.",
    body="""
    return text.strip().lower()""",
    cases=_clean_cases,
    hidden=_clean_hidden,
    aliases=("normalize_$label", "tidy_$label", "${label}_key"),
    summary='", ".join(clean_$label($ent["$label"]) for $ent in $ents)',
    how="it strips the whitespace and lowercases the text",
)
AVERAGE = Family(
    key="average",
    name="average_$num",
    params="$ents",
    doc="Mean $num of the $ents, or 0.0 when there are none.",
    body="""
    if not $ents:
        return 0.0
    return sum($ent["$num"] for $ent in $ents) / len($ents)""",
    cases=_average_cases,
    hidden=_average_hidden,
    aliases=("mean_$num", "${num}_average", "avg_$num"),
    summary='f"average $num {average_$num($ents)}"',
    how="it returns 0.0 for no $ents, otherwise the sum divided by the count",
)
PAGINATE = Family(
    key="paginate",
    name="paginate",
    params="$ents, per_page",
    doc="Split the $ents into pages of at most per_page each, in order.",
    body="""
    return [$ents[i : i + per_page] for i in range(0, len($ents), per_page)]""",
    cases=_paginate_cases,
    hidden=_paginate_hidden,
    aliases=("split_pages", "chunk_$ents", "page_$ents"),
    summary='f"pages {len(paginate($ents, 10))}"',
    how="it slices the list every per_page $ents with a stepped range",
)


TRAIN_FAMILIES: dict[str, Family] = {
    f.key: f for f in (TOTAL, COUNT_OVER, FIND, LARGEST, SHARE, CLEAN, AVERAGE, PAGINATE)
}
