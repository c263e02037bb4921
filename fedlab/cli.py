"""The `fedlab` command: Hydra composes the config, this module turns it into typed calls."""

import functools
import importlib.util
import json
import os
import pathlib
import shutil
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedlab import checkpoints, heap, schema, seeds, sweep, workers
from fedlab.algorithms import combinations
from fedlab.errors import FedlabError

# TensorFlow and TFF take 10-13 s to import, so they are imported inside the task functions below:
# --help, --cfg job and config errors answer without them.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow's C++ start-up chatter (CUDA, TensorRT)
_MAIN_PID = 'FEDLAB_MAIN_PID'  # the launching process, inherited by a launcher's worker processes


def train(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None):
    """Federated training and evaluation as configured; returns `experiment.RunOutputs`."""
    from hydra.utils import instantiate

    # 1. Data: each client's train and test split (first, so a missing file is reported before TF loads).
    data = load_data(cfg)
    if cfg.clients_per_round > len(data.client_ids):
        raise FedlabError(
            f'clients_per_round={cfg.clients_per_round} is larger than the population of {len(data.client_ids)}'
            f' clients of data={data.name}'
        )

    from fedlab import client_data, experiment, training

    # 2. Model: the group's factory takes the data's image shape and class count.
    model_fn = instantiate(cfg.model)(data.image_shape, data.num_classes, seed=cfg.seed)
    # 3. The algorithm's builder with its optimizers (fedlab.algorithms), the update aggregator, the client sampler.
    build_process = functools.partial(
        instantiate(cfg.algorithm), model_fn, model_aggregator=instantiate(cfg.aggregator), weighting=cfg.weighting
    )
    sampler = instantiate(cfg.sampling)(data.client_ids, cfg.clients_per_round)
    # 4. Train, evaluate and write the run directory.
    return experiment.train_and_evaluate(
        data,
        model_fn,
        sampler,
        run_dir,
        build_process=build_process,
        learning_rates=learning_rates(cfg),
        pipeline=client_data.PipelineConfig(
            epochs=cfg.client_epochs or 1,  # null with FedSGD: one pass for the average gradient
            batch_size=cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
            client_inputs=cfg.client_inputs,
        ),
        schedule=training.Schedule(
            rounds=cfg.rounds, clients_per_round=cfg.clients_per_round, eval_every=cfg.eval_every
        ),
        checkpoint_every=cfg.checkpoint_every,
        eval_on_train=cfg.task.eval_on_train,
        print_type_signature=cfg.print_type_signature,
        config=_identity(cfg),
        run_info=run_info,
    )


def learning_rates(cfg: DictConfig):
    """The client and server learning-rate schedules (`algorithms.schedules`, no TensorFlow)."""
    from fedlab.algorithms.schedules import LearningRates

    return LearningRates(client=_instantiate(cfg.client_lr_schedule), server=_instantiate(cfg.server_lr_schedule))


def _instantiate(node):
    """Hydra's instantiate, with a FedlabError raised by the callable passed on as it is (one line for the user)."""
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, FedlabError):
            raise error.__cause__ from None
        raise


def _identity(cfg: DictConfig) -> dict:
    """The settings that define a run: a checkpoint is resumed only under the same ones."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop('resume', None)
    return config


def load_data(cfg: DictConfig):
    """Instantiates the data group, with its paths resolved against the directory fedlab was started from."""
    from hydra.utils import instantiate

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


def centralized(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None):
    """The centralized baseline: the model's Keras architecture trained on the pooled client data."""
    data = load_data(cfg)

    from fedlab import centralized as baseline
    from fedlab import models

    # `custom` is the hand-written twin of `linear`: its Keras equivalent is the linear architecture.
    architecture = cfg.model.get('architecture', 'linear')
    epochs = cfg.task.epochs or baseline.matched_epochs(
        rounds=cfg.rounds,
        clients_per_round=cfg.clients_per_round,
        client_epochs=cfg.client_epochs or 1,
        num_clients=len(data.client_ids),
    )
    return baseline.train_and_evaluate(
        data,
        models.build_keras_model(architecture, data.image_shape, data.num_classes, seed=cfg.seed),
        run_dir,
        config=baseline.CentralizedConfig(
            epochs=epochs,
            batch_size=cfg.batch_size,
            learning_rate=cfg.task.learning_rate,
            momentum=cfg.task.momentum or 0.0,
            seed=cfg.seed,
        ),
        run_info=run_info,
    )


TASKS = {'train': train, 'explore': explore, 'centralized': centralized}
ALGORITHM_GROUPS = ('algorithm', 'client_optimizer', 'server_optimizer', 'client_lr_schedule', 'server_lr_schedule')


def check_before_tensorflow(cfg: DictConfig, run_dir: pathlib.Path) -> None:
    """The checks that need no data and no TensorFlow, so that bad input is reported in a second."""
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if not isinstance(v, dict)}
    schema.check_ranges(values)
    for group in ('data', 'model', 'aggregator', 'sampling', *ALGORITHM_GROUPS):
        target = cfg[group].get('_target_') if cfg[group] is not None else None
        module = target.rpartition('.')[0] if target else ''
        if target and (not module or importlib.util.find_spec(module) is None):  # finds, does not import
            raise FedlabError(f'{group}._target_={target}: no such module {module!r}')
    num_clients = cfg.data.get('num_clients')
    if isinstance(num_clients, int) and cfg.clients_per_round > num_clients:
        raise FedlabError(
            f'clients_per_round={cfg.clients_per_round} is larger than the population: data.num_clients={num_clients}'
        )
    for key in PATH_KEYS:
        value = cfg.data.get(key) if not OmegaConf.is_missing(cfg.data, key) else None
        if key != 'cache_dir' and value is not None:
            path = pathlib.Path(to_absolute_path(os.path.expanduser(str(value))))
            if not path.exists():
                raise FedlabError(f'data.{key}={value}: no such file or directory')
    combinations.check(OmegaConf.to_container(cfg, resolve=True))  # what fits together (fedlab.algorithms)
    learning_rates(cfg)  # the schedules check their own values
    if cfg.resume is not None and not (run_dir / 'checkpoints').is_dir():
        raise FedlabError(f'resume={cfg.resume}: no fedlab run with checkpoints there')
    if cfg.task.name == 'train':
        checkpoints.CheckpointStore(run_dir / 'checkpoints').resumable_round(_identity(cfg))


def _remove_if_fresh(run_dir: pathlib.Path) -> None:
    """Removes a run directory that holds only what Hydra wrote at start-up: nothing of a run."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {'.hydra', 'fedlab.log'}:
        shutil.rmtree(run_dir)


@hydra.main(version_base='1.3', config_path='pkg://fedlab.conf', config_name='config')
def _hydra_main(cfg: DictConfig) -> float | None:
    if os.environ.get(_MAIN_PID, str(os.getpid())) == str(os.getpid()):
        return _run_job(cfg)
    # A launcher's worker process (e.g. joblib's): main()'s cleanup runs only in the launching process, and
    # a worker that later exits would orphan its TFF worker_binary, so each job stops its own.
    try:
        return _run_job(cfg)
    finally:
        workers.stop_workers()


def _run_job(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = pathlib.Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_info = {
        'choices': {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith('hydra')},
        'overrides': list(hydra_cfg.overrides.task),
        'config': OmegaConf.to_container(cfg, resolve=True),
    }
    try:
        check_before_tensorflow(cfg, run_dir)
        run_info['seeds'] = seeds.derived_seeds(cfg.seed)  # after the checks: deriving loads numpy (~0.6 s)
        outputs = TASKS[cfg.task.name](cfg, run_dir, run_info)
    except Exception as error:
        users_error = isinstance(error, FedlabError) or _is_config_error(error)
        message = one_line(error) if users_error else (str(error).splitlines() or [''])[0]
        if in_sweep:  # Report the job and let the sweep go on; SweepSummary lists it at the end.
            print(f'fedlab: job {hydra_cfg.job.num} failed: {message}', file=sys.stderr)
            _record_failure(run_dir, error, message, run_info)
            return None
        if users_error:
            _remove_if_fresh(run_dir)
            print(f'fedlab: error: {message}', file=sys.stderr)
            raise SystemExit(2) from None
        raise
    print(f'run directory: {run_dir}')
    # The return value is what Hydra sweepers (e.g. Optuna) optimise; tasks such as explore return None.
    final_eval = getattr(outputs, 'final_eval', None) or {}
    return final_eval.get('eval', {}).get('accuracy')


def _record_failure(run_dir: pathlib.Path, error: Exception, message: str, run_info: dict) -> None:
    """Marks a failed sweep job in its results.json (written by the run itself if it got that far)."""
    from fedlab import recording

    path = run_dir / 'results.json'
    results = json.loads(path.read_text()) if path.exists() else {'status': 'failed', **run_info}
    if results.get('status') in ('running', 'completed'):
        results['status'] = 'failed'
    results['error'] = message if isinstance(error, (FedlabError, HydraException)) else f'{type(error).__name__}: {message}'
    recording.write_json(path, results)


def one_line(error: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line config errors, as one line."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else None
    text = str(error).replace(', set env var HYDRA_FULL_ERROR=1 to see chained exception.', '')
    if cause is not None:
        text = text.splitlines()[0].removeprefix('Error merging override ') + ': ' + str(cause)
    parts, options = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(('full_key:', 'object_type=', 'reference_type=', 'provider=')):
            continue
        if line == 'Config search path:':
            break
        if parts and parts[-1].startswith('Available options in') and not line.endswith(':'):
            options.append(line)
            continue
        parts.append(line)
    if options:
        parts[-1] = parts[-1] + ' ' + ', '.join(options)
    return ' '.join(parts)


def _is_config_error(error: BaseException) -> bool:
    if isinstance(error, InstantiationException):  # only a wrong _target_ is the user's; others are bugs
        return 'Error locating target' in str(error)
    return isinstance(error, (HydraException, OmegaConfBaseException))


def main() -> None:
    """Console entry point: runs Hydra, then stops TFF's worker process however the run ended."""
    sys.stdout.reconfigure(line_buffering=True)  # round lines reach a log file or pipe as they happen
    heap.limit_arenas()  # before TensorFlow starts its threads; keeps long runs' memory flat
    # Hydra prints config errors over several lines and exits 1; raising them lets fedlab print one line and
    # exit 2. A user who sets HYDRA_FULL_ERROR=1 gets Hydra's own full report.
    user_wants_full_errors = os.environ.get('HYDRA_FULL_ERROR') == '1'
    os.environ['HYDRA_FULL_ERROR'] = '1'
    os.environ[_MAIN_PID] = str(os.getpid())
    with workers.worker_cleanup():
        try:
            _hydra_main()
        except Exception as error:
            if user_wants_full_errors or not _is_config_error(error):
                raise
            print(f'fedlab: error: {one_line(error)}', file=sys.stderr)
            raise SystemExit(2) from None
        if sweep.failed_jobs:
            raise SystemExit(1)


if __name__ == '__main__':
    main()
