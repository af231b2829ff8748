"""One lazily made instance per process of the client server's in-memory state.

Loaded by the client server role, which is stateless apart from a few caches kept in
memory: the routing metadata, the revoked token ids and the blocks of fresh keys. Each
is one ``ProcessLocal`` holding an instance made on first use; tests call ``reset()``
so that every test starts with an empty one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessLocal(Generic[T]):
    """The process-wide instance of ``factory()``, made on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._instance: T | None = None

    def get(self) -> T:
        if self._instance is None:
            self._instance = self._factory()
        return self._instance

    def reset(self) -> None:
        """Forget the instance (tests); the next ``get()`` makes a fresh one."""
        self._instance = None
