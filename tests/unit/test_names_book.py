# SPDX-License-Identifier: Apache-2.0
"""NameBook: which name a learned address came from, per workload."""
from __future__ import annotations

import gc
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.workloads.names import NAMES_PER_ADDRESS, NameBook

W1, W2, W3 = 101, 202, 303
LONG = 1e9      # a TTL that never ends within a test


def ips(count: int, prefix: str = "10.0") -> list[str]:
    return [f"{prefix}.{n // 256}.{n % 256}" for n in range(count)]


def held(book: NameBook, workload: int, addresses: list[str], now: float = 0.0) -> list[str]:
    """The addresses of workload the book still names."""
    return [ip for ip in addresses if book.name_of(workload, ip, now) is not None]


def test_an_address_is_named_by_its_answer():
    book = NameBook()
    book.learn(W1, "pypi.org", ["151.101.0.223", "2a04:4e42::223"], ttl_s=300, now=10.0)
    assert book.name_of(W1, "151.101.0.223", 11.0) == "pypi.org"
    assert book.name_of(W1, "2a04:4e42::223", 11.0) == "pypi.org"
    assert book.name_of(W1, "151.101.0.224", 11.0) is None
    assert book.name_of(W2, "151.101.0.223", 11.0) is None
    assert len(book) == 2


def test_expired_entries_answer_none():
    book = NameBook()
    book.learn(W1, "short.egtest", ["10.0.0.1"], ttl_s=2, now=100.0)
    assert book.name_of(W1, "10.0.0.1", 101.999) == "short.egtest"
    assert book.name_of(W1, "10.0.0.1", 102.0) is None
    assert book.name_of(W1, "10.0.0.1", 101.0) is None      # dropped, not only hidden
    assert len(book) == 0


def test_a_ttl_of_zero_learns_nothing():
    book = NameBook()
    book.learn(W1, "a.example", ["10.0.0.1"], ttl_s=0, now=1.0)
    book.learn(W1, "a.example", ["10.0.0.2"], ttl_s=-5, now=1.0)
    assert len(book) == 0 and book.name_of(W1, "10.0.0.1", 1.0) is None


def test_learning_again_extends_never_shortens():
    book = NameBook()
    book.learn(W1, "a.example", ["10.0.0.1"], ttl_s=300, now=0.0)
    book.learn(W1, "a.example", ["10.0.0.1"], ttl_s=5, now=10.0)
    assert book.name_of(W1, "10.0.0.1", 200.0) == "a.example"
    book.learn(W1, "a.example", ["10.0.0.1"], ttl_s=600, now=250.0)
    assert book.name_of(W1, "10.0.0.1", 800.0) == "a.example"
    assert len(book) == 1


def test_the_most_recent_name_of_a_shared_address_wins():
    book = NameBook()
    book.learn(W1, "one.egtest", ["198.18.53.10"], ttl_s=300, now=0.0)
    book.learn(W1, "shared.egtest", ["198.18.53.10"], ttl_s=10, now=1.0)
    assert book.name_of(W1, "198.18.53.10", 2.0) == "shared.egtest"
    # the newer name expires first: the older one, still valid, names it again
    assert book.name_of(W1, "198.18.53.10", 20.0) == "one.egtest"
    book.learn(W1, "shared.egtest", ["198.18.53.10"], ttl_s=10, now=30.0)
    book.learn(W1, "one.egtest", ["198.18.53.10"], ttl_s=300, now=31.0)
    assert book.name_of(W1, "198.18.53.10", 32.0) == "one.egtest"
    assert len(book) == 1


def test_an_address_keeps_a_few_names_the_oldest_dropped():
    book = NameBook()
    names = [f"n{i}.cdn.example" for i in range(NAMES_PER_ADDRESS + 2)]
    for i, name in enumerate(names):
        book.learn(W1, name, ["10.0.0.1"], ttl_s=100 - i, now=0.0)   # newer ones expire sooner
    expected = names[-NAMES_PER_ADDRESS:]
    seen = []
    for now in range(0, 100):
        name = book.name_of(W1, "10.0.0.1", float(now))
        if name is not None and name not in seen:
            seen.append(name)
    assert seen == expected[::-1]


def test_workloads_are_isolated():
    book = NameBook()
    book.learn(W1, "allowed.example", ["10.0.0.1"], ttl_s=LONG, now=0.0)
    book.learn(W2, "evil.example", ["10.0.0.1"], ttl_s=LONG, now=1.0)
    book.learn(W2, "evil.example", ips(50), ttl_s=LONG, now=2.0)
    assert book.name_of(W1, "10.0.0.1", 3.0) == "allowed.example"
    assert book.name_of(W2, "10.0.0.1", 3.0) == "evil.example"
    assert book.name_of(W1, "10.0.0.2", 3.0) is None
    book.forget(W2)
    assert book.name_of(W1, "10.0.0.1", 3.0) == "allowed.example"
    assert book.name_of(W2, "10.0.0.1", 3.0) is None
    assert len(book) == 1


def test_forget_an_unknown_workload_is_nothing():
    book = NameBook()
    book.forget(W1)
    assert len(book) == 0


def test_per_workload_bound_evicts_the_least_recently_learned():
    book = NameBook(per_workload=4, total=100)
    addresses = ips(6)
    for n, ip in enumerate(addresses[:4]):
        book.learn(W1, f"n{n}.example", [ip], ttl_s=LONG, now=float(n))
    book.learn(W1, "n0.example", [addresses[0]], ttl_s=LONG, now=5.0)    # learned again: newest
    book.learn(W1, "n4.example", [addresses[4]], ttl_s=LONG, now=6.0)    # evicts addresses[1]
    book.learn(W1, "n5.example", [addresses[5]], ttl_s=LONG, now=7.0)    # evicts addresses[2]
    assert held(book, W1, addresses) == [addresses[0], addresses[3], addresses[4], addresses[5]]
    assert len(book) == 4


def test_a_bound_of_one():
    book = NameBook(per_workload=1, total=1)
    book.learn(W1, "a.example", ["10.0.0.1", "10.0.0.2"], ttl_s=LONG, now=0.0)
    assert held(book, W1, ["10.0.0.1", "10.0.0.2"]) == ["10.0.0.2"]
    book.learn(W2, "b.example", ["10.0.0.3"], ttl_s=LONG, now=1.0)
    assert held(book, W1, ["10.0.0.2"]) == [] and held(book, W2, ["10.0.0.3"]) == ["10.0.0.3"]
    assert len(book) == 1


@pytest.mark.parametrize("per_workload, total", [(0, 10), (10, 0), (-1, -1)])
def test_bounds_must_be_positive(per_workload, total):
    with pytest.raises(ValueError):
        NameBook(per_workload, total)


def test_the_total_bound_evicts_from_the_largest_workload():
    book = NameBook(per_workload=100, total=10)
    small, large = ips(3, "10.1"), ips(7, "10.2")
    book.learn(W1, "small.example", small, ttl_s=LONG, now=0.0)
    book.learn(W2, "large.example", large, ttl_s=LONG, now=1.0)
    assert len(book) == 10
    # a third workload learns: the largest gives up its oldest, the small one nothing
    book.learn(W3, "new.example", ["10.3.0.1", "10.3.0.2"], ttl_s=LONG, now=2.0)
    assert held(book, W1, small) == small
    assert held(book, W2, large) == large[2:]
    assert len(book) == 10


def test_a_flooding_workload_evicts_its_own_entries_first():
    book = NameBook(per_workload=1000, total=100)
    quiet = ips(20, "10.1")
    book.learn(W1, "quiet.example", quiet, ttl_s=LONG, now=0.0)
    flood = ips(5000, "10.2")
    book.learn(W2, "flood.example", flood, ttl_s=LONG, now=1.0)
    assert held(book, W1, quiet) == quiet
    assert held(book, W2, flood) == flood[-80:]
    assert len(book) == 100


def test_forget_then_learn_again_keeps_the_counts_right():
    book = NameBook(per_workload=50, total=60)
    book.learn(W1, "a.example", ips(50, "10.1"), ttl_s=LONG, now=0.0)
    book.learn(W2, "b.example", ips(10, "10.2"), ttl_s=LONG, now=0.0)
    book.forget(W1)
    assert len(book) == 10
    book.learn(W3, "c.example", ips(50, "10.3"), ttl_s=LONG, now=1.0)
    assert len(book) == 60 and len(held(book, W2, ips(10, "10.2"))) == 10
    book.learn(W2, "b.example", ["10.2.9.9"], ttl_s=LONG, now=2.0)   # W3 is the largest
    assert len(held(book, W3, ips(50, "10.3"))) == 49 and len(book) == 60


def test_a_flood_shrinks_a_larger_workload_only_down_to_its_own_size():
    book = NameBook(per_workload=1000, total=100)
    book.learn(W1, "big.example", ips(70, "10.1"), ttl_s=LONG, now=0.0)
    book.learn(W2, "flood.example", ips(5000, "10.2"), ttl_s=LONG, now=1.0)
    kept = len(held(book, W1, ips(70, "10.1")))
    assert 49 <= kept <= 51 and len(book) == 100


def test_learning_is_constant_time_per_address():
    """Evictions cost the same whatever the bounds: a search for the
    largest workload or the oldest entry would make this quadratic."""
    def once(count: int) -> float:
        book = NameBook(per_workload=count // 8, total=count // 4)
        addresses = ips(count)
        started = time.perf_counter()
        for n, ip in enumerate(addresses):
            book.learn(n % 16, "x.example", [ip], ttl_s=LONG, now=float(n))
        return time.perf_counter() - started

    def seconds(count: int) -> float:
        # the best of three, without the collector's passes over the whole
        # test session's heap: the book's own cost
        gc.disable()
        try:
            return min(once(count) for _ in range(3))
        finally:
            gc.enable()
    seconds(2000)                      # warm up
    small, large = seconds(5000), seconds(50000)
    assert large < small * 10 * 4      # linear (quadratic would be 100 times), with room


OPS = st.lists(st.one_of(
    st.tuples(st.just("learn"), st.integers(1, 4), st.sampled_from(["a", "b", "c"]),
              st.lists(st.integers(0, 30), max_size=8), st.integers(-1, 20)),
    st.tuples(st.just("lookup"), st.integers(1, 4), st.integers(0, 30)),
    st.tuples(st.just("forget"), st.integers(1, 4)),
    st.tuples(st.just("tick"), st.integers(0, 5))), max_size=80)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(1, 8), st.integers(1, 20))
def test_bounds_and_answers_hold_whatever_the_order(ops, per_workload, total):
    """Against a plain record of every learn: an answer is always a name
    learned for that address in that workload, and still valid."""
    book = NameBook(per_workload, total)
    learned: dict[tuple[int, str], dict[str, float]] = {}    # (workload, ip) -> name -> expiry
    now = 0.0
    for op in ops:
        if op[0] == "learn":
            _, workload, name, hosts, ttl = op
            addresses = [f"10.0.0.{h}" for h in hosts]
            book.learn(workload, name, addresses, ttl_s=ttl, now=now)
            for ip in addresses:
                if ttl > 0:
                    names = learned.setdefault((workload, ip), {})
                    names[name] = max(names.get(name, 0.0), now + ttl)
            if addresses and ttl > 0:
                assert book.name_of(workload, addresses[-1], now) == name
        elif op[0] == "lookup":
            _, workload, host = op
            ip = f"10.0.0.{host}"
            answer = book.name_of(workload, ip, now)
            if answer is not None:
                assert learned[(workload, ip)][answer] > now
        elif op[0] == "forget":
            book.forget(op[1])
            learned = {k: v for k, v in learned.items() if k[0] != op[1]}
        else:
            now += op[1]
        assert len(book) <= total
        sizes = [len(held(book, w, [f"10.0.0.{h}" for h in range(31)], now)) for w in range(1, 5)]
        assert all(size <= per_workload for size in sizes) and sum(sizes) <= len(book)


def test_random_churn_stays_within_the_bounds():
    rng = random.Random(15)
    book = NameBook(per_workload=64, total=256)
    for step in range(20000):
        workload = rng.randrange(12)
        if rng.random() < 0.01:
            book.forget(workload)
            continue
        book.learn(workload, f"n{rng.randrange(40)}.example", [f"10.0.{rng.randrange(4)}.{rng.randrange(256)}"],
                   ttl_s=rng.choice([1, 30, LONG]), now=step / 10)
        assert len(book) <= 256
