"""The 2-core limit of a FedAvg round (issue 26): the same round as fedlab's, without TFF.

The same clients, batch streams, model, SGD steps and weighted mean: every client trains from the round's weights
in one tf.function over in-memory tensors, its update (round weights - trained weights) weighted by its examples;
the server applies the weighted mean with SGD at learning rate 1, as `build_weighted_fed_avg` does. The clients
are split in two contiguous halves (as fedlab packs them on 2 cores) trained as two concurrent streams.

Why threads in one process, not two processes: a tf.function call releases the GIL while TensorFlow runs it, so two
Python threads calling two streams' functions run on the two cores at once (`concurrency()` measures it: the two
streams alone, one after the other, against both at once), and the weighted mean needs no copy of the weights
between processes (6.6 MB a round for fedavg_cnn), which a limit should not pay. The thread setting (TensorFlow's
intra-op threads) is fixed when TensorFlow starts, so the bench builds this in one process per setting.
Not done here (fedlab does it; all cheap): the metrics and the non-finite check of each client's update."""

import concurrent.futures

import numpy as np


def halves(sizes: list[int]) -> list[list[int]]:
    """The clients' indices in two contiguous halves, as `client_packing.split` groups them on 2 cores (tested; not
    imported from there, which would load TFF)."""
    bounds = np.linspace(0, len(sizes), 3).round().astype(int)
    return [list(range(start, end)) for start, end in zip(bounds[:-1], bounds[1:])]


def _stream(model, batch_size: int, lr: float, jit: bool):
    """One stream's round: each of its clients trains from `weights`; returns sum(n_c * update_c) and sum(n_c)."""
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables

    # XLA needs static shapes: with jit the batch step is compiled (once per batch size), the loops around it not.
    @tf.function(jit_compile=jit)
    def sgd_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        for variable, gradient in zip(variables, tape.gradient(loss, variables)):
            variable.assign_sub(lr * gradient)  # the client's SGD: w - lr * g

    @tf.function
    def train(weights, x, y, sizes):
        update_sum = [tf.zeros_like(w) for w in weights]
        weight_sum = tf.constant(0.0)
        start = tf.constant(0)
        for c in tf.range(tf.size(sizes)):
            for variable, w in zip(variables, weights):
                variable.assign(w)
            end = start + sizes[c]
            for b in tf.range(start, end, batch_size):
                sgd_step(x[b : tf.minimum(b + batch_size, end)], y[b : tf.minimum(b + batch_size, end)])
            n = tf.cast(sizes[c], tf.float32)
            update_sum = [s + n * (w - v) for s, w, v in zip(update_sum, weights, variables)]
            weight_sum += n
            start = end
        return update_sum, weight_sum

    return train


class TwoStreams:
    """FedAvg rounds over clients' batch streams (`x`, `y` concatenated in client order, `sizes` per client), as two
    concurrent streams of half the clients each. `round(weights)` returns the next round's weights."""

    def __init__(self, build_model, x: np.ndarray, y: np.ndarray, sizes: list[int], *, batch_size: int, lr: float,
                 jit: bool):
        import tensorflow as tf

        offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._inputs = []
        for half in halves(sizes):
            lo, hi = offsets[half[0]], offsets[half[-1] + 1]
            self._inputs.append((tf.constant(x[lo:hi]), tf.constant(y[lo:hi]),
                                 tf.constant([sizes[i] for i in half], tf.int32)))
        self._streams = [_stream(build_model(), batch_size, lr, jit) for _ in self._inputs]
        self._pool = concurrent.futures.ThreadPoolExecutor(len(self._streams))

    def round(self, weights: list) -> list:
        """Both streams at once from `weights`; the server's weighted mean and SGD step (learning rate 1)."""
        futures = [self._pool.submit(train, weights, *inputs) for train, inputs in zip(self._streams, self._inputs)]
        results = [future.result() for future in futures]
        return self._apply(weights, results)

    def stream_alone(self, weights: list, i: int):
        """Stream `i` alone (for `concurrency`)."""
        return self._streams[i](weights, *self._inputs[i])

    @staticmethod
    def _apply(weights, results):
        total = sum(weight_sum for _, weight_sum in results)
        return [w - sum(update_sum[j] for update_sum, _ in results) / total for j, w in enumerate(weights)]

    def close(self) -> None:
        self._pool.shutdown()


def concurrency(streams: TwoStreams, weights: list, repeats: int = 3) -> float:
    """(stream 0 alone + stream 1 alone) ÷ both at once, best of `repeats`: 2.0 if the two run fully in parallel,
    1.0 if one waits for the other."""
    import time

    def seconds(fn):
        best = float('inf')
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    alone = sum(seconds(lambda i=i: [t.numpy() for t in streams.stream_alone(weights, i)[0]]) for i in range(2))
    both = seconds(lambda: [t.numpy() for t in streams.round(weights)])
    return alone / both
