"""Errors that the CLI reports as one line (no traceback): bad config, bad data, bad checkpoints."""


class NanocodeError(Exception):
    """Base for user-facing errors: the message is the whole story."""


class ConfigError(NanocodeError):
    """A gin file, binding or plugin that cannot be resolved."""


class DataError(NanocodeError):
    """A missing, corrupt or empty shard or dataset."""


class CheckpointError(NanocodeError):
    """A checkpoint that is missing, incomplete or does not match the experiment."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint step whose files do not read back as they were written (checksum mismatch, unreadable file)."""


class StageInterrupted(NanocodeError):
    """A training stage stopped early on request (SIGTERM, preemption, Ctrl-C) after saving a checkpoint.

    It is an error exit on purpose: the stage is not complete (the speedrun must not mark it done), and
    `--resume` continues it."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one line for a one-line error (TensorStore's long detail trailer cut off)."""
    text = str(e).strip()
    line = text.splitlines()[0].split(" See full TensorStore details")[0].rstrip(".") if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
