"""The data tour writes readable PNG figures and a text summary, for the default data and for LEAF."""

import json
import subprocess

import pytest
from PIL import Image

from fedlab import cli
from tests.conftest import compose_config
from tests.test_cli import FEDLAB

FIGURES = ['client_examples.png', 'label_histograms.png', 'mean_images.png', 'examples_per_client.png',
           'label_distribution.png']


def _check_figures(directory):
    for name in FIGURES:
        with Image.open(directory / name) as image:
            assert image.format == 'PNG' and image.width >= 400 and image.height >= 150, name


def test_explore_digits(tmp_path, capsys):
    cfg = compose_config(['task=explore', 'data.num_clients=8'])
    assert cli.explore(cfg, tmp_path) is None
    _check_figures(tmp_path)
    out = capsys.readouterr().out
    assert 'digits: 8 clients, image (8, 8, 1), 10 classes' in out and 'labels per client: min' in out
    assert f'wrote {tmp_path / "mean_images.png"}' in out


def test_explore_leaf_62_classes_with_a_chosen_client(tmp_path, capsys):
    for split in ('train', 'test'):
        users = [f'w{i}' for i in range(7)]
        user_data = {u: {'x': [[1.0] * 784, [0.0] * 784], 'y': [i % 62, (7 * i) % 62]} for i, u in enumerate(users)}
        (tmp_path / 'leaf' / split).mkdir(parents=True)
        (tmp_path / 'leaf' / split / 'a.json').write_text(
                json.dumps({'users': users, 'num_samples': [2] * 7, 'user_data': user_data})
        )
    cfg = compose_config(['task=explore', 'data=leaf', f'data.path={tmp_path / "leaf"}', 'task.client_index=3'])
    cli.explore(cfg, tmp_path / 'run')
    _check_figures(tmp_path / 'run')
    assert 'leaf: 7 clients, image (28, 28, 1), 62 classes' in capsys.readouterr().out


@pytest.mark.slow  # ~25 s alone, ~55 s on a loaded machine: a fresh TensorFlow import plus the figures
def test_explore_through_the_cli_returns_no_metric(tmp_path):
    """`_hydra_main` tolerates a task that returns None; the figures land in the run directory."""
    proc = subprocess.run(
            [str(FEDLAB), 'task=explore', 'data.num_clients=10', f'hydra.run.dir={tmp_path}/run'],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_figures(tmp_path / 'run')
    assert f'run directory: {tmp_path}/run' in proc.stdout
