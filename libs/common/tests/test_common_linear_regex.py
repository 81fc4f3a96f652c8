"""Route regexes run on RE2: linear time, and unsupported patterns are clear errors."""

from __future__ import annotations

import pytest
from gossamer_common.linear_regex import RegexError, compile_linear


@pytest.mark.timeout(30)
def test_pathological_pattern_runs_in_linear_time() -> None:
    # With a backtracking engine this takes longer than the age of the universe.
    pattern = compile_linear(r"(a+)+$")
    assert pattern.fullmatch("a" * 100_000 + "b") is None
    assert pattern.fullmatch("a" * 100_000) is not None
    header = compile_linear(rb"(x|x)*y")
    assert header.fullmatch(b"x" * 100_000) is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "escape"),  # backreference
        (r"(?=a)a", "perl operator"),  # lookahead
        (r"(?<!a)b", "perl operator"),  # lookbehind
        (r"a++", "repetition"),  # possessive
        (r"x{2000}", "repetition size"),
        (r"/a/(unclosed", "missing )"),
    ],
)
def test_unsupported_or_invalid_patterns_raise(pattern: str, reason: str) -> None:
    with pytest.raises(RegexError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        compile_linear(pattern)


def test_fullmatch_and_search_follow_re() -> None:
    pattern = compile_linear(r"/api/v[12]/[a-z]+")
    assert pattern.fullmatch("/api/v1/items") is not None
    assert pattern.fullmatch("/api/v1/items/x") is None
    assert pattern.search("x/api/v2/y") is not None
    assert pattern == compile_linear(r"/api/v[12]/[a-z]+")
