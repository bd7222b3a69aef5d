"""An agent's conversation: a ChatSession (KV cache kept across turns) with what a tool-using loop adds.

1. A malformed tool call is answered like any other: its error (ConversationCodec's MalformedToolCall reason, e.g.
   "error: unterminated tool call (no <|tool_call_end|>)") comes back as a tool_result, so the model sees why and
   can try again. ChatSession itself accepts a tool_result only after a well-formed call.
2. The context rule. Before each reply the conversation plus room for the reply must fit the cache; when it does
   not, in this order, until it does:
     a. old tool results are replaced, oldest first, by "[tool result dropped: N lines]" (the newest is kept);
     b. ChatSession's rule: the oldest exchanges are dropped (a user turn and all up to the next one; the system
        prompt is kept);
     c. the newest tool result is replaced too;
     d. ContextFull: the newest exchange does not fit even so.
   Tool results are what an agent's context fills up with (whole files, command output), and the model's own
   calls and words around them still tell what was done. Replacing a result keeps every token before it, so the
   cache is only cut back to that point and the rest is fed again; dropping an exchange resets it.
"""

from __future__ import annotations

import re

from nanocode.agents.chat_session import ChatSession
from nanocode.data.conversation import Message
from nanocode.models.engine import ContextFull

DROPPED = "[tool result dropped: {n} lines]"
_DROPPED = re.compile(r"\[tool result dropped: \d+ lines\]")


def line_count(text: str) -> int:
    return len(text.splitlines())


class AgentSession(ChatSession):
    """A ChatSession that takes tool results after malformed calls and elides old tool results to make room."""

    def clear(self) -> None:
        super().clear()
        self.dropped_results = 0  # tool results replaced so far in this conversation

    def add(self, message: Message) -> None:
        last = self.messages[-1] if self.messages else {}
        if message.get("role") == "tool_result" and last.get("role") == "assistant" and "tool_call_error" in last:
            self.messages.append(dict(message))
            ids = self.segment_ids(message)
            self._segments.append(ids)
            self.tokens += ids
            return
        super().add(message)

    # ---------------------------------------------------------------------------------------------- the rule
    def _fits(self) -> bool:
        return len(self.tokens) + 1 <= self.engine.max_len - self.reserve  # + <|assistant_start|>

    def _elide_results(self, *, keep_newest: bool) -> None:
        """Step a (or c): replace tool results, oldest first, until the conversation fits."""
        results = [i for i, m in enumerate(self.messages) if m["role"] == "tool_result"]
        if keep_newest:
            results = results[:-1]
        first = None
        for i in results:
            if self._fits():
                break
            content = self.messages[i].get("content") or ""
            if _DROPPED.fullmatch(content):
                continue
            self.messages[i] = {"role": "tool_result", "content": DROPPED.format(n=line_count(content))}
            self._segments[i] = self.segment_ids(self.messages[i])
            self.tokens = [self.codec.ids["bos"]] + [t for s in self._segments for t in s]
            self.dropped_results += 1
            first = i if first is None else first
        if first is not None:  # every token before the first replaced result is unchanged and stays cached
            unchanged = 1 + sum(len(s) for s in self._segments[:first])
            self.cache.truncate(0, min(self.cached, unchanged))

    def _make_room(self) -> int:
        self._elide_results(keep_newest=True)
        try:
            return super()._make_room()
        except ContextFull:
            self._elide_results(keep_newest=False)
            return super()._make_room()  # raises ContextFull again when even that was not enough
