"""The data tour of TFF's image classification tutorial: figures and a text summary of a federated population."""

import pathlib
import string

import numpy as np

from fedlab.data.federated_data import LABEL, PIXELS, FederatedData

EXAMPLES_SHOWN = 40  # of one client, in a 4 x 10 grid
HISTOGRAM_CLIENTS = 6
MEAN_IMAGE_CLIENTS = 5
MEAN_IMAGE_LABELS = 10  # with more classes, the most common labels of the population
FEMNIST_CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase  # labels 0-61


def explore(data: FederatedData, out_dir: pathlib.Path, *, client_index: int | None = None) -> list[pathlib.Path]:
    """Writes the tour's PNG figures into `out_dir`, prints a short summary and returns the figure paths.

    The examples are those of client `client_index` (default: the client with the most training examples);
    the histograms and mean images are of it and the clients after it in id order.
    """
    import matplotlib

    matplotlib.use('Agg')  # headless: files only, no display needed

    out_dir.mkdir(parents=True, exist_ok=True)
    client_ids = data.client_ids
    if client_index is not None and not 0 <= client_index < len(client_ids):
        from fedlab.errors import FedlabError

        raise FedlabError(f'task.client_index={client_index} is out of range: the data has {len(client_ids)} clients')
    labels_by_client = {c: _labels(data, c) for c in client_ids}
    counts = np.array([len(labels) for labels in labels_by_client.values()])
    if client_index is None:
        client_index = int(counts.argmax())
    label_counts = np.bincount(np.concatenate(list(labels_by_client.values())), minlength=data.num_classes)
    # The clients shown: the chosen one and those after it, in client id order.
    shown = [client_ids[(client_index + i) % len(client_ids)] for i in range(HISTOGRAM_CLIENTS)]
    shown = list(dict.fromkeys(shown))

    figures = [
            _client_examples(data, shown[0], out_dir / 'client_examples.png'),
            _label_histograms(data, shown, labels_by_client, out_dir / 'label_histograms.png'),
            _mean_images(data, shown[:MEAN_IMAGE_CLIENTS], label_counts, out_dir / 'mean_images.png'),
            _examples_per_client(data, counts, out_dir / 'examples_per_client.png'),
            _label_distribution(data, label_counts, labels_by_client, out_dir / 'label_distribution.png'),
    ]
    print(data.summary())
    print(_label_summary(data, label_counts, labels_by_client))
    for figure in figures:
        print(f'wrote {figure}')
    return figures


def _label_summary(data: FederatedData, label_counts: np.ndarray, labels_by_client: dict) -> str:
    labels_held = [len(np.unique(labels)) for labels in labels_by_client.values()]
    holding = _clients_holding(data.num_classes, labels_by_client)
    rarest, commonest = int(label_counts.argmin()), int(label_counts.argmax())
    return (
            f'labels per client: min {min(labels_held)} median {int(np.median(labels_held))} max {max(labels_held)};'
            f' rarest label {_name(rarest, data.num_classes)} ({label_counts[rarest]} examples on'
            f' {holding[rarest]} clients), most common {_name(commonest, data.num_classes)}'
            f' ({label_counts[commonest]} examples on {holding[commonest]} clients)'
    )


def _clients_holding(num_classes: int, labels_by_client: dict) -> np.ndarray:
    """For each label, how many clients have at least one example of it."""
    holding = np.zeros(num_classes, dtype=np.int64)
    for labels in labels_by_client.values():
        holding[np.unique(labels)] += 1
    return holding


def _labels(data: FederatedData, client_id: str) -> np.ndarray:
    dataset = data.train.create_tf_dataset_for_client(client_id).map(lambda element: element[LABEL])
    return np.fromiter(dataset.as_numpy_iterator(), dtype=np.int64)


def _pixels_and_labels(data: FederatedData, client_id: str, limit: int | None = None):
    dataset = data.train.create_tf_dataset_for_client(client_id)
    if limit is not None:
        dataset = dataset.take(limit)
    elements = list(dataset.as_numpy_iterator())
    return np.stack([e[PIXELS] for e in elements]), np.array([e[LABEL] for e in elements])


def _name(label: int, num_classes: int) -> str:
    return FEMNIST_CHARACTERS[label] if num_classes == len(FEMNIST_CHARACTERS) else str(label)


def _show(axis, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap='gray', vmin=0.0, vmax=1.0)
    else:
        axis.imshow(np.clip(image, 0.0, 1.0))
    axis.set_xticks([])
    axis.set_yticks([])


def _save(figure, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(figure)
    return path


def _client_examples(data: FederatedData, client_id: str, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    pixels, labels = _pixels_and_labels(data, client_id, EXAMPLES_SHOWN)
    rows = -(-len(labels) // 10)
    figure, axes = plt.subplots(rows, 10, figsize=(12, 1.4 * rows + 0.4), squeeze=False)
    for i, axis in enumerate(axes.flat):
        if i < len(labels):
            _show(axis, pixels[i])
            axis.set_title(f'label {_name(int(labels[i]), data.num_classes)}', fontsize=9)
        else:
            axis.axis('off')
    figure.suptitle(f'{data.name}: the first {len(labels)} training examples of client {client_id}')
    return _save(figure, path)


def _label_histograms(data: FederatedData, client_ids, labels_by_client, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    classes = np.arange(data.num_classes)
    for axis, client_id in zip(axes.flat, client_ids):
        counts = np.bincount(labels_by_client[client_id], minlength=data.num_classes)
        axis.bar(classes, counts, color='tab:blue')
        axis.set_title(f'client {client_id} ({counts.sum()} examples)', fontsize=10)
        axis.set_ylabel('examples')
    for axis in axes.flat[len(client_ids):]:
        axis.axis('off')
    _label_ticks(axes[-1], data.num_classes)
    figure.suptitle(f'{data.name}: label histograms of {len(client_ids)} clients (training data)')
    figure.tight_layout()
    return _save(figure, path)


def _label_ticks(axes, num_classes: int) -> None:
    step = 1 if num_classes <= 20 else 2
    for axis in np.atleast_1d(axes):
        axis.set_xticks(range(0, num_classes, step))
        axis.set_xticklabels([_name(i, num_classes) for i in range(0, num_classes, step)], fontsize=8)
        axis.set_xlabel('label')


def _mean_images(data: FederatedData, client_ids, label_counts, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    labels_shown = np.sort(np.argsort(-label_counts, kind='stable')[:MEAN_IMAGE_LABELS])
    figure, axes = plt.subplots(
            len(client_ids), len(labels_shown), figsize=(1.3 * len(labels_shown), 1.5 * len(client_ids)), squeeze=False
    )
    for row, client_id in enumerate(client_ids):
        pixels, labels = _pixels_and_labels(data, client_id)
        for column, label in enumerate(labels_shown):
            axis = axes[row, column]
            mine = pixels[labels == label]
            if len(mine):
                _show(axis, mine.mean(axis=0))
            else:
                axis.set_xticks([])
                axis.set_yticks([])
                axis.text(0.5, 0.5, 'none', ha='center', va='center', transform=axis.transAxes, fontsize=9)
            if row == 0:
                axis.set_title(f'label {_name(int(label), data.num_classes)}', fontsize=9)
            if column == 0:
                axis.set_ylabel(client_id, fontsize=8)
    which = '' if len(labels_shown) == data.num_classes else f' (the {len(labels_shown)} most common labels)'
    figure.suptitle(f'{data.name}: mean image per label for {len(client_ids)} clients{which}')
    return _save(figure, path)


def _examples_per_client(data: FederatedData, counts: np.ndarray, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist(counts, bins=min(30, max(5, len(counts) // 3)), color='tab:green', edgecolor='white')
    axis.axvline(np.median(counts), color='black', linestyle='--', label=f'median {int(np.median(counts))}')
    axis.set_xlabel('training examples per client')
    axis.set_ylabel('clients')
    axis.legend()
    axis.set_title(f'{data.name}: examples per client ({len(counts)} clients, {counts.sum()} examples)')
    figure.tight_layout()
    return _save(figure, path)


def _label_distribution(data: FederatedData, label_counts, labels_by_client, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    holding = _clients_holding(data.num_classes, labels_by_client)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10 if data.num_classes > 20 else 7, 6), sharex=True)
    classes = np.arange(data.num_classes)
    top.bar(classes, label_counts, color='tab:orange')
    top.set_ylabel('training examples')
    top.set_title(f'{data.name}: labels across the population ({len(labels_by_client)} clients)')
    bottom.bar(classes, holding, color='tab:purple')
    bottom.set_ylabel('clients holding the label')
    _label_ticks(bottom, data.num_classes)
    figure.tight_layout()
    return _save(figure, path)
