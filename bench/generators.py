"""Key choosers and record values, after YCSB (pure: no I/O, seeded, unit-tested).

YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
databases") with its default skew 0.99, and the scrambled variant that hashes the rank
so the hot keys are spread over the key space instead of being the lowest keys (with
integer keys the lowest keys would all sit at the start of the first tablet).
"""

from __future__ import annotations

import random
import string

ZIPFIAN_CONSTANT = 0.99
FNV_OFFSET_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 0x100000001B3
MASK_64 = (1 << 64) - 1


def zeta(n: int, theta: float) -> float:
    """sum_{i=1..n} 1 / i**theta: the normalising constant of a zipfian over n items."""
    return sum(1.0 / (i**theta) for i in range(1, n + 1))


class Zipfian:
    """Ranks in [0, items) with P(rank) proportional to 1 / (rank + 1)**theta (rank 0 hottest)."""

    def __init__(self, items: int, theta: float = ZIPFIAN_CONSTANT, rng=None) -> None:
        if items < 1:
            raise ValueError("a zipfian needs at least one item")
        if not 0 < theta < 1:
            raise ValueError("theta must be in (0, 1)")
        self.items, self.theta = items, theta
        self.rng = rng or random.Random()
        self.zetan = zeta(items, theta)
        self.alpha = 1.0 / (1.0 - theta)
        zeta2 = zeta(2, theta)
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan)
        self._half_pow_theta = 1 + 0.5**theta

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self._half_pow_theta:
            return 1
        rank = int(self.items * (self.eta * u - self.eta + 1) ** self.alpha)
        return min(rank, self.items - 1)


def fnv1a_64(value: int) -> int:
    """FNV-1a over the 8 little-endian bytes of ``value`` (YCSB's key scrambling hash)."""
    h = FNV_OFFSET_64
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * FNV_PRIME_64) & MASK_64
        value >>= 8
    return h


class ScrambledZipfian:
    """Zipfian popularity, but the popular keys are scattered: key = fnv(rank) mod items.

    The hash is not a bijection, so a few keys share a rank's popularity and a few are
    never chosen — as in YCSB; the skew (how concentrated the traffic is) is what matters.
    """

    def __init__(self, items: int, theta: float = ZIPFIAN_CONSTANT, rng=None) -> None:
        self.items = items
        self.zipf = Zipfian(items, theta, rng)

    def next(self) -> int:
        return fnv1a_64(self.zipf.next()) % self.items


class Uniform:
    """Keys in [0, items), each equally likely."""

    def __init__(self, items: int, rng=None) -> None:
        if items < 1:
            raise ValueError("needs at least one item")
        self.items = items
        self.rng = rng or random.Random()

    def next(self) -> int:
        return self.rng.randrange(self.items)


class Values:
    """Record values: ``fields`` columns of ``field_bytes`` ASCII characters (YCSB: 10 x 100 B).

    Drawn from a pool of pre-made random strings: making fresh random text per row would
    cost the load generator more CPU than the JSON encoding it measures.
    """

    def __init__(self, fields: int = 10, field_bytes: int = 100, rng=None, pool: int = 512):
        self.fields, self.field_bytes = fields, field_bytes
        self.rng = rng or random.Random()
        alphabet = string.ascii_letters + string.digits
        self.pool = [
            "".join(self.rng.choices(alphabet, k=field_bytes)) for _ in range(max(pool, 1))
        ]
        self.names = [f"field{i}" for i in range(fields)]

    def row(self) -> dict[str, str]:
        """A whole record: every field."""
        return {name: self.rng.choice(self.pool) for name in self.names}

    def field(self) -> tuple[str, str]:
        """One field and a new value (YCSB updates write one field)."""
        return self.rng.choice(self.names), self.rng.choice(self.pool)
