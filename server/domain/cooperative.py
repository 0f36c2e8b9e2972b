"""CPU work on the event loop in slices, so that no request holds it for long.

Parsing and building the largest request the server accepts (--max-rules rules of up to
server.rules.MAX_RULE_LENGTH characters) takes a few hundred milliseconds of CPU. Done in one
go, that is a few hundred milliseconds in which no other call, health checks included, gets an
answer. :func:`in_slices` does the same work, but hands the loop back every couple of
milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Final, TypeVar

T = TypeVar("T")

#: The longest stretch of work between two turns of the event loop, in seconds. A clock is
#: read after each item instead of counting items, because items differ a thousandfold in
#: cost (a one-port rule against a rule of 256 named ports), and a clock read is ~50 ns.
SLICE_SECONDS: Final = 0.002


async def in_slices(items: Iterable[T]) -> list[T]:
    """list(items), with the event loop's other work run between slices of SLICE_SECONDS.

    ``items`` is usually a generator that does the work as each item is taken.
    """
    clock = time.perf_counter
    done: list[T] = []
    until = clock() + SLICE_SECONDS
    for item in items:
        done.append(item)
        if clock() > until:
            await asyncio.sleep(0)
            until = clock() + SLICE_SECONDS
    return done
