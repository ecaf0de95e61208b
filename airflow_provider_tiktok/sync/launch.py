"""A sync's launch checks (token, ad accounts, target audience; reads only) run beside its source read.

They are API calls, each a network round trip; the source read is warehouse work. Run one after the other,
a mirror run that changes little spends a sixth of its time waiting on the calls. What the checks find is
waited for only where it is needed: before anything is written to TikTok or a batch sent, before a mirror
run loads the snapshot of the audience they found (``wait``), and before a read is over (``guard``). A
refusal also stops the read at its next chunk, so a bad token does not cost a whole read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def beside(work: Callable[[], T], name: str) -> Future[T]:
    """``work`` on a thread of its own; the future carries its result or its error."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    done = pool.submit(work)
    pool.shutdown(wait=False)  # the thread ends with the work
    return done


def stopped_by(work: Future[Any], items: Iterator[T]) -> Iterator[T]:
    """``items`` until ``work`` beside them fails: its error is raised at the next item, not after the last."""
    for item in items:
        if work.done():
            work.result()
        yield item


class LaunchChecks:
    def __init__(self, checks: Callable[[], None]) -> None:
        self._done = beside(checks, "tiktok-launch")

    def wait(self) -> None:
        """Return once the checks passed; raise what refused them."""
        self._done.result()

    def guard(self, chunks: Iterator[T]) -> Iterator[T]:
        """The chunks, stopped by a refusal; the read ends, even by an error, only once the checks are over
        (a refusal then replaces the read's own error: a refused token says more)."""
        try:
            yield from stopped_by(self._done, chunks)
        finally:
            self.wait()
