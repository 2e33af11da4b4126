"""routenlp.evaluation on the real recorded suites (ROUTENLP_DATA_DIR; a missing data dir fails, never skips):
`evaluate_system`'s numbers against the same numbers computed here from the raw outcome table, the top tier found by
cost whatever the tier names, the oracle beating Always-top for less, APGR anchored at Always-weak / Always-top on a
hand-computed curve, every tier model of every recorded suite with a latency model, and `python -m
routenlp.evaluation` printing its table. Tables build into conftest's session cache."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from routenlp.curves import apgr, cpt
from routenlp.evaluation import (SYSTEMS, TaskRun, always_frame, curve_summary, evaluate_system, operating_curve,
                                 simulate_latency)
from routenlp.outcomes import tier_order, validate_outcomes
from routenlp.suites import load_outcomes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def arc_test(config):
    df = load_outcomes('routerbench', 'arc_challenge', config=config)
    return simulate_latency(df[df['split'] == 'test'].reset_index(drop=True), config, seed=0)


def test_metrics_match_an_independent_computation(arc_test, config):
    """Always-T1, the oracle and a hand-made 'T1 then T4 on odd rows' system on ARC's 439 test queries: quality and
    cost ratios, PGR and top share computed here from the raw outcome table (pivot, means, sums) must match."""
    q = arc_test.pivot(index='query_id', columns='tier', values='quality')
    c = arc_test.pivot(index='query_id', columns='tier', values='cost_usd')
    ok = arc_test.pivot(index='query_id', columns='tier', values='acceptable').astype(bool)
    assert len(q) == 439
    weak = evaluate_system(always_frame(arc_test, 'T1'), arc_test, config=config)
    assert weak['quality_ratio'] == pytest.approx(q['T1'].mean() / q['T4'].mean(), rel=1e-12)
    assert weak['cost_ratio'] == pytest.approx(c['T1'].sum() / c['T4'].sum(), rel=1e-12)
    assert weak['pgr'] == 0.0 and weak['top_share'] == 0.0
    orc = evaluate_system(SYSTEMS['oracle']().fit(TaskRun(arc_test, config=config)).decisions(), arc_test, config=config)
    order = tier_order(arc_test)
    pick = [next((t for t in sorted(order, key=lambda t: (c.loc[i, t], order.index(t))) if ok.loc[i, t]), 'T4') for i in q.index]
    q_orc, c_orc = np.mean([q.loc[i, t] for i, t in zip(q.index, pick)]), sum(c.loc[i, t] for i, t in zip(q.index, pick))
    assert orc['quality_ratio'] == pytest.approx(q_orc / q['T4'].mean(), rel=1e-12) and orc['quality_ratio'] >= 1.0
    assert orc['cost_ratio'] == pytest.approx(c_orc / c['T4'].sum(), rel=1e-12) and orc['cost_ratio'] < 1.0
    assert orc['top_share'] == pytest.approx(np.mean([t == 'T4' for t in pick]))
    odd = q.index[1::2]
    calls = pd.DataFrame({'suite': 'routerbench', 'task': 'arc_challenge', 'query_id': q.index,
                          'tiers_called': [('T1', 'T4') if i in set(odd) else ('T1',) for i in q.index]})
    from routenlp.evaluation import decisions_from_calls
    mixed = evaluate_system(decisions_from_calls(arc_test, calls), arc_test, config=config)
    q_mix = np.where(q.index.isin(odd), q['T4'], q['T1']).mean()
    c_mix = c['T1'].sum() + c.loc[odd, 'T4'].sum()
    assert mixed['quality'] == pytest.approx(q_mix, rel=1e-12)
    assert mixed['cost_ratio'] == pytest.approx(c_mix / c['T4'].sum(), rel=1e-12)
    assert mixed['pgr'] == pytest.approx((q_mix - q['T1'].mean()) / (q['T4'].mean() - q['T1'].mean()), rel=1e-12)
    assert mixed['top_share'] == pytest.approx(len(odd) / len(q))


def test_top_tier_is_found_by_cost_not_name(arc_test, config):
    "Tier names that sort the wrong way round (T1 -> 'Z', T4 -> 'A'): the references are still T1 (weak) and T4 (top)."
    names = {'T1': 'Z-mistral', 'T2': 'Y-mixtral', 'T3': 'B-gpt35', 'T4': 'A-gpt4'}
    renamed = arc_test.assign(tier=arc_test['tier'].map(names))
    assert tier_order(renamed) == ['Z-mistral', 'Y-mixtral', 'B-gpt35', 'A-gpt4']
    r = evaluate_system(always_frame(renamed, 'A-gpt4'), renamed, config=config)
    w = evaluate_system(always_frame(renamed, 'Z-mistral'), renamed, config=config)
    assert (r['quality_ratio'], r['cost_ratio'], r['pgr'], r['top_share']) == (1.0, 1.0, 1.0, 1.0)
    assert w['pgr'] == 0.0 and w['top_share'] == 0.0 and w['cost_ratio'] < 0.2


def test_apgr_is_anchored_at_always_weak_and_always_top(arc_test, config):
    """A swept system whose points cover only part of the top-share range: APGR is the area over [0, 1] with the two
    Always-* anchors, computed here by hand; the range-normalised value it replaces is larger."""
    q = arc_test.pivot(index='query_id', columns='tier', values='quality')
    ids = list(q.index)
    def share(k):   # the first k queries (in id order) go T1 -> T4, the rest stay at T1
        return pd.DataFrame({'suite': 'routerbench', 'task': 'arc_challenge', 'query_id': ids,
                             'tiers_called': [('T1', 'T4') if i < k else ('T1',) for i in range(len(ids))]})
    from routenlp.evaluation import decisions_from_calls
    ks = [110, 220, 330]                                     # shares 0.25, 0.50, 0.75: no point at 0 or 1
    curve = operating_curve({k: decisions_from_calls(arc_test, share(k)) for k in ks}, arc_test, config=config)
    qw, qt = q['T1'].mean(), q['T4'].mean()
    g = [0.0] + [(np.where(np.arange(len(ids)) < k, q['T4'], q['T1']).mean() - qw) / (qt - qw) for k in ks] + [1.0]
    x = [0.0] + [k / len(ids) for k in ks] + [1.0]
    by_hand = sum((x[i + 1] - x[i]) * (g[i] + g[i + 1]) / 2 for i in range(len(x) - 1))
    assert curve_summary(curve)['apgr'] == pytest.approx(by_hand, rel=1e-12)
    assert apgr(curve, qw, qt, anchor=False) == pytest.approx(
        sum((x[i + 1] - x[i]) * (g[i] + g[i + 1]) / 2 for i in range(1, 3)) / (x[3] - x[1]), rel=1e-12)
    assert cpt(curve, 0.95, qw, qt) <= 1.0                   # anchored: every level is reached by 100 %


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
    tops = {s: tier_order(load_outcomes(s, sc.tasks[0], config=config))[-1] for s, sc in config.suites.items()}
    top = [b for b in body if b[2] == f'always-{tops[b[0]]}']
    assert len(top) == len(expected) and all(b[5] == '1.000' and b[6] == '1.000' for b in top)


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'routenlp.evaluation', *args], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600)


def test_cli_prints_a_systems_sweep_and_its_scaling_table(config):
    out = _cli('--system', 'router', '--param', 'router=knn', '--param', 'router_params={"k": 5}', '--suite', 'routellm',
               '--task', 'mt_bench', '--num-samples', '20')
    assert out.returncode == 0, out.stderr
    body = [l.split() for l in out.stdout.splitlines()[2:]]
    lams = [b[2] for b in body]
    from routenlp.systems import Routed
    assert lams == [f'router[lam={v:g}]' for v in Routed.LAMS] and all(b[3] == '20' for b in body)
    assert {(b[0], b[1]) for b in body} == {('routellm', 'mt_bench')}
    costs = [float(b[6]) for b in body]
    assert costs == sorted(costs, reverse=True) and costs[-1] < costs[0]   # a higher price of cost: cheaper routing
    out = _cli('--system', 'router', '--param', 'router=knn', '--scaling', '--suite', 'routellm', '--task', 'mt_bench',
               '--batch-sizes', '1', '4', '--repeats', '2')
    assert out.returncode == 0, out.stderr
    rows = [l.split() for l in out.stdout.splitlines() if l.strip() and l.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 4] and all(float(r[-1]) > 0 for r in rows)
    out = _cli('--system', 'joint-cascade', '--suite', 'routellm', '--task', 'mt_bench', '--num-samples', '20')
    assert out.returncode == 0, out.stderr          # every registered system runs from the CLI, the joint cascade too
    from routenlp.joint_cascade import JointCascade
    assert [l.split()[2] for l in out.stdout.splitlines()[2:]] == [f'joint-cascade[alpha={v:g}]' for v in JointCascade.ALPHAS]
    out = _cli('--system', 'cascade', '--scaling', '--suite', 'routellm', '--task', 'mt_bench')
    assert out.returncode == 2 and 'has no router' in out.stderr
    out = _cli('--system', 'router', '--suite', 'routellm', '--task', 'gsm9k')
    assert out.returncode == 2 and 'no configured task matches --task gsm9k' in out.stderr
