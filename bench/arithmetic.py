"""The arithmetic ceiling of a round (issue 26): how many floating-point operations a FedAvg round's training does,
and how many this machine's cores can do a second, so a round's speed can be read as a share of the hardware.

`training_flops` counts the multiply-adds of the layers that do matrix work (Conv2D and Dense), twice each for
FLOPs: the forward pass, the weights' gradients and the inputs' gradients (none for the first such layer: its input
is the data). Element-wise ops (bias, ReLU, pooling, the loss, SGD's update) are left out: they move memory and do
little arithmetic. `gemm_rate` measures the yardstick: float32 matrix products (numpy's BLAS, one thread each) in one
process per core, all at once, which is what the cores' vector units reach on dense work."""

import os
import subprocess
import sys

_GEMM = """
import time, numpy as np
n, seconds = {n}, {seconds}
a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
a @ b
count, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    a @ b
    count += 1
print(2 * n ** 3 * count / (time.perf_counter() - start) / 1e9)
"""


def training_flops(model, examples: int) -> int:
    """FLOPs of training a built Keras `model` on `examples` examples (one pass): Conv2D and Dense layers' forward
    products, weight gradients and input gradients (all but the first weighted layer's)."""
    import tensorflow as tf

    macs = 0
    first = True
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Conv2D):
            height, width, channels = layer.output.shape[1:]
            kernel = layer.kernel.shape  # kh, kw, in, out
            forward = height * width * channels * kernel[0] * kernel[1] * kernel[2]
        elif isinstance(layer, tf.keras.layers.Dense):
            forward = layer.kernel.shape[0] * layer.kernel.shape[1]
        else:
            continue
        macs += forward * (2 if first else 3)  # forward and weight gradient; the input's gradient after the first
        first = False
    return 2 * macs * examples


def gemm_rate(processes: int | None = None, *, n: int = 512, seconds: float = 2.0) -> list[float]:
    """GFLOP/s of float32 n x n matrix products in `processes` one-thread processes (default: one per core) run at
    once; their sum is what the machine's cores do together on dense work."""
    processes = processes or os.cpu_count()
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    code = _GEMM.format(n=n, seconds=seconds)
    runs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(processes)]  # fmt: skip
    rates = []
    for run in runs:
        out, _ = run.communicate()
        if run.returncode != 0:
            raise RuntimeError(f'the GEMM yardstick exited with {run.returncode}')
        rates.append(float(out))
    return rates


def ceiling_line(architecture: str, flops: int, ms: dict[str, float], gemm: list[float], stock_goal: float) -> str:
    """One printed line: the round's GFLOP, each method's GFLOP/s, fedlab's share of the cores' GEMM rate and the
    share `stock_goal` x TFF stock would need. `ms`: ms per round of 'fedlab', 'limit' and 'TFF stock'."""
    total = sum(gemm)
    rate = {name: flops / (value / 1000) / 1e9 for name, value in ms.items()}
    needed = stock_goal * rate['TFF stock']
    rates = ', '.join(f'{name} {value:.1f}' for name, value in rate.items())
    return (f'   {architecture}: arithmetic {flops / 1e9:.2f} GFLOP a round (Conv2D/Dense products, forward and '
            f'gradients); GFLOP/s: {rates}; the cores\' float32 GEMM {total:.1f} ({len(gemm)} one-thread processes '
            f'at once: {" + ".join(f"{g:.1f}" for g in gemm)}); fedlab at {rate["fedlab"] / total:.2f} of it, '
            f'{stock_goal:g}x TFF stock would need {needed / total:.2f}')  # fmt: skip
