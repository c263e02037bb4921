"""A federated population held as a few contiguous arrays: every client's examples back to back.

3,500 clients as one array each for pixels and labels, plus an offset per client, instead of a dict of
small arrays: no per-client copies (TFF's `TestClientData` deep-copies its whole input), counts known
without building a dataset, and a client's examples are a slice. Pixels may be held as 8-bit codes with a
256-entry decoding table (`PixelCodes`): a quarter of the memory, decoded to exactly the float32 values the
source gave.
"""

from collections.abc import Mapping, Sequence

import numpy as np


class PixelCodes:
    """Float32 pixels that take at most 256 values, stored as uint8 indices into `table` (exact)."""

    def __init__(self, codes: np.ndarray, table: np.ndarray):
        self.codes = codes
        self.table = np.asarray(table, np.float32)

    @classmethod
    def encode(cls, pixels: np.ndarray, table: np.ndarray) -> 'PixelCodes | None':
        """Codes of `pixels` if every value is exactly an entry of `table` (sorted ascending), else None."""
        pixels = np.asarray(pixels, np.float32)
        codes = np.searchsorted(table, pixels).clip(0, len(table) - 1).astype(np.uint8)
        if not np.array_equal(table[codes], pixels):
            return None
        return cls(codes, table)

    def decode(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.table[self.codes[start:stop]]

    @property
    def shape(self):
        return self.codes.shape

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes


def leaf_table() -> np.ndarray:
    """k/255 in float64, then float32: what a json value written as `repr(k / 255)` becomes in float32."""
    return (np.arange(256) / 255.0).astype(np.float32)


def image_table() -> np.ndarray:
    """The float32 values of `np.asarray(uint8_image, np.float32) / 255.0` (PNG sources)."""
    return np.arange(256, dtype=np.float32) / 255.0


def splits_to_arrays(splits: dict[str, 'ArrayClients']) -> tuple[dict, dict]:
    """Every split's arrays and metadata in one pair of dicts (keys prefixed `<split>_`), as the data cache stores them."""
    arrays, meta = {}, {}
    for split, clients in splits.items():
        split_arrays, split_meta = clients.to_arrays(f'{split}_')
        arrays.update(split_arrays)
        meta.update(split_meta)
    return arrays, meta


class ArrayClients:
    """Every client's examples back to back: `pixels[offsets[i]:offsets[i + 1]]` is client `client_ids[i]`'s."""

    def __init__(self, client_ids: Sequence[str], counts: Sequence[int], pixels, labels: np.ndarray):
        self.client_ids = list(client_ids)
        self.counts = np.asarray(counts, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.pixels = pixels  # float32 ndarray or PixelCodes
        self.labels = np.asarray(labels, np.int32)
        self._index = {client_id: i for i, client_id in enumerate(self.client_ids)}
        if len(self._index) != len(self.client_ids):
            raise ValueError('client ids must be unique')
        if self.offsets[-1] != len(self.labels) or len(self.labels) != self.pixels.shape[0]:
            raise ValueError(f'counts add up to {self.offsets[-1]}, arrays hold {len(self.labels)} examples')

    @classmethod
    def from_dict(cls, clients: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> 'ArrayClients':
        """From {client_id: (pixels [n, h, w, c], labels [n])} (at least one client), in the dict's order."""
        ids = list(clients)
        pixels = [np.asarray(clients[c][0], np.float32) for c in ids]
        labels = [np.asarray(clients[c][1], np.int32).reshape(-1) for c in ids]
        image_shape = max((p.shape[1:] for p in pixels), key=len)
        pixel_array = np.concatenate([p.reshape(-1, *image_shape) for p in pixels])
        return cls(ids, [len(y) for y in labels], pixel_array, np.concatenate(labels))

    def __contains__(self, client_id) -> bool:
        return client_id in self._index

    def count(self, client_id: str) -> int:
        return int(self.counts[self._index[client_id]])

    def arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The client's (pixels float32 [n, h, w, c], labels int32 [n]), as new arrays."""
        i = self._index[client_id]
        start, stop = self.offsets[i], self.offsets[i + 1]
        if isinstance(self.pixels, PixelCodes):
            pixels = self.pixels.decode(start, stop)
        else:
            pixels = np.array(self.pixels[start:stop])
        return pixels, self.labels[start:stop].copy()

    def subset(self, client_ids: Sequence[str], keep=None) -> 'ArrayClients':
        """The clients `client_ids` (missing ones get no examples) with, optionally, only the examples where
        `keep(labels)` is true; a copy (itself when that is all of it, unchanged)."""
        if keep is None and list(client_ids) == self.client_ids:
            return self
        rows, counts = [], []
        for client_id in client_ids:
            if client_id in self._index:
                i = self._index[client_id]
                index = np.arange(self.offsets[i], self.offsets[i + 1])
                if keep is not None:
                    index = index[keep(self.labels[index])]
            else:
                index = np.zeros(0, np.int64)
            rows.append(index)
            counts.append(len(index))
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        if isinstance(self.pixels, PixelCodes):
            pixels = PixelCodes(self.pixels.codes[rows], self.pixels.table)
        else:
            pixels = self.pixels[rows]
        return ArrayClients(client_ids, counts, pixels, self.labels[rows])

    def take(self, rows: Sequence[np.ndarray]) -> 'ArrayClients':
        """The same clients holding only the examples at `rows[i]` (indices into the whole arrays) each; a copy."""
        index = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        if isinstance(self.pixels, PixelCodes):
            pixels = PixelCodes(self.pixels.codes[index], self.pixels.table)
        else:
            pixels = self.pixels[index]
        return ArrayClients(self.client_ids, [len(r) for r in rows], pixels, self.labels[index])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape[1:])

    def to_arrays(self, prefix: str) -> tuple[dict[str, np.ndarray], dict]:
        """Named arrays and json-able metadata to store (`from_arrays` reverses it)."""
        arrays = {f'{prefix}counts': self.counts, f'{prefix}labels': self.labels}
        if isinstance(self.pixels, PixelCodes):
            arrays.update({f'{prefix}codes': self.pixels.codes, f'{prefix}table': self.pixels.table})
        else:
            arrays[f'{prefix}pixels'] = self.pixels
        return arrays, {f'{prefix}client_ids': self.client_ids}

    @classmethod
    def from_arrays(cls, prefix: str, arrays: dict[str, np.ndarray], meta: dict) -> 'ArrayClients':
        if f'{prefix}codes' in arrays:
            pixels = PixelCodes(arrays[f'{prefix}codes'], arrays[f'{prefix}table'])
        else:
            pixels = arrays[f'{prefix}pixels']
        return cls(meta[f'{prefix}client_ids'], arrays[f'{prefix}counts'], pixels, arrays[f'{prefix}labels'])

    @classmethod
    def concatenate(cls, parts: Sequence[tuple[str, np.ndarray, np.ndarray]],
                    image_shape, table=None) -> 'ArrayClients':
        """From [(client_id, pixels [n, ...], labels [n])]: pixels as uint8 codes of `table` when every part
        has them (`PixelCodes`), float32 otherwise."""
        ids = [p[0] for p in parts]
        counts = [len(p[2]) for p in parts]
        labels = np.concatenate([p[2] for p in parts]).astype(np.int32, copy=False)
        if table is not None and all(p[1].dtype == np.uint8 for p in parts):
            pixels = PixelCodes(np.concatenate([p[1] for p in parts]).reshape(-1, *image_shape), table)
        else:
            decoded = [table[p[1]] if p[1].dtype == np.uint8 else p[1] for p in parts]
            pixels = np.concatenate(decoded).astype(np.float32, copy=False).reshape(-1, *image_shape)
        return cls(ids, counts, pixels, labels)
