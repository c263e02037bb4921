"""Several clients in one TFF client call, for aggregators linear in the client updates (the weighted mean).

TFF's worker costs ~2-3 ms per client call whatever the client computes, more than a small model's training.
Packed, a round's clients are split into as many groups as there are cores (the worker runs client calls in
parallel; fewer, larger calls are no faster); each group is one TFF client that trains each of its clients from
the same broadcast weights, exactly as that client alone (fedlab.algorithms.templates.client_work's update), and returns the
weighted mean of their updates with their total weight, and their summed (unfinalized) metrics. The server's
weighted mean of the groups is the weighted mean of the clients: only the order of the sums changes (~1e-7
relative). A client whose update is not finite counts with weight 0 and no metrics, as it does unpacked.
FedJAX's `for_each_client` is the same idea.

Only for a plain weighted mean (`aggregator=mean`): compression quantizes each upload, DP and robust aggregators
clip each one, and Mime Lite aggregates a second value per client, so those see real clients (`check_linear`).
The ledger and clients.csv still count the real clients (they read the sampled ids, not the groups).
"""

import collections
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.errors import FedlabError

SIZES = 'sizes'  # a packed tensors group: each client's number of examples in the concatenated x and y


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def check_linear(model_aggregator) -> None:
    """Refuses an aggregator the packed groups would change: anything but TFF's weighted mean."""
    if model_aggregator is not None and type(model_aggregator) is not tff.aggregators.MeanFactory:
        raise FedlabError(
            f'pack_clients needs a weighted mean aggregator (it sums updates inside groups of clients), not '
            f'{type(model_aggregator).__name__}: use aggregator=mean or efficiency.pack_clients=false'
        )


def split(items: Sequence, num_groups: int) -> list[list]:
    """`items` in `num_groups` contiguous groups whose sizes differ by at most one (fewer if there are fewer items)."""
    bounds = np.linspace(0, len(items), min(num_groups, len(items)) + 1).round().astype(int)
    return [list(items[start:end]) for start, end in zip(bounds[:-1], bounds[1:])]


class PackedInputs:
    """The per-client inputs of `client_inputs` (a shard path, or {x, y} arrays each), packed into one input per
    group: a vector of shard paths, or the clients' arrays concatenated with their sizes."""

    def __init__(self, client_inputs: Callable[[list[str]], list], *, groups: int | None = None):
        self._client_inputs = client_inputs
        self._groups = groups or cores()

    def __call__(self, client_ids: list[str]) -> list:
        return [self._pack(group) for group in split(self._client_inputs(client_ids), self._groups)]

    @staticmethod
    def _pack(clients: list):
        if isinstance(clients[0], str):
            return np.array(clients, dtype=object)
        packed = collections.OrderedDict((key, np.concatenate([c[key] for c in clients])) for key in clients[0])
        packed[SIZES] = np.array([len(c['y']) for c in clients], np.int32)
        return packed


def group_type(input_spec, *, from_shards: bool) -> tff.types.Type:
    """The TFF type of one group's input."""
    if from_shards:
        return tff.TensorType(np.str_, [None])
    tensors = collections.OrderedDict((key, spec) for key, spec in input_spec.items())
    tensors[SIZES] = tf.TensorSpec([None], tf.int32)
    return tff.types.tensorflow_to_type(tensors)


def for_each_client(update_one, group, read_client: Callable, *, from_shards: bool):
    """In-graph: `update_one(client data) -> (ClientResult, unfinalized metrics)` for each client of `group`
    (see `group_type`), from the same weights; returns the group's ClientResult (weighted mean update, total
    weight) and summed metrics. `read_client(shard path)` reads a shard."""
    if from_shards:
        num_clients = tf.shape(group)[0]

        def client(i):
            return read_client(group[i])

    else:
        sizes = group[SIZES]
        num_clients = tf.shape(sizes)[0]
        offsets = tf.concat([[0], tf.cumsum(sizes)], axis=0)

        def client(i):
            return collections.OrderedDict(
                (key, value[offsets[i] : offsets[i + 1]]) for key, value in group.items() if key != SIZES
            )

    def weighted(result):
        return tf.nest.map_structure(lambda u: result.update_weight * u, result.update)

    # The first client outside the loop gives the structures the sums start from (a group is never empty).
    first, metrics = update_one(client(0))
    update_sum, weight = weighted(first), first.update_weight

    def add_client(i, update_sum, weight, metrics):
        result, client_metrics = update_one(client(i))
        update_sum = tf.nest.map_structure(tf.add, update_sum, weighted(result))
        metrics = tf.nest.map_structure(tf.add, metrics, client_metrics)
        return i + 1, update_sum, weight + result.update_weight, metrics

    _, update_sum, weight, metrics = tf.while_loop(
        lambda i, *_: i < num_clients, add_client, (tf.constant(1), update_sum, weight, metrics)
    )
    mean = tf.nest.map_structure(lambda s: tf.math.divide_no_nan(s, weight), update_sum)
    return tff.learning.templates.ClientResult(update=mean, update_weight=weight), metrics
