"""routenlp.evaluation on the real recorded suites (ROUTENLP_DATA_DIR; a missing data dir fails, never skips):
Always-top is its own reference, the oracle beats it for less, every tier model of every recorded suite has a
latency model, and `python -m routenlp.evaluation` prints its table. Tables build into conftest's session cache."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routenlp.evaluation import always_tier, evaluate_system, oracle, simulate_latency, tier_order
from routenlp.outcomes import validate_outcomes
from routenlp.suites import load_outcomes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def arc_test(config):
    df = load_outcomes('routerbench', 'arc_challenge', config=config)
    return simulate_latency(df[df['split'] == 'test'].reset_index(drop=True), config, seed=0)


def test_always_top_is_the_reference(arc_test, config):
    r = evaluate_system(always_tier(arc_test, 'T4'), arc_test, config=config)
    assert r['n_queries'] == arc_test['query_id'].nunique() == 439
    assert r['quality_ratio'] == 1.0 and r['cost_ratio'] == 1.0
    assert r['pgr'] == 1.0 and r['top_share'] == 1.0 and r['latency'] == 'simulated'


def test_oracle_is_better_and_cheaper(arc_test, config):
    r = evaluate_system(oracle(arc_test), arc_test, config=config)
    assert r['quality_ratio'] >= 1.0
    assert r['cost_ratio'] < 1.0
    weak = evaluate_system(always_tier(arc_test, 'T1'), arc_test, config=config)
    assert weak['pgr'] == 0.0 and weak['quality_ratio'] < 1.0 and weak['cost_ratio'] < r['cost_ratio']


def test_simulate_latency_covers_every_recorded_tier_model(config):
    for suite, sc in config.suites.items():
        assert set(sc.tiers.values()) <= set(config.evaluation.latency), suite
        for task in sc.tasks:
            df = load_outcomes(suite, task, config=config)
            sim = validate_outcomes(simulate_latency(df, config, seed=0))
            assert sim['latency_ms'].notna().all() and (sim['latency_ms'] > 0).all(), (suite, task)
            assert (sim['latency_source'] == 'simulated').all(), (suite, task)
            # reproducible for the same seed, different for another
            again = simulate_latency(df.iloc[::-1], config, seed=0).sort_index()
            np.testing.assert_array_equal(again['latency_ms'].to_numpy(), sim['latency_ms'].to_numpy())
            assert not np.allclose(simulate_latency(df, config, seed=1)['latency_ms'], sim['latency_ms'])


def test_cli_prints_the_reference_table(config):
    out = subprocess.run([sys.executable, '-m', 'routenlp.evaluation', '--batch-size', '1', '--num-samples', '20'],
                         cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'no effect on recorded tiers' in lines[0]
    body = [l.split() for l in lines[2:]]
    expected = {(s, t) for s, sc in config.suites.items() for t in sc.tasks}
    assert {(b[0], b[1]) for b in body} == expected
    assert all(b[-2] == 'simulated' for b in body)
    top = [b for b in body if b[2] == f'always-{tier_order(config.suites[b[0]].tiers)[-1]}']
    assert len(top) == len(expected) and all(b[5] == '1.000' and b[6] == '1.000' for b in top)
