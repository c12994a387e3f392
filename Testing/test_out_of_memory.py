"""Running out of memory is the user's to fix: one error line, never a traceback (issue 28, D8)."""

import pytest
import torch

from diffumamba.user_errors import describe, is_user_error


def test_the_cpu_allocators_failure_is_described_in_one_line():
    """PyTorch reports a failed CPU allocation as a plain RuntimeError; predict of a 4096^3 patch printed its
    traceback. 1 PiB is more than any machine can give, so the allocator refuses it at once."""
    with pytest.raises(RuntimeError) as raised:
        torch.empty(1 << 50, dtype=torch.uint8)
    err = raised.value
    assert is_user_error(err)
    line = describe(err)
    assert line == ("could not allocate 1,125,899.9 GB: not enough memory; close other programs, use smaller images "
                    "or another --device")


def test_other_runtime_errors_stay_bugs():
    """Only the allocator's own message counts: any other RuntimeError keeps its traceback."""
    with pytest.raises(RuntimeError) as raised:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert not is_user_error(raised.value)
    assert not is_user_error(RuntimeError("can't allocate memory in my own code"))
