"""Figure 7: full-size federations. A LEAF directory of full FEMNIST's size is built from the shared sample
(its 105 writers copied under new ids: 3,570 writers, ~500,000 train examples, 2.8 GB of json, in a temporary
directory removed at the end), then fedlab is run on it the way a user runs it, beside the 105-writer sample:

- load: json to arrays in a fresh process, first (parsed, cached) and second (read from the data cache), with
  the process's peak RSS beside twice the float32 size of the pixels;
- training: `model=simple_cnn sampling=uniform clients_per_round=10`, the sample before and after the replica
  (median train seconds per round, rounds 6..N), so that the ratio is taken on one stretch of machine load;
- the long replica run (1,500 rounds, 300 with BENCH_QUICK): RSS of fedlab and its TFF worker at rounds 150 and
  1,500, the shard directory's peak size on disk (polled) beside its budget, evaluation seconds on 500 sampled
  test clients (`eval_clients=500`, every 50 rounds) and on all of them after the last round;
- a run SIGKILLed mid-way, then a new run: what is left in the shard and system temp directories;
- TFF's EMNIST at its real size: a generated SQLite database in TFF's format with 3,400 writers.

Takes about 45 minutes (BENCH_QUICK=1: about 15) and needs ~5 GB of free disk in the temporary directory.
"""

import argparse
import csv
import json
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import common

FEDLAB = str(common.REPO / '.venv' / 'bin' / 'fedlab')
SAMPLE = common.REPO.parent / 'shared' / 'data' / 'femnist_leaf_sample'
NEEDED_DISK = 5 << 30  # the replica's json (2.8 GB), its data cache (0.45 GB) and the shard budget (1 GB)


def build_replica(sample: pathlib.Path, dest: pathlib.Path, copies: int) -> dict:
    """`copies` copies of every writer of the LEAF `sample` (copy 0 keeps the ids, copy c appends `_cNN`),
    one json file per copy and split, written as LEAF writes them. Returns the counts."""
    counts = {'writers': 0, 'train': 0, 'test': 0}
    for split in ('train', 'test'):
        (dest / split).mkdir(parents=True, exist_ok=True)
        records = {}  # writer -> (its user_data record as LEAF's json text, number of examples)
        for file in sorted((sample / split).glob('*.json')):
            content = json.loads(file.read_text())
            for user in content['users']:
                records[user] = json.dumps(content['user_data'][user]), len(content['user_data'][user]['y'])
        for copy in range(copies):
            ids = [user if copy == 0 else f'{user}_c{copy:02d}' for user in records]
            with open(dest / split / f'all_data_{copy}_replica_{split}.json', 'w') as f:
                f.write('{"users": ' + json.dumps(ids) + ', "num_samples": ')
                f.write(json.dumps([n for _, n in records.values()]) + ', "user_data": {')
                f.write(', '.join(f'{json.dumps(i)}: {text}' for i, (text, _) in zip(ids, records.values())) + '}}')
        counts[split] = copies * sum(n for _, n in records.values())
        if split == 'train':
            counts['writers'] = copies * len(records)
    return counts


def write_emnist_database(path: pathlib.Path, num_clients: int, train_per_client: int, test_per_client: int) -> int:
    """emnist_all.sqlite as TFF's SqlClientData reads it (examples and client_metadata tables), digits splits
    only, `num_clients` writers whose examples are the LEAF sample's digits, cycled. Returns its size."""
    import numpy as np
    import tensorflow as tf

    pixels, labels = [], []  # the sample's digits, with LEAF's values (1.0 = background, k/255)
    for file in sorted((SAMPLE / 'train').glob('*.json')):
        for record in json.loads(file.read_text())['user_data'].values():
            y = np.asarray(record['y'])
            pixels.append(np.asarray(record['x'], np.float32)[y < 10])
            labels.append(y[y < 10])
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)

    def serialized(j: int) -> bytes:
        return tf.train.Example(features=tf.train.Features(feature={
            'pixels': tf.train.Feature(float_list=tf.train.FloatList(value=pixels[j].ravel())),
            'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[j])])),
        })).SerializeToString()

    protos = [serialized(j) for j in range(len(labels))]  # each distinct example once, then cycled

    def example(i: int) -> bytes:
        return protos[i % len(protos)]

    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL,'
                           ' serialized_example_proto BLOB NOT NULL)')
        connection.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL,'
                           ' num_examples INTEGER NOT NULL)')
        serial = 0
        for c in range(num_clients):
            client_id = f'f{c:04d}_{c % 100:02d}'
            for split, count in (('digits_only_train', train_per_client), ('digits_only_test', test_per_client)):
                rows = [(split, client_id, example(serial + k)) for k in range(count)]
                serial += count
                connection.executemany('INSERT INTO examples VALUES (?, ?, ?)', rows)
                connection.execute('INSERT INTO client_metadata VALUES (?, ?, ?)', (client_id, split, count))
        connection.execute('CREATE INDEX client_split ON examples (client_id, split_name)')
    connection.close()
    return path.stat().st_size


def _status(pid: int, field: str) -> float:
    """A /proc/<pid>/status field in MB (0 when the process is gone)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _disk_bytes(directory: pathlib.Path) -> int:
    """Bytes on disk (allocated blocks, as du counts them) of the files below `directory`."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Run:
    """One fedlab command, watched: RSS at given rounds, peak RSS (VmHWM) of fedlab and its worker, the
    shard directory's peak size on disk, and its timing.csv / metrics.csv once it ends."""

    def __init__(self, args: list[str], run_dir: pathlib.Path, env: dict, *, rss_rounds=(), shard_parent=None,
                 kill_after_round: int | None = None):
        self.run_dir = run_dir
        self.rss = {}
        self.peak_rss = {'fedlab': 0.0, 'worker': 0.0}
        self.peak_shard_bytes = 0
        self.lines = []
        self._done = threading.Event()
        started = time.perf_counter()
        proc = subprocess.Popen([FEDLAB, *args, f'hydra.run.dir={run_dir}'], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=common.REPO)
        watcher = threading.Thread(target=self._watch, args=(proc.pid, shard_parent), daemon=True)
        watcher.start()
        for line in proc.stdout:
            self.lines.append(line.rstrip())
            match = re.match(r'round\s+(\d+)/', line)
            if match and int(match.group(1)) in rss_rounds:
                self.rss[int(match.group(1))] = self._tree_rss(proc.pid)
            if match and kill_after_round is not None and int(match.group(1)) >= kill_after_round:
                self.shard_dirs_at_kill = sorted(p.name for p in shard_parent.iterdir()) if shard_parent else []
                proc.send_signal(signal.SIGKILL)
                break
        self.returncode = proc.wait()
        self.wall = time.perf_counter() - started
        self._done.set()
        watcher.join()
        if proc.stdout:
            proc.stdout.close()
        self.timing = self._rows('timing.csv')
        self.metrics = self._rows('metrics.csv')

    def _rows(self, name):
        path = self.run_dir / name
        if not path.exists():
            return []
        with open(path) as f:
            return list(csv.DictReader(f))

    @staticmethod
    def _tree_rss(pid: int) -> tuple[float, float]:
        from fedlab.run import worker_processes

        return _status(pid, 'VmRSS'), sum(_status(w, 'VmRSS') for w in worker_processes.child_workers(pid))

    def _watch(self, pid: int, shard_parent) -> None:
        from fedlab.run import worker_processes

        while not self._done.is_set():
            self.peak_rss['fedlab'] = max(self.peak_rss['fedlab'], _status(pid, 'VmHWM'))
            worker_peak = sum(_status(w, 'VmHWM') for w in worker_processes.child_workers(pid))
            self.peak_rss['worker'] = max(self.peak_rss['worker'], worker_peak)
            if shard_parent is not None and shard_parent.exists():
                self.peak_shard_bytes = max(self.peak_shard_bytes, _disk_bytes(shard_parent))
            self._done.wait(1.0)

    def seconds(self, column: str, rounds: range | None = None) -> list[float]:
        return [float(r[column]) for r in self.timing if r[column] and (rounds is None or int(r['round']) in rounds)]

    def eval_seconds(self, rounds: range | None = None) -> list[float]:
        """Seconds of the evaluations run (the rounds whose metrics.csv row has eval_clients)."""
        evaluated = {r['round'] for r in self.metrics if r.get('eval_clients')}
        return [float(r['eval_seconds']) for r in self.timing if r['round'] in evaluated
                and (rounds is None or int(r['round']) in rounds)]

    def load_seconds(self) -> float | None:
        for line in self.lines:
            match = re.match(r'(leaf|emnist): \d+ writers .*? in ([\d.]+) s', line)
            if match:
                return float(match.group(2))
        return None

    def check(self, what: str) -> None:
        if self.returncode != 0:
            tail = '\n'.join(self.lines[-15:])
            raise RuntimeError(f'{what} failed with exit status {self.returncode}:\n{tail}')


def measure_load(path: pathlib.Path, env: dict) -> tuple[float, float, str]:
    """Seconds of `load_leaf` (data cache on) in a fresh process that has imported TFF, the process's peak RSS
    (MB, TFF's import included) and what it printed."""
    code = (
        'import resource, sys, time\n'
        'import tensorflow_federated\n'  # imported first: the figure is json to arrays, not TFF's import
        'from fedlab.data import leaf, cache, federated_data\n'
        't = time.perf_counter()\n'
        'data = leaf.load_leaf(sys.argv[1], array_cache=str(cache.default_root()))\n'
        'print(f"LOAD {time.perf_counter() - t:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")\n'
    )
    out = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True, env=env,
                         cwd=common.REPO, check=True).stdout
    seconds, rss = re.search(r'LOAD ([\d.]+) ([\d.]+)', out).groups()
    return float(seconds), float(rss), out.splitlines()[0]


def COMMON_ARGS(args) -> list[str]:  # noqa: N802
    """The configuration every measured run shares (the issue's): simple_cnn, 10 clients a round, uniform."""
    return ['model=simple_cnn', 'sampling=uniform', 'clients_per_round=10', f'eval_clients={args.eval_clients}',
            f'eval_every={args.eval_every}', 'checkpoint_every=0']


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float('nan')


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--copies', type=int, default=34, help='copies of the sample (34: 3,570 writers)')
    parser.add_argument('--rounds', type=int, default=300 if common.QUICK else 1500, help='the long replica run')
    parser.add_argument('--sample-rounds', type=int, default=60 if common.QUICK else 200)
    parser.add_argument('--eval-clients', type=int, default=500)
    parser.add_argument('--eval-every', type=int, default=50)
    parser.add_argument('--emnist-clients', type=int, default=3400)
    parser.add_argument('--emnist-rounds', type=int, default=20 if common.QUICK else 100)
    parser.add_argument('--parts', default='leaf,emnist,format',
                        help='which figures: leaf (replica: load, training, SIGKILL), emnist, format (shard format)')
    parser.add_argument('--format-rounds', type=int, default=25 if common.QUICK else 60)
    parser.add_argument('--workdir', default=None, help='where to build the replica (default: a new temp dir)')
    args = parser.parse_args(argv)

    parent = pathlib.Path(args.workdir or tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    if free < NEEDED_DISK:
        line = f'# 7. scale: SKIPPED, {free / 2**30:.1f} GB free in {parent}, needs {NEEDED_DISK / 2**30:.0f} GB'
        print(line)
        return [line]
    work = pathlib.Path(tempfile.mkdtemp(prefix='fedlab-scale-', dir=parent))
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, work: pathlib.Path) -> list[str]:
    lines = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    env = {**os.environ, 'FEDLAB_CACHE_DIR': str(work / 'cache'), 'TF_CPP_MIN_LOG_LEVEL': '3'}
    if 'leaf' in args.parts:
        _leaf(args, work, env, out)
    # 4. TFF's EMNIST at its real size (generated, TFF's format).
    if 'emnist' in args.parts:
        emnist(args, work, env, out)

    # 5. One-epoch shards with the stream's order vs the whole stream written out (the format before).
    if 'format' not in args.parts:
        return lines
    code = f'from bench import scale; scale.shard_format({args.format_rounds}, {str(work / "ab")!r})'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=common.REPO)
    for line in result.stdout.splitlines():
        out(line)
    if result.returncode:
        out(f'   shard format comparison failed: {result.stderr.strip().splitlines()[-1:]}')
    return lines


def _leaf(args, work: pathlib.Path, env: dict, out) -> None:
    """Figures 1-3 on the LEAF replica: load, training beside the sample, a SIGKILLed run."""
    cache_dir = work / 'cache'
    shard_parent = cache_dir / 'shards'
    started = time.perf_counter()
    replica = work / 'replica'
    counts = build_replica(SAMPLE, replica, args.copies)
    json_gb = sum(f.stat().st_size for f in replica.rglob('*.json')) / 1e9
    pixel_bytes = (counts['train'] + counts['test']) * 28 * 28 * 4
    out(f'# 7. scale: replica of {counts["writers"]} writers, {counts["train"]:,} train / {counts["test"]:,} test '
        f'examples, {json_gb:.1f} GB of json (built in {time.perf_counter() - started:.0f} s); float32 pixels '
        f'{pixel_bytes / 2**30:.2f} GiB; 2 cores, machine load {os.getloadavg()[0]:.1f}')

    # 1. Load, first and cached, in fresh processes.
    first, first_rss, first_line = measure_load(replica, env)
    cached, cached_rss, cached_line = measure_load(replica, env)
    sample_first, sample_rss, _ = measure_load(SAMPLE, env)
    sample_cached, _, _ = measure_load(SAMPLE, env)
    out(f'   {first_line}')
    out(common.figure('load, first run (s)', first, '<300', first < 300,
                      f'sample {sample_first:.1f} s; before: about 120 s'))
    out(common.figure('load, cached (s)', cached, '<30', cached < 30, f'sample {sample_cached:.2f} s'))
    ratio = first_rss * 2**20 / pixel_bytes
    out(common.figure('peak RSS of the loading process / float32 pixels', ratio, '<2', ratio < 2,
                      f'{first_rss:.0f} MB first, {cached_rss:.0f} MB cached, sample {sample_rss:.0f} MB; '
                      'before: 3.4 GB while parsing'))

    # 2. Training: the sample, the long replica run, the sample again.
    common_args = ['data=leaf', *COMMON_ARGS(args)]
    sample_runs = []

    def sample_run(i):
        run = Run([*common_args, f'data.path={SAMPLE}', f'rounds={args.sample_rounds}'], work / f'sample{i}', env)
        run.check('the sample run')
        sample_runs.append(run)

    sample_run(0)
    early, late = max(1, args.rounds // 10), args.rounds
    long_run = Run([*common_args, f'data.path={replica}', f'rounds={args.rounds}'], work / 'replica_run', env,
                   rss_rounds={early, late}, shard_parent=shard_parent)
    long_run.check('the replica run')
    sample_run(1)

    compared = range(6, args.sample_rounds + 1)
    replica_round = _median(long_run.seconds('train_seconds', compared))
    sample_round = statistics.mean(_median(r.seconds('train_seconds', compared)) for r in sample_runs)
    ratio = replica_round / sample_round
    out(common.figure(f'train s per round, replica / sample (rounds 6-{args.sample_rounds})', ratio, '<=1.15',
                      ratio <= 1.15, f'medians {1000 * replica_round:.0f} / {1000 * sample_round:.0f} ms; '
                      'before: 820 / 540 ms = 1.51'))
    late_round = _median(long_run.seconds('train_seconds', range(args.rounds // 2, args.rounds + 1)))
    out(common.figure(f'train s per round, replica rounds {args.rounds // 2}-{args.rounds} / 6-{args.sample_rounds}',
                      late_round / replica_round, '(report)', None, f'median {1000 * late_round:.0f} ms'))

    sampled_evals = long_run.eval_seconds(range(1, args.rounds))
    final_eval = long_run.eval_seconds(range(args.rounds, args.rounds + 1))
    evaluated = [int(r['eval_clients']) for r in long_run.metrics if r.get('eval_clients')]
    # each sample run's first evaluation writes the test shards (BENCH_QUICK's 60 rounds evaluate only twice)
    sample_eval = _median([s for r in sample_runs for s in r.eval_seconds()[1:]])
    sample_first = _median([r.eval_seconds()[0] for r in sample_runs if r.eval_seconds()])
    eval_median = _median(sampled_evals[1:] or sampled_evals)
    out(common.figure(f'evaluation on {args.eval_clients} sampled test clients (s)', eval_median, '<2',
                      eval_median < 2, f'median of {len(sampled_evals)}, first {sampled_evals[0]:.2f} s (writes '
                      f'their shards); sample, all 105: {sample_eval:.2f} s (first {sample_first:.2f} s)' if sampled_evals else ''))
    out(common.figure(f'final evaluation on all {evaluated[-1] if evaluated else "?"} test clients (s)',
                      final_eval[0] if final_eval else float('nan'), '(report)', None, 'before: 5.2 s'))

    budget = 1024 * 2**20
    peak = long_run.peak_shard_bytes
    out(common.figure('peak shard disk / budget', peak / budget, '<=1', peak <= budget,
                      f'{peak / 2**20:.0f} of {budget / 2**20:.0f} MB over {args.rounds} rounds (polled every second)'))
    (p_early, w_early), (p_late, w_late) = long_run.rss[early], long_run.rss[late]
    ratio = (p_late + w_late) / (p_early + w_early)
    out(common.figure(f'RSS round {late} / round {early} (fedlab + worker)', ratio, '<=1.05', ratio <= 1.05,
                      f'{p_early:.0f} + {w_early:.0f} -> {p_late:.0f} + {w_late:.0f} MB'))
    peak_ratio = long_run.peak_rss['fedlab'] * 2**20 / pixel_bytes
    out(common.figure('peak RSS of the training run / float32 pixels', peak_ratio, '<2', peak_ratio < 2,
                      f'fedlab {long_run.peak_rss["fedlab"]:.0f} MB, its worker {long_run.peak_rss["worker"]:.0f} MB;'
                      ' before: 4.0 GB'))
    out(f'   (replica run: {long_run.wall / 60:.1f} min for {args.rounds} rounds; load in the run '
        f'{long_run.load_seconds()} s)')

    # 3. A run killed mid-way leaves its shard and temporary directories (in fedlab's cache); the next start
    # removes them; nothing goes to the system's temporary directory (here a private one, to see it alone).
    system_temp = work / 'system_tmp'
    system_temp.mkdir()
    kill_env = {**env, 'TMPDIR': str(system_temp)}
    fedlab_dirs = (shard_parent, cache_dir / 'tmp')
    killed = Run([*common_args, f'data.path={replica}', 'rounds=50'], work / 'killed', kill_env,
                 shard_parent=shard_parent, kill_after_round=3)
    left = {d.name: sorted(p.name for p in d.iterdir()) for d in fedlab_dirs}
    next_run = Run([*common_args, f'data.path={SAMPLE}', 'rounds=1'], work / 'next', kill_env)
    next_run.check('the run after the SIGKILL')
    remaining = [f'{d.name}/{p.name}' for d in fedlab_dirs if d.exists() for p in d.iterdir()]
    in_temp = sorted(p.name for p in system_temp.iterdir())
    out(common.figure('entries left by a SIGKILLed run after the next start', len(remaining) + len(in_temp), '0',
                      not remaining and not in_temp,
                      f'after the kill (exit {killed.returncode}): shards/ {len(left["shards"])}, tmp/ '
                      f'{len(left["tmp"])} entries, system temp {len(in_temp)}; after the next start: '
                      f'{remaining + in_temp or "none"}'))



def shard_format(rounds: int, directory: str) -> None:
    """Per-round time and preparation of one-epoch shards (one pass + the stream's order, gathered in-graph)
    against shards holding the whole stream (`client_epochs` passes), on the same clients, round by round
    alternating which goes first: simple_cnn, 10 uniformly sampled LEAF writers a round, 5 epochs."""
    import functools

    import numpy as np

    from fedlab import aggregators, models, sampling
    from fedlab.data import leaf
    from fedlab.fast_paths import shards
    from fedlab.run import round_inputs, round_loop, worker_processes

    with worker_processes.worker_cleanup():
        data = leaf.load_leaf(str(SAMPLE))
        pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig())
        streams = round_inputs.ClientStreams(data.train, pipeline)

        def one_epoch(key):
            return shards.serialize(*streams.one_pass(key.split('/', 1)[1]))

        def whole_stream(key):
            stream = streams.stream(key.split('/', 1)[1])
            return shards.serialize(stream, np.arange(len(stream['y'])))

        model_fn = models.keras_model_fn((28, 28, 1), 62, architecture='simple_cnn')
        process = round_loop.build_fed_avg(model_fn, round_loop.FedAvgConfig(), model_aggregator=aggregators.mean(),
                                         client_inputs='shards', batch_size=20)
        state = process.initialize()
        sampler = sampling.uniform(data.client_ids, 10, seed=0)
        seconds = {'one': [], 'whole': []}
        prepare = {'one': [], 'whole': []}
        sizes = {'one': 0, 'whole': 0}
        with shards.ShardStore(directory, budget_bytes=8 << 30) as store:
            for round_num in range(1, rounds + 1):
                kinds = [('one', one_epoch), ('whole', whole_stream)]
                for kind, make in kinds if round_num % 2 else kinds[::-1]:
                    start = time.perf_counter()
                    stems = store.paths([f'{kind}/{c}' for c in sampler(round_num)], make, pin=kind)
                    prepare[kind].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    output = process.next(state, stems)
                    seconds[kind].append(time.perf_counter() - start)
                state = output.state
            for kind in sizes:
                sizes[kind] = sum(os.path.getsize(f'{stem}.{s}') for key, (stem, _) in store._entries.items()
                                  if key.startswith(kind) for s in ('x', 'y', 'i'))
    one, whole = (statistics.median(seconds[k][5:]) for k in ('one', 'whole'))
    print(common.figure('train s per round, one-epoch shards / whole stream', one / whole, '<=1', one / whole <= 1,
                        f'medians {1000 * one:.0f} / {1000 * whole:.0f} ms over {rounds - 5} rounds; preparing 10 '
                        f'new clients {1000 * statistics.median(prepare["one"]):.0f} / '
                        f'{1000 * statistics.median(prepare["whole"]):.0f} ms; '
                        f'disk {sizes["one"] / sizes["whole"]:.2f}x'),
          flush=True)


def emnist(args, work: pathlib.Path, env: dict, out) -> None:
    cache = work / 'tff'
    started = time.perf_counter()
    size = write_emnist_database(cache / 'emnist_all.sqlite', args.emnist_clients, 100, 12)
    out(f'# 7b. EMNIST: a generated database in TFF\'s format, {args.emnist_clients} writers x (100 train + 12 test) '
        f'digits, {size / 1e9:.2f} GB (built in {time.perf_counter() - started:.0f} s)')
    every = max(1, args.emnist_rounds // 5)  # four evaluations on the sample, then everyone
    run = Run(['data=emnist', f'data.cache_dir={cache}', *COMMON_ARGS(args), f'rounds={args.emnist_rounds}',
               f'eval_every={every}'], work / 'emnist_run', env)
    run.check('the EMNIST run')
    train = _median(run.seconds('train_seconds', range(6, args.emnist_rounds + 1)))
    sampled = run.eval_seconds(range(1, args.emnist_rounds))
    final = run.eval_seconds(range(args.emnist_rounds, args.emnist_rounds + 1))
    sampled_median = _median(sampled[1:] or sampled)
    out(common.figure('EMNIST parse of the database, first run (s)', run.load_seconds() or float('nan'), '(report)',
                      None, 'into the data cache; later runs read it in about a second'))
    out(common.figure('EMNIST train s per round (median, rounds 6-N)', train, '(report)', None))
    out(common.figure(f'EMNIST evaluation on {args.eval_clients} sampled clients (s)', sampled_median, '<2',
                      sampled_median < 2,
                      f'median of {len(sampled) - 1}, first {sampled[0]:.2f} s (writes the shards)' if sampled else ''))
    out(common.figure(f'EMNIST final evaluation on all {args.emnist_clients} clients (s)',
                      final[0] if final else float('nan'), '(report)', None))
    out(common.figure('EMNIST whole command (min)', run.wall / 60, '(report)', None,
                      f'{args.emnist_rounds} rounds; peak RSS fedlab {run.peak_rss["fedlab"]:.0f} MB, '
                      f'worker {run.peak_rss["worker"]:.0f} MB'))


if __name__ == '__main__':
    main()
