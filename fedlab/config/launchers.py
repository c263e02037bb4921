"""What fedlab needs to know about Hydra's launchers and sweepers: where a sweep's jobs run, read from Hydra's own
config, and whether a sweep ended because Optuna found no completed trial."""

from hydra.types import RunMode
from omegaconf import DictConfig

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
