"""What fedlab needs to know about Hydra's launchers and sweepers: where a sweep's jobs run, read from Hydra's own
config, whether a sweep ended because Optuna found no completed trial, and the checks made before Hydra creates a
run's or a sweep's directory."""

import os

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from fedlab.errors import FedlabError
from fedlab.record import rundir

# Launchers that run every job in the process that called `fedlab.cli.main` (whose cleanup then covers them).
# Any other launcher (joblib, submitit, Ray, one installed later) runs jobs in processes of its own.
IN_PROCESS_LAUNCHERS = frozenset({'hydra._internal.core_plugins.basic_launcher.BasicLauncher'})


def job_runs_in_launching_process(hydra_cfg: DictConfig) -> bool:
    """Whether the job described by `hydra_cfg` (HydraConfig.get()) runs in the launching process.

    Read from the config every job receives, so it holds wherever the job runs: no environment variable has to
    reach the job's process (Ray's and SLURM's workers do not inherit the launching shell's environment).
    """
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return True  # a single run is always in-process, whatever hydra/launcher says
    return hydra_cfg.launcher.get('_target_') in IN_PROCESS_LAUNCHERS


def no_trial_completed(error: BaseException) -> bool:
    """Optuna's error at the end of a study in which every trial failed (each job has printed why it failed).

    The sweeper (hydra-optuna-sweeper 1.3, optuna 2.10) tells the study a failed job as FAIL and goes on, then asks
    for the best trial, which does not exist; fedlab ends such a sweep as one with failed jobs (exit 1)."""
    return isinstance(error, ValueError) and 'No trials are completed yet' in str(error)


class Refused(BaseException):
    """A FedlabError of StartChecks on its way to fedlab.cli.main: Hydra turns an Exception raised in a callback into
    a warning and goes on, so this one is not an Exception."""

    def __init__(self, error: FedlabError):
        super().__init__(str(error))
        self.error = error


class StartChecks(Callback):
    """Checks of where a run or sweep would write, made before Hydra creates the directory (Hydra creates it, and
    its log file, before fedlab's job starts): a refused command writes nothing. Registered in conf/config.yaml."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # as Hydra's run_job does next: run.dir's ${hydra:...} resolve
        try:
            check_not_a_sweep(config.hydra)
            resume, run_dir = config.get('resume'), config.hydra.run.dir
            if resume is not None:
                check_resume(str(resume), str(run_dir))
            else:
                rundir.make_run_dir(str(run_dir), 'hydra.run.dir')
        except FedlabError as error:
            raise Refused(error) from None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            rundir.make_run_dir(str(config.hydra.sweep.dir), 'hydra.sweep.dir')
        except FedlabError as error:
            raise Refused(error) from None


def check_not_a_sweep(hydra_cfg: DictConfig) -> None:
    """A preset that sets hydra.sweeper.params (experiment=compare) is a sweep: without -m Hydra would run one job
    of it, with the defaults, and nothing would say so."""
    params = hydra_cfg.sweeper.get('params')
    if params:
        preset = hydra_cfg.runtime.choices.get('experiment')
        given_by = f'experiment={preset}' if preset else 'hydra.sweeper.params'
        raise FedlabError(f'{given_by} is a sweep (over {", ".join(map(str, params))}): run it with fedlab -m '
                          f'{given_by}')


def check_resume(resume: str, run_dir: str) -> None:
    """`resume=<dir>` continues the run in that directory: it must hold a run, and hydra.run.dir, when given
    too, must be the same directory."""
    rundir.check_run_dir(resume, 'resume')
    if os.path.abspath(os.path.expanduser(run_dir)) != os.path.abspath(os.path.expanduser(resume)):
        raise FedlabError(f'resume={resume} and hydra.run.dir={run_dir} name two directories: a resumed run '
                          'continues in its own directory; give only one of them')
    if not os.path.isdir(os.path.join(os.path.expanduser(resume), 'checkpoints')):
        raise FedlabError(f'resume={resume}: no fedlab run with checkpoints there')
