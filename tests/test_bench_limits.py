"""The benchmarks' yardsticks (issue 26): the GPU bench is a no-op without a GPU, the 2-core limit computes the
weights of fedlab's FedAvg round (to float rounding), so that eta2 compares the same work, the sweep bench counts
the machine's busy CPU time, and the arithmetic ceiling counts a round's FLOPs."""

import os
import subprocess
import sys
import time

import pytest

from bench import arithmetic, gpu, sweep, two_streams
from tests.conftest import REPO


def test_the_gpu_bench_without_a_gpu_prints_one_line_and_measures_nothing(capsys):
    assert gpu.main([], gpus=lambda: []) == [gpu.NO_GPU]
    assert capsys.readouterr().out == gpu.NO_GPU + '\n'


def test_the_sweep_bench_counts_every_busy_field_of_proc_stat_but_idle_and_iowait():
    # user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user and nice)
    stat = 'cpu  100 20 30 5000 40 6 7 8 50 9\ncpu0 50 10 15 2500 20 3 3 4 25 4\n'
    tick = os.sysconf('SC_CLK_TCK')
    assert sweep.machine_cpu_seconds(stat) == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / tick)


def test_the_sweep_bench_sees_this_process_work_and_prints_its_share_of_the_cores():
    before = sweep.machine_cpu_seconds()
    if before is None:
        pytest.skip('no /proc/stat here')
    end = time.process_time() + 0.3
    while time.process_time() < end:  # busy for 0.3 s of CPU
        pass
    assert sweep.machine_cpu_seconds() - before >= 0.25
    assert sweep.cpu_description('sequential', 10.0, None) == 'sequential 10.0 s'
    cores = os.cpu_count()
    assert sweep.cpu_description('joblib', 10.0, 5.0 * cores) == (
        f'joblib 10.0 s ({5.0 * cores:.1f} CPU-s, 0.50 of {cores} cores)')


def test_the_arithmetic_ceiling_counts_each_weighted_layers_products_forward_and_backward():
    from fedlab import models

    def flops(architecture):
        return arithmetic.training_flops(models.build_keras_model(architecture, (28, 28, 1), 10), examples=3)

    # linear: one Dense 784 x 10 on the data: forward and weight gradient, no input gradient
    assert flops('linear') == 2 * 3 * (784 * 10 * 2)
    # simple_cnn: Conv2D 3x3x1x16 'same' on 28x28 (first: forward, weight gradient), pooled to 14x14x16, Dense
    # 3136 x 64 and 64 x 10 (forward, weight and input gradients)
    conv = 28 * 28 * 16 * 3 * 3 * 1
    assert flops('simple_cnn') == 2 * 3 * (conv * 2 + 3136 * 64 * 3 + 64 * 10 * 3)
    # fedavg_cnn: Conv2D 5x5x1x32 on 28x28, Conv2D 5x5x32x64 on 14x14, Dense 3136 x 512 and 512 x 10
    convs = 28 * 28 * 32 * 25 * 2 + 14 * 14 * 64 * 25 * 32 * 3
    assert flops('fedavg_cnn') == 2 * 3 * (convs + 3136 * 512 * 3 + 512 * 10 * 3)


def test_the_arithmetic_ceiling_line_states_each_rate_and_the_share_of_the_cores():
    line = arithmetic.ceiling_line('m', 2 * 10**9, {'fedlab': 100.0, 'limit': 200.0, 'TFF stock': 400.0},
                                   [20.0, 20.0], 3)
    assert line == ("   m: arithmetic 2.00 GFLOP a round (Conv2D/Dense products, forward and gradients); GFLOP/s: "
                    "fedlab 20.0, limit 10.0, TFF stock 5.0; the cores' float32 GEMM 40.0 (2 one-thread processes at "
                    "once: 20.0 + 20.0); fedlab at 0.50 of it, 3x TFF stock would need 0.38")
    rates = arithmetic.gemm_rate(2, n=64, seconds=0.1)  # runs, one figure per process (its size is not checked)
    assert len(rates) == 2 and all(rate > 0 for rate in rates)


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
