"""Differential privacy: the accountant against dp_accounting, the checks before TensorFlow, Poisson sampling,
the report. No TensorFlow here (tests/test_privacy_training.py runs the aggregators)."""

import csv
import json
import math
import subprocess
import sys

import dp_accounting
import pytest

from fedlab import sampling
from fedlab.errors import FedlabError
from fedlab.privacy import accounting, checks
from tests.conftest import compose_config


def _values(overrides):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config(overrides), resolve=True)


# --- the accountant -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('accountant', ['rdp', 'pld'])
def test_epsilon_rises_every_round_and_ends_at_dp_accountings_own_value(accountant):
    q, z, rounds, delta = 20 / 105, 1.5, 6, 105**-1.1  # z = 1.5: PLD builds in ~1 s (z = 0.8: ~3 s)
    ledger = accounting.PrivacyLedger(
        checks.DpSettings(noise_multiplier=z, sampling_rate=q, delta=delta, accountant=accountant)
    )
    epsilons = [ledger.round_values(r, [])['epsilon'] for r in range(1, rounds + 1)]
    assert all(later > earlier for earlier, later in zip(epsilons, epsilons[1:])), epsilons

    # Independently: dp_accounting's accountant, composed over every round of a Poisson-sampled Gaussian.
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    expected_accountant = {'rdp': dp_accounting.rdp.RdpAccountant, 'pld': dp_accounting.pld.PLDAccountant}[accountant]
    expected = expected_accountant().compose(event, rounds).get_epsilon(delta)
    assert epsilons[-1] == pytest.approx(expected, rel=1e-6)


def test_full_participation_is_the_gaussian_mechanism_composed_and_no_noise_is_no_privacy():
    delta = 1e-5
    ledger = accounting.PrivacyLedger(checks.DpSettings(noise_multiplier=1.2, sampling_rate=1.0, delta=delta))
    expected = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.GaussianDpEvent(1.2), 4).get_epsilon(delta)
    assert ledger.epsilon(4) == pytest.approx(expected, rel=1e-9)
    assert ledger.epsilon(4, 'pld') < ledger.epsilon(4, 'rdp')  # PLD is the tighter of the two

    no_noise = accounting.PrivacyLedger(checks.DpSettings(noise_multiplier=0.0, sampling_rate=0.1, delta=delta))
    assert math.isinf(no_noise.round_values(3, [])['epsilon'])
    assert no_noise.summary()['epsilon'] == 'inf'  # valid JSON


def test_results_give_pld_beside_rdp_when_pld_is_the_accountant():
    settings = dict(noise_multiplier=2.0, sampling_rate=0.2, delta=1e-3)
    ledgers = [accounting.PrivacyLedger(checks.DpSettings(**settings, accountant=a)) for a in ('pld', 'rdp')]
    for ledger in ledgers:
        ledger.restore({'round': '3'})  # as a resumed run does: the summary is of the last recorded round
    pld, rdp = (ledger.summary() for ledger in ledgers)
    assert pld['epsilon'] == pld['epsilon_pld'] < pld['epsilon_rdp'] == rdp['epsilon']
    assert rdp['epsilon_pld'] is None  # seconds of work: only when asked for


def test_adaptive_clipping_spends_its_noise_inside_the_total_multiplier():
    """TFF's adaptive clipping releases two Gaussians a round (update and clipped count); on the same sample they
    compose to one Gaussian of the total z that the accountant is given."""
    z, clients = 0.7, 20
    stddev = checks.DEFAULT_CLIPPED_COUNT_STDDEV_FRACTION * clients
    update_z = checks.adaptive_noise_split(z, stddev)
    assert update_z > z
    gaussian = dp_accounting.GaussianDpEvent
    composed = dp_accounting.ComposedDpEvent([gaussian(update_z), gaussian(2 * stddev)])
    q, delta = 0.1, 1e-5
    two = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.PoissonSampledDpEvent(q, composed), 10)
    one = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.PoissonSampledDpEvent(q, gaussian(z)), 10)
    assert two.get_epsilon(delta) == pytest.approx(one.get_epsilon(delta), rel=1e-9)


def test_settings_take_q_and_delta_from_the_population():
    values = _values(['aggregator=dp', 'sampling=poisson', 'client_inputs=dataset', 'clients_per_round=10'])
    s = checks.settings(values, population=105)
    assert s.sampling_rate == pytest.approx(10 / 105) and s.delta == pytest.approx(105**-1.1)
    assert s.clipping == 'adaptive' and s.update_noise_multiplier > s.noise_multiplier == 0.5
    s = checks.settings(
        _values(['aggregator=dp_fixed', 'privacy.amplification=none', 'privacy.delta=1e-6', 'client_inputs=dataset']),
        population=50,
    )
    assert (s.sampling_rate, s.delta, s.clipping) == (1.0, 1e-6, 'fixed')
    assert checks.settings(_values([]), population=50) is None  # aggregator=mean: nothing to account


# --- checks before TensorFlow -----------------------------------------------------------------------------------

DP = ['aggregator=dp', 'sampling=poisson', 'client_inputs=dataset']
REFUSED = [
    ('fixed sampling', ['aggregator=dp', 'sampling=fixed'],
     'choose sampling=poisson, or add privacy.amplification=none'),
    ('uniform sampling', ['aggregator=dp_fixed', 'sampling=uniform'], 'choose sampling=poisson'),
    ('noise vs clients', [*DP, 'aggregator.noise_multiplier=1.0'], 'raise clients_per_round above 10'),
    ('noise vs stddev', [*DP, 'aggregator.noise_multiplier=1.0', 'aggregator.clipped_count_stddev=0.4'],
     'set aggregator.clipped_count_stddev above 0.5'),
    ('compression', [*DP, 'aggregator.compression=true'], 'compressing the clipped updates'),
    ('weighted by examples', ['aggregator=dp', 'sampling=poisson', 'weighting=num_examples'], 'use weighting=uniform'),
    ('negative noise', [*DP, 'aggregator.noise_multiplier=-1'], 'aggregator.noise_multiplier=-1'),
    ('bad clip', ['aggregator=dp_fixed', 'sampling=poisson', 'aggregator.clip=0'], 'aggregator.clip must be'),
    ('bad quantile', [*DP, 'aggregator.target_unclipped_quantile=1.5'], 'target_unclipped_quantile must be'),
    ('bad delta', ['privacy.delta=2'], 'privacy.delta must be'),
    ('bad accountant', ['privacy.accountant=moments'], 'rdp or pld'),
    ('secure on remote workers', ['aggregator=secure', 'runtime=remote', 'runtime.workers=[h:1]'],
     'remote workers cannot run them'),
]  # fmt: skip


@pytest.mark.parametrize('case,overrides,expected', REFUSED, ids=[c[0] for c in REFUSED])
def test_dp_assumptions_are_refused_in_one_line(case, overrides, expected):
    with pytest.raises(FedlabError, match=expected.replace('.', r'\.')) as error:
        checks.check(_values(overrides))
    assert '\n' not in str(error.value)


def test_dp_setups_that_hold_pass_and_doubtful_ones_warn():
    assert checks.check(_values(DP)) == []
    assert checks.check(_values(['aggregator=dp_fixed', 'privacy.amplification=none', 'client_inputs=dataset'])) == []
    assert checks.check(_values(['aggregator=robust', 'sampling=fixed'])) == []  # no DP, nothing to check
    assert checks.check(_values([*DP, 'aggregator.noise_multiplier=0', 'clients_per_round=1'])) == []

    warnings = checks.check(_values([*DP, 'aggregator.zeroing=true']))
    assert len(warnings) == 1 and 'without noise' in warnings[0]
    warnings = checks.check(_values([*DP, 'aggregator.noise_multiplier=0.95']))  # 0.95 < 1.0, but 3.2x the noise
    assert len(warnings) == 1 and 'x the noise' in warnings[0]
    # fedlab's server optimizers as fedlab.config.components marks them; one's own (or a bare name) by its name.
    for overrides in (['server_optimizer=adam'], ['server_optimizer=adagrad']):
        warnings = checks.check(_values([*DP, *overrides]))
        assert len(warnings) == 1 and 'server SGD with momentum' in warnings[0]
    assert checks.check(_values([*DP, 'server_optimizer=sgd', 'server_momentum=0.9'])) == []
    for optimizer in [{'_target_': 'mine.optimizers.adam', 'learning_rate': 0.01}, 'yogi']:
        warnings = checks.check({**_values(DP), 'server_optimizer': optimizer})
        assert len(warnings) == 1 and 'server SGD with momentum' in warnings[0]
    assert checks.check({**_values(DP), 'server_optimizer': {'_target_': 'mine.optimizers.sgdm'}}) == []


def test_dp_with_fixed_sampling_exits_2_in_one_line_before_tensorflow(tmp_path):
    code = (
        'import sys\nfrom fedlab import cli\n'
        f'sys.argv = ["fedlab", "aggregator=dp", "sampling=fixed", "hydra.run.dir={tmp_path}/run"]\n'
        'try:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code\n'
        'tf = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_federated")]\n'
        'print("RESULT", code, len(tf))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split('RESULT')[1].split() == ['2', '0'], proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fedlab: error: aggregator=dp with sampling=fixed'), proc.stderr
    assert 'sampling=poisson' in lines[0] and 'privacy.amplification=none' in lines[0]
    assert not (tmp_path / 'run').exists()


# --- Poisson sampling -------------------------------------------------------------------------------------------


def test_poisson_sampling_is_independent_per_client_and_a_function_of_seed_and_round():
    ids = [f'c{i:03d}' for i in range(200)]
    sample = sampling.poisson(ids, 20, seed=0)
    draws = [sample(r) for r in range(1, 301)]
    assert draws == [sampling.poisson(list(reversed(ids)), 20, seed=0)(r) for r in range(1, 301)]  # order-free
    sizes = [len(d) for d in draws]
    assert len(set(sizes)) > 5  # a variable number of clients per round
    assert 18.5 < sum(sizes) / len(sizes) < 21.5  # q = 0.1 of 200: 20 expected; std of this mean is 0.25
    joined = sum(d.count('c007') for d in draws)
    assert 15 <= joined <= 45  # one client: Binomial(300, 0.1), mean 30, std 5.2
    assert draws != [sampling.poisson(ids, 20, seed=1)(r) for r in range(1, 301)]
    tiny = sampling.poisson(ids[:6], 1, seed=0)
    assert any(tiny(r) == [] for r in range(1, 30))  # (5/6)^6 = 0.33: empty rounds happen


# --- the report ------------------------------------------------------------------------------------------------


def _fake_run(path, z, seed, accuracy, epsilons):
    path.mkdir(parents=True)
    rows = ['round,clients,eval_accuracy,cumulative_uplink_bits,epsilon']
    rows += [f'{r},10,{accuracy * r / len(epsilons)},{1000 * r},{e}' for r, e in enumerate(epsilons, 1)]
    (path / 'metrics.csv').write_text('\n'.join(rows) + '\n')
    results = {
        'status': 'completed', 'rounds_completed': len(epsilons), 'choices': {'model': 'linear', 'aggregator': 'dp'},
        'final_eval': {'eval': {'accuracy': accuracy}},
        'config': {'seed': seed, 'aggregator': {'noise_multiplier': z}, 'sampling': {'seed': seed}},
        'privacy': {'noise_multiplier': z, 'sampling_rate': 0.1, 'delta': 1e-3, 'rounds': len(epsilons),
                    'epsilon': epsilons[-1], 'epsilon_rdp': epsilons[-1], 'epsilon_pld': None, 'accountant': 'rdp'},
    }  # fmt: skip
    (path / 'results.json').write_text(json.dumps(results))


def test_report_shows_accuracy_against_epsilon_without_tensorflow(tmp_path):
    # z = 2: PLD's epsilon (computed by the report, see below) takes ~1 s to build there, 5x less than at z = 0.5.
    for z, accuracies, epsilons in [(2.0, [0.6, 0.7, 0.8], [0.1, 0.2]), (0.0, [0.9, 0.9, 0.9], ['inf', 'inf'])]:
        for seed, accuracy in enumerate(accuracies):
            _fake_run(tmp_path / f'z{z}_s{seed}', z, seed, accuracy, epsilons)
    code = (
        'import sys\nfrom fedlab.reporting import report\n'
        f'report.main([{str(tmp_path)!r}])\n'
        'print("TF", sum(m.split(".")[0] == "tensorflow" for m in sys.modules))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('TF 0')
    assert (tmp_path / 'eval_accuracy_vs_epsilon.png').stat().st_size > 0
    text = (tmp_path / 'report.md').read_text()
    # PLD's epsilon, which an RDP run leaves out (it costs seconds a round), is computed by the report.
    event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(2.0))
    pld = dp_accounting.pld.PLDAccountant().compose(event, 2).get_epsilon(1e-3)
    # | group | z | q | delta | rounds | RDP | PLD | final accuracy | best accuracy | seeds |
    assert f'=2.0 | 2.0 | 0.1 | 0.001 | 2 | 0.2 | {pld:.3g} | 0.7000 ± 0.1000 | 0.7000 | 3 |' in text
    assert '=0.0 | 0.0 | 0.1 | 0.001 | 2 | ∞ | ∞ | 0.9000 ± 0.0000 | 0.9000 | 3 |' in text
    with open(tmp_path / 'report.csv') as f:
        assert {row['epsilon'] for row in csv.DictReader(f)} == {'0.2', 'inf'}
