"""The benchmarks' yardsticks (issue 26): the GPU bench is a no-op without a GPU, and the 2-core limit computes the
weights of fedlab's FedAvg round (to float rounding), so that eta2 compares the same work."""

import subprocess
import sys

import pytest

from bench import gpu, two_streams
from tests.conftest import REPO


def test_the_gpu_bench_without_a_gpu_prints_one_line_and_measures_nothing(capsys):
    assert gpu.main([], gpus=lambda: []) == [gpu.NO_GPU]
    assert capsys.readouterr().out == gpu.NO_GPU + '\n'


def test_the_limit_splits_clients_in_two_contiguous_halves():
    assert two_streams.halves([5, 7, 9, 11, 13]) == [[0, 1], [2, 3, 4]]
    assert two_streams.halves([5] * 10) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.slow
def test_the_limit_splits_clients_as_fedlab_packs_them_on_two_cores():
    from fedlab.fast_paths import client_packing

    for count in range(2, 12):
        assert two_streams.halves([1] * count) == client_packing.split(list(range(count)), 2)


@pytest.mark.slow
def test_the_gpu_bench_on_this_cpu_machine_is_a_no_op():
    proc = subprocess.run([sys.executable, '-m', 'bench', 'gpu'], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert gpu.NO_GPU in proc.stdout


@pytest.mark.slow
def test_the_limit_computes_fedlabs_round():
    import numpy as np
    import tensorflow as tf

    from bench import common, efficiency
    from fedlab.fast_paths import client_packing
    from fedlab.run import round_inputs

    clients = common.synthetic_clients(4, 30)
    data, pipeline, datasets = efficiency._federation(clients)
    x, y, sizes = efficiency._pooled(datasets)
    shards = round_inputs.ClientShards(data, pipeline)
    packed = efficiency._fed_avg('simple_cnn', client_inputs='shards', pack_clients=True)
    groups = client_packing.PackedInputs(shards, groups=2)(sorted(clients))
    state = packed.initialize()
    start = [tf.constant(w) for w in packed.get_model_weights(state).trainable]
    expected = packed.get_model_weights(packed.next(state, groups).state).trainable
    limit = efficiency._two_streams('simple_cnn', x, y, sizes, jit=False)
    got = limit.streams.round(start)
    limit.close()
    shards.close()
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b.numpy(), a, atol=1e-6)
    assert max(float(np.max(np.abs(b.numpy() - w.numpy()))) for b, w in zip(got, start)) > 1e-3  # it trained
