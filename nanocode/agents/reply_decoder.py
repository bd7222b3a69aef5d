"""A served reply's ids -> text deltas and a final reply, with no special token ever in the text.

The served model's text goes to clients that render or execute it, so the reply a client sees holds no special token
of the tokenizer, neither as an id (a confused model may sample `<|tool_arg|>` in prose) nor as text (the system
prompt shows tools as plain text `<|tool_call_start|>...`, which the model may copy piece by piece): special ids are
dropped from the text, special strings are cut out of it, and a suffix that may still grow into one is held back
while streaming (as are a partial UTF-8 character and a possible stop-string prefix), so a delta is never taken back.

Text before `<|tool_call_start|>` streams; the call is collected silently and parsed at the end (`call`), the same
special-token rule applied to its name and arguments. A turn may be opened with a forced prefix (tool_choice
"required" or a named function): the decoder then starts inside the call.
"""

from __future__ import annotations

from collections.abc import Sequence

from nanocode.agents.chat_session import stop_ids
from nanocode.core.interfaces import SPECIAL_TOKENS
from nanocode.data.conversation import ConversationCodec, ToolCall, scrub


def _growing_suffix(text: str, targets: Sequence[str]) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of one of `targets`."""
    best = 0
    for target in targets:
        for k in range(min(len(target) - 1, len(text)), best, -1):
            if text.endswith(target[:k]):
                best = k
                break
    return best


class ReplyDecoder:
    """Assistant ids in, clean text deltas out; at the end, the text and the call (if the turn made one)."""

    def __init__(self, codec: ConversationCodec, stop_strings: Sequence[str] = (), prefix: Sequence[int] = ()):
        self.codec, self.tok = codec, codec.tok
        self.stop_strings = [s for s in stop_strings if s]
        self.finish_token: int | None = None
        self.stopped_by_string = False
        self.call_ids: list[int] = []  # <|tool_call_start|> and what follows it (the forced prefix included)
        self._text_ids: list[int] = []
        self._specials = set(codec.ids.values())
        self._stoppers = set(stop_ids(codec))
        self._emitted = 0
        self._cut: int | None = None  # where a stop string cut the text
        for token in prefix:
            self.push(token)

    @property
    def done(self) -> bool:
        return self.finish_token is not None or self.stopped_by_string

    @property
    def in_call(self) -> bool:
        return bool(self.call_ids)

    @property
    def made_call(self) -> bool:
        """The turn ended with a complete call (`<|tool_call_start|>...<|tool_call_end|>`)."""
        return self.in_call and self.finish_token == self.codec.ids["tool_call_end"]

    def push(self, token: int) -> str:
        """Take one generated id; returns the text that can be shown now ('' if none)."""
        if self.done:
            return ""
        if token in self._stoppers:
            self.finish_token = token
            return "" if self.in_call else self._flush(final=True)
        if self.in_call:
            self.call_ids.append(token)
            return ""
        if token == self.codec.ids["tool_call_start"]:
            self.call_ids.append(token)
            return self._flush(final=True)
        if token not in self._specials:
            self._text_ids.append(token)
        return self._flush(final=False)

    def flush(self) -> str:
        """What is still held back, once no token follows."""
        return "" if self.stopped_by_string or self.in_call else self._flush(final=True)

    def _flush(self, final: bool) -> str:
        text = scrub(self.tok.decode(self._text_ids))
        end = len(text)
        for stop in self.stop_strings:
            at = text.find(stop)
            if 0 <= at < end:
                end, self.stopped_by_string, self._cut = at, True, at
        if not self.stopped_by_string and not final:
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                end -= 1
            end -= _growing_suffix(text[:end], [*self.stop_strings, *SPECIAL_TOKENS])
        end = max(end, self._emitted)
        delta, self._emitted = text[self._emitted : end], end
        return delta

    @property
    def text(self) -> str:
        """The reply's text (before any call, cut at a stop string, no special token)."""
        text = scrub(self.tok.decode(self._text_ids))
        return text[: self._cut] if self._cut is not None else text

    def call(self) -> tuple[dict | None, str]:
        """(the call as {"name", "args"}, '') when the turn made a well-formed one, else (None, the call's text)."""
        if not self.in_call or self.stopped_by_string:
            return None, ""
        ids = self.call_ids + ([self.finish_token] if self.made_call else [])
        parsed = self.codec.parse_tool_call(ids)
        if isinstance(parsed, ToolCall):
            fields = [parsed.name, *parsed.args.keys(), *parsed.args.values()]
            if not any(scrub(f) != f for f in fields):
                return {"name": parsed.name, "args": parsed.args}, ""
        return None, self._raw_call_text()

    def _raw_call_text(self) -> str:
        """A malformed or unfinished call as readable text: its pieces, separators for the structure tokens."""
        marks = {self.codec.ids["tool_arg"]: " ", self.codec.ids["tool_val"]: "="}
        out, run = [], []
        for token in self.call_ids[1:]:
            if token in self._specials:
                out.append(self.tok.decode(run))
                out.append(marks.get(token, " "))
                run = []
            else:
                run.append(token)
        out.append(self.tok.decode(run))
        return scrub("".join(out)).strip()
