"""The cost of reaching a target accuracy (LEAF's systems budget): the first evaluation at or above it, with the
rounds, bits and seconds spent to get there, read from a run's tables. Pure Python (fedlab-report uses it too)."""

EVAL_ACCURACY = 'eval_accuracy'


def to_target(metrics_rows: list[dict], timing_rows: list[dict], target: float) -> dict:
    """results.json's `to_target`: `reached` and, if so, the `round` of the first evaluation with accuracy >= `target`,
    the `cumulative_uplink_bits` and `cumulative_downlink_bits` sent through that round, and `seconds`, the wall
    seconds of training and evaluation through that round (timing.csv: a resumed run's attempts add up, start-up is
    not counted); `evaluations` is how many evaluations it took."""
    seconds = {int(r['round']): float(r['train_seconds']) + float(r['eval_seconds']) for r in timing_rows}
    evaluations = 0
    for row in metrics_rows:
        if row.get(EVAL_ACCURACY) in (None, ''):
            continue
        evaluations += 1
        if float(row[EVAL_ACCURACY]) >= target:
            round_num = int(row['round'])
            return {
                'target_accuracy': target,
                'reached': True,
                'round': round_num,
                'accuracy': float(row[EVAL_ACCURACY]),
                'evaluations': evaluations,
                'cumulative_uplink_bits': _int_or_none(row.get('cumulative_uplink_bits')),
                'cumulative_downlink_bits': _int_or_none(row.get('cumulative_downlink_bits')),
                'seconds': round(sum(s for r, s in seconds.items() if r <= round_num), 3),
            }
    return {'target_accuracy': target, 'reached': False, 'evaluations': evaluations}


def _int_or_none(value) -> int | None:
    return int(value) if value not in (None, '') else None
