"""Load-balancing choice (pure): which upstream host gets the next request.

No I/O and no clock. The caller owns the hosts and keeps their `active` and `available` fields
current (requests in flight; healthy and not ejected); a balancer only reads them, so a host that
goes down between two picks is skipped on the next one without any notification.

Every `pick` takes `exclude` (the hosts a retry already tried): a host in it is chosen only when
every available host is excluded, so a retry may return to the only host there is. `pick` returns
None only when no host is available, which the caller turns into a fast 503.

Policies (names as in the cluster config's `lb`):
- round_robin: nginx's smooth weighted round robin; an index rotation when weights are equal.
- least_request: Envoy's power of two choices, weighted by weight / (active + 1).
- random: weighted random.
- ring_hash: ketama consistent hashing on a request key (header, cookie, source IP).
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "POLICIES",
    "Balancer",
    "Host",
    "LeastRequest",
    "Random",
    "RingHash",
    "RoundRobin",
    "make_balancer",
    "ring_hash",
]


class Host(Protocol):
    key: str  # stable identity, e.g. "10.0.0.1:8080": what ring hash hashes
    weight: int  # >= 1
    active: int  # requests in flight now, kept by the caller
    available: bool  # healthy and not ejected, kept by the caller


H = TypeVar("H", bound=Host)

# Round robin precomputes its weighted sequence when total weight * hosts is at most this:
# about 10 ms of work in set_hosts, which runs on the event loop.
_MAX_CYCLE_WORK = 100_000
# Ring hash remembers this many recent keys' ring positions: hashing costs about a microsecond
# and the same source IP, session cookie or user header comes back request after request.
_SLOT_CACHE = 4096


def ring_hash(text: str) -> int:
    """A stable 64-bit hash: the same in every process and run (hash() is salted per process),
    so all workers and restarts agree on where a key lands."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Balancer(Generic[H]):
    """The interface every policy implements."""

    __slots__ = ("_hosts", "_n", "_rng")

    def __init__(self, hosts: Sequence[H], rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._hosts: list[H] = []
        self._n = 0
        self.set_hosts(hosts)

    @property
    def hosts(self) -> Sequence[H]:
        return self._hosts

    def set_hosts(self, hosts: Sequence[H]) -> None:
        """Membership changed (config reload, DNS re-resolve): rebuild the internal state."""
        self._hosts = list(hosts)
        self._n = len(self._hosts)
        for h in self._hosts:
            if h.weight < 1:
                raise ValueError(f"host {h.key}: weight must be >= 1 (got {h.weight})")

    def pick(self, hash_key: str | None = None, exclude: Collection[H] = ()) -> H | None:
        raise NotImplementedError

    def _candidates(self, exclude: Collection[H]) -> list[H]:
        """The slow path's choice set: available hosts not excluded, else available ones."""
        hosts = [h for h in self._hosts if h.available]
        if exclude:
            preferred = [h for h in hosts if h not in exclude]
            if preferred:
                return preferred
        return hosts

    def _weighted_choice(self, hosts: list[H]) -> H:
        if len(hosts) == 1:
            return hosts[0]
        r = self._rng.random() * sum(h.weight for h in hosts)
        for h in hosts:
            r -= h.weight
            if r < 0:
                return h
        return hosts[-1]  # only reachable through float rounding


class RoundRobin(Balancer[H]):
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer), over available hosts.

    Each pick adds every candidate's weight to its current weight, takes the largest (the first
    on a tie) and subtracts the candidates' total from it: weights 5, 1, 1 give a a b a c a a,
    spread out rather than a burst of five.

    That costs a pass over all hosts per request, so `pick` avoids it. With equal weights the
    sequence is a plain rotation, done directly; it starts at a random host so that several
    workers (SO_REUSEPORT) do not all send their first request to the same one. With weights,
    the sequence with every host available repeats every total-weight picks and is computed once;
    a pick takes its next slot when that host is available and nothing is excluded (exactly
    nginx's choice), and otherwise runs nginx's algorithm over the candidates, which hands a
    down host's slots out in proportion to the other hosts' weights.
    """

    __slots__ = ("_uniform", "_next", "_current", "_weights", "_cycle", "_cycle_len")

    def set_hosts(self, hosts: Sequence[H]) -> None:
        super().set_hosts(hosts)
        n = self._n
        self._weights = [h.weight for h in self._hosts]
        self._uniform = n > 0 and len(set(self._weights)) == 1
        self._next = self._rng.randrange(n) if self._uniform else 0
        self._cycle: list[H] = []
        total = sum(self._weights)
        if not self._uniform and total * n <= _MAX_CYCLE_WORK:
            self._current = [0] * n
            everyone = [True] * n
            self._cycle = [self._hosts[self._smooth_index(everyone)] for _ in range(total)]
        self._cycle_len = len(self._cycle)
        self._current = [0] * n  # the slow path's own state

    def pick(self, hash_key: str | None = None, exclude: Collection[H] = ()) -> H | None:
        if self._uniform:
            i = self._next
            h = self._hosts[i]
            self._next = i + 1 if i + 1 < self._n else 0
            if h.available and not exclude:
                return h
            return self._rotate(i, exclude)
        if self._cycle_len:
            i = self._next
            h = self._cycle[i]
            self._next = i + 1 if i + 1 < self._cycle_len else 0
            if h.available and not exclude:
                return h
        return self._smooth(exclude)

    def _rotate(self, start: int, exclude: Collection[H]) -> H | None:
        hosts, n = self._hosts, self._n
        for step in range(n):
            i = (start + step) % n
            h = hosts[i]
            if h.available and h not in exclude:
                self._next = i + 1 if i + 1 < n else 0
                return h
        if exclude:
            return self._rotate(start, ())
        return None

    def _smooth(self, exclude: Collection[H]) -> H | None:
        hosts = self._hosts
        eligible = [h.available and h not in exclude for h in hosts]
        if exclude and not any(eligible):
            eligible = [h.available for h in hosts]
        i = self._smooth_index(eligible)
        return hosts[i] if i >= 0 else None

    def _smooth_index(self, eligible: list[bool]) -> int:
        """One step of nginx's algorithm over the eligible hosts; -1 when there is none."""
        weights, current = self._weights, self._current
        best = -1
        best_current = 0
        total = 0
        for i, ok in enumerate(eligible):
            if ok:
                w = weights[i]
                c = current[i] + w
                current[i] = c
                total += w
                if best < 0 or c > best_current:
                    best, best_current = i, c
        if best >= 0:
            current[best] = best_current - total
        return best


def _two_indexes(x: float, n: int) -> tuple[int, int]:
    """Two distinct uniform indexes below n from one random float: its whole part picks the
    first and its fraction the second (53 bits are plenty for any cluster)."""
    x *= n
    i = int(x)
    j = int((x - i) * (n - 1))
    return i, (j + 1 if j >= i else j)


class LeastRequest(Balancer[H]):
    """Envoy's least request with two choices: of two distinct random available hosts, the one
    with the higher weight / (active + 1) (Envoy's active_request_bias 1.0); the first on a tie.

    Sampling two of all hosts and keeping the pair only when both are available is still uniform
    over pairs of available hosts, and it needs no candidate list in the common case.
    """

    __slots__ = ("_weights",)

    def set_hosts(self, hosts: Sequence[H]) -> None:
        super().set_hosts(hosts)
        self._weights = [h.weight for h in self._hosts]

    def pick(self, hash_key: str | None = None, exclude: Collection[H] = ()) -> H | None:
        n = self._n
        if n > 1 and not exclude:
            x = self._rng.random() * n  # _two_indexes, inlined: this runs for every request
            i = int(x)
            j = int((x - i) * (n - 1))
            if j >= i:
                j += 1
            a, b = self._hosts[i], self._hosts[j]
            if a.available and b.available:
                # weight_a / (active_a + 1) >= weight_b / (active_b + 1), without division
                w = self._weights
                return a if w[i] * (b.active + 1) >= w[j] * (a.active + 1) else b
        return self._slow(exclude)

    def _slow(self, exclude: Collection[H]) -> H | None:
        hosts = self._candidates(exclude)
        n = len(hosts)
        if n < 2:
            return hosts[0] if hosts else None
        i, j = _two_indexes(self._rng.random(), n)
        a, b = hosts[i], hosts[j]
        return a if a.weight * (b.active + 1) >= b.weight * (a.active + 1) else b


class Random(Balancer[H]):
    """Weighted random. One draw over all hosts is kept when it lands on an available host
    (which is then a weighted draw among available hosts); otherwise the slow path draws again
    among the candidates."""

    __slots__ = ("_uniform", "_cumulative", "_total")

    def set_hosts(self, hosts: Sequence[H]) -> None:
        super().set_hosts(hosts)
        weights = [h.weight for h in self._hosts]
        self._uniform = len(set(weights)) <= 1
        self._cumulative: list[int] = []
        total = 0
        for w in weights:
            total += w
            self._cumulative.append(total)
        self._total = total

    def pick(self, hash_key: str | None = None, exclude: Collection[H] = ()) -> H | None:
        n = self._n
        if n and not exclude:
            if self._uniform:
                h = self._hosts[int(self._rng.random() * n)]
            else:
                i = bisect_right(self._cumulative, self._rng.random() * self._total)
                h = self._hosts[i if i < n else n - 1]
            if h.available:
                return h
        hosts = self._candidates(exclude)
        return self._weighted_choice(hosts) if hosts else None


class RingHash(Balancer[H]):
    """Ketama consistent hashing: each host owns `vnodes_per_weight * weight` points on a ring of
    64-bit hashes of f"{key}_{i}"; a request key goes to the first point at or after its own hash
    (clockwise, wrapping), skipping points of unavailable or excluded hosts.

    A host's points depend only on its own key and weight, never on the other hosts, which is what
    makes the ring consistent: removing or adding a host, or marking one unavailable, moves only
    the keys of that host. `min_ring_size` (off by default) scales every host up until the ring has
    that many points, as Envoy's minimum_ring_size does; that scale depends on the cluster's total
    weight, so with it a membership change also moves some keys between the hosts that stayed
    (envoy#22558). Points tie-break on the host key so the ring does not depend on host order.
    """

    __slots__ = (
        "_vnodes",
        "_min_ring_size",
        "_cache",
        "_signature",
        "_points",
        "_owner_index",
        "_owners",
        "_random",
        "_slots",
    )

    def __init__(
        self,
        hosts: Sequence[H],
        rng: random.Random | None = None,
        vnodes_per_weight: int = 100,
        min_ring_size: int = 0,
    ) -> None:
        if vnodes_per_weight < 1:
            raise ValueError(f"vnodes_per_weight must be >= 1 (got {vnodes_per_weight})")
        if min_ring_size < 0:
            raise ValueError(f"min_ring_size must be >= 0 (got {min_ring_size})")
        self._vnodes = vnodes_per_weight
        self._min_ring_size = min_ring_size
        # per host key: its point hashes, so a DNS re-resolve only hashes the new hosts
        self._cache: dict[str, list[int]] = {}
        self._signature: list[tuple[str, int]] = []
        self._owner_index: list[int] = []  # by ring point: its owner's place in the hosts
        super().__init__(hosts, rng)

    def set_hosts(self, hosts: Sequence[H]) -> None:
        super().set_hosts(hosts)
        hosts = self._hosts
        # hash_key None picks like the random policy, over the same hosts
        self._random: Random[H] = Random(hosts, self._rng)
        self._slots: dict[str, int] = {}
        per_weight = self._vnodes
        total_weight = sum(h.weight for h in hosts)
        if total_weight and per_weight * total_weight < self._min_ring_size:
            per_weight = math.ceil(self._min_ring_size / total_weight)
        signature = [(h.key, h.weight) for h in hosts]
        signature.append(("", per_weight))
        if signature == self._signature:
            # the same ring (a DNS refresh with the same answer): only the host objects may be new
            self._owners = [hosts[i] for i in self._owner_index]
            return
        self._signature = signature
        # Each point is packed with its host's rank by key into one int: ints sort about twice
        # as fast as tuples, and a tie between two hosts' points is broken by key, not by order.
        by_key = sorted(range(self._n), key=lambda i: hosts[i].key)
        shift = max(16, self._n.bit_length())
        cache: dict[str, list[int]] = {}
        packed: list[int] = []
        for rank, index in enumerate(by_key):
            h = hosts[index]
            count = per_weight * h.weight
            points = cache.get(h.key) or self._cache.get(h.key, [])
            if len(points) < count:
                points = points + [ring_hash(f"{h.key}_{i}") for i in range(len(points), count)]
            cache[h.key] = points
            packed.extend([(p << shift) | rank for p in points[:count]])
        packed.sort()
        self._cache = cache
        mask = (1 << shift) - 1
        self._points = [v >> shift for v in packed]
        self._owner_index = [by_key[v & mask] for v in packed]
        self._owners = [hosts[i] for i in self._owner_index]

    @property
    def ring_size(self) -> int:
        return len(self._points)

    def pick(self, hash_key: str | None = None, exclude: Collection[H] = ()) -> H | None:
        if hash_key is None:
            return self._random.pick(None, exclude)
        owners = self._owners
        size = len(owners)
        if not size:
            return None
        i = self._slots.get(hash_key)
        if i is None:
            i = bisect_left(self._points, ring_hash(hash_key))
            if i == size:
                i = 0
            slots = self._slots
            if len(slots) >= _SLOT_CACHE:
                slots.clear()
            slots[hash_key] = i
        h = owners[i]
        if h.available and not exclude:
            return h
        return self._walk(i, exclude)

    def _walk(self, start: int, exclude: Collection[H]) -> H | None:
        owners = self._owners
        size = len(owners)
        seen: set[int] = set()  # ids of hosts already rejected: stop once every host was
        for step in range(size):
            h = owners[(start + step) % size]
            if h.available and h not in exclude:
                return h
            seen.add(id(h))
            if len(seen) == self._n:
                break
        if exclude:
            return self._walk(start, ())
        return None


POLICIES: dict[str, type[Balancer[Any]]] = {
    "round_robin": RoundRobin,
    "least_request": LeastRequest,
    "random": Random,
    "ring_hash": RingHash,
}


def make_balancer(
    policy: str, hosts: Sequence[H], rng: random.Random | None = None, **options: int
) -> Balancer[H]:
    """The balancer for a cluster's `lb` name; `options` go to its constructor (ring_hash:
    vnodes_per_weight, min_ring_size)."""
    try:
        cls = POLICIES[policy]
    except KeyError:
        known = ", ".join(POLICIES)
        raise ValueError(f"unknown load-balancing policy {policy!r} (known: {known})") from None
    return cls(hosts, rng, **options)
