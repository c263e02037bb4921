"""Every example a source read is checked before training: finite pixels, a label in 0..num_classes-1.

A NaN pixel used to pass the loaders' range checks (NaN compares false) and its client was later dropped from
training as non-finite, silently. Sources call `checked` on their arrays after reading them, from their files or
from fedlab's data cache alike, so the cache cannot bypass it. Labels are integers already here: the loaders refuse
non-integer labels before they cast them.
"""

import sys
from collections.abc import Callable

import numpy as np

from fedlab.data.arrays import ArrayClients, PixelCodes
from fedlab.errors import FedlabError

DROP_KEY = 'data.drop_nonfinite'
_ROWS_PER_BLOCK = 16384  # examples checked at once: bounded temporary memory on 3,500-writer populations


def checked(clients: ArrayClients, *, num_classes: int, split: str, source: Callable[[str], str],
            drop: bool = False) -> ArrayClients:
    """`clients` if every example is sound. Else FedlabError naming the first bad example (`source(client_id)`, its
    file), or, with `drop`, the clients without their bad examples and one warning line."""
    bad = bad_examples(clients, num_classes)
    if not bad.any():
        return clients
    first = int(np.flatnonzero(bad)[0])
    client = int(np.searchsorted(clients.offsets, first, side='right')) - 1
    client_id = clients.client_ids[client]
    what = _what_is_wrong(clients, first, num_classes)
    where = f'{source(client_id)}: client {client_id!r} {split} example {first - int(clients.offsets[client])}'
    if not drop:
        raise FedlabError(f'{where} has {what}; fix the file, or set {DROP_KEY}=true to drop such examples')
    print(f'fedlab: warning: dropped {int(bad.sum())} {split} examples with non-finite pixels or bad labels'
          f' (first: {where}, {what}) as {DROP_KEY}=true asks', file=sys.stderr)
    keep = ~bad
    rows = [np.flatnonzero(keep[start:stop]) + start for start, stop in zip(clients.offsets[:-1], clients.offsets[1:])]
    return clients.take(rows)


def bad_examples(clients: ArrayClients, num_classes: int) -> np.ndarray:
    """A bool per example: a pixel NaN or infinite, or a label outside 0..num_classes-1 (vectorized)."""
    bad = (clients.labels < 0) | (clients.labels >= num_classes)
    pixels = clients.pixels
    if isinstance(pixels, PixelCodes):  # 8-bit codes: finite unless their decoding table is not
        if np.isfinite(pixels.table).all():
            return bad
        return bad | ~np.isfinite(pixels.table)[pixels.codes].reshape(len(bad), -1).all(axis=1)
    flat = pixels.reshape(len(bad), -1)
    for start in range(0, len(bad), _ROWS_PER_BLOCK):
        bad[start:start + _ROWS_PER_BLOCK] |= ~np.isfinite(flat[start:start + _ROWS_PER_BLOCK]).all(axis=1)
    return bad


def _what_is_wrong(clients: ArrayClients, row: int, num_classes: int) -> str:
    label = int(clients.labels[row])
    if not 0 <= label < num_classes:
        return f'label {label}, expected an integer 0-{num_classes - 1}'
    return 'a non-finite pixel (NaN or inf)'


def nonempty(clients: ArrayClients) -> list[str]:
    """The clients that still hold examples (after `checked` dropped some)."""
    return [c for c, n in zip(clients.client_ids, clients.counts) if n]
