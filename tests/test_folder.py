"""The user's own PNGs: <root>/<client>/<label>/*.png, with a test mirror or held-out fraction; bad layouts."""

import numpy as np
import pytest
from PIL import Image

from fedlab.data import folder
from fedlab.errors import FedlabError


def _png(path, value, size=(6, 4), mode='L'):
    """A flat image of `value` (0-255), `size` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == 'L' else (value, 0, 255 - value)).save(path)


def _tree(root, clients=('alice', 'bob'), labels=(0, 2), per_label=3, prefix='', **png):
    for client in clients:
        for label in labels:
            for i in range(per_label):
                _png(root / prefix / client / str(label) / f'{i}.png', 10 * label + i, **png)
    return root


def test_grayscale_clients_with_held_out_fraction(tmp_path):
    from fedlab.data.federated_data import examples_per_client

    _png(tmp_path / '.thumbnails' / '0' / '0.png', 0)  # hidden directories are not clients
    data = folder.load_folder(str(_tree(tmp_path)), test_fraction=0.5, seed=0)
    assert data.client_ids == ['alice', 'bob'] and data.image_shape == (4, 6, 1) and data.num_classes == 3
    train, test = examples_per_client(data.train), examples_per_client(data.test)
    assert train == {'alice': 3, 'bob': 3} and test == {'alice': 3, 'bob': 3}
    for element in data.train.create_tf_dataset_for_client('alice').as_numpy_iterator():
        label = int(element['label'])
        assert label in (0, 2)
        # The pixel value written for this label's files, scaled to [0, 1].
        assert round(float(element['pixels'][0, 0, 0]) * 255) in range(10 * label, 10 * label + 3)


def test_rgb_with_a_test_mirror(tmp_path):
    _tree(tmp_path, mode='RGB')
    _tree(tmp_path, clients=('alice',), labels=(2,), per_label=2, prefix='test', mode='RGB')
    data = folder.load_folder(str(tmp_path), num_classes=5)
    assert data.client_ids == ['alice', 'bob'] and data.image_shape == (4, 6, 3) and data.num_classes == 5
    test = [e for e in data.test.create_tf_dataset_for_client('alice').as_numpy_iterator()]
    assert [int(e['label']) for e in test] == [2, 2]
    np.testing.assert_allclose(test[0]['pixels'][0, 0], [20 / 255, 0, 235 / 255], rtol=1e-6)
    assert len(list(data.train.create_tf_dataset_for_client('alice'))) == 6  # all training images kept
    assert len(list(data.test.create_tf_dataset_for_client('bob'))) == 0  # no mirror for bob


def test_mixed_grayscale_and_rgb_become_rgb(tmp_path):
    _tree(tmp_path)
    _png(tmp_path / 'bob' / '0' / 'colour.png', 100, mode='RGB')
    assert folder.load_folder(str(tmp_path)).image_shape == (4, 6, 3)


@pytest.mark.parametrize('case,message', [
    ('sizes', r'bob/2/2.png: image is 8x4, but .*alice/0/0.png is 6x4; all images must have one size'),
    ('label_name', r'alice/cat: label directories must be named by integers'),
    ('empty_root', r': no client directories with <label>/\*.png images'),
    ('empty_client', r'carol: no <label>/\*.png images in this client directory'),
    ('unknown_test_label', r'test/alice/7: label 7 is not a label of the training images'),
    ('unknown_test_client', r'test/zoe: no training directory .*zoe for this client'),
    ('num_classes', r'alice/2: label 2 is not below data.num_classes=2'),
    ('missing_root', r'nowhere: no such directory \(data.root must hold'),
    ('not_png', r'alice/0/broken.png: not a readable PNG'),
])
def test_bad_input_is_a_one_line_error(tmp_path, case, message):
    root, options = tmp_path / 'images', {}
    root.mkdir()
    if case != 'empty_root':
        _tree(root)
    if case == 'sizes':
        _png(root / 'bob' / '2' / '2.png', 0, size=(8, 4))
    elif case == 'label_name':
        _png(root / 'alice' / 'cat' / '0.png', 0)
    elif case == 'empty_client':
        (root / 'carol' / '1').mkdir(parents=True)
    elif case == 'unknown_test_label':
        _png(root / 'test' / 'alice' / '7' / '0.png', 0)
    elif case == 'unknown_test_client':
        _png(root / 'test' / 'zoe' / '0' / '0.png', 0)
    elif case == 'num_classes':
        options['num_classes'] = 2
    elif case == 'missing_root':
        root = tmp_path / 'nowhere'
    elif case == 'not_png':
        (root / 'alice' / '0' / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(FedlabError, match=message) as error:
        folder.load_folder(str(root), **options)
    assert '\n' not in str(error.value)
