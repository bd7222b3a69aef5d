"""A conversation over the inference engine that keeps its KV cache between turns.

The session holds the conversation twice: as messages, and as the exact token ids the model has seen or produced
(its own generated ids, not a re-tokenisation of their text). The cache holds a prefix of those ids; each turn feeds
only the ids after that prefix (the previous reply's last token, the new user or tool_result turn and
`<|assistant_start|>`), so the history is never encoded again.

An assistant turn ends at `<|assistant_end|>`, right after a tool call (`<|tool_call_end|>`, the session closes the
turn with `<|assistant_end|>` itself, as the format requires), or at the token budget (closed the same way).

Context overflow rule: before a reply, the conversation plus room for the reply (min(max_new_tokens, max_len // 4)
tokens) must fit in the cache. If it does not, the oldest exchanges are dropped (a user turn and everything up to the
next user turn; the system prompt is kept and re-attached to the new first user turn), the cache is reset and the
kept conversation is fed again. If even the newest user turn alone does not fit, `ContextFull` is raised and the
session is left as it was before the message was added.

`TurnDecoder` turns a stream of assistant token ids into text deltas (whole UTF-8 characters, stop strings held back
and honoured) and finally a parsed message (the HTTP server uses reply_decoder.py, which also keeps special tokens out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nanocode.data.conversation import ConversationCodec, Message, without_special_text
from nanocode.models.engine import ContextFull, Engine
from nanocode.models.sampling import SamplingParams

# Ids that end an assistant turn when generated: its end, a finished tool call, or (a confused model) the start of
# a turn that is not its own.
TURN_STOPPERS = ("assistant_end", "tool_call_end", "bos", "user_start", "tool_result_start", "assistant_start")


# nanochat's chat defaults.
CHAT_SAMPLING = SamplingParams(temperature=0.6, top_k=50)


def stop_ids(codec: ConversationCodec) -> list[int]:
    return [codec.ids[name] for name in TURN_STOPPERS]


class TurnDecoder:
    """Assistant ids -> streamed text deltas and a parsed message.

    Text before `<|tool_call_start|>` streams; the tool call is collected silently and parsed at the end. A stop
    string ends the reply where it starts (the text from it on is dropped, as OpenAI does); until a suffix of the text
    can no longer grow into a stop string it is held back, as is a partial UTF-8 character.
    """

    def __init__(self, codec: ConversationCodec, stop_strings: Sequence[str] = ()):
        self.codec = codec
        self.stop_strings = [s for s in stop_strings if s]
        self.body: list[int] = []  # the turn's ids without the turn stopper
        self.finish_token: int | None = None  # the stop id that ended the turn, if any
        self.stopped_by_string = False
        self._tool_start = codec.ids["tool_call_start"]
        self._stoppers = set(stop_ids(codec))
        self._text_ids: list[int] = []
        self._in_tool_call = False
        self._emitted = 0  # characters of the text already streamed

    @property
    def done(self) -> bool:
        return self.finish_token is not None or self.stopped_by_string

    def push(self, token: int) -> str:
        """Take one generated id; returns the text that can be shown now ('' if none)."""
        if self.done:
            return ""
        if token in self._stoppers:
            self.finish_token = token
            return self._flush(final=True)
        self.body.append(token)
        if token == self._tool_start and not self._in_tool_call:
            self._in_tool_call = True
            return self._flush(final=True)
        if self._in_tool_call:
            return ""
        self._text_ids.append(token)
        return self._flush(final=False)

    def flush(self) -> str:
        """The text still held back (a partial character, a possible stop-string prefix) once no token follows."""
        return "" if self.stopped_by_string or self._in_tool_call else self._flush(final=True)

    @property
    def made_call(self) -> bool:
        """The turn ended with a complete tool call (`<|tool_call_start|>...<|tool_call_end|>`)."""
        return self._in_tool_call and self.finish_token == self.codec.ids["tool_call_end"]

    def _flush(self, final: bool) -> str:
        text = self.text
        end = len(text)
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0 and at < end:
                end, self.stopped_by_string = at, True
        if not self.stopped_by_string and not final:
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                end -= 1
            for stop in self.stop_strings:  # a suffix that may still become a stop string
                for k in range(min(len(stop) - 1, end), 0, -1):
                    if text[:end].endswith(stop[:k]):
                        end -= k
                        break
        end = max(end, self._emitted)
        delta, self._emitted = text[self._emitted : end], end
        return delta

    @property
    def text(self) -> str:
        """All text before any tool call decoded so far (stop strings not yet cut)."""
        return self.codec.tok.decode(self._text_ids)

    @property
    def content(self) -> str:
        """The reply's visible text (cut at a stop string)."""
        return self.text[: self._emitted] if self.stopped_by_string else self.text

    def message(self) -> Message:
        """The assistant message: content, and tool_call or tool_call_error when the turn made a call."""
        if self.stopped_by_string:
            return without_special_text({"role": "assistant", "content": self.content})
        parsed = self.codec.parse_assistant(self.body + ([self.finish_token] if self.made_call else []))
        return without_special_text(parsed)


@dataclass
class Reply:
    message: Message  # the assistant message as parsed (content, tool_call / tool_call_error)
    tokens: list[int]  # the ids generated for it, the stop id included when there was one
    finish_reason: str  # 'stop' (assistant_end), 'tool_call', 'length' (token budget or context), 'interrupted'
    dropped_messages: int = 0  # messages dropped from the front to make room before this reply


class ChatSession:
    """One conversation (batch row 0 of its own cache), turn by turn."""

    def __init__(
        self,
        engine: Engine,
        codec: ConversationCodec,
        *,
        system: str | None = None,
        sampling: SamplingParams = CHAT_SAMPLING,
        max_new_tokens: int = 512,
    ):
        self.engine, self.codec = engine, codec
        self.system = system
        self.sampling = sampling
        self.max_new_tokens = max_new_tokens
        self.cache = engine.new_cache(1)
        self.clear()

    # ---------------------------------------------------------------------------------------------- state
    def clear(self) -> None:
        """Forget the conversation (the cache is reset, not reallocated)."""
        self.cache.reset()
        self.messages: list[Message] = []
        self._segments: list[list[int]] = []  # the ids of each message, in order
        self.tokens: list[int] = [self.codec.ids["bos"]]

    @property
    def cached(self) -> int:
        """How many of `self.tokens` the cache holds."""
        return int(self.cache.lengths[0])

    @property
    def reserve(self) -> int:
        return min(self.max_new_tokens, self.engine.max_len // 4)

    def segment_ids(self, message: Message, *, first_user: bool = False) -> list[int]:
        """The ids of one message as the codec renders it (the system prompt merged into the first user turn)."""
        ids, enc = self.codec.ids, self.codec.tok.encode
        role, content = message["role"], message.get("content") or ""
        if role == "user":
            if first_user and self.system:
                content = f"{self.system}\n\n{content}"
            return [ids["user_start"], *(enc(content) if content else []), ids["user_end"]]
        if role == "tool_result":
            return [ids["tool_result_start"], *(enc(content) if content else []), ids["tool_result_end"]]
        if role == "assistant":
            out = [ids["assistant_start"], *(enc(content) if content else [])]
            if message.get("tool_call"):
                out += self.codec.render_tool_call(message["tool_call"])
            return out + [ids["assistant_end"]]
        raise ValueError(f"unknown role {role!r} (user, assistant, tool_result)")

    def add(self, message: Message) -> None:
        """Append a user, tool_result or (given, not generated) assistant message."""
        role = message.get("role")
        last = self.messages[-1]["role"] if self.messages else None
        if role == "user" and last == "user":
            raise ValueError("two user turns in a row: generate a reply first")
        if role == "tool_result" and not (last == "assistant" and self.messages[-1].get("tool_call")):
            raise ValueError("a tool_result must follow an assistant tool call")
        if role == "assistant" and last is None:
            raise ValueError("the conversation must start with a user turn")
        first_user = role == "user" and not any(m["role"] == "user" for m in self.messages)
        self.messages.append(dict(message))
        ids = self.segment_ids(message, first_user=first_user)
        self._segments.append(ids)
        self.tokens += ids

    # ---------------------------------------------------------------------------------------------- replies
    def send(
        self,
        content: str,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Reply:
        """Add a user turn and generate the reply (streamed to `on_text`); see `reply`."""
        self.add({"role": "user", "content": content})
        try:
            return self.reply(on_text, should_stop)
        except ContextFull:
            self._pop_last()
            raise

    def reply(
        self, on_text: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Reply:
        """Generate the next assistant turn after the conversation so far, streaming its text to `on_text`.

        `should_stop()` returning True (the chat sets it from Ctrl-C) ends the turn with what was produced so far
        (finish 'interrupted'); so does a KeyboardInterrupt.
        """
        if not self.messages or self.messages[-1]["role"] == "assistant":
            raise ValueError("nothing to reply to: add a user or tool_result message first")
        dropped = self._make_room()
        prompt = self.tokens + [self.codec.ids["assistant_start"]]
        new = prompt[self.cached :]
        decoder = TurnDecoder(self.codec)
        generated: list[int] = []
        finish = "length"
        gen = self.engine.generate(
            self.cache, [new], self.sampling, max_new_tokens=self.max_new_tokens, stop_ids=stop_ids(self.codec)
        )
        try:
            for column in gen:
                generated.append(column[0])
                delta = decoder.push(column[0])
                if delta and on_text:
                    on_text(delta)
                if should_stop is not None and should_stop():
                    finish = "interrupted"
                    break
        except KeyboardInterrupt:
            finish = "interrupted"
        finally:
            gen.close()
            # Interrupted inside a cache update, its donated buffers are gone: start the cache afresh.
            if any(buf.is_deleted() for buf in self.cache.k + self.cache.v):
                self.cache = self.engine.new_cache(1)
        rest = decoder.flush()
        if rest and on_text:
            on_text(rest)
        if decoder.made_call:
            finish = "tool_call"
        elif decoder.finish_token is not None:
            finish = "stop"
        message = decoder.message()
        # The turn as the format has it: its body, a finished call's <|tool_call_end|>, then <|assistant_end|>.
        # (A stray stop id the model produced instead is dropped: it was sampled but never fed.)
        closing = [self.codec.ids["tool_call_end"]] if decoder.made_call else []
        segment = [self.codec.ids["assistant_start"], *decoder.body, *closing, self.codec.ids["assistant_end"]]
        self.messages.append(message)
        self._segments.append(segment)
        self.tokens += segment
        # The cache must hold a prefix of self.tokens: generated ids it holds beyond the kept body are cut.
        self.cache.truncate(0, min(self.cached, self._common_prefix(prompt + generated)))
        return Reply(message, generated, finish, dropped)

    def _common_prefix(self, fed: list[int]) -> int:
        n = 0
        for a, b in zip(fed, self.tokens):
            if a != b:
                break
            n += 1
        return n

    def _pop_last(self) -> None:
        self.messages.pop()
        n = len(self._segments.pop())
        del self.tokens[-n:]
        self.cache.truncate(0, min(self.cached, len(self.tokens)))

    def _make_room(self) -> int:
        """Apply the overflow rule; returns how many messages were dropped."""
        budget = self.engine.max_len - self.reserve
        if len(self.tokens) + 1 <= budget:  # + <|assistant_start|>
            return 0
        tokens: list[int] = []
        for start in [i for i, m in enumerate(self.messages) if m["role"] == "user"][1:]:
            kept = self.messages[start:]
            segments = [self.segment_ids(kept[0], first_user=True), *self._segments[start + 1 :]]
            tokens = [self.codec.ids["bos"]] + [t for seg in segments for t in seg]
            if len(tokens) + 1 <= budget:
                self.messages, self._segments, self.tokens = kept, segments, tokens
                self.cache.reset()
                return start
        smallest = len(tokens or self.tokens) + 1  # the newest exchange alone
        raise ContextFull(smallest + self.reserve, self.engine.max_len)
