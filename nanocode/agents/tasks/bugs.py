"""The bugs a fix-the-bug task plants in a function family: each rewrites one snippet of the family's source and says
in words what goes wrong, how a user would notice, and how to fix it.

As with the families, TRAIN_BUGS are planted only in training repositories and EVAL_BUGS only in held-out ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanocode.agents.tasks.functions import Family, subst
from nanocode.agents.tasks.vocab import Domain


@dataclass(frozen=True)
class Bug:
    key: str
    family: str
    old: str  # snippet of the correct source (template)
    new: str  # what the bug turns it into
    problem: str  # what is wrong, for the agent's prose
    fix: str  # what the agent will do about it
    symptom: str  # how a user might describe it


TRAIN_BUGS: dict[str, Bug] = {
    b.key: b
    for b in (
        Bug(
            key="skip_first",
            family="total",
            old="for $ent in $ents:",
            new="for $ent in $ents[1:]:",
            problem="the loop walks `$ents[1:]`, so the first $ent is never counted",
            fix="loop over the whole list",
            symptom="the total comes out too low, like one $ent is missing",
        ),
        Bug(
            key="or_equal",
            family="count_over",
            old='if $ent["$num"] > limit:',
            new='if $ent["$num"] >= limit:',
            problem="it compares with `>=`, so $a_ent sitting exactly at the limit is counted too",
            fix="make the comparison strict",
            symptom="it counts one $ent too many when $a_ent's $num equals the limit",
        ),
        Bug(
            key="early_return",
            family="find",
            old="            return $ent\n    return None",
            new="            return $ent\n        return None",
            problem="`return None` is indented into the loop, so only the first $ent is ever checked",
            fix="move `return None` out of the loop",
            symptom="it returns `None` for $ents that are definitely in the list",
        ),
        Bug(
            key="flipped_comparison",
            family="largest",
            old='$ent["$num"] > best["$num"]',
            new='$ent["$num"] < best["$num"]',
            problem="the comparison is `<`, so it keeps the $ent with the lowest $num",
            fix="flip it to `>`",
            symptom="it returns the smallest $ent instead of the largest",
        ),
        Bug(
            key="floor_division",
            family="share",
            old='100 * $ent["$num"] / total',
            new='100 * $ent["$num"] // total',
            problem="it uses floor division `//`, so the percentage loses its decimals before rounding",
            fix="use true division",
            symptom="the percentages are always whole numbers",
        ),
        Bug(
            key="missing_strip",
            family="clean",
            old="return text.strip().lower()",
            new="return text.lower()",
            problem="it lowercases but never strips, so surrounding whitespace survives",
            fix="add the `.strip()`",
            symptom="values with spaces around them don't match",
        ),
        # Training analogs of the skills the held-out bugs need (a lost guard, a value kept instead of a total, a
        # call that does the wrong thing, a bound off by one) in training families, so a held-out bug is not the
        # first of its kind the model has met; the held-out bugs themselves stay out of training.
        Bug(
            key="overwrite_total",
            family="total",
            old='total += $ent["$num"]',
            new='total = $ent["$num"]',
            problem="it assigns with `=` instead of adding, so only the last $ent's $num is kept",
            fix="add to the total with `+=`",
            symptom="the total is just the $num of the last $ent",
        ),
        Bug(
            key="no_empty_check",
            family="average",
            old="    if not $ents:\n        return 0.0\n    return sum(",
            new="    return sum(",
            problem="nothing handles an empty list, so it divides by `len($ents)` = 0",
            fix="return `0.0` early when there are no $ents",
            symptom="it crashes with a ZeroDivisionError when there are no $ents",
        ),
        Bug(
            key="no_zero_guard",
            family="share",
            old="    if total == 0:\n        return 0.0\n    return round(",
            new="    return round(",
            problem="nothing handles a zero total, so the division raises ZeroDivisionError",
            fix="return `0.0` early when the total is 0",
            symptom="it crashes with a ZeroDivisionError when the list is empty",
        ),
        Bug(
            key="not_equal",
            family="find",
            old='if $ent["$label"] == $label:',
            new='if $ent["$label"] != $label:',
            problem="the test is `!=`, so it returns the first $ent that does *not* match",
            fix="compare with `==`",
            symptom="it returns the wrong $ent, usually the first one in the list",
        ),
        Bug(
            key="upper_case",
            family="clean",
            old="return text.strip().lower()",
            new="return text.strip().upper()",
            problem="it calls `.upper()`, so the $label comes back in capitals",
            fix="call `.lower()` instead",
            symptom="the cleaned values come out in CAPITALS",
        ),
        Bug(
            key="short_pages",
            family="paginate",
            old="$ents[i : i + per_page]",
            new="$ents[i : i + per_page - 1]",
            problem="the slice stops at `i + per_page - 1`, so every page loses its last $ent",
            fix="slice up to `i + per_page`",
            symptom="each page has one $ent fewer than it should, and some $ents vanish",
        ),
    )
}
EVAL_BUGS: dict[str, Bug] = {
    b.key: b
    for b in (
        Bug(
            key="exclusive_bound",
            family="is_valid",
            old="MIN_$NUM <= value <= MAX_$NUM",
            new="MIN_$NUM <= value < MAX_$NUM",
            problem="the upper bound uses `<`, so MAX_$NUM itself is rejected",
            fix="make it `<=` like the docstring says",
            symptom="the maximum $num is rejected even though it should be allowed",
        ),
        Bug(
            key="reversed_sort",
            family="sorted",
            old='sorted($ent["$label"] for $ent in $ents)',
            new='sorted(($ent["$label"] for $ent in $ents), reverse=True)',
            problem="it sorts with `reverse=True`, so the order is backwards",
            fix="drop the `reverse=True`",
            symptom="the list comes out in reverse alphabetical order",
        ),
        Bug(
            key="missing_empty_guard",
            family="median",
            old='    values = sorted($ent["$num"] for $ent in $ents)\n    if not values:\n        return None\n',
            new='    values = sorted($ent["$num"] for $ent in $ents)\n',
            problem="nothing handles an empty list, so `values[middle]` raises IndexError",
            fix="return `None` early for no values",
            symptom="it crashes with an IndexError when there are no $ents",
        ),
        Bug(
            key="append_value",
            family="running",
            old="running.append(total)",
            new='running.append($ent["$num"])',
            problem="it appends each $ent's own $num instead of the running total",
            fix="append `total`",
            symptom="the running totals are just the individual values",
        ),
    )
}


def buggy_source(family: Family, bug: Bug, d: Domain) -> str:
    src, old, new = family.source(d), subst(bug.old, d), subst(bug.new, d)
    if src.count(old) != 1:
        raise AssertionError(f"bug {bug.key}: snippet occurs {src.count(old)} times in {family.key}")
    return src.replace(old, new)
