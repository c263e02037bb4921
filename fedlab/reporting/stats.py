"""The numbers fedlab-report computes: mean and sample standard deviation over the seeds of a group, the best evaluated
round and the first to reach a target accuracy, and a group's mean accuracy curve. Plain numbers in, no file reads.

(Named stats, not statistics: the standard library's module of that name is the one used here.)"""

import statistics

Point = tuple[int, float, int, float | None]  # (round, eval accuracy, uplink bits, sim seconds): runs.Run.evaluated()


def mean(values: list) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def std(values: list) -> float | None:
    """Sample standard deviation over seeds (0 for one seed) of the values that are not None."""
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


def best(points: list[Point]) -> Point | None:
    """The evaluated point with the highest accuracy (the first of equals)."""
    return max(points, key=lambda p: p[1]) if points else None


def rounds_to_target(points: list[Point], target: float | None) -> int | None:
    """The first evaluated round whose accuracy is at least `target`."""
    reached = [p[0] for p in points if target is not None and p[1] >= target]
    return reached[0] if reached else None


def common_rounds(by_run: list[dict[int, tuple]]) -> list[int]:
    """The rounds every run evaluated, in order, from each run's points keyed by round."""
    return sorted(set.intersection(*(set(points) for points in by_run))) if by_run else []


def mean_curve(runs) -> list[tuple[int, float, float, float, float | None]]:
    """(round, mean accuracy, std, mean cumulative uplink bits, mean simulated seconds or None) at the rounds every
    run of the group evaluated."""
    by_run = [{p[0]: p for p in run.evaluated()} for run in runs]
    curve = []
    for round_num in common_rounds(by_run):
        accuracies = [points[round_num][1] for points in by_run]
        sim_times = [p[round_num][3] for p in by_run]
        sim_time = None if None in sim_times else mean(sim_times)
        curve.append((round_num, mean(accuracies), std(accuracies), mean([p[round_num][2] for p in by_run]),
                      sim_time))
    return curve
