"""The held-out function families: they appear only in eval repositories (as targets and as distractors), never in
training ones, so the agentic eval asks for code the model never saw. The framework (`Family`, cases, records) and
the training families are in nanocode.agents.tasks.functions.
"""

from __future__ import annotations

import random

from nanocode.agents.tasks.functions import Cases, Family, make_records, py, records_var
from nanocode.agents.tasks.vocab import WORDS, Domain


def _valid_cases(d: Domain, rng: random.Random) -> Cases:
    fn = f"is_valid_{d.num}"
    mid = rng.randint(d.low + 1, d.high - 1)
    return [
        (f"{fn}({mid})", "True"),
        (f"{fn}({d.high})", "True"),
        (f"{fn}({d.low})", "True"),
        (f"{fn}({d.high + 1})", "False"),
    ]


def _valid_hidden(d: Domain, rng: random.Random) -> Cases:
    fn = f"is_valid_{d.num}"
    return [(f"{fn}({d.low - 1})", "False"), (f"{fn}({d.high - 1})", "True")]


def _sorted_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    return [
        (records_var(d, rs), ""),
        (f"sorted_{d.label}s({d.ents})", py(sorted(r[d.label] for r in rs))),
        (f"sorted_{d.label}s([])", "[]"),
    ]


def _sorted_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 3)
    return [(f"sorted_{d.label}s({py(rs)})", py(sorted(r[d.label] for r in rs)))]


def _median(values: list[int]) -> float | int | None:
    values = sorted(values)
    if not values:
        return None
    m = len(values) // 2
    return values[m] if len(values) % 2 else (values[m - 1] + values[m]) / 2


def _median_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, rng.choice((3, 4)))
    return [
        (records_var(d, rs), ""),
        (f"median_{d.num}({d.ents})", py(_median([r[d.num] for r in rs]))),
        (f"median_{d.num}([])", "None"),
    ]


def _median_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 5)
    return [(f"median_{d.num}({py(rs)})", py(_median([r[d.num] for r in rs]))), (f"median_{d.num}([])", "None")]


def _top_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 5)
    best = sorted(range(len(rs)), key=lambda k: rs[k][d.num], reverse=True)[:2]
    return [
        (records_var(d, rs), ""),
        (f"top_{d.ents}({d.ents}, 2)", "[" + ", ".join(f"{d.ents}[{k}]" for k in best) + "]"),
        (f"top_{d.ents}([], 3)", "[]"),
    ]


def _top_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    return [
        (f"top_{d.ents}({py(rs)}, 1)", py([max(rs, key=lambda r: r[d.num])])),
        (f"len(top_{d.ents}({py(rs)}, 9))", "4"),
    ]


def _count_by_cases(d: Domain, rng: random.Random) -> Cases:
    a, b = rng.sample(WORDS, 2)
    rs = [{d.label: x, d.num: rng.randint(max(d.low, 1), d.high)} for x in (a, b, a)]
    return [
        (records_var(d, rs), ""),
        (f"count_by_{d.label}({d.ents})", py({a: 2, b: 1})),
        (f"count_by_{d.label}([])", "{}"),
    ]


def _count_by_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 3)
    return [(f"count_by_{d.label}({py(rs)})", py({r[d.label]: 1 for r in rs}))]


def _running(values: list[int]) -> list[int]:
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out


def _running_cases(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 3)
    return [
        (records_var(d, rs), ""),
        (f"running_{d.num}({d.ents})", py(_running([r[d.num] for r in rs]))),
        (f"running_{d.num}([])", "[]"),
    ]


def _running_hidden(d: Domain, rng: random.Random) -> Cases:
    rs = make_records(d, rng, 4)
    return [(f"running_{d.num}({py(rs)})", py(_running([r[d.num] for r in rs])))]


IS_VALID = Family(
    key="is_valid",
    name="is_valid_$num",
    params="value",
    doc="True when value is between MIN_$NUM and MAX_$NUM, both included.",
    body="""
    return MIN_$NUM <= value <= MAX_$NUM""",
    cases=_valid_cases,
    hidden=_valid_hidden,
    aliases=("${num}_in_range", "check_$num", "valid_$num"),
    summary='f"max $num {MAX_$NUM}"',
    how="it checks MIN_$NUM <= value <= MAX_$NUM",
    constants="MIN_$NUM = $low\nMAX_$NUM = $high\n",
)
SORTED = Family(
    key="sorted",
    name="sorted_${label}s",
    params="$ents",
    doc="The $label of every $ent, in alphabetical order.",
    body="""
    return sorted($ent["$label"] for $ent in $ents)""",
    cases=_sorted_cases,
    hidden=_sorted_hidden,
    aliases=("${label}s_in_order", "alphabetical_${label}s", "list_${label}s"),
    summary='", ".join(sorted_${label}s($ents))',
    how="it sorts the $label of every $ent alphabetically",
)
MEDIAN = Family(
    key="median",
    name="median_$num",
    params="$ents",
    doc="The median $num of the $ents, or None when there are none.",
    body="""
    values = sorted($ent["$num"] for $ent in $ents)
    if not values:
        return None
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2""",
    cases=_median_cases,
    hidden=_median_hidden,
    aliases=("middle_$num", "${num}_median", "mid_$num"),
    summary='f"median $num {median_$num($ents)}"',
    how="it sorts the values and takes the middle one (or the mean of the two middle ones)",
)
TOP = Family(
    key="top",
    name="top_$ents",
    params="$ents, n",
    doc="The n $ents with the highest $num, highest first (ties keep their order).",
    body="""
    return sorted($ents, key=lambda $ent: $ent["$num"], reverse=True)[:n]""",
    cases=_top_cases,
    hidden=_top_hidden,
    aliases=("best_$ents", "leading_$ents", "highest_$ents"),
    summary='f"top {top_$ents($ents, 1)}"',
    how="it sorts by $num, highest first (a stable sort keeps ties in order), and keeps the first n",
)
COUNT_BY = Family(
    key="count_by",
    name="count_by_$label",
    params="$ents",
    doc="A dict mapping each $label to how many $ents have it.",
    body="""
    counts = {}
    for $ent in $ents:
        counts[$ent["$label"]] = counts.get($ent["$label"], 0) + 1
    return counts""",
    cases=_count_by_cases,
    hidden=_count_by_hidden,
    aliases=("tally_$label", "${label}_counts", "histogram_$label"),
    summary='f"{len(count_by_$label($ents))} distinct"',
    how="it tallies each $label in a dict with `counts.get(key, 0) + 1`",
)
RUNNING = Family(
    key="running",
    name="running_$num",
    params="$ents",
    doc="Cumulative $num after each $ent, in order.",
    body="""
    running = []
    total = 0
    for $ent in $ents:
        total += $ent["$num"]
        running.append(total)
    return running""",
    cases=_running_cases,
    hidden=_running_hidden,
    aliases=("cumulative_$num", "${num}_so_far", "prefix_$num"),
    summary='f"running $num {running_$num($ents)}"',
    how="it keeps a running total and appends it after each $ent",
)

EVAL_FAMILIES: dict[str, Family] = {f.key: f for f in (IS_VALID, SORTED, MEDIAN, TOP, COUNT_BY, RUNNING)}
