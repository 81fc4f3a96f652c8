"""``bench.identity_bench``'s pure parts: which token each request presents, which identity its
CSR names, and how many presentations the apiserver's 10 s token cache could have answered.

The benchmark itself needs the test cluster (``make bench-control-plane``); these need nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench import control_plane, identity_bench
from bench.identity_bench import (
    TokenRepeats,
    bench_identity,
    default_token_count,
    service_account_count,
    service_account_of,
    token_for_request,
)


def test_by_default_every_request_warm_up_included_has_its_own_token() -> None:
    tokens = default_token_count(requests=3000, concurrency=32)
    assert tokens == 3000 + 64
    presented = [token_for_request(sequence, tokens) for sequence in range(tokens)]
    assert len(set(presented)) == tokens


def test_tokens_rotate_round_robin_so_a_token_returns_only_after_all_others() -> None:
    presented = [token_for_request(sequence, 5) for sequence in range(12)]
    assert presented == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert {token_for_request(sequence, 1) for sequence in range(100)} == {0}


def test_tokens_spread_over_at_most_sixteen_service_accounts() -> None:
    assert service_account_count(1) == 1
    assert service_account_count(5) == 5
    assert service_account_count(3064) == identity_bench.MAX_SERVICE_ACCOUNTS == 16
    accounts = [service_account_of(index, 16) for index in range(40)]
    assert accounts[:18] == [*range(16), 0, 1]
    with pytest.raises(ValueError, match="at least one token"):
        service_account_count(0)


def test_each_csr_names_the_identity_its_token_entitles() -> None:
    # the identity service refuses a CSR whose identity is not the token's service account's
    assert (
        bench_identity(3) == "web-3.identity-bench.serviceaccount.identity.gossamer.cluster.local"
    )
    assert len({bench_identity(account) for account in range(16)}) == 16


def test_a_token_presented_again_within_the_cache_ttl_counts_as_a_repeat() -> None:
    repeats = TokenRepeats(ttl=10.0)
    assert not repeats.present(0, now=100.0)
    repeats.completed(0, now=100.5)
    assert not repeats.present(1, now=101.0)
    assert repeats.present(0, now=110.4)  # 9.9 s after the first review completed: cached
    repeats.completed(0, now=111.0)
    assert not repeats.present(0, now=121.0)  # 10 s after: the entry has expired
    assert (repeats.presented, repeats.repeats) == (4, 1)
    assert repeats.repeat_fraction == 0.25


def test_a_token_in_flight_is_a_repeat_since_the_apiserver_coalesces_the_lookup() -> None:
    repeats = TokenRepeats(ttl=10.0)
    repeats.present(7, now=0.0)
    assert repeats.present(7, now=0.001)


def test_the_warm_up_is_not_counted_but_its_tokens_are_remembered() -> None:
    repeats = TokenRepeats(ttl=10.0)
    repeats.present(0, now=0.0)
    repeats.completed(0, now=0.1)
    repeats.reset_counts()
    assert repeats.repeat_fraction == 0.0
    assert repeats.present(0, now=1.0)
    assert (repeats.presented, repeats.repeats) == (1, 1)


def test_the_single_token_mode_is_almost_all_repeats() -> None:
    repeats = TokenRepeats(ttl=10.0)
    for step in range(100):
        repeats.present(token_for_request(step, 1), now=step * 0.01)
    assert repeats.repeats == 99


@pytest.mark.parametrize("text", ["0", "-3", "many"])
def test_bad_token_counts_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"at least 1|not a whole number"):
        identity_bench.positive_int(text)


def test_the_control_plane_bench_passes_the_token_count_and_reports_it(tmp_path: Path) -> None:
    assert control_plane.parse_args([]).identity_tokens is None
    assert control_plane.parse_args(["--identity-tokens", "1"]).identity_tokens == 1
    result = {
        "benchmark": "identity_certify", "concurrency": 32, "tokens": 3064, "issued": 3000,
        "failed": 0, "seconds": 20.0, "certs_per_second": 150.0, "identity_cpu_ms_per_cert": 3.0,
        "token_repeats_within_cache_ttl": 0.0,
    }  # fmt: skip
    table, _ = control_plane.write_results({"identity": result}, {}, tmp_path)
    text = table.read_text()
    assert "| identity: certificates/s | 150.0 |" in text
    assert "3,064 distinct tokens, 0.0% presented again" in text
