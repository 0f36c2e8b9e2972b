"""Text from the server made safe for a terminal.

A Service's rule, a result's error and the names in it are text that others may have chosen
(anyone who may patch a Service sets its annotation): printed raw, an escape sequence in it
would run in the operator's terminal, and a bidi override would make a line read otherwise
than it is. They are written as JSON's \\uXXXX escapes (as the Go CLI and the server's own
messages write them); JSON output needs nothing, since json escapes every such character.
"""

from __future__ import annotations

import re
from typing import Final

# C0 controls but the newline that separates lines, DEL, C1 controls, and the bidi
# embeddings, overrides, isolates and marks.
_UNSAFE: Final = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """text with every control character (but newline) and bidi control escaped."""
    return _UNSAFE.sub(_escaped, text)
