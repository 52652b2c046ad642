"""Every parser and decoder of untrusted input (tests/support/fuzz_targets.py), each for a
short Hypothesis run: the standing fuzz benchmark (bench/fuzz.py, a million inputs a
target) in miniature, so a change that lets an exception escape a boundary fails here."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz_targets import Harness, targets

TARGETS = targets()


def mutants(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with some bytes flipped, cut or repeated: inputs close to the real thing."""

    def mutate(seed: bytes, rnd: random.Random) -> bytes:
        data = bytearray(seed)
        for _ in range(rnd.randrange(1, 8)):
            if not data:
                break
            i = rnd.randrange(len(data))
            op = rnd.randrange(4)
            if op == 0:
                data[i] ^= 1 << rnd.randrange(8)
            elif op == 1:
                del data[i : i + rnd.randrange(1, 16)]
            elif op == 2:
                data[i:i] = data[i : i + rnd.randrange(1, 16)]
            else:
                data[i] = rnd.randrange(256)
        return bytes(data)

    return st.builds(mutate, st.sampled_from(seeds), st.randoms(use_true_random=False))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_any_input_is_handled_or_refused_with_its_boundarys_own_error(name: str) -> None:
    harness: Harness
    harness, seeds = TARGETS[name]

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(st.binary(max_size=600), mutants(seeds)))
    def run(data: bytes) -> None:
        harness(data)

    run()


# Inputs the coverage-guided runs found, kept: each once escaped its boundary.
FOUND = [
    # a token that is not text (a lone surrogate from a %-escape): the page's guard raised
    ("page_request", b"GET /?token=t0ken\xealang=zh_CN HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("page_request", b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xed\xb3\xaa\r\n\r\n"),
    ("page_request", b"GET /?token=%ED%B3%AA HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "data"), FOUND)
def test_what_the_fuzzer_found_stays_handled(name: str, data: bytes) -> None:
    TARGETS[name][0](data)
