"""Checks that hold for every value of a config, whatever its key: numbers must be finite and of a size a run can use.

A NaN or an infinity reaches TensorFlow as a silent NaN model or a traceback far from the key that caused it, and an
integer beyond int64 cannot be a count, a seed or a size. Pure Python (no Hydra, no TensorFlow).
"""

import math
import re

from fedlab.errors import FedlabError, shortened

# Integers a run can use: TensorFlow's and NumPy's int64.
INT_LIMIT = 2**63 - 1
# An integer override is read before Hydra parses it: beyond 4300 digits (sys.get_int_max_str_digits) Hydra's
# parser fails with a traceback (fedlab.cli.main calls check_overrides first).
_INTEGER = re.compile(r'[+-]?\d[\d_]*')


def check_numbers(config: dict) -> None:
    """Raises FedlabError, naming the key, for the first non-finite float or out-of-range integer in `config` (the
    resolved config as plain containers, at any depth)."""
    for key, value in _leaves(config, ''):
        if isinstance(value, float) and not math.isfinite(value):
            raise FedlabError(f'{key}={value} is not allowed: {key} must be a finite number')
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
            raise FedlabError(f'{key}={shortened(str(value))} is not allowed: {key} must be an integer within '
                              '+-(2**63 - 1)')


def check_overrides(overrides: list[str]) -> None:
    """Raises FedlabError for a command-line override `key=<integer>` (or one item of a sweep's `key=a,b`) with more
    digits than an int64 holds, before Hydra parses it."""
    for override in overrides:
        key, equals, value = override.partition('=')
        if not equals or key.startswith('-'):
            continue
        for item in value.split(','):
            digits = item.strip().lstrip('+-').replace('_', '')
            if _INTEGER.fullmatch(item.strip()) and len(digits.lstrip('0')) > len(str(INT_LIMIT)):
                raise FedlabError(f'{key.lstrip("+~")}={shortened(item.strip())} is not allowed: an integer of '
                                  f'{len(digits)} digits; integers must be within +-(2**63 - 1)')


def _leaves(node, prefix: str):
    """(dotted key, value) of every non-container value under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f'{prefix}[{index}]')
    else:
        yield prefix, node
