"""Long text shown in brief: its start and how long it was.

What a caller sends may be megabytes long (a name, a rule); an error sentence or a log line
quotes only its start and says how long it was, so that the two agree on what they show.
Pure, so that the domain's error messages and observability's log lines both use it.
"""

from __future__ import annotations

from typing import Final

#: A string longer than this, in a structured log line or a request error, is shown in brief.
STRING_LIMIT: Final = 256
#: How much of a string shown in brief is kept.
BRIEF_KEEP: Final = 64


def length_marker(length: int) -> str:
    """What stands for the rest of a string shown in brief."""
    return f"…({length} characters)"


def brief(text: str, limit: int = STRING_LIMIT, keep: int = BRIEF_KEEP) -> str:
    """text if it has at most limit characters, else its first keep and how long it was."""
    return text if len(text) <= limit else text[:keep] + length_marker(len(text))
