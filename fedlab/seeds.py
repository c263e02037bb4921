"""Independent random streams derived from the one `seed` a user sets."""

import zlib

STREAMS = ('model_init', 'sampling', 'shuffle', 'eval_clients', 'holdout')


def derive(seed: int, stream: str) -> int:
    """A seed for `stream`: changing the sampling does not change the model's initial weights, and so on."""
    import numpy as np  # here, not at the top: the CLI imports this module and --help needs no numpy

    return int(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(1)[0] % 2**31)


def derived_seeds(seed: int) -> dict[str, int]:
    return {stream: derive(seed, stream) for stream in STREAMS}
