"""Sizes are parsed as accelerate's ``convert_file_size_to_int`` parses them (the oracle), without
importing accelerate; TB/TiB and numpy ints are accepted on top."""

from __future__ import annotations

import numpy as np
import pytest
from accelerate.utils import convert_file_size_to_int
from hypothesis import given
from hypothesis import strategies as st

from layerplan.planner.spec import parse_size
from layerplan.solver import InvalidSpecError

units = st.sampled_from(["KB", "MB", "GB", "KiB", "MiB", "GiB", "Kb", "Mb", "Gb", "gib", "mb", "kB"])
numbers = st.one_of(st.integers(0, 10**6).map(str), st.decimals(0, 10**5, places=3).map(str))


@given(numbers, units)
def test_agrees_with_accelerate(number: str, unit: str) -> None:
    text = f"{number}{unit}"
    assert parse_size(text) == convert_file_size_to_int(text)


@pytest.mark.parametrize(("text", "expected"), [("1TiB", 2**40), ("2TB", 2 * 10**12), ("1.5TiB", 3 * 2**39)])
def test_tera_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_integers_of_any_kind_are_bytes() -> None:
    assert parse_size(np.int64(7)) == parse_size(7) == parse_size("7") == 7
    with pytest.raises(InvalidSpecError):
        parse_size(True)
    with pytest.raises(InvalidSpecError, match="PiB"):
        parse_size(2**70)
