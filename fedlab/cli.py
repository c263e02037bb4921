"""The `fedlab` command: Hydra composes the config, this module turns it into typed calls."""

import os
import pathlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedlab import workers
from fedlab.errors import FedlabError

# TensorFlow and TFF take 10-13 s to import, so they are imported inside the task functions below:
# --help, --cfg job and config errors answer without them.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow's C++ start-up chatter (CUDA, TensorRT)


def train(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None):
    """Federated training and evaluation as configured; returns `experiment.RunOutputs`."""
    from hydra.utils import instantiate

    # 1. Data: each client's train and test split (first, so a missing file is reported before TF loads).
    data = load_data(cfg)

    from fedlab import client_data, experiment, training

    # 2. Model: the group's factory takes the data's image shape and class count.
    model_fn = instantiate(cfg.model)(data.image_shape, data.num_classes, seed=cfg.seed)
    # 3. Aggregator for the model updates, and the client sampler.
    model_aggregator = instantiate(cfg.aggregator)
    sampler = instantiate(cfg.sampling)(data.client_ids, cfg.clients_per_round)
    # 4. Train, evaluate and write the run directory.
    return experiment.train_and_evaluate(
        data,
        model_fn,
        model_aggregator,
        sampler,
        run_dir,
        fed_avg=training.FedAvgConfig(
            client_lr=cfg.client_lr,
            server_lr=cfg.server_lr,
            client_momentum=cfg.client_momentum,
            server_momentum=cfg.server_momentum,
        ),
        pipeline=client_data.PipelineConfig(
            epochs=cfg.client_epochs, batch_size=cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed
        ),
        schedule=training.Schedule(
            rounds=cfg.rounds, clients_per_round=cfg.clients_per_round, eval_every=cfg.eval_every
        ),
        eval_on_train=cfg.task.eval_on_train,
        print_type_signature=cfg.print_type_signature,
        run_info=run_info,
    )


def load_data(cfg: DictConfig):
    """Instantiates the data group, with its paths resolved against the directory fedlab was started from."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate, to_absolute_path

    paths = {}
    for key in PATH_KEYS:
        if OmegaConf.is_missing(cfg.data, key):
            raise FedlabError(f'data={cfg.data._target_.split(".")[-2]} needs data.{key}=<directory>')
        if cfg.data.get(key) is not None:
            paths[key] = to_absolute_path(os.path.expanduser(str(cfg.data[key])))
    try:
        return instantiate(cfg.data, **paths)
    except InstantiationException as error:  # Hydra wraps what the loader raised; a FedlabError is for the user
        if isinstance(error.__cause__, FedlabError):
            raise error.__cause__ from None
        raise


PATH_KEYS = ('path', 'root', 'cache_dir')  # data keys that name files or directories


def explore(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None) -> None:
    """The data tour: figures of one client's examples, label histograms and mean images, and population stats."""
    del run_info  # explore writes figures, not results.json
    data = load_data(cfg)

    from fedlab import explore as exploring

    exploring.explore(data, run_dir, client_index=cfg.task.client_index)


TASKS = {'train': train, 'explore': explore}


@hydra.main(version_base='1.3', config_path='pkg://fedlab.conf', config_name='config')
def _hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = pathlib.Path(hydra_cfg.runtime.output_dir)
    run_info = {
        'choices': {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith('hydra')},
        'overrides': list(hydra_cfg.overrides.task),
        'config': OmegaConf.to_container(cfg, resolve=True),
    }
    try:
        outputs = TASKS[cfg.task.name](cfg, run_dir, run_info)
    except FedlabError as error:
        print(f'fedlab: error: {error}', file=sys.stderr)
        raise SystemExit(2) from None
    print(f'run directory: {run_dir}')
    # The return value is what Hydra sweepers (e.g. Optuna) optimise; tasks such as explore return None.
    final_eval = getattr(outputs, 'final_eval', None) or {}
    return final_eval.get('eval', {}).get('accuracy')


def main() -> None:
    """Console entry point: runs Hydra, then stops TFF's worker process however the run ended."""
    with workers.worker_cleanup():
        _hydra_main()


if __name__ == '__main__':
    main()
