"""Federated EMNIST through TFF's real loader, from a tiny database in TFF's on-disk format; offline failures."""

import sqlite3
import subprocess
import time

import numpy as np
import pytest

from fedlab.data import emnist
from fedlab.errors import FedlabError
from tests.conftest import compose_config

# Writers and their (label, ink value) examples; 'w3' writes only letters, so it is not in the digits split.
WRITERS = {'w1': [(1, 0.1), (2, 0.2), (3, 0.3)], 'w2': [(4, 0.4), (5, 0.5), (40, 0.6)], 'w3': [(40, 0.7), (50, 0.8)]}
UNREACHABLE = 'http://127.0.0.1:9/emnist_all.sqlite.lzma'  # the discard port: the connection is refused at once


def _example(label: int, ink: float) -> bytes:
    import tensorflow as tf

    pixels = np.ones([28, 28], np.float32)
    pixels[10:18, 12:16] = ink  # a stroke: 1.0 is background in TFF's EMNIST
    return tf.train.Example(features=tf.train.Features(feature={
            'pixels': tf.train.Feature(float_list=tf.train.FloatList(value=pixels.ravel())),
            'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def write_tiny_database(cache_dir):
    """emnist_all.sqlite as TFF's SqlClientData reads it: examples and client_metadata tables, four splits.

    Each writer's first example goes to test, the rest to train; digits splits keep labels 0-9 only.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / emnist.FILE_NAME
    with sqlite3.connect(path) as connection:
        connection.execute(
                'CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL,'
                ' serialized_example_proto BLOB NOT NULL)'
        )
        connection.execute(
                'CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL,'
                ' num_examples INTEGER NOT NULL)'
        )
        for prefix, keep in (('digits_only', lambda label: label < 10), ('all', lambda label: True)):
            for writer, examples in WRITERS.items():
                kept = [e for e in examples if keep(e[0])]
                for split, part in (('test', kept[:1]), ('train', kept[1:])):
                    if not part:
                        continue
                    for label, ink in part:
                        connection.execute('INSERT INTO examples VALUES (?, ?, ?)',
                                           (f'{prefix}_{split}', writer, _example(label, ink)))
                    connection.execute('INSERT INTO client_metadata VALUES (?, ?, ?)',
                                       (writer, f'{prefix}_{split}', len(part)))
    connection.close()
    return path


def test_real_loader_reads_the_tiny_database(tmp_path):
    write_tiny_database(tmp_path)
    data = emnist.load_emnist(digits_only=True, cache_dir=str(tmp_path))
    assert data.client_ids == ['w1', 'w2'] and data.num_classes == 10 and data.image_shape == (28, 28, 1)
    elements = list(data.train.create_tf_dataset_for_client('w1').as_numpy_iterator())
    assert [int(e['label']) for e in elements] == [2, 3]
    assert elements[0]['pixels'].shape == (28, 28, 1) and elements[0]['pixels'].dtype == np.float32
    assert elements[0]['pixels'][12, 13, 0] == pytest.approx(0.2) and elements[0]['pixels'][0, 0, 0] == 1.0
    assert [int(e['label']) for e in data.test.create_tf_dataset_for_client('w2')] == [4]
    assert 'emnist_digits: 2 clients, image (28, 28, 1), 10 classes, 3 train / 2 test examples' in data.summary()
    # The summary's counts come from the database index; they match the examples actually there.
    from fedlab.data.federated_data import examples_per_client

    assert data.known_counts == {'train': examples_per_client(data.train), 'test': examples_per_client(data.test)}

    everything = emnist.load_emnist(digits_only=False, cache_dir=str(tmp_path), num_clients=2)
    assert everything.num_classes == 62 and everything.client_ids == ['w1', 'w2']
    assert everything.known_counts == {'train': {'w1': 2, 'w2': 2}, 'test': {'w1': 1, 'w2': 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [emnist.FILE_NAME]  # nothing else written


def test_federated_training_on_the_tiny_database(tmp_path):
    from fedlab import cli

    write_tiny_database(tmp_path / 'cache')
    cfg = compose_config(['data=emnist', f'data.cache_dir={tmp_path / "cache"}', 'clients_per_round=2', 'rounds=2',
                          'eval_every=1', 'client_epochs=1'])
    outputs = cli.train(cfg, tmp_path / 'run')
    assert outputs.rounds_completed == 2
    assert outputs.final_eval['eval']['examples'] == 2  # w1's and w2's held-out digit


def test_no_cache_and_no_network_is_one_line_and_leaves_nothing(tmp_path):
    cache = tmp_path / 'cache' / 'tff'  # neither directory exists yet
    started = time.monotonic()
    with pytest.raises(FedlabError) as error:
        emnist.load_emnist(cache_dir=str(cache), origin=UNREACHABLE, download_timeout=5)
    message = str(error.value)
    assert time.monotonic() - started < 10
    assert '\n' not in message
    assert message.startswith(f'{cache / emnist.FILE_NAME} is not in the cache and cannot be downloaded')
    assert f'put {emnist.FILE_NAME} in {cache} (or set data.cache_dir' in message  # where to put it
    assert f'it comes from {emnist.ORIGIN}' in message  # where it comes from
    assert list(tmp_path.iterdir()) == []  # the directories it made for the download are gone


def test_existing_cache_dir_stays_as_it_was(tmp_path):
    (tmp_path / 'other.txt').write_text('kept')
    with pytest.raises(FedlabError, match='is not in the cache and cannot be downloaded'):
        emnist.load_emnist(cache_dir=str(tmp_path), origin=UNREACHABLE, download_timeout=5)
    assert [p.name for p in tmp_path.iterdir()] == ['other.txt']


def test_truncated_or_foreign_files_are_refused_before_tff_sees_them(tmp_path):
    database = write_tiny_database(tmp_path)
    whole = database.read_bytes()
    database.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    with pytest.raises(FedlabError, match=r'emnist_all.sqlite: incomplete \(\d+ of \d+ bytes\); delete it'):
        emnist.load_emnist(cache_dir=str(tmp_path))
    database.write_bytes(b'<html>captive portal</html>')
    with pytest.raises(FedlabError, match='emnist_all.sqlite: not a SQLite database'):
        emnist.load_emnist(cache_dir=str(tmp_path))
    database.unlink()
    with sqlite3.connect(database) as connection:
        connection.execute('CREATE TABLE unrelated (x)')
    connection.close()
    with pytest.raises(FedlabError, match='no examples and client_metadata tables'):
        emnist.load_emnist(cache_dir=str(tmp_path))


def test_cli_without_cache_or_network_exits_2_within_20_seconds(tmp_path):
    from tests.test_cli import FEDLAB

    cache = tmp_path / 'cache'
    started = time.monotonic()
    proc = subprocess.run(
            [str(FEDLAB), 'data=emnist', f'data.cache_dir={cache}', f'data.origin={UNREACHABLE}',
             f'hydra.run.dir={tmp_path}/run'],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert elapsed < 20
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith('fedlab: error:')]
    assert len(error_lines) == 1 and emnist.FILE_NAME in error_lines[0], proc.stderr[-2000:]
    assert not cache.exists()
    assert 'tensorflow' not in proc.stderr.lower()  # it stopped before importing TensorFlow
