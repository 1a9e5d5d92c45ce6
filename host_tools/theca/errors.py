"""Errors the host tools report to a user, and the process exit codes.

A `BadInput` carries every problem found in the user's files, not just the
first, so a clinician can fix a prescription in one pass. The CLI prints
`BadInput.messages` one per line and exits with `BAD_INPUT`.

Field paths in messages look like `steps[2].rate` or `events[3].volume`.
Indices count from 1, the way a person counts the `[[steps]]` tables in the
file, not from 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

#: Process exit status: success.
OK = 0
#: Process exit status: a run or check that did not pass (a simulation that stopped, a
#: strict decode with problems, a change not confirmed, a pump whose state went back).
CHECK_FAILED = 1
#: Process exit status: a file, unit or limit problem; nothing was sent to a device.
BAD_INPUT = 2
#: Process exit status: the device refused the command (the reason is printed).
DEVICE_REFUSED = 3
#: Process exit status: the link to the device failed.
LINK_FAILURE = 4


class BadInput(Exception):
    """One or more problems with user input.

    `messages` is a list of human-readable strings, each naming the field
    and what was expected. `fields` is parallel to `messages`: the field path
    each message is about, or None when it concerns the whole file; loaders
    use it to add file names and line numbers.
    """

    def __init__(self, messages: str | Iterable[str], fields: Iterable[str | None] | None = None):
        msgs = [messages] if isinstance(messages, str) else list(messages)
        if not msgs:
            raise ValueError("BadInput needs at least one message")
        flds: list[str | None] = [None] * len(msgs) if fields is None else list(fields)
        if len(flds) != len(msgs):
            raise ValueError("BadInput: fields and messages differ in length")
        self.messages: list[str] = msgs
        self.fields: list[str | None] = flds
        super().__init__("\n".join(msgs))

    @classmethod
    def at(cls, field: str | None, problem: str) -> BadInput:
        """A single problem about `field`; the message reads `field: problem`."""
        return cls([f"{field}: {problem}" if field else problem], [field])


class Problems:
    """Collects problems while a file is checked, so all of them are reported.

    Entries keep their field path so the caller can prefix file and line
    once the whole file has been checked (see `raise_if_any`).
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, str]] = []

    def add(self, field: str | None, problem: str) -> None:
        """Record `problem` about `field` (None: the file as a whole)."""
        self.entries.append((field, f"{field}: {problem}" if field else problem))

    def extend(self, err: BadInput, prefix: str = "", nested: bool = True) -> None:
        """Record every problem of `err` under `prefix`.

        With `nested`, `prefix` is a parent field path: an inline prescription
        inside a scenario reports `prescription.steps[1].rate`. Without it,
        `prefix` is context for problems already located in another file:
        `prescription: rx.toml:7: steps[1].rate: ...`.
        """
        for field, msg in zip(err.fields, err.messages, strict=True):
            if not prefix:
                self.entries.append((field, msg))
            elif nested and field and msg.startswith(field + ": "):
                self.entries.append((f"{prefix}.{field}", f"{prefix}.{msg}"))
            else:
                self.entries.append((prefix, f"{prefix}: {msg}"))

    def call(self, fn, *args, **kwargs):
        """Run `fn`; on BadInput record its problems and return None."""
        try:
            return fn(*args, **kwargs)
        except BadInput as e:
            self.extend(e)
            return None

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def raise_if_any(self, source: str | None = None, locate=None) -> None:
        """Raise one BadInput with everything collected, if anything was.

        `source` (a file name) prefixes every message; `locate(field)` may
        return a 1-based line number for a field, giving `file:line: ...`.
        """
        if not self.entries:
            return
        msgs = []
        for field, msg in self.entries:
            line = locate(field) if (locate is not None and field) else None
            if source is not None and line is not None:
                msgs.append(f"{source}:{line}: {msg}")
            elif source is not None:
                msgs.append(f"{source}: {msg}")
            else:
                msgs.append(msg)
        raise BadInput(msgs, [f for f, _ in self.entries])


T = TypeVar("T")


def checked(value: T | None) -> T:
    """A value a parser returned after its Problems were raised (none were): not None."""
    if value is None:
        raise AssertionError("parsed without problems, yet no value")
    return value
