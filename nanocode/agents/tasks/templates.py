"""Task templates: how each kind of task is built over a fresh repository, with its hidden check and script.

Kinds: `fix_bug` (a planted bug, a failing test: fix it, tests must pass), `implement` (a stub with a docstring
spec and spec tests: implement it), `rename` (rename a name across files: tests pass, the old name is gone) and
`locate` (where is X defined: the answer must name file:line). TRAIN_TEMPLATES build training tasks from the
training function families; EVAL_TEMPLATES build held-out tasks from the eval families. The two sets share no
template name and no function family (a test asserts both).

Hidden checks of command kind run `.nanocode_check.py`: the test script as it should read after the solution,
plus hidden asserts with other inputs, plus (rename) a scan that the old name is gone. It is written only after the
agent is done, over anything there, so editing the visible tests cannot make a task pass.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nanocode.agents.tasks import prose
from nanocode.agents.tasks.base import AnswerCheck, Check, CommandCheck, Script
from nanocode.agents.tasks.bugs import EVAL_BUGS, TRAIN_BUGS, Bug, buggy_source
from nanocode.agents.tasks.functions import TRAIN_FAMILIES, Family, subst
from nanocode.agents.tasks.heldout_functions import EVAL_FAMILIES
from nanocode.agents.tasks.prose import pick
from nanocode.agents.tasks.reference_words import REFERENCE_WORDS
from nanocode.agents.tasks.repo import Repo, build_repo, statement
from nanocode.agents.tasks.script import ScriptBuilder
from nanocode.agents.tasks.vocab import (
    ENTITIES,
    FRESH_PREFIXES,
    LABEL_FIELDS,
    MODULE_NAMES,
    NUM_FIELDS,
    REPO_NAMES,
    WORDS,
    Domain,
)
from nanocode.agents.tools.grep import NO_MATCHES

CHECK_FILE = ".nanocode_check.py"


@dataclass
class Built:
    repo: Repo
    request: str
    check: Check
    solution: Script
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskTemplate:
    name: str  # "<kind>:<variant>"
    kind: str
    build: Callable[[random.Random, Domain], Built]


def hidden_check(repo: Repo, tests: str, cases: list[tuple[str, str]], extra: list[str] = ()) -> CommandCheck:
    """The test script `tests` (as it must read after the solution) with a `test_hidden` run first: the hidden
    `cases` as asserts, then `extra` lines."""
    head, main = tests.split('if __name__ == "__main__":\n')
    body = [f"    {statement(call, want)}" for call, want in cases] + [f"    {line}" for line in extra]
    source = head + "def test_hidden():\n" + "\n".join(body) + "\n\n\n"
    source += 'if __name__ == "__main__":\n    test_hidden()\n' + main
    return CommandCheck(f"python {CHECK_FILE}", {CHECK_FILE: source})


def _names(repo: Repo, **more: Any) -> dict[str, Any]:
    return dict(module_path=repo.module_path, test_path=repo.test_path, cmd=repo.test_command, **more)


def _with_distractors(rng: random.Random, pool: dict[str, Family], target: Family) -> list[Family]:
    others = [f for f in pool.values() if f.key != target.key]
    chosen = [target, *rng.sample(others, rng.randint(1, 2))]
    rng.shuffle(chosen)
    return chosen


def _facts(repo: Repo, **more: Any) -> dict[str, Any]:
    return {"module_path": repo.module_path, "test_path": repo.test_path, "layout": repo.layout, **more}


def _mentions(text: str, path: str) -> bool:
    """Whether `text` names `path` itself (`stock.py` is not named by `test_stock.py`)."""
    return re.search(rf"(?<![\w/.]){re.escape(path)}", text) is not None


# -- fix a bug --------------------------------------------------------------------------------------------------
def fix_bug(bug: Bug, pool: dict[str, Family]) -> Callable[[random.Random, Domain], Built]:
    def build(rng: random.Random, d: Domain) -> Built:
        target = pool[bug.family]
        repo = build_repo(
            d, rng, _with_distractors(rng, pool, target), sources={target.key: buggy_source(target, bug, d)}
        )
        fn = target.fn(d)
        names = _names(repo, fn=fn, symptom=subst(bug.symptom, d), problem=subst(bug.problem, d), fix=subst(bug.fix, d))
        request = pick(rng, prose.FIX_REQUESTS, **names)
        b = ScriptBuilder(repo.files)
        # Every step uses only paths and names the agent has seen (in the request or a tool result); a script that
        # runs a test file or greps a function the request never named teaches the model to invent one. A request
        # that names the module starts with it and finds the tests after the fix.
        knows_module, knows_tests = _mentions(request, repo.module_path), _mentions(request, repo.test_path)
        knows_fn = re.search(rf"\b{fn}\b", request) is not None
        if not (knows_module or knows_tests):  # the request names the function: one grep of its callers shows both
            b.grep(pick(rng, prose.GREP_CALLERS, **names), rf"{fn}\(", expect=repo.test_path)
            knows_module = knows_tests = True
        # the failing assert names the function, the only way to learn it from a request that names only the tests
        reproduce = knows_tests and (not (knows_fn or knows_module) or rng.random() < 0.6)
        if reproduce:
            b.bash(pick(rng, prose.RUN_TESTS_FIRST, **names), repo.test_command, fails=True, expect=fn)
            knows_fn = True
        if not knows_module or (knows_fn and rng.random() < 0.3):
            b.grep(pick(rng, prose.GREP_DEF, **names), rf"def {fn}\(", expect=f"{repo.module_path}:")
        reads = prose.READ_AFTER_FAILURE if reproduce else prose.READ_BEFORE_FIX if knows_fn else prose.READ_FOR_CAUSE
        b.read(pick(rng, reads, fn=fn, path=repo.module_path), repo.module_path)
        module = b.files[repo.module_path]
        wrong, right = subst(bug.new, d), subst(bug.old, d)
        at = module.index(wrong, module.index(f"def {fn}("))
        b.edit(pick(rng, prose.EDIT_FIX, **names), repo.module_path, wrong, right, at=at)
        if not knows_tests:
            b.grep(pick(rng, prose.GREP_TESTS, **names), rf"{fn}\(", expect=repo.test_path)
        b.bash(pick(rng, prose.RERUN, **names), repo.test_command, fails=False, expect="tests passed")
        return Built(
            repo,
            request,
            hidden_check(repo, b.files[repo.test_path], target.hidden(d, rng)),
            b.script(pick(rng, prose.FIX_FINALS, **names)),
            _facts(repo, function=fn, final_unverified=pick(rng, prose.FIX_FINALS_UNVERIFIED, **names)),
        )

    return build


# -- implement a stub -------------------------------------------------------------------------------------------
def implement(key: str, pool: dict[str, Family]) -> Callable[[random.Random, Domain], Built]:
    def build(rng: random.Random, d: Domain) -> Built:
        target = pool[key]
        repo = build_repo(d, rng, _with_distractors(rng, pool, target), sources={target.key: target.stub(d)})
        fn = target.fn(d)
        names = _names(repo, fn=fn, doc=subst(target.doc, d), how=subst(target.how, d))
        request = pick(rng, prose.IMPLEMENT_REQUESTS, **names)
        b = ScriptBuilder(repo.files)
        knows_module, knows_tests = _mentions(request, repo.module_path), _mentions(request, repo.test_path)
        if not (knows_module or knows_tests):  # as in fix_bug
            b.grep(pick(rng, prose.GREP_CALLERS, **names), rf"{fn}\(", expect=repo.test_path)
            knows_module = knows_tests = True
        elif not knows_module or rng.random() < 0.3:
            b.grep(pick(rng, prose.GREP_STUB), "raise NotImplementedError", expect=repo.module_path)
        b.read(pick(rng, prose.READ_STUB, fn=fn, path=repo.module_path), repo.module_path)
        if knows_tests and rng.random() < 0.5:
            b.read(pick(rng, prose.READ_SPEC_TESTS, path=repo.test_path), repo.test_path)
        stub = f"{target.docstring(d)}\n    raise NotImplementedError"
        b.edit(
            pick(rng, prose.EDIT_IMPLEMENT, **names),
            repo.module_path,
            stub,
            f"{target.docstring(d)}\n{target.code(d)}",
        )
        if not knows_tests:
            b.grep(pick(rng, prose.GREP_TESTS, **names), rf"{fn}\(", expect=repo.test_path)
        b.bash(pick(rng, prose.RUN_AFTER_IMPLEMENT, **names), repo.test_command, fails=False, expect="tests passed")
        return Built(
            repo,
            request,
            hidden_check(repo, b.files[repo.test_path], target.hidden(d, rng)),
            b.script(pick(rng, prose.IMPLEMENT_FINALS, **names)),
            _facts(repo, function=fn, final_unverified=pick(rng, prose.IMPLEMENT_FINALS_UNVERIFIED, **names)),
        )

    return build


# -- rename across files ----------------------------------------------------------------------------------------
def _rename_script(rng: random.Random, repo: Repo, old: str, new: str, what: str) -> tuple[ScriptBuilder, dict]:
    """Grep the uses, rename every use with one `sed` over the files that mention it, run the tests, grep again.

    One command instead of a Read and Edits per file: Reads echo whole files, which made a rename too long for a
    2,048-token conversation, and `sed` needs only the two names the request gives (what a small model can copy).
    """
    pattern = rf"\b{old}\b"
    names = _names(repo, old=old, new=new, what=what)
    b = ScriptBuilder(repo.files)
    b.grep(pick(rng, prose.GREP_USES, **names), pattern, expect=f"{repo.module_path}:")
    files = [p for p in (repo.module_path, repo.report_path, repo.test_path) if re.search(pattern, repo.files[p])]
    edited = sum(bool(re.search(pattern, line)) for p in files for line in b.files[p].split("\n"))
    command = f"grep -rlw {old} . | xargs sed -i 's/\\b{old}\\b/{new}/g'"
    b.bash(pick(rng, prose.SED_RENAME, **names), command, fails=False)
    b.files.update({p: re.sub(pattern, new, b.files[p]) for p in files})
    # the test file is named only when the grep showed it: a constant the tests never use leaves it unseen
    tests = repo.test_command if repo.test_path in files else 'for t in test_*.py; do python "$t" || exit 1; done'
    b.bash(pick(rng, prose.RUN_AFTER_RENAME, **{**names, "cmd": tests}), tests, fails=False, expect="tests passed")
    b.grep(pick(rng, prose.GREP_LEFTOVERS, **names), pattern, expect="no matches found")
    names.update(n=edited, files=", ".join(files))
    return b, names


def _no_leftovers(old: str) -> list[str]:
    return [
        "import os, re",
        'for folder, _, filenames in os.walk("."):',
        "    for filename in filenames:",
        f'        if filename.endswith(".py") and filename != "{CHECK_FILE}":',
        '            with open(os.path.join(folder, filename), encoding="utf-8") as f:',
        f'                assert not re.search(r"\\b{old}\\b", f.read()), filename + " still mentions {old}"',
    ]


def rename_function(pool: dict[str, Family]) -> Callable[[random.Random, Domain], Built]:
    def build(rng: random.Random, d: Domain) -> Built:
        # the target must be used by the report module, so the rename crosses files
        target = rng.choice([f for f in pool.values() if f.summary and f.fn(d) in subst(f.summary, d)])
        families = _with_distractors(rng, pool, target)
        repo = build_repo(d, rng, families, report_families=[target])
        old = target.fn(d)
        taken = set(repo.names())
        new = next(subst(a, d) for a in rng.sample(target.aliases, len(target.aliases)) if subst(a, d) not in taken)
        b, names = _rename_script(rng, repo, old, new, "function")
        cases = [(re.sub(rf"\b{old}\b", new, call), want) for call, want in target.hidden(d, rng)]
        return Built(
            repo,
            pick(rng, prose.RENAME_REQUESTS, **names),
            hidden_check(repo, b.files[repo.test_path], cases, _no_leftovers(old)),
            b.script(pick(rng, prose.RENAME_FINALS, **names)),
            _facts(repo, old=old, new=new, final_unverified=pick(rng, prose.RENAME_FINALS_UNVERIFIED, **names)),
        )

    return build


def rename_constant(
    pool: dict[str, Family], key: str, defined_as: str, new_forms: tuple[str, ...] | None = None
) -> Callable[[random.Random, Domain], Built]:
    """Rename the module-level constant of family `key` (defined in the module, used by the report), named
    `defined_as` over the domain's upper-case field (`MAX_{}` -> `MAX_QUANTITY`), to one of `new_forms`. Without
    `new_forms` both names are fresh (the old one replaces `defined_as` in every file): a model then has to copy
    them from the request, since no part of either is predictable from the few names a template would give."""

    def build(rng: random.Random, d: Domain) -> Built:
        target = pool[key]
        repo = build_repo(d, rng, _with_distractors(rng, pool, target), report_families=[target])
        old = defined_as.format(d.num.upper())
        if new_forms is None:
            fresh = _fresh_constant(rng, d, set(repo.names()))
            repo.files = {path: re.sub(rf"\b{old}\b", fresh, text) for path, text in repo.files.items()}
            old, new = fresh, _fresh_constant(rng, d, {*repo.names(), fresh})
        else:
            new = rng.choice(new_forms).format(d.num.upper())
        b, names = _rename_script(rng, repo, old, new, "constant")
        extra = [f"import {repo.import_module} as module", f"assert module.{new} == {d.high}", *_no_leftovers(old)]
        return Built(
            repo,
            pick(rng, prose.RENAME_REQUESTS, **names),
            hidden_check(repo, b.files[repo.test_path], target.hidden(d, rng), extra),
            b.script(pick(rng, prose.RENAME_FINALS, **names)),
            _facts(repo, old=old, new=new, final_unverified=pick(rng, prose.RENAME_FINALS_UNVERIFIED, **names)),
        )

    return build


# -- locate a definition ----------------------------------------------------------------------------------------
def _name_start(template: str) -> str:
    return re.split(r"[_$]", template.strip("$"))[0]


# The first words of fresh names: every word of the vocabulary and of the reference manual (about 1,400, too many
# to recall one from a request's shape) except those a held-out family's name or alias starts with, or starts like
# (`sorting` for `sorted`: the same first token).
HELDOUT_NAME_STARTS = frozenset(_name_start(n) for f in EVAL_FAMILIES.values() for n in (f.name, *f.aliases))
_HELDOUT_STEMS = tuple(start[:4] for start in HELDOUT_NAME_STARTS if start.isalpha())


def _heldout_like(word: str) -> bool:
    return word.startswith(_HELDOUT_STEMS)


FRESH_WORDS: tuple[str, ...] = tuple(
    sorted(
        w
        for w in {*FRESH_PREFIXES, *WORDS, *LABEL_FIELDS, *MODULE_NAMES, *REPO_NAMES, *REFERENCE_WORDS}.union(
            e for e, _ in ENTITIES
        ).union(n for n, _, _ in NUM_FIELDS)
        if not _heldout_like(w)
    )
)


# Made-up words: a few hundred real first words still form a set a model learns to pick from (it then writes a
# training word where a held-out name starts with an unseen one); syllables make the first word unguessable.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "v", "z", "br", "cl", "dr", "gl", "pr", "sk", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "st")


def _made_up_word(rng: random.Random) -> str:
    while True:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.randint(2, 3)))
        if not _heldout_like(word):
            return word


def _fresh_word(rng: random.Random) -> str:
    return rng.choice(FRESH_WORDS) if rng.random() < 0.5 else _made_up_word(rng)


def _fresh_name(rng: random.Random, d: Domain, taken: set[str]) -> str:
    """A fresh word, a third of the time a second one (held-out names run to three parts: `count_by_sku`), then a
    word of the domain: a name copied token for token, since no middle or end is predictable from the first."""
    while True:
        middle = f"{_fresh_word(rng)}_" if rng.random() < 1 / 3 else ""
        end = rng.choice((d.num, d.ent, d.ents, d.label, rng.choice(WORDS)))
        name = f"{_fresh_word(rng)}_{middle}{end}"
        if name not in taken and name.isidentifier():
            return name


# The words of the held-out constants and their new names (is_valid's MIN_/MAX_ bounds, rename:constant's forms):
# training constants never use them.
HELDOUT_CONSTANT_WORDS = frozenset({"MIN", "MAX", "LIMIT", "UPPER", "CEILING"})
HELDOUT_CONSTANT_FORMS = ("{}_LIMIT", "UPPER_{}", "{}_CEILING")


def _fresh_constant(rng: random.Random, d: Domain, taken: set[str]) -> str:
    """An upper-case fresh word before or after the domain's field: `BRAIST_GRAMS`, `GRAMS_FLOOR`."""
    while True:
        word = _fresh_word(rng).upper()
        name = f"{word}_{d.num.upper()}" if rng.random() < 0.5 else f"{d.num.upper()}_{word}"
        if word not in HELDOUT_CONSTANT_WORDS and name not in taken and name.isidentifier():
            return name


def _misremembered(rng: random.Random, fn: str, taken: set[str]) -> str:
    """`fn` with another first word: how a small model gets a name wrong (it copies the rest and not the start)."""
    rest = fn[fn.index("_") :]
    while True:
        wrong = f"{_fresh_word(rng)}{rest}"
        if wrong != fn and wrong not in taken and wrong.isidentifier():
            return wrong


def locate(
    pool: dict[str, Family], fresh_names: float = 0.0, recover: float = 0.0
) -> Callable[[random.Random, Domain], Built]:
    """Where is a function defined. With probability `fresh_names` the target is renamed (in every file) to a fresh
    name, so the request's name has to be copied, not recalled from the families' few name shapes. With probability
    `recover` the script first greps a misremembered name (a turn SFT does not train on), finds nothing, and
    recovers with a grep for the name's last word: the part a model that gets the start wrong still copies."""

    def build(rng: random.Random, d: Domain) -> Built:
        target = rng.choice(list(pool.values()))
        repo = build_repo(d, rng, _with_distractors(rng, pool, target))
        fn = renamed_from = target.fn(d)
        if fresh_names and rng.random() < fresh_names:  # no draw otherwise: held-out tasks stay as they were
            fn = _fresh_name(rng, d, set(repo.names()))
            repo.files = {path: re.sub(rf"\b{renamed_from}\b", fn, text) for path, text in repo.files.items()}
        line = repo.line_of(repo.module_path, f"def {fn}(")
        names = _names(repo, fn=fn, path=repo.module_path, line=line, how=subst(target.how, d))
        # The draws keep their order (grep wording, read or not, request), so held-out tasks stay as they were; the
        # grep is written once the request is known, with the name in the request's form (prose.GREP_DEFINITION).
        grep_wording = rng.randrange(len(prose.GREP_DEFINITION))
        # Mostly grep-then-answer; a read (to say what it does) only sometimes, since a locate that reads on looks
        # like the start of a fix to a small model.
        read_wording = pick(rng, prose.READ_DEFINITION) if rng.random() < 0.25 else None
        request = pick(rng, prose.LOCATE_REQUESTS, **names)
        b = ScriptBuilder(repo.files)
        if f"`{fn}`" in request:
            say, definition = prose.GREP_DEFINITION_BACKTICKED[grep_wording], r"def\s+{}\("
        else:
            say, definition = prose.GREP_DEFINITION[grep_wording], r"def {}\("
        found = f"{repo.module_path}:{line}:"
        if recover and "_" in fn and rng.random() < recover:  # no draw otherwise: held-out tasks stay as they were
            wrong = _misremembered(rng, fn, set(repo.names()))
            b.grep(say.format(**{**names, "fn": wrong}), definition.format(wrong), expect=NO_MATCHES, train=False)
            # The last word of the name, from its underscore: `_sku` is the same tokens as in the request's
            # `count_by_sku` (`def .*_sku` would split as `*_` + `sku`), and a model that garbles the start or the
            # middle (`count_fsku`) still has it there to copy. Calls in the tests match too; the answer is the `def`
            # line outside them.
            b.grep(pick(rng, prose.GREP_END_OF_NAME), rf"_{fn.rsplit('_', 1)[1]}\(", expect=found)
        else:
            b.grep(say.format(**names), definition.format(fn), expect=found)
        finals = prose.LOCATE_FINALS
        if read_wording is not None:
            length = target.source(d).count("\n")
            b.read(read_wording, repo.module_path, offset=line - 1, limit=length)
            finals = prose.LOCATE_FINALS_DESCRIBED
        return Built(
            repo,
            request,
            AnswerCheck(repo.module_path, line),
            b.script(pick(rng, finals, **names)),
            _facts(repo, function=fn, line=line, family_name=renamed_from),
        )

    return build


def _templates(*items: tuple[str, Callable[[random.Random, Domain], Built]]) -> dict[str, TaskTemplate]:
    return {name: TaskTemplate(name, name.split(":")[0], build) for name, build in items}


TRAIN_TEMPLATES: dict[str, TaskTemplate] = _templates(
    *((f"fix_bug:{key}", fix_bug(bug, TRAIN_FAMILIES)) for key, bug in TRAIN_BUGS.items()),
    *((f"implement:{key}", implement(key, TRAIN_FAMILIES)) for key in ("average", "paginate", "largest")),
    ("rename:function", rename_function(TRAIN_FAMILIES)),
    ("rename:threshold", rename_constant(TRAIN_FAMILIES, "count_over", "{}_THRESHOLD")),  # fresh upper-case names
    ("locate:definition", locate(TRAIN_FAMILIES, fresh_names=0.75, recover=0.3)),
)
EVAL_TEMPLATES: dict[str, TaskTemplate] = _templates(
    *((f"fix_bug:{key}", fix_bug(bug, EVAL_FAMILIES)) for key, bug in EVAL_BUGS.items()),
    *((f"implement:{key}", implement(key, EVAL_FAMILIES)) for key in EVAL_FAMILIES),
    ("rename:constant", rename_constant(EVAL_FAMILIES, "is_valid", "MAX_{}", HELDOUT_CONSTANT_FORMS)),
    ("locate:heldout", locate(EVAL_FAMILIES)),
)
# How often each kind is drawn for training (the eval cycles through its templates evenly).
TRAIN_KIND_WEIGHTS: dict[str, float] = {"fix_bug": 0.4, "implement": 0.25, "rename": 0.15, "locate": 0.2}
