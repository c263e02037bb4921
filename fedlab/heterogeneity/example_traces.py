"""The device traces shipped in conf/system/traces/, written by `example_trace` (rerun: `make traces`).

    python -m fedlab.heterogeneity.example_traces <LEAF sample dir> <out dir>

Each client's speed is log-uniform over a 10x range (the setting of docs/heterogeneity.md's comparison), its
bandwidths over 10x ranges too; in the digits example a third of the clients are online half the period only.
"""

import json
import pathlib
import sys

import numpy as np

from fedlab.heterogeneity import devices as device_profiles

DIGITS_CLIENTS = [f'client_{i:02d}' for i in range(50)]  # data=digits' default 50 clients


def example_trace(client_ids, *, seed: int, spread: float = 10.0, slowest_examples_per_s: float = 50.0,
                  part_time: float = 0.0, period_s: float = 3600.0) -> device_profiles.Devices:
    """Devices whose speeds span `spread` (log-uniform from `slowest_examples_per_s`), uplinks 0.25-2.5 Mbit/s,
    downlinks 1-10 Mbit/s; a share `part_time` of the clients is online in one half of the period only."""
    rng = np.random.default_rng(seed)
    by_client = {}
    for client_id in sorted(client_ids):
        speed, up, down = (base * spread ** rng.random() for base in (slowest_examples_per_s, 2.5e5, 1e6))
        available = device_profiles.ALWAYS
        if rng.random() < part_time:
            half = period_s / 2
            available = ((0.0, half),) if rng.random() < 0.5 else ((half, period_s),)
        by_client[client_id] = device_profiles.Device(float(speed), float(up), float(down), available)
    return device_profiles.Devices(by_client, period_s=period_s)


def leaf_writers(leaf_dir: pathlib.Path, *, digits_only: bool = False) -> list[str]:
    """The writer ids of a LEAF FEMNIST directory (its train/*.json `users`); `digits_only`: those with a digit
    (data.digits_only=true drops the others)."""
    writers = []
    for path in sorted((leaf_dir / 'train').glob('*.json')):
        content = json.loads(path.read_text())
        writers += [user for user in content['users']
                    if not digits_only or any(label < 10 for label in content['user_data'][user]['y'])]
    return writers


def main(argv: list[str]) -> None:
    leaf_dir, out_dir = pathlib.Path(argv[0]), pathlib.Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    device_profiles.write_trace(out_dir / 'digits_10x.csv', example_trace(DIGITS_CLIENTS, seed=0, part_time=1 / 3))
    device_profiles.write_trace(out_dir / 'leaf_sample_10x.csv', example_trace(leaf_writers(leaf_dir), seed=0))
    device_profiles.write_trace(out_dir / 'leaf_sample_digits_10x.csv',
                                example_trace(leaf_writers(leaf_dir, digits_only=True), seed=0))
    print(f'wrote {out_dir}/digits_10x.csv, leaf_sample_10x.csv and leaf_sample_digits_10x.csv')


if __name__ == '__main__':
    main(sys.argv[1:])
