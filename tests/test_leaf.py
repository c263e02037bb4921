"""LEAF FEMNIST: the real sample loads writer by writer, and every kind of broken file is a one-line error."""

import json

import numpy as np
import pytest

from fedlab.data import leaf
from fedlab.errors import FedlabError
from tests.conftest import LEAF_SAMPLE, compose_config, needs_leaf_sample

needs_sample = needs_leaf_sample


@pytest.fixture(scope='module')
def sample_digits():
    return leaf.load_leaf(str(LEAF_SAMPLE), digits_only=True)


@needs_sample
def test_real_sample_digits(sample_digits):
    from fedlab.data.federated_data import examples_per_client

    data = sample_digits
    assert data.image_shape == (28, 28, 1) and data.num_classes == 10
    assert len(data.client_ids) == 104  # of 105 writers, one wrote no digits
    train, test = examples_per_client(data.train), examples_per_client(data.test)
    assert sum(train.values()) == 10_596 and sum(test.values()) == 1_180  # the sample README's counts
    element = next(iter(data.train.create_tf_dataset_for_client(data.client_ids[0])))
    pixels = element['pixels'].numpy()
    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.float32
    assert np.median(pixels) == 1.0  # mostly background, LEAF's and TFF's convention
    assert 0 <= int(element['label']) < 10


@needs_sample
def test_real_sample_62_classes_through_the_config():
    from hydra.utils import instantiate

    cfg = compose_config(['data=leaf', f'data.path={LEAF_SAMPLE}', 'data.num_clients=3'])
    data = instantiate(cfg.data)
    assert data.num_classes == 62 and len(data.client_ids) == 3
    assert 'leaf: 3 clients, image (28, 28, 1), 62 classes' in data.summary()


def _write(path, users, num_samples=None, user_data=None, **overrides):
    """A LEAF json shard with `users`, each holding two blank 28x28 examples of label 1, unless overridden."""
    user_data = user_data or {u: {'x': [[1.0] * 784, [0.5] * 784], 'y': [1, 3]} for u in users}
    content = {'users': users, 'num_samples': num_samples or [len(user_data[u]['y']) for u in users],
               'user_data': user_data, **overrides}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def _dataset(tmp_path, train_file=None):
    _write(tmp_path / 'test' / 'a.json', ['w1', 'w2'])
    if train_file is None:
        _write(tmp_path / 'train' / 'a.json', ['w1', 'w2'])
    return tmp_path


def test_small_valid_directory(tmp_path):
    data = leaf.load_leaf(str(_dataset(tmp_path)), digits_only=True)
    assert data.client_ids == ['w1', 'w2'] and data.num_classes == 10


@pytest.mark.parametrize('case,message', [
    ('num_samples', r"train/a.json: user 'w1' has num_samples 5 but 2 x rows and 2 y labels"),
    ('pixels', r"train/a.json: user 'w2' example 1 has 783 pixels, expected 784 \(28x28\)"),
    ('label', r"train/a.json: user 'w1' example 0 has label 62, expected an integer 0-61"),
    ('negative_label', r"train/a.json: user 'w1' example 0 has label -1, expected an integer 0-61"),
    ('json', r'train/a.json: not valid JSON \(Expecting'),
    ('keys', r'train/a.json: expected a JSON object with keys users, num_samples and user_data'),
    ('empty', r"train/a.json: user 'w2' has no examples"),
    ('lengths', r'train/a.json: 2 users but 1 num_samples entries'),
    ('missing_user', r"train/a.json: user 'w2' has no user_data entry with x and y"),
    ('duplicate', r"train/b.json: writer 'w1' also appears in another file"),
])
def test_broken_files_are_one_line_errors_naming_the_file(tmp_path, case, message):
    good = {'x': [[1.0] * 784, [0.5] * 784], 'y': [1, 3]}
    train = tmp_path / 'train' / 'a.json'
    if case == 'num_samples':
        _write(train, ['w1', 'w2'], num_samples=[5, 2])
    elif case == 'pixels':
        _write(train, ['w1', 'w2'], user_data={'w1': good, 'w2': {'x': [[1.0] * 784, [1.0] * 783], 'y': [1, 2]}})
    elif case == 'label':
        _write(train, ['w1'], user_data={'w1': {'x': [[1.0] * 784], 'y': [62]}})
    elif case == 'negative_label':
        _write(train, ['w1'], user_data={'w1': {'x': [[1.0] * 784], 'y': [-1]}})
    elif case == 'json':
        train.parent.mkdir(parents=True)
        train.write_text('{"users": ["w1"], "num_samples": [2], "user_data": {')  # cut off mid-file
    elif case == 'keys':
        train.parent.mkdir(parents=True)
        train.write_text('[1, 2, 3]')
    elif case == 'empty':
        _write(train, ['w1', 'w2'], user_data={'w1': good, 'w2': {'x': [], 'y': []}})
    elif case == 'lengths':
        _write(train, ['w1', 'w2'], num_samples=[2])
    elif case == 'missing_user':
        _write(train, ['w1', 'w2'], num_samples=[2, 2], user_data={'w1': good})
    elif case == 'duplicate':
        _write(train, ['w1'])
        _write(tmp_path / 'train' / 'b.json', ['w1'])
    _dataset(tmp_path, train_file=train)
    with pytest.raises(FedlabError, match=message) as error:
        leaf.load_leaf(str(tmp_path))
    assert '\n' not in str(error.value) and str(tmp_path) in str(error.value)


def test_missing_path_and_missing_split(tmp_path):
    with pytest.raises(FedlabError, match=r'nowhere: no such directory \(data.path must hold LEAF'):
        leaf.load_leaf(str(tmp_path / 'nowhere'))
    _write(tmp_path / 'train' / 'a.json', ['w1'])
    with pytest.raises(FedlabError, match=r'test: no \*.json files'):
        leaf.load_leaf(str(tmp_path))


def test_digits_only_drops_writers_without_digits(tmp_path):
    letters = {'x': [[1.0] * 784], 'y': [40]}
    _write(tmp_path / 'train' / 'a.json', ['w1', 'w2'],
           user_data={'w1': {'x': [[1.0] * 784] * 2, 'y': [4, 40]}, 'w2': letters})
    _write(tmp_path / 'test' / 'a.json', ['w1', 'w2'], user_data={'w1': letters, 'w2': letters})
    data = leaf.load_leaf(str(tmp_path), digits_only=True)
    assert data.client_ids == ['w1']
    assert [int(e['label']) for e in data.train.create_tf_dataset_for_client('w1')] == [4]
    assert len(list(data.test.create_tf_dataset_for_client('w1'))) == 0  # its test part had only a letter
    with pytest.raises(FedlabError, match='no writer has digits'):
        _write(tmp_path / 'train' / 'a.json', ['w2'], user_data={'w2': letters})
        leaf.load_leaf(str(tmp_path), digits_only=True)
