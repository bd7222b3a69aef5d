"""The words of scripted solutions: user requests and the agent's think-out-loud lines, a few phrasings each.

All agent prose is lowercase with code in backticks (the SOUL's lowercase-prose), says what the next tool call is
for (think-out-loud), and final messages say what changed and how it was checked, without a closing question or
offer (no-follow-up-offers). `FOLLOW_UPS` are the endings that break that rule, for rejected variants.
"""

from __future__ import annotations

import random


def pick(rng: random.Random, options: tuple[str, ...], **names: object) -> str:
    return rng.choice(options).format(**names)


FIX_REQUESTS = (
    "`{fn}` in {module_path} is broken: {symptom}. can you fix it?",
    "the tests in {test_path} are failing. can you find the bug and fix it?",
    "{symptom} — i think the problem is in `{fn}`. please fix it.",
    "can you fix {fn}? {symptom}.",
    "something's off in {module_path}: {symptom}. could you track it down and fix it?",
)
IMPLEMENT_REQUESTS = (
    "please implement `{fn}` in {module_path}. the docstring says what it should do and {test_path} has tests for it.",
    "`{fn}` is still a stub — can you write it? the tests in {test_path} show the expected behaviour.",
    "implement {fn} in {module_path}: {doc}",
    "can you fill in `{fn}`? right now it just raises NotImplementedError.",
)
RENAME_REQUESTS = (
    "rename `{old}` to `{new}` everywhere — the definition and every place that uses it.",
    "please rename the {what} {old} to {new} across the repo.",
    "`{old}` is a confusing name. can you rename it to `{new}` in all the files?",
    "can you rename {old} -> {new}? make sure nothing still refers to the old name.",
)
LOCATE_REQUESTS = (
    "where is `{fn}` defined?",
    "which file defines {fn}? i need the exact line.",
    "can you find where `{fn}` lives in this repo?",
    "quick question: where's the definition of {fn}?",
)

RUN_TESTS_FIRST = (
    "let me run the tests first to see what's failing.",
    "i'll start by running `{cmd}` to see the failure.",
    "first, running the tests to reproduce it.",
)
GREP_DEF = (  # says why (to read it next), so a fix's grep does not read like a locate's
    "i'll find which file has `{fn}` so i can read it.",
    "let me grep for `def {fn}` before reading the code.",
    "searching for `def {fn}` to find the file to fix.",
)
READ_AFTER_FAILURE = (
    "the traceback points at `{fn}`, so i'll read {path}.",
    "the failing assert is on `{fn}` — reading {path} to see how it works.",
    "the failure is in `{fn}`. let me read {path}.",
)
READ_FOR_CAUSE = (  # the request names the module and a symptom, not the function
    "reading {path} to find what causes it.",
    "let me read {path} and look for the cause.",
    "the bug is somewhere in {path}; reading it.",
)
READ_BEFORE_FIX = (
    "reading {path} to see how `{fn}` works.",
    "let me look at `{fn}` in {path}.",
    "i'll read {path} first.",
)
EDIT_FIX = (
    "found it — {problem}. i'll {fix}.",
    "there it is: {problem}. going to {fix}.",
    "the bug: {problem}. i'll {fix}.",
)
RERUN = (
    "running the tests again to confirm the fix.",
    "now rerunning `{cmd}`.",
    "let me check that the tests pass now.",
)
FIX_FINALS = (
    "fixed — {problem}. i changed that in `{fn}` and `{cmd}` passes now.",
    "that was it: {problem}. after the change all tests in {test_path} pass.",
    "done — {problem}; `{fn}` is fixed and the tests pass.",
)
FIX_FINALS_UNVERIFIED = (
    "done — {problem}; i changed that in `{fn}`.",
    "fixed: {problem}. the change is in {module_path}.",
)

READ_STUB = (
    "let me read {path} to see the stub and its docstring.",
    "i'll look at `{fn}` in {path} first.",
    "reading {path} to see what `{fn}` should do.",
)
READ_SPEC_TESTS = (
    "checking the tests in {path} for the exact expected values.",
    "let me see what {path} expects.",
)
GREP_CALLERS = (  # the request names no file: one grep shows the definition and the tests that call it
    "i'll grep for `{fn}(`: that shows the file it lives in and the tests that call it.",
    "let me find `{fn}` — where it is defined and which test file uses it.",
    "searching for calls of `{fn}` to find its file and its tests.",
)
GREP_TESTS = (  # the request named the module but no test file: find the tests before running them
    "now i'll find the tests that call `{fn}`.",
    "let me grep for `{fn}(` to find its tests.",
    "which test file covers `{fn}`? a grep will say.",
)
GREP_STUB = (
    "let me find the stub first.",
    "searching for the `NotImplementedError` stub.",
)
EDIT_IMPLEMENT = (
    "i'll replace the stub: {how}.",
    "writing it now — {how}.",
    "the spec is clear enough. {how}, so i'll write that.",
)
RUN_AFTER_IMPLEMENT = (
    "running the tests to check it.",
    "let me run `{cmd}` to make sure it matches the spec.",
    "now the tests.",
)
IMPLEMENT_FINALS = (
    "implemented `{fn}` — {how}. `{cmd}` passes.",
    "done: `{fn}` works now; {how}. all tests in {test_path} pass.",
    "`{fn}` is in place — {how}, and the tests pass.",
)
IMPLEMENT_FINALS_UNVERIFIED = (
    "implemented `{fn}` — {how}.",
    "done: `{fn}` is written; {how}.",
)

GREP_USES = (
    "first i'll find every place `{old}` appears.",
    "let me grep for `{old}` to see all the uses.",
    "searching the repo for `{old}`.",
)
SED_RENAME = (
    "the grep shows every use; one `sed` over the files it lists renames them all.",
    "renaming every use in place with `sed`, on the files that mention `{old}`.",
    "`{old}` is used in those files; `sed` can rename the whole word in all of them at once.",
)
RUN_AFTER_RENAME = (
    "running the tests to make sure nothing broke.",
    "let me run `{cmd}` to check the rename.",
)
GREP_LEFTOVERS = (
    "and a last grep to make sure nothing still says `{old}`.",
    "checking that no `{old}` is left anywhere.",
)
RENAME_FINALS = (
    "renamed `{old}` to `{new}` — {n} lines across {files}. the tests pass and grep finds no `{old}` left.",
    "done: `{old}` is now `{new}` in {files} ({n} lines). tests pass, no leftovers.",
)
RENAME_FINALS_UNVERIFIED = (
    "renamed `{old}` to `{new}` — {n} lines across {files}.",
    "done: `{old}` is now `{new}` in {files}.",
)

# A locate's grep says that the match is the answer: the turn after it answers, it does not read on. It writes the
# name as the request did: BPE splits a name differently after a space than after a backtick (` top` vs `top`,
# ` median` vs `medi`+`an`), and a small model copies a name it has never seen only token for token.
GREP_DEFINITION = (  # the request wrote the name after a space: `def {fn}` keeps it so
    "i'll grep for `def {fn}`: the match gives the file and line to answer with.",
    "searching for `def {fn}` — its file and line are the answer.",
    "a grep for the `def {fn}` line will show exactly where it is.",
)
GREP_DEFINITION_BACKTICKED = (  # the request wrote `{fn}`: so does this, and the pattern is def\s+{fn}
    "i'll grep for the line that defines `{fn}`: the match gives the file and line to answer with.",
    "searching for where `{fn}` is defined — its file and line are the answer.",
    "a grep for the definition of `{fn}` will show exactly where it is.",
)
GREP_END_OF_NAME = (  # after a grep for a misremembered name found nothing
    "no match — i may have the start of the name wrong. i'll grep for how it ends.",
    "nothing defines that. searching for the end of the name instead.",
    "that grep found nothing; the name's ending should still match.",
)
READ_DEFINITION = (
    "found it. let me read it too, to say what it does.",
    "that's the place; reading the function to describe it properly.",
)
LOCATE_FINALS = (  # from the grep alone: where, and nothing about what it does (not read)
    "`{fn}` is defined at `{path}:{line}`.",
    "it's at `{path}:{line}`.",
    "`{path}:{line}` — that's where `{fn}` is defined.",
)
LOCATE_FINALS_DESCRIBED = (  # after reading it
    "`{fn}` is defined in `{path}:{line}` — {how}.",
    "it's at `{path}:{line}`. {how}.",
    "`{path}:{line}` — that's `{fn}`; {how}.",
)

FOLLOW_UPS = (
    "want me to add more tests for `{fn}` while i'm at it?",
    "let me know if you'd like me to clean up the rest of {module_path} too.",
    "anything else you want me to look at?",
    "should i also update the README?",
    "would you like me to refactor the other helpers the same way?",
)
