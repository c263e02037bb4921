"""Checks of the tables a checkpoint carries, before a resumed run appends to them (no TensorFlow here, so a damaged
checkpoint is found before TensorFlow loads).

A table is sound when it is UTF-8 CSV, its header starts with the table's own columns (metrics.csv and clients.csv
add the columns of the run's parts after them), every row has the header's length, its numbers parse, and its rows
match the checkpoint's round: rounds 1..N, one row each, in metrics.csv, timing.csv and clients.csv; no later round in
clients_eval.csv.
"""

import csv
import io
import pathlib

# Each table's leading columns, as every fedlab since main 17c7a06 writes them.
LEADING_COLUMNS = {
    'metrics.csv': ['round', 'clients', 'train_loss', 'train_accuracy', 'train_examples', 'train_batches'],
    'timing.csv': ['round', 'train_seconds', 'eval_seconds'],
    'clients.csv': ['round', 'client_ids'],
    'clients_eval.csv': ['round', 'population', 'client_id', 'examples', 'loss', 'accuracy'],
}
ONE_ROW_PER_ROUND = ('metrics.csv', 'timing.csv', 'clients.csv')
# Columns whose cells are numbers (or empty: e.g. no evaluation that round); others may hold labels.
NUMERIC_SUFFIXES = ('loss', 'accuracy', 'examples', 'batches', 'bits', 'seconds')


def table_problem(path: pathlib.Path, round_num: int) -> str | None:
    """Why the table at `path` (saved with the checkpoint of `round_num`) cannot be resumed from; None if sound."""
    try:
        text = path.read_bytes().decode('utf-8')
        rows = list(csv.reader(io.StringIO(text, newline='')))
    except OSError as error:
        return f'{path.name} unreadable ({error.strerror or error})'
    except UnicodeDecodeError:
        return f'{path.name} is not UTF-8 text'
    except csv.Error as error:
        return f'{path.name} is not CSV ({error})'
    if not rows:
        return f'{path.name} is empty'
    header, body = rows[0], rows[1:]
    leading = LEADING_COLUMNS.get(path.name, [])
    if header[: len(leading)] != leading:
        return f'{path.name} has header {",".join(header)[:80]!r}, expected it to start with {",".join(leading)!r}'
    problem = _cells_problem(header, body) or _rounds_problem(path.name, body, round_num)
    return f'{path.name} {problem}' if problem else None


def _cells_problem(header: list[str], body: list[list[str]]) -> str | None:
    """A row of the wrong length or a number that does not parse."""
    numeric = [i for i, column in enumerate(header) if column == 'round' or column.endswith(NUMERIC_SUFFIXES)]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            return f'line {line} has {len(row)} fields, the header {len(header)}'
        for i in numeric:
            if row[i] != '' and not _is_number(row[i]):
                return f'line {line} column {header[i]} holds {row[i][:20]!r}, not a number'
    return None


def _rounds_problem(name: str, body: list[list[str]], round_num: int) -> str | None:
    """Rows that do not match the checkpoint's round (a round column that is not an integer is a cells problem)."""
    rounds = [float(row[0]) for row in body if row[0] != '']
    if len(rounds) != len(body) or any(r != int(r) for r in rounds):
        return 'has a row without an integer round'
    if name in ONE_ROW_PER_ROUND and rounds != list(range(1, round_num + 1)):
        return f'has {len(rounds)} rows, expected rounds 1-{round_num} (the checkpoint\'s round)'
    if rounds and max(rounds) > round_num:
        return f'has round {int(max(rounds))}, after the checkpoint\'s round {round_num}'
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)  # 'nan' and 'inf' included: a diverged metric or an unbounded epsilon is recorded so
    except ValueError:
        return False
    return True
