"""The `fedlab` command: Hydra composes the config, this module turns it into typed calls."""

import contextlib
import errno
import functools
import os
import pathlib
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fedlab import seeds, sweep
from fedlab.config import checks as config_checks
from fedlab.config import components, efficiency, hydra_help, identity, launchers, schema, values
from fedlab.errors import FedlabError, RunStopped, shortened
from fedlab.privacy import checks as privacy_checks
from fedlab.record import checkpoints, rundir, trackers
from fedlab.run import interrupts, worker_processes
from fedlab.system import malloc_arenas, scratch_dirs

# Hydra composes with the typed schema (config.yaml's defaults list names it). Importing the fedlab.conf package
# registers it too, but `--info defaults` and `--info defaults-tree` compose without importing that package.
schema.register()


def command_beside_python(name: str) -> str:
    """How this shell starts `name`, a command installed beside fedlab (--help's footer names TensorBoard): the bare
    name when PATH finds this one (an active venv), else its path, relative to the current directory under it."""
    import shutil

    beside = pathlib.Path(sys.executable).parent / name  # the venv's bin/ (not resolved: python is a symlink)
    found = shutil.which(name)
    if found and pathlib.Path(found).resolve() == beside.resolve():
        return name
    with contextlib.suppress(ValueError):
        return str(beside.relative_to(pathlib.Path.cwd()))
    return str(beside)


OmegaConf.register_new_resolver('command_beside_python', command_beside_python, replace=True)

# TensorFlow and TFF take 10-13 s to import, so they are imported inside the task functions below:
# --help, --cfg job and config errors answer without them.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow's C++ start-up chatter (CUDA, TensorRT)
# googleapis (imported by TFF) imports pkg_resources, which setuptools 80 deprecates on every start: not the user's
# concern (setuptools stays below 81 for TensorBoard, see pyproject.toml).
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


def train(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None, tracking=None):
    """Federated training and evaluation as configured; returns `recorder.RunOutputs`. Each committed round also goes
    to `tracking` (trackers.RunTrackers), if given."""
    from hydra.utils import instantiate

    # Data first: each client's train and test split, so a missing file is reported before TF loads.
    data = load_data(cfg)
    if cfg.clients_per_round > len(data.client_ids):
        raise FedlabError(
            f'clients_per_round={cfg.clients_per_round} is larger than the population of {len(data.client_ids)}'
            f' clients of data={data.name}'
        )
    config_checks.check_training_population(cfg.holdout_clients, cfg.clients_per_round, len(data.client_ids))
    test_clients = len(data.test.client_ids)
    config_checks.check_eval_clients(cfg.eval_clients, f'{test_clients} test clients of data={data.name}', test_clients)
    plan = experiment_plan(cfg, data, run_dir, run_info, tracking)
    # Train, evaluate and write the run directory, on this machine's TFF worker or remote ones (runtime).
    with instantiate(cfg.runtime).activate(client_inputs=cfg.client_inputs):
        return plan.run()


def experiment_plan(cfg: DictConfig, data, run_dir: pathlib.Path, run_info: dict | None = None, tracking=None):
    """The federated run `cfg` configures on `data`, built (`experiment.ExperimentPlan`): the one place a training
    run's settings are read from Hydra's config."""
    from fedlab.run import experiment

    config = OmegaConf.to_container(cfg, resolve=True)
    return experiment.ExperimentPlan(
        federation=_federation(cfg, config, data),
        settings=_settings(cfg, config),
        run_dir=run_dir,
        identity=identity.run_identity(config),
        run_info=run_info or {},
        trackers=tracking,
    )


def _federation(cfg: DictConfig, config: dict, data):
    """The model (the group's factory takes the data's image shape and class count), the algorithm's builder
    (fedlab.algorithms) with the optimizers it takes and the update aggregator, the sampler, the learning rates and,
    with DP, the privacy ledger."""
    from hydra.utils import instantiate

    from fedlab import sampling
    from fedlab.privacy import accounting
    from fedlab.run import experiment

    model_fn = instantiate(cfg.model)(data.image_shape, data.num_classes, seed=cfg.seed)
    held_out = sampling.held_out(data.client_ids, cfg.holdout_clients, seed=cfg.seed)
    training_clients = [c for c in data.client_ids if c not in held_out]
    optimizers = {f'{side}_optimizer': optimizer(cfg, side) for side in ('client', 'server')}
    algorithm = components.of_config(config, 'algorithm')
    # Algorithms whose clients keep state (SCAFFOLD, FedDyn) average it over N, the clients that can train.
    population = {'num_clients': len(training_clients)} if algorithm and algorithm.client_state else {}
    build_process = functools.partial(
        instantiate(cfg.algorithm),
        model_fn,
        **{name: built for name, built in optimizers.items() if built is not None},  # FedSGD has no client optimizer
        model_aggregator=instantiate(cfg.aggregator),
        weighting=cfg.weighting,
        **population,
    )
    make_sampler = instantiate(cfg.sampling)
    sampler = make_sampler(training_clients, cfg.clients_per_round)
    dp_settings = privacy_checks.settings(config, population=len(training_clients))
    return experiment.Federation(
        data=data,
        model_fn=model_fn,
        build_process=build_process,
        sampler=sampler,
        learning_rates=config_checks.learning_rates(config),
        privacy_ledger=accounting.PrivacyLedger(dp_settings) if dp_settings else None,
        held_out=held_out,
        system=_system(config, data.client_ids, training_clients, make_sampler),
    )


def _system(config: dict, client_ids, training_clients, make_sampler):
    """The simulated system of `system=heterogeneous | trace` (None: ideal): every client's device, a trace checked
    against the data's clients."""
    from fedlab.heterogeneity import settings

    checked = settings.settings(config.get('system'))
    if checked is None:
        return None
    return settings.System(
        checked, checked.devices(client_ids, seed=config['seed']), make_sampler, tuple(training_clients),
        config['clients_per_round'], epochs=config['client_epochs'] or 1, seed=config['seed'],
    )


def _settings(cfg: DictConfig, config: dict):
    """How the run trains, evaluates and records (`experiment.Settings`)."""
    from fedlab.run import experiment, personalization, round_inputs, round_loop

    return experiment.Settings(
        schedule=round_loop.Schedule(
            rounds=cfg.rounds, clients_per_round=cfg.clients_per_round, eval_every=cfg.eval_every
        ),
        pipeline=round_inputs.PipelineConfig(
            epochs=cfg.client_epochs or 1,  # null with FedSGD: one pass for the average gradient
            batch_size=cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
            client_inputs=cfg.client_inputs,
            shard_dir=_absolute(cfg.shard_dir), shard_budget_mb=cfg.shard_budget_mb,
        ),
        efficiency=efficiency.settings(config),
        checkpoint_every=cfg.checkpoint_every,
        eval_clients=cfg.eval_clients,
        eval_on_train=cfg.task.eval_on_train,
        target_accuracy=cfg.target_accuracy,
        stop_at_target=cfg.stop_at_target,
        personalization=personalization.PersonalizationConfig(**config_checks.personalization(config)),
        client_state_budget_mb=cfg.client_state_budget_mb,
        print_type_signature=cfg.print_type_signature,
    )


def optimizer(cfg: DictConfig, side: str):
    """The `client` or `server` optimizer: its group's callable with `{side}_lr` and, where set (SGD),
    `{side}_momentum`; None where the algorithm has none."""
    from hydra.utils import instantiate

    if cfg[f'{side}_optimizer'] is None:
        return None
    momentum = cfg[f'{side}_momentum']
    rates = {'learning_rate': cfg[f'{side}_lr'], **({} if momentum is None else {'momentum': momentum})}
    return instantiate(cfg[f'{side}_optimizer'], **rates)


def _absolute(path: str | None) -> str | None:
    return None if path is None else to_absolute_path(os.path.expanduser(path))


def load_data(cfg: DictConfig):
    """Instantiates the data group, with its paths resolved against the directory fedlab was started from."""
    from hydra.utils import instantiate

    paths = {}
    for key in config_checks.PATH_KEYS:
        if OmegaConf.is_missing(cfg.data, key):
            raise FedlabError(f'data={cfg.data._target_.split(".")[-2]} needs data.{key}=<directory>')
        if cfg.data.get(key) is not None:
            paths[key] = to_absolute_path(os.path.expanduser(str(cfg.data[key])))
    _check_data_source(cfg.data._target_, [k for k in cfg.data if not str(k).startswith('_')])
    try:
        data = instantiate(cfg.data, **paths)
    except InstantiationException as error:  # Hydra wraps what the loader raised; a FedlabError is for the user
        if isinstance(error.__cause__, FedlabError):
            raise error.__cause__ from None
        raise
    interrupts.raise_if_requested()  # a Ctrl-C that Python swallowed while TensorFlow loaded (interrupts.handled)
    federated_data = sys.modules.get('fedlab.data.federated_data')  # loaded by every data source fedlab has
    if federated_data is None or not isinstance(data, federated_data.FederatedData):
        raise FedlabError(f'data._target_={cfg.data._target_} is not a data source: it returned a '
                          f'{type(data).__name__}, not FederatedData (fedlab/data)')
    return data


def _check_data_source(target: str, keys: list[str]) -> None:
    """Raises FedlabError unless `target` (data._target_) names a callable that takes the data group's `keys`: a
    mistyped target (e.g. os.getcwd) is refused in one line, before TensorFlow loads if its module does not load it."""
    import inspect

    from hydra.utils import get_object

    try:
        source = get_object(target)
    except ImportError as error:
        raise FedlabError(f'data._target_={target}: {_first_line(error)}') from None
    if not callable(source):
        raise FedlabError(f'data._target_={target} is not a data source: not a callable')
    try:
        signature = inspect.signature(source)
    except (TypeError, ValueError):  # a callable without a signature to read: calling it tells
        return
    try:
        signature.bind(**dict.fromkeys(keys))
    except TypeError as error:
        raise FedlabError(f'data._target_={target} is not a data source: it does not take the data keys '
                          f'{", ".join(keys)} ({error})') from None


def explore(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None) -> None:
    """The data tour: figures of one client's examples, label histograms and mean images, and population stats."""
    data = load_data(cfg)

    from fedlab.run import explore as exploring

    figures = exploring.explore(data, run_dir, client_index=cfg.task.client_index)
    # No training and no metrics; results.json still says the job completed (a sweep counts it) and what it wrote.
    rundir.write_json(
        run_dir / rundir.RESULTS_JSON,
        {'status': 'completed', 'figures': [f.name for f in figures], **(run_info or {})},
    )


def centralized(cfg: DictConfig, run_dir: pathlib.Path, run_info: dict | None = None):
    """The centralized baseline: the model's Keras architecture trained on the pooled client data."""
    data = load_data(cfg)

    from fedlab import models
    from fedlab.run import centralized as baseline

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


def check_before_tensorflow(cfg: DictConfig, run_dir: pathlib.Path) -> None:
    """The checks that need no data and no TensorFlow, so that bad input is reported in a second: the config's
    (fedlab.config.checks), then the run directory's (a resume, a checkpoint of another config)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config_checks.check_before_tensorflow(config)
    if cfg.resume is not None and not (run_dir / 'checkpoints').is_dir():
        raise FedlabError(f'resume={cfg.resume}: no fedlab run with checkpoints there')
    if cfg.task.name == 'train':
        checkpoints.CheckpointStore(run_dir / 'checkpoints').resumable_round(identity.run_identity(config))


@hydra.main(version_base='1.3', config_path='pkg://fedlab.conf', config_name='config')
def _hydra_main(cfg: DictConfig) -> float | None:
    if launchers.job_runs_in_launching_process(HydraConfig.get()):
        return _run_job(cfg)
    # A launcher's own process (joblib, submitit, Ray; read from Hydra's config): main()'s cleanup never runs
    # there, and that process may exit or run other jobs, so each job stops the TFF worker it started.
    with worker_processes.worker_cleanup():
        return _run_job(cfg)


def _run_job(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = pathlib.Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    job = _Job(run_dir, in_sweep=in_sweep, number=hydra_cfg.job.num if in_sweep else 0)
    run_info = {
        # (the tracker is where a run is reported, not what it computes: not a choice fedlab-report groups by)
        'choices': {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith('hydra') and k != 'tracker'},
        'overrides': list(hydra_cfg.overrides.task),
        'config': trackers.without_tracker(OmegaConf.to_container(cfg, resolve=True)),
    }
    lock = rundir.RunDirectoryLock(run_dir)
    try:
        lock.acquire()
    except FedlabError as error:  # another process's run: say so, and touch nothing of it
        return job.refuse(error)
    tracking = trackers.RunTrackers()
    try:
        job.previous_record = rundir.hydra_record(run_dir)  # a run's own record, put back if this command is refused
        rundir.write_hydra_config(run_dir, _without_null_tracker(cfg), hydra_cfg, run_info['overrides'])
        check_before_tensorflow(cfg, run_dir)
        run_info['seeds'] = seeds.derived_seeds(cfg.seed)  # after the checks: deriving loads numpy (~0.6 s)
        tracking = open_trackers(run_dir, hydra_cfg, run_info)  # before training: tracker.required refuses here
        task = TASKS[cfg.task.name]
        outputs = task(cfg, run_dir, run_info, tracking) if task is train else task(cfg, run_dir, run_info)
    except Exception as error:
        try:
            return job.failed(error, run_info)
        finally:
            _end_trackers(tracking, error)
    except BaseException as error:  # a second Ctrl-C
        _end_trackers(tracking, error)
        raise
    finally:
        lock.release()
    _end_trackers(tracking, None)
    print(f'run directory: {run_dir}')
    # The return value is what Hydra sweepers (e.g. Optuna) optimise; tasks such as explore return None.
    final_eval = getattr(outputs, 'final_eval', None) or {}
    return final_eval.get('eval', {}).get('accuracy')


def open_trackers(run_dir: pathlib.Path, hydra_cfg, run_info: dict) -> trackers.RunTrackers:
    """The experiment trackers the config chose (tracker group), started for this job; none for tracker=none."""
    config = run_info['config']
    if not trackers.chosen(config):
        return trackers.RunTrackers()
    sweep_dir = pathlib.Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    params = {**trackers.flatten(config), **trackers.flatten({'seeds': run_info.get('seeds', {})})}
    job = trackers.JobContext(run_dir, sweep_dir, params, run_info['overrides'])
    return trackers.open_trackers(config, job)


def _end_trackers(tracking: trackers.RunTrackers, error: BaseException | None) -> None:
    """The trackers' runs end with the status results.json holds (completed, failed, interrupted, ...)."""
    if tracking:
        from fedlab import errors

        tracking.end(errors.run_status(error))


def _without_null_tracker(cfg: DictConfig) -> DictConfig:
    """`cfg` without its empty `tracker` key (tracker=none), so that .hydra/config.yaml is as it was before trackers."""
    if cfg.get('tracker'):
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg['tracker']
    return cfg


class _Job:
    """How a job that cannot go on ends: one line on stderr, the cause in its run directory, an exit code that says
    what kind of problem it was (fedlab.errors); in a sweep the job is reported and the sweep goes on."""

    def __init__(self, run_dir: pathlib.Path, *, in_sweep: bool, number: int):
        self.run_dir = run_dir
        self.in_sweep = in_sweep
        self.number = number
        self.previous_record: dict[str, str] = {}  # the run directory's .hydra/ files before this job wrote its own

    def refuse(self, error: FedlabError) -> None:
        """The run directory belongs to another live process: nothing is written there."""
        if self.in_sweep:
            sweep.refused_jobs.append(self.run_dir.name)
        self._report(str(error), error.exit_code)

    def failed(self, error: Exception, run_info: dict) -> None:
        users_error = isinstance(error, FedlabError) or _is_config_error(error)
        if users_error:
            interrupts.raise_if_requested()  # an error a Ctrl-C caused (an import it cut short) is the interrupt
            message, exit_code = one_line(error), 2
        elif isinstance(error, RunStopped):
            message, exit_code = _first_line(error), error.exit_code
        else:  # a failure fedlab did not foresee: its traceback goes to fedlab.log and results.json
            message, exit_code = f'{type(error).__name__}: {_first_line(error)}', 1
            _log_to_file(f'job failed: {message}', error)
            message += f' (traceback in {self.run_dir / rundir.LOG_FILE})'
        if users_error and not self.in_sweep:
            rundir.remove_if_fresh(self.run_dir)  # bad input leaves no run directory behind
            rundir.restore_hydra_record(self.run_dir, self.previous_record)  # nor changes a run's record
        else:
            _record_failure(self.run_dir, error, run_info)
        if not self.in_sweep and exit_code == 1:
            raise error  # a single run shows the whole traceback
        self._report(message, exit_code)

    def _report(self, message: str, exit_code: int) -> None:
        if self.in_sweep:  # the sweep goes on; sweep.SweepSummary lists the job at the end
            print(f'fedlab: job {self.number} failed: {shortened(message)}', file=sys.stderr)
            return None
        print(f'fedlab: error: {shortened(message)}', file=sys.stderr)
        raise SystemExit(exit_code)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [''])[0]


def _log_to_file(message: str, error: BaseException) -> None:
    """The traceback, into the job's log file only (the console keeps one line)."""
    import logging

    record = logging.LogRecord('fedlab', logging.ERROR, __file__, 0, message, None, (type(error), error, error.__traceback__))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _record_failure(run_dir: pathlib.Path, error: Exception, run_info: dict) -> None:
    """Marks a failed job in its results.json, keeping what the run itself wrote there (its status and metrics)."""
    from fedlab import errors

    path = run_dir / rundir.RESULTS_JSON
    results = rundir.read_json(path) or {'status': errors.run_status(error), **run_info}
    if results.get('status') in (None, 'running', 'completed'):
        results['status'] = errors.run_status(error)
    if 'error' not in results:
        results.update(errors.error_fields(error))
        if _is_config_error(error):
            results['error'] = one_line(error)
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, results)


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


def check_printed_config(argv: list[str]) -> None:
    """`fedlab --cfg job|all` prints the config without running the job: the config's checks then run here, so the
    printed config is one that `fedlab` would accept (the run directory is not checked: nothing will be written)."""
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra

    args, _ = get_args_parser().parse_known_args(argv)
    if args.cfg not in ('job', 'all') or args.multirun:
        return
    GlobalHydra.instance().clear()
    with initialize_config_module('fedlab.conf', version_base='1.3'):
        cfg = compose(args.config_name or 'config', overrides=args.overrides)
    config_checks.check_before_tensorflow(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    """Console entry point: runs Hydra, then stops TFF's worker process however the run ended."""
    sys.stdout.reconfigure(line_buffering=True)  # round lines reach a log file or pipe as they happen
    malloc_arenas.limit_arenas()  # before TensorFlow starts its threads; keeps long runs' memory flat
    scratch_dirs.private_tempdir()  # temporary files under fedlab's cache: a killed run's are removed at the next start
    # Hydra prints config errors over several lines and exits 1; raising them lets fedlab print one line and
    # exit 2. A user who sets HYDRA_FULL_ERROR=1 gets Hydra's own full report.
    user_wants_full_errors = os.environ.get('HYDRA_FULL_ERROR') == '1'
    os.environ['HYDRA_FULL_ERROR'] = '1'
    hydra_help.install_for()  # --help lists Hydra's config groups without a repository copy per group
    with interrupts.handled(process_exits=True), worker_processes.worker_cleanup():
        try:
            values.check_overrides(sys.argv[1:])  # an integer too long for Hydra's parser
            _hydra_main()
            check_printed_config(sys.argv[1:])
        except (FedlabError, launchers.Refused) as error:  # checks before Hydra creates the run directory, --cfg's
            interrupts.raise_if_requested()  # unless a Ctrl-C caused it
            print(f'fedlab: error: {shortened(str(error))}', file=sys.stderr)
            raise SystemExit(2) from None
        except Exception as error:
            interrupts.raise_if_requested()  # a Ctrl-C inside Hydra's composition, wrapped as a config error
            if launchers.no_trial_completed(error):
                print('fedlab: error: no Optuna trial completed; the failed jobs are listed above', file=sys.stderr)
                raise SystemExit(1) from None
            if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:  # a sweep job's directory (Hydra's)
                print(f'fedlab: error: {shortened(str(error.filename))}: name too long; a sweep names its jobs\' '
                      'directories after their overrides: set hydra.sweep.subdir=${hydra.job.num}', file=sys.stderr)
                raise SystemExit(2) from None
            if user_wants_full_errors or not _is_config_error(error):
                raise
            print(f'fedlab: error: {shortened(one_line(error))}', file=sys.stderr)
            raise SystemExit(2) from None
        if sweep.failed_jobs:
            raise SystemExit(1)


if __name__ == '__main__':
    main()
