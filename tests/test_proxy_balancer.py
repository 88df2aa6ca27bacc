"""Load-balancing choice: nginx's smooth WRR, Envoy's P2C least request, weighted random and
ketama ring hash, including their behaviour when hosts go down, are excluded or change."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

from podkit.proxy.balancer import (
    LeastRequest,
    Random,
    RingHash,
    RoundRobin,
    make_balancer,
    ring_hash,
)


@dataclass(eq=False, slots=True)
class Ep:
    key: str
    weight: int = 1
    active: int = 0
    available: bool = True

    def __repr__(self) -> str:
        return self.key


def eps(*weights: int) -> list[Ep]:
    return [Ep(f"10.0.0.{i + 1}:8080", w) for i, w in enumerate(weights)]


def names(hosts: list[Ep], picks: list[Ep | None]) -> str:
    """Picks as letters: hosts[0] is a, hosts[1] is b..."""
    return "".join("-" if p is None else "abcdefghij"[hosts.index(p)] for p in picks)


def count(balancer: object, n: int, **kw: object) -> Counter[str]:
    return Counter(balancer.pick(**kw).key for _ in range(n))  # type: ignore[attr-defined]


KEYS = [f"user-{i}" for i in range(10_000)]


# ---------------------------------------------------------------------------------------------
# round robin


def test_smooth_wrr_is_nginx_sequence() -> None:
    hosts = eps(5, 1, 1)
    rr = RoundRobin(hosts, random.Random(1))
    assert names(hosts, [rr.pick() for _ in range(14)]) == "aabacaa" * 2


def test_smooth_wrr_slow_path_is_nginx_sequence_over_the_candidates() -> None:
    # the excluded fourth host forces nginx's algorithm on every pick, over a, b and c
    hosts = eps(5, 1, 1, 3)
    rr = RoundRobin(hosts, random.Random(1))
    picks = [rr.pick(exclude=[hosts[3]]) for _ in range(14)]
    assert names(hosts, picks) == "aabacaa" * 2


def test_wrr_proportions_are_exact_over_whole_cycles() -> None:
    hosts = eps(3, 2, 1)
    rr = RoundRobin(hosts, random.Random(1))
    assert count(rr, 6000) == {hosts[0].key: 3000, hosts[1].key: 2000, hosts[2].key: 1000}


def test_equal_weights_rotate_in_order_from_a_random_start() -> None:
    hosts = eps(1, 1, 1, 1)
    starts = set()
    for seed in range(20):
        rr = RoundRobin(hosts, random.Random(seed))
        seq = names(hosts, [rr.pick() for _ in range(8)])
        assert seq[:4] == seq[4:] and seq[:4] in ("abcd", "bcda", "cdab", "dabc")
        starts.add(seq[0])
    assert starts == {"a", "b", "c", "d"}  # several workers do not all start on one host


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (2, 2, 1, 3)])
def test_rr_skips_an_unavailable_host_and_returns_to_it(weights: tuple[int, ...]) -> None:
    hosts = eps(*weights)
    rr = RoundRobin(hosts, random.Random(3))
    hosts[1].available = False
    down = count(rr, 800)
    assert hosts[1].key not in down
    # the others keep their proportions: the down host's share is spread by weight
    total = sum(weights) - weights[1]
    for h in (hosts[0], hosts[2], hosts[3]):
        assert abs(down[h.key] - 800 * h.weight / total) <= 8, down
    hosts[1].available = True
    up = count(rr, 100 * sum(weights))
    assert up[hosts[1].key] == 100 * weights[1]


def test_rr_with_equal_weights_gives_a_down_hosts_turns_to_everyone() -> None:
    # a rotation that skips must not hand all of b's turns to c
    hosts = eps(1, 1, 1, 1)
    rr = RoundRobin(hosts, random.Random(0))
    hosts[1].available = False
    assert sorted(count(rr, 300).values()) == [100, 100, 100]


@pytest.mark.parametrize("weights", [(1, 1, 1), (5, 1, 1)])
def test_rr_exclude_and_fallback(weights: tuple[int, ...]) -> None:
    hosts = eps(*weights)
    rr = RoundRobin(hosts, random.Random(0))
    for _ in range(10):
        assert rr.pick(exclude=[hosts[0], hosts[1]]) is hosts[2]
    # every available host excluded: a retry may go back to one of them
    hosts[2].available = False
    for _ in range(10):
        assert rr.pick(exclude=[hosts[0], hosts[1]]) in (hosts[0], hosts[1])
    hosts[1].available = False
    assert rr.pick(exclude=hosts) is hosts[0]
    hosts[0].available = False
    assert rr.pick() is None
    assert rr.pick(exclude=hosts) is None


def test_no_hosts_gives_none() -> None:
    for policy in ("round_robin", "least_request", "random", "ring_hash"):
        b = make_balancer(policy, [], random.Random(0))
        assert b.pick() is None
        assert b.pick("k") is None


def test_set_hosts_changes_membership() -> None:
    hosts = eps(1, 1, 1)
    rr = RoundRobin(hosts, random.Random(0))
    rr.set_hosts(hosts[:2])
    assert set(count(rr, 10)) == {hosts[0].key, hosts[1].key}
    rr.set_hosts(eps(4, 1))  # equal -> weighted switches to nginx's sequence
    assert names(rr.hosts, [rr.pick() for _ in range(5)]) == "aabaa"  # type: ignore[arg-type]


def test_weight_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight must be >= 1"):
        RoundRobin(eps(1, 0))


# ---------------------------------------------------------------------------------------------
# least request


def test_p2c_never_picks_the_most_loaded_host() -> None:
    hosts = eps(1, 1, 1)
    for h, active in zip(hosts, (0, 5, 10), strict=True):
        h.active = active
    lr = LeastRequest(hosts, random.Random(7))
    c = count(lr, 30_000)
    # a wins both pairs it is in (2/3), b only the pair with c (1/3), c none
    assert hosts[2].key not in c
    assert abs(c[hosts[0].key] / 30_000 - 2 / 3) < 0.02
    assert abs(c[hosts[1].key] / 30_000 - 1 / 3) < 0.02


def test_p2c_with_two_hosts_always_takes_the_less_loaded() -> None:
    hosts = eps(1, 1)
    hosts[0].active = 3
    lr = LeastRequest(hosts, random.Random(7))
    assert count(lr, 1000) == {hosts[1].key: 1000}


def test_p2c_weighs_active_requests_by_weight() -> None:
    # Envoy: weight / (active + 1); 4/3 beats 1/1 although a has more requests in flight
    hosts = eps(4, 1)
    hosts[0].active = 2
    lr = LeastRequest(hosts, random.Random(7))
    assert count(lr, 1000) == {hosts[0].key: 1000}
    hosts[0].active = 4  # 4/5 < 1/1
    assert count(lr, 1000) == {hosts[1].key: 1000}


def test_p2c_is_uniform_when_load_is_equal() -> None:
    hosts = eps(1, 1, 1, 1)
    lr = LeastRequest(hosts, random.Random(11))
    c = count(lr, 40_000)
    assert all(abs(v - 10_000) < 400 for v in c.values()), c


def test_p2c_skips_unavailable_and_excluded_hosts() -> None:
    hosts = eps(1, 1, 1, 1)
    lr = LeastRequest(hosts, random.Random(5))
    hosts[0].available = False
    hosts[3].active = 50  # would lose every comparison, but is the only one left below
    c = count(lr, 3000, exclude=[hosts[1], hosts[2]])
    assert c == {hosts[3].key: 3000}
    c = count(lr, 3000)
    assert hosts[0].key not in c and c[hosts[3].key] == 0
    assert abs(c[hosts[1].key] - 1500) < 150
    hosts[1].available = hosts[2].available = hosts[3].available = False
    assert lr.pick() is None


# ---------------------------------------------------------------------------------------------
# random


def test_random_follows_weights() -> None:
    hosts = eps(1, 2, 3)
    rnd = Random(hosts, random.Random(42))
    c = count(rnd, 30_000)
    for h in hosts:
        expected = 30_000 * h.weight / 6
        assert abs(c[h.key] - expected) < 0.05 * expected, c


def test_random_spreads_a_down_hosts_share_by_weight() -> None:
    hosts = eps(1, 2, 3)
    rnd = Random(hosts, random.Random(42))
    hosts[1].available = False
    c = count(rnd, 30_000)
    assert hosts[1].key not in c
    assert abs(c[hosts[2].key] / 30_000 - 0.75) < 0.015, c
    c = count(rnd, 30_000, exclude=[hosts[2]])
    assert c == {hosts[0].key: 30_000}
    hosts[0].available = False
    assert count(rnd, 10, exclude=[hosts[2]]) == {hosts[2].key: 10}  # fallback to the excluded


# ---------------------------------------------------------------------------------------------
# ring hash


def mapping(rh: RingHash[Ep]) -> dict[str, str]:
    return {k: rh.pick(k).key for k in KEYS}  # type: ignore[union-attr]


def test_ring_hash_is_the_documented_stable_hash() -> None:
    expected = hashlib.blake2b(b"10.0.0.1:8080_0", digest_size=8).digest()
    assert ring_hash("10.0.0.1:8080_0") == int.from_bytes(expected, "big")


def test_ring_hash_same_key_same_host_in_any_order_and_any_process() -> None:
    hosts = eps(1, 1, 1, 1, 1)
    rh = RingHash(hosts)
    before = mapping(rh)
    assert mapping(rh) == before
    assert mapping(RingHash(list(reversed(hosts)))) == before
    # another interpreter with another str hash seed: workers and restarts agree
    code = (
        "import json\n"
        "from podkit.proxy.balancer import RingHash\n"
        "from test_proxy_balancer import KEYS, eps\n"
        "rh = RingHash(eps(1, 1, 1, 1, 1))\n"
        "print(json.dumps({k: rh.pick(k).key for k in KEYS[:500]}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.path.dirname(__file__)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == {k: before[k] for k in KEYS[:500]}


def test_ring_hash_spreads_keys_evenly() -> None:
    hosts = eps(1, 1, 1, 1, 1)
    c = Counter(mapping(RingHash(hosts)).values())
    assert len(c) == 5
    assert all(abs(v - 2000) <= 600 for v in c.values()), c


def test_ring_hash_follows_weights() -> None:
    hosts = eps(1, 1, 2)
    rh = RingHash(hosts)
    assert rh.ring_size == 400
    c = Counter(mapping(rh).values())
    assert 0.40 < c[hosts[2].key] / 10_000 < 0.60, c


def test_removing_a_host_moves_only_its_keys() -> None:
    hosts = eps(1, 1, 1, 1, 1)
    rh = RingHash(hosts)
    before = mapping(rh)
    gone = hosts[2]
    rh.set_hosts([h for h in hosts if h is not gone])
    after = mapping(rh)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == gone.key for k in moved)
    assert sum(1 for k in KEYS if before[k] == gone.key) == len(moved)
    # its keys spread over the others rather than all landing on one neighbour
    assert len({after[k] for k in moved}) == 4


def test_an_unavailable_host_moves_only_its_keys_and_gets_them_back() -> None:
    hosts = eps(1, 1, 1, 1, 1)
    rh = RingHash(hosts)
    before = mapping(rh)
    hosts[3].available = False
    down = mapping(rh)
    for k in KEYS:
        if before[k] == hosts[3].key:
            assert down[k] != hosts[3].key
        else:
            assert down[k] == before[k]
    # the same place a removal would have sent them
    rh2 = RingHash([h for h in hosts if h is not hosts[3]])
    assert mapping(rh2) == down
    hosts[3].available = True
    assert mapping(rh) == before


def test_excluding_the_owner_takes_the_next_host_clockwise() -> None:
    hosts = eps(1, 1, 1, 1, 1)
    rh = RingHash(hosts)
    for k in KEYS[:500]:
        owner = rh.pick(k)
        retry = rh.pick(k, exclude=[owner])  # type: ignore[list-item]
        assert retry is not owner
        assert retry is RingHash([h for h in hosts if h is not owner]).pick(k)
    for h in hosts[1:]:
        h.available = False
    assert rh.pick("x", exclude=[hosts[0]]) is hosts[0]  # only host: the retry goes back
    hosts[0].available = False
    assert rh.pick("x") is None


def test_adding_a_host_moves_about_one_in_n_plus_one_keys_all_to_it() -> None:
    hosts = eps(1, 1, 1, 1, 1)
    rh = RingHash(hosts)
    before = mapping(rh)
    new = Ep("10.0.0.6:8080")
    rh.set_hosts([*hosts, new])
    after = mapping(rh)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == new.key for k in moved)
    assert 0.12 < len(moved) / len(KEYS) < 0.22  # 1/6 = 0.167
    assert mapping(RingHash([new, *hosts])) == after  # the same ring as one built afresh


def test_a_refresh_with_new_host_objects_returns_the_new_objects() -> None:
    hosts = eps(1, 2, 1)
    rh = RingHash(hosts)
    before = mapping(rh)
    fresh = eps(1, 2, 1)  # a DNS refresh with the same answer builds new endpoint objects
    rh.set_hosts(fresh)
    assert mapping(rh) == before
    assert all(rh.pick(k) in fresh for k in KEYS[:100])
    fresh[1].weight = 1
    rh.set_hosts(fresh)
    assert rh.ring_size == 300


def test_ring_hash_min_ring_size_scales_small_clusters() -> None:
    hosts = eps(1, 1, 3)
    assert RingHash(hosts).ring_size == 500
    rh = RingHash(hosts, min_ring_size=1024)
    assert rh.ring_size == 205 * 5  # ceil(1024 / 5) points per weight unit
    assert RingHash(hosts, vnodes_per_weight=10).ring_size == 50
    with pytest.raises(ValueError, match="vnodes_per_weight"):
        RingHash(hosts, vnodes_per_weight=0)


def test_ring_hash_without_a_key_picks_at_random_by_weight() -> None:
    hosts = eps(1, 3)
    rh = RingHash(hosts, random.Random(9))
    c = count(rh, 20_000)
    assert abs(c[hosts[1].key] / 20_000 - 0.75) < 0.02, c


def test_ring_hash_position_cache_survives_many_keys() -> None:
    # more distinct keys than the position cache holds: answers must not change
    hosts = eps(1, 1, 1)
    rh = RingHash(hosts)
    first = mapping(rh)
    assert mapping(rh) == first
    fresh = RingHash(hosts)
    assert all(fresh.pick(k) is rh.pick(k) for k in reversed(KEYS))


# ---------------------------------------------------------------------------------------------
# factory


def test_make_balancer_names_the_policies() -> None:
    hosts = eps(1, 1)
    assert type(make_balancer("round_robin", hosts)) is RoundRobin
    assert type(make_balancer("least_request", hosts)) is LeastRequest
    assert type(make_balancer("random", hosts)) is Random
    rh = make_balancer("ring_hash", hosts, vnodes_per_weight=7)
    assert type(rh) is RingHash and rh.ring_size == 14
    with pytest.raises(ValueError, match="unknown load-balancing policy 'maglev'"):
        make_balancer("maglev", hosts)
