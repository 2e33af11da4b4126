"""Cross-checks of our curve metrics and conformal thresholds against the peers' own code on the same inputs.

- RouteLLM APGR / CPT: `routellm.evals.evaluate.generate_results` of the PyPI release `routellm==0.2.0` computes them
  (nested `apgr_metric` / `pct_call_metric`, printed, not returned). It runs in a throwaway venv (pytest's cache dir)
  that holds that release `--no-deps` plus the libraries `generate_results` itself uses, at versions of its time
  (NumPy 1.26: it integrates with `np.trapz`, gone in NumPy 2.4). Its module-level imports of the router controller,
  the benchmark loaders and the router zoo (litellm, torch, HF datasets, an OpenAI client) are replaced by empty
  stand-ins: `generate_results` touches none of them. No pip registry -> skip, naming the failed step.
- RouterBench AIQ: withmartian/routerbench is on no package index, so its `evaluation/AIQ.py`
  (`get_non_descreasing_convex_hull_of`, `calc_AIQ`) is restated step by step below and run on random curves and
  on a real one.
- CRC / LTT thresholds vs MAPIE 1.x (`mapie.risk_control`, a dev requirement): the same calibration scores (routerbench
  arc_challenge, seed 0, n-gram confidence cross-fitted on the train split) through `MultiLabelClassificationController`
  (recall, method 'crc') and `BinaryClassificationController` (precision, LTT, fixed-sequence testing); each
  test's docstring gives the mapping of the controlled quantity and where the two may differ.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from routenlp.confidence import fill_confidence
from routenlp.conformal import ConformalCalibrator, _hb_p, crc_threshold, ltt_grid, ltt_threshold
from routenlp.curves import aiq, apgr, cpt, nd_convex_hull
from routenlp.outcomes import complete_queries, tier_order
from routenlp.suites import load_outcomes, load_queries

ROUTELLM = 'routellm==0.2.0'
# what `generate_results` imports and uses, pinned to releases contemporary with routellm 0.2.0 (Aug 2024)
ROUTELLM_ENV = ('numpy==1.26.4', 'pandas==2.2.2', 'matplotlib==3.9.2', 'pyyaml==6.0.2', 'psutil==6.0.0')

RUN_ROUTELLM = r'''
import json, os, sys, types
os.environ['MPLBACKEND'] = 'Agg'
# evaluate.py imports these at module level for its __main__ (controller: litellm; benchmarks: HF datasets;
# routers: torch, transformers, an OpenAI client); generate_results uses none of them.
for name, attrs in {'routellm.controller': ['Controller'], 'routellm.evals.benchmarks': ['GSM8K', 'MMLU', 'MTBench'],
                    'routellm.routers.routers': ['ROUTER_CLS'], 'pandarallel': ['pandarallel']}.items():
    sys.modules[name] = types.ModuleType(name)
    for a in attrs: setattr(sys.modules[name], a, None)
import pandas as pd
import routellm.evals.evaluate as ev
printed = []
ev.print = lambda *a, **k: printed.append(a)   # generate_results prints its metrics table; keep the objects
out = []
for job in json.load(sys.stdin):
    rows = [{'method': m, 'strong_percentage': x, 'accuracy': y} for m, pts in job['curves'].items() for x, y in pts]
    pair = types.SimpleNamespace(weak='weak', strong='strong')
    bench = types.SimpleNamespace(get_model_accuracy={'weak': job['q_weak'], 'strong': job['q_strong']}.__getitem__)
    printed.clear()
    ev.generate_results(pd.DataFrame(rows), bench, 'crosscheck', pair, sys.argv[1])
    metrics = next(a[1] for a in printed if a and a[0] == 'Metrics:\n')
    out.append({r['method']: {'APGR': r['APGR'], 'AUC': r['AUC'],
                              **{k: float(r[f'{k} qual'].rstrip('%')) for k in ('20%', '50%', '80%')}}
                for r in metrics.to_dict('records')})
print(json.dumps(out))
'''


def _run(cmd, what, timeout=600):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'{what}: {e}'
    return None if r.returncode == 0 else f'{what} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}'


@pytest.fixture(scope='session')
def routellm_python(request, tmp_path_factory):
    "Python of a throwaway venv holding routellm 0.2.0 (no deps) and `generate_results`' own imports; kept in pytest's cache."
    cache = getattr(request.config, 'cache', None)
    root = Path(cache.mkdir('routellm-0.2.0-venv')) if cache is not None else tmp_path_factory.mktemp('routellm')
    env, stamp = root / 'venv', root / 'installed.json'
    py = env / ('Scripts' if os.name == 'nt' else 'bin') / 'python'
    want = [ROUTELLM, *ROUTELLM_ENV]
    if stamp.exists() and py.exists() and json.loads(stamp.read_text()).get('pins') == want:
        return py
    t0 = time.perf_counter()
    pip = [str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
    for cmd, what in (([sys.executable, '-m', 'venv', '--clear', str(env)], 'python -m venv'),
                      (pip + list(ROUTELLM_ENV), f'pip install {" ".join(ROUTELLM_ENV)}'),
                      (pip + ['--no-deps', ROUTELLM], f'pip install --no-deps {ROUTELLM}')):
        err = _run(cmd, what)
        if err: pytest.skip(f'RouteLLM cross-check needs {ROUTELLM} from the pip registry in a throwaway venv; {err}')
    stamp.write_text(json.dumps({'pins': want, 'install_s': round(time.perf_counter() - t0, 1)}))
    return py


def routellm_metrics(py: Path, jobs: list, tmp_path: Path) -> list:
    "RouteLLM's generate_results on each job {q_weak, q_strong, curves: {name: [(strong %, accuracy), ...]}}."
    r = subprocess.run([str(py), '-c', RUN_ROUTELLM, str(tmp_path)], input=json.dumps(jobs), capture_output=True,
                       text=True, timeout=300, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def scored(config):
    "Outcome tables of two real tasks, seed 0, confidence from the n-gram estimator fitted on the train split."
    import dataclasses
    cfg = dataclasses.replace(config, cascade=dataclasses.replace(config.cascade, confidence_features='hashing'))
    out = {}
    for suite, task in (('routellm', 'gsm8k'), ('routerbench', 'arc_challenge')):
        table, _ = complete_queries(load_outcomes(suite, task, seed=0, config=cfg))
        out[task] = fill_confidence(table, load_queries(suite, task, config=cfg), 0, cfg)
    out['config'] = cfg
    return out


def routing_curve(table: pd.DataFrame, weak: str, strong: str, shares) -> list:
    "(strong-call %, accuracy) of 'send the least confident (weak-tier confidence) share of test queries to `strong`'."
    test = table[table['split'] == 'test']
    q = test.pivot(index='query_id', columns='tier', values='quality')
    conf = test[test['tier'] == weak].set_index('query_id')['confidence'].reindex(q.index)
    order = np.argsort(conf.to_numpy(), kind='stable')
    pts = []
    for s in shares:
        k = int(round(s * len(q)))
        strong_rows = np.zeros(len(q), bool); strong_rows[order[:k]] = True
        pts.append((100.0 * k / len(q), float(np.where(strong_rows, q[strong], q[weak]).mean())))
    return pts


def test_routellm_apgr_cpt_match_their_generate_results(routellm_python, scored, tmp_path):
    """APGR and CPT(20/50/80 %) by RouteLLM's `generate_results` vs `routenlp.curves.apgr` / `cpt`.

Their APGR = trapezoid area of PGR over the curve's own x-range (its first to last point), with q_weak / q_strong
from `benchmark.get_model_accuracy` (Always-weak / -strong); ours anchors the curve at (0, q_weak) and (1, q_strong)
by default and equals theirs with `anchor=False`, or on a curve that already spans 0..100 %. Their CPT is
`np.interp(target, accuracy, strong %)` printed with two decimals: it needs accuracy increasing along the curve
(NumPy does not check), where it is the same linear interpolation as our first crossing. On a non-monotone curve
theirs is undefined and ours is the first crossing, so CPT is compared on increasing curves only. Below a curve's
first point np.interp clamps to that point's x: on the 10..90 % curve theirs = ours with `anchor=False`, while the
anchored curve crosses earlier."""
    table = scored['gsm8k']
    real = routing_curve(table, 'T1', 'T2', np.linspace(0, 1, 11))            # 0 %, 10 %, ..., 100 %
    q_weak, q_strong = real[0][1], real[-1][1]
    g = np.random.default_rng(0)
    mono = {}
    for i in range(6):   # random increasing curves from (0, q_weak) to (100, q_strong), uneven x
        x = np.r_[0.0, np.sort(g.uniform(0, 100, 7)), 100.0]
        y = q_weak + (q_strong - q_weak) * np.r_[0.0, np.sort(g.uniform(0, 1, 7)), 1.0]
        mono[f'mono{i}'] = list(zip(x.tolist(), y.tolist()))
    jobs = [{'q_weak': q_weak, 'q_strong': q_strong, 'curves': {'real': real, 'inner': real[1:-1], **mono}}]
    theirs = routellm_metrics(routellm_python, jobs, tmp_path)[0]
    frame = lambda pts: pd.DataFrame(pts, columns=['x', 'y']).assign(x=lambda d: d['x'] / 100)
    ours = lambda pts, **kw: apgr(frame(pts), q_weak, q_strong, x='x', y='y', **kw)
    # a curve spanning 0..100 %: anchored or not, the same number as theirs
    assert ours(real) == pytest.approx(theirs['real']['APGR'], abs=1e-12)
    assert ours(real, anchor=False) == pytest.approx(theirs['real']['APGR'], abs=1e-12)
    # 10..90 %: theirs averages PGR over [0.1, 0.9] = ours unanchored; anchored adds the Always-weak / -strong ends
    assert ours(real[1:-1], anchor=False) == pytest.approx(theirs['inner']['APGR'], abs=1e-12)
    assert ours(real[1:-1]) == pytest.approx(theirs['real']['APGR'], abs=1e-12)
    assert abs(theirs['inner']['APGR'] - theirs['real']['APGR']) > 1e-4        # the two conventions do differ here
    for name, pts in mono.items():
        assert ours(pts) == pytest.approx(theirs[name]['APGR'], abs=1e-12), name
        for level, key in ((0.2, '20%'), (0.5, '50%'), (0.8, '80%')):
            mine = 100 * cpt(frame(pts), level, q_weak, q_strong, x='x', y='y')
            assert abs(mine - theirs[name][key]) <= 0.005 + 1e-9, (name, key, mine, theirs[name][key])
    # the real curve is increasing (asserted: their CPT needs it); unanchored, ours also clamps below the first point
    assert np.all(np.diff([y for _, y in real]) > 0), 'the gsm8k routing curve is no longer increasing: CPT not comparable'
    for level, key in ((0.2, '20%'), (0.5, '50%'), (0.8, '80%')):
        assert abs(100 * cpt(frame(real), level, q_weak, q_strong, x='x', y='y') - theirs['real'][key]) <= 0.005 + 1e-9
        mine = 100 * cpt(frame(real[1:-1]), level, q_weak, q_strong, x='x', y='y', anchor=False)
        assert abs(mine - theirs['inner'][key]) <= 0.005 + 1e-9, (key, mine, theirs['inner'][key])


def routerbench_ndch(points: np.ndarray) -> np.ndarray:
    """withmartian/routerbench evaluation/AIQ.py, `get_non_descreasing_convex_hull_of`, step by step:
(1) sort the points by x; (2) for every interior point k and every pair i <= j with x_i < x_k < x_j, give x_k the
larger of its own y and the chord (i, j) at x_k, keeping the largest value met for that x; (3) append the last point
if its y is >= the value kept at the largest interior x; (4) prepend the first point; (5) sort by x and drop every
point whose y is below its predecessor's (one pass, predecessors taken before any drop)."""
    p = points[points[:, 0].argsort()]
    best: dict = {}
    for i in range(len(p)):
        for j in range(i, len(p)):
            (x1, y1), (x2, y2) = p[i], p[j]
            for x, y in p:
                if x1 < x < x2:
                    v = max(y, float(np.interp(x, [x1, x2], [y1, y2])))
                    best[x] = max(best.get(x, -np.inf), v)
    kept = [[x, v] for x, v in best.items()]
    if p[-1][0] not in best and (not kept or p[-1][1] >= kept[-1][1]): kept.append(list(p[-1]))
    if p[0][0] not in best: kept = [list(p[0])] + kept
    h = np.array(kept, float)
    h = h[h[:, 0].argsort()]
    drop = [i for i in range(1, len(h)) if h[i][1] < h[i - 1][1]]
    return np.delete(h, drop, axis=0)


def routerbench_aiq(curves: list) -> list:
    """routerbench evaluation/AIQ.py, `calc_AIQ`: each curve's hull extended flat to the largest hull x over all curves,
trapezoid area from the curve's own cheapest point, divided by that largest x (so the implicit lower cost is 0)."""
    hulls = [routerbench_ndch(c) for c in curves]
    xmax = max(h[:, 0].max() for h in hulls)
    return [float(np.trapezoid(*np.vstack([h, [xmax, h[-1, 1]]])[:, ::-1].T) / xmax) for h in hulls]


def test_routerbench_aiq_and_hull_match_their_procedure(scored):
    """Our `nd_convex_hull` / `aiq` vs RouterBench's procedure on random clouds and on a real cost-quality curve.
Their hull keeps every data x (interior points lifted onto the hull), ours only the vertices: compared as piecewise-
linear functions. Their AIQ normalises by the largest cost over the compared curves (lower end 0): ours with
`cost_range=(0, that cost)`. Points must have distinct x: at tied costs theirs keeps whichever point the unstable sort
puts first, ours the best quality."""
    g = np.random.default_rng(1)
    clouds = []
    for n in (3, 5, 8, 12, 20):
        x = np.sort(g.choice(np.linspace(0.01, 2.0, 400), n, replace=False))
        clouds.append(np.c_[x, np.clip(0.3 + 0.25 * np.log1p(x) + g.normal(0, 0.08, n), 0, 1)])
    clouds.append(np.array([[0.1, 0.5], [0.2, 0.7], [0.3, 0.6], [0.4, 0.55]]))   # best point inside, falling tail
    table = scored['arc_challenge']
    test = table[table['split'] == 'test']
    cost = test.pivot(index='query_id', columns='tier', values='cost_usd')
    qual = test.pivot(index='query_id', columns='tier', values='quality')
    conf = test[test['tier'] == 'T1'].set_index('query_id')['confidence'].reindex(cost.index).to_numpy()
    real = []   # T1 with escalation of its least confident share to T2 / T3 / T4: real (cost, quality) points
    for top in ('T2', 'T3', 'T4'):
        for s in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            esc = conf < np.quantile(conf, s) if s < 1 else np.ones(len(conf), bool)
            real.append((float(np.where(esc, cost['T1'] + cost[top], cost['T1']).mean() * 1000),
                         float(np.where(esc, qual[top], qual['T1']).mean())))
    real = np.unique(np.array(real), axis=0)
    real = real[np.r_[True, np.diff(real[:, 0]) > 0]]   # distinct costs
    clouds.append(real)
    for pts in clouds:
        theirs, mine = routerbench_ndch(pts), nd_convex_hull(pts)
        xs = np.union1d(theirs[:, 0], mine[:, 0])
        assert np.allclose(np.interp(xs, theirs[:, 0], theirs[:, 1]), np.interp(xs, mine[:, 0], mine[:, 1]), atol=1e-12)
        assert set(mine[:, 0]) <= set(theirs[:, 0])
    want = routerbench_aiq(clouds)
    xmax = max(c[:, 0].max() for c in clouds)
    for pts, w in zip(clouds, want):
        assert aiq(pts, cost_range=(0.0, xmax)) == pytest.approx(w, abs=1e-12)
    assert aiq(real, cost_range=(0.0, real[:, 0].max())) == pytest.approx(routerbench_aiq([real])[0], abs=1e-12)


def _mapie():
    try:
        import mapie.risk_control as rc
    except ImportError as e:
        pytest.fail(f'mapie (>= 1.6, `mapie.risk_control`) is a dev requirement of these cross-checks: {e}')
    return rc


def _cells(scored):
    "(tier, confidence, unacceptable, train confidences) of every non-last tier's calibration rows, arc_challenge."
    table = scored['arc_challenge']
    tiers = tier_order(table)
    for tier in tiers[:-1]:
        cal = table[(table['split'] == 'calibration') & (table['tier'] == tier)]
        ref = table[(table['split'] == 'train') & (table['tier'] == tier)]['confidence'].to_numpy(float)
        yield tier, cal['confidence'].to_numpy(float), ~cal['acceptable'].to_numpy(bool), ref


def crc_loss(c, bad, lambdas):
    "(n, n_lambdas) joint loss 1[unacceptable and 1 - c <= lambda] (accepted at tau = 1 - lambda)."
    return (bad[:, None] & ((1.0 - c)[:, None] <= lambdas[None, :])).astype(float)


def mapie_crc_controller(rc, c, bad, alpha, grid):
    """MAPIE's `MultiLabelClassificationController` (recall, method 'crc') end to end. Mapping: two labels per query,
'bad' (true iff unacceptable, score 1 - c) and 'ok' (true iff acceptable, score 1, always in the set); MAPIE puts a
label in the set when its score > lambda. Escalating = 'bad' in the set, so the per-query recall loss is
1[unacceptable and 1 - c <= lambda] = 1[unacceptable and accepted at tau = 1 - lambda]: exactly our joint loss
(`crc_loss`); target_level = 1 - alpha. Returns the controller and the calibration points it accepts."""
    ctl = rc.MultiLabelClassificationController(predict_function=lambda X: np.c_[1.0 - X, np.ones(len(X))],
                                                risk='recall', method='crc', target_level=1 - alpha, predict_params=grid)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ctl.calibrate(c, np.c_[bad, ~bad].astype(int))
    return ctl, (1.0 - c) <= float(np.asarray(ctl.best_predict_param).ravel()[0])


def mapie_crc_accepts(c, bad, alpha, grid=None):
    """The controller's own CRC step (`compute_best_predict_param` for recall / 'crc': `get_r_hat_plus`, then
`find_best_predict_param`) on our joint loss over the grid of every distinct score of the data — each acceptance set
the data allow. (The controller computes that loss with a Python loop over samples x lambdas, too slow for this
grid; `test_crc_matches_mapie` checks on a coarse grid that its loss is this one.)"""
    from mapie.risk_control.methods import find_best_predict_param, get_r_hat_plus
    p_bad = 1.0 - c
    grid = np.unique(p_bad[p_bad < 1]) if grid is None else grid
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _, bound = get_r_hat_plus(crc_loss(c, bad, grid), grid, 'crc', None, None, None)
        lam = float(np.asarray(find_best_predict_param(grid, bound, np.array([alpha]))).ravel()[0])
    return p_bad <= lam


def test_crc_matches_mapie(scored):
    """`ConformalCalibrator(method='crc')` per tier vs MAPIE's CRC (`MultiLabelClassificationController`, recall, method
'crc'; mapping in `mapie_crc_controller`). Both bound (n/(n+1)) R_hat + 1/(n+1), R_hat = share of calibration points
accepted and unacceptable. On the grid of the data's own score values they accept the same calibration points.
One difference: MAPIE keeps lambda only while the bound is < alpha (`find_best_predict_param`), ours (CRC paper)
while it is <= alpha; they differ exactly when alpha (n + 1) is an integer — there ours accepts one more
unacceptable point, and MAPIE with alpha nudged up by 1e-9 agrees again. On a grid of step 0.01 (MAPIE's default)
its threshold is the first grid value at or above ours: within one grid step, accepting a subset of ours."""
    rc, cfg = _mapie(), scored['config']
    table = scored['arc_challenge']
    checked, coarse = 0, np.arange(0, 1, 0.01)
    for alpha in (0.05, 0.1, 0.2):
        cal = ConformalCalibrator(alpha=alpha, method='crc', config=cfg).fit(table, tier_order(table))
        for tier, c, bad, _ in _cells(scored):
            res = cal.results[(tier, 'arc_challenge')]
            assert res.status == 'ok' and abs(alpha * (len(c) + 1) - round(alpha * (len(c) + 1))) > 1e-6
            ours = c >= res.tau
            theirs = mapie_crc_accepts(c, bad, alpha)
            assert np.array_equal(ours, theirs), (tier, alpha, ours.sum(), theirs.sum())
            if alpha == 0.05:                                         # the controller end to end, coarse grid
                ctl, acc = mapie_crc_controller(rc, c, bad, alpha, coarse)
                assert np.allclose(ctl.r_hat, crc_loss(c, bad, coarse).mean(0), atol=1e-12)
                tau_m = 1.0 - float(np.asarray(ctl.best_predict_param).ravel()[0])
                assert not (acc & ~ours).any() and tau_m - 0.01 - 1e-9 <= res.tau <= tau_m + 1e-9, (tier, res.tau, tau_m)
                assert np.array_equal(acc, mapie_crc_accepts(c, bad, alpha, coarse))
            checked += 1
    assert checked == 9
    # alpha (n + 1) integer: n = 99, alpha = 0.05 -> ours allows 4 accepted unacceptable points, MAPIE 3
    g = np.random.default_rng(2)
    c = g.random(99); bad = g.random(99) < 0.6 * (1 - c) ** 2
    ours = c >= crc_threshold(c, bad, 0.05).tau
    strict, nudged = mapie_crc_accepts(c, bad, 0.05), mapie_crc_accepts(c, bad, 0.05 + 1e-9)
    assert (ours & bad).sum() == 4 and (strict & bad).sum() == 3 and np.array_equal(ours, nudged)


def _ltt_cells(scored):
    "(where, tier, confidence, unacceptable, train confidences, table) for LTT: arc_challenge, gsm8k, and a synthetic table."
    from routenlp.conformal import synthetic_outcomes
    for name, table in (('arc_challenge', scored['arc_challenge']), ('gsm8k', scored['gsm8k']),
                        ('synthetic', synthetic_outcomes({'a': 1500}, seed=3))):
        tiers = tier_order(table)
        for tier in tiers[:-1]:
            cal = table[(table['split'] == 'calibration') & (table['tier'] == tier)]
            ref = table[(table['split'] == 'train') & (table['tier'] == tier)]['confidence'].to_numpy(float)
            yield name, tier, cal['confidence'].to_numpy(float), ~cal['acceptable'].to_numpy(bool), ref


def test_ltt_matches_mapie(scored):
    """Our LTT (`ltt_threshold` on the grid `ConformalCalibrator` builds, binomial p-values) vs MAPIE's
`BinaryClassificationController`. Mapping: label = acceptable, prediction 1 = accepted (c >= lambda, the same >= as
ours), risk 'precision' at target_level 1 - alpha, so MAPIE controls 1 - precision = P(unacceptable | accepted) <=
alpha — our LTT risk — with confidence_level 1 - delta; list_predict_params = our grid, fwer_method 'fixed_sequence'.
Three documented differences:
(1) p-values: MAPIE's 0/1-loss p-value is min(Hoeffding, binomial cdf at ceil(m r_hat)); Hoeffding (Chernoff) is never
below the exact binomial cdf, so it is our binomial p — except that MAPIE forms r_hat = 1 - precision in floats and
ceil(m r_hat) lands on k + 1 for some (m, k): there its p-value is min(Hoeffding, cdf(k + 1)) >= ours (conservative).
(2) order: MAPIE orients the fixed sequence by the calibration data's own risk trend (strict -> lenient when the
empirical risk falls with lambda, else the reverse; `ltt_procedure`); ours is fixed a priori, strict -> lenient. Cells
whose trend runs the other way (confidence anti-informative at the top) are compared on p-values only.
(3) choice: MAPIE takes, among rejected thresholds, the best recall (ties to the strictest), ours the last rejected;
the same calibration points are accepted. Where (1) flips a test at or before our stop, MAPIE stops earlier and
accepts a subset of ours. Our 'hb' p-value (non-binary Bentkus, factor e) is MAPIE's
`compute_hoeffding_bentkus_p_value(binary=False)` up to the same ceil."""
    rc, cfg = _mapie(), scored['config']
    from scipy.stats import binom
    from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value
    delta, seen = cfg.cascade.delta, {'equal': 0, 'equal certified': 0, 'flip subset': 0, 'reversed order': 0}
    for alpha in (0.1, 0.2, 0.3):
        for name, tier, c, bad, ref in _ltt_cells(scored):
            grid = ltt_grid(ref, len(c), cfg.cascade.ltt_min_accepted, cfg.cascade.ltt_grid_size)   # strict -> lenient
            res = ltt_threshold(c, bad, alpha, delta, grid, 'binomial')
            ctl = rc.BinaryClassificationController(predict_function=lambda X: np.c_[1.0 - X, X], risk='precision',
                                                    target_level=1 - alpha, confidence_level=1 - delta,
                                                    list_predict_params=grid[::-1].copy(), fwer_method='fixed_sequence')
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                ctl.calibrate(c, (~bad).astype(int))
            acc = c[None, :] >= grid[:, None]                               # our order: strict -> lenient
            m, k = acc.sum(1), (acc & bad[None, :]).sum(1)
            p_m = np.asarray(ctl.p_values).ravel()[::-1]
            r_m = 1 - (m - k) / m                                           # MAPIE's 1 - precision, see (1)
            assert np.allclose(p_m, compute_hoeffding_bentkus_p_value(r_m, m.astype(float), alpha, binary=True).ravel(),
                               rtol=1e-12, atol=0), (name, tier, alpha)
            p_ours = binom.cdf(k, m, alpha)
            same = np.ceil(m * r_m) == k
            assert np.allclose(p_m[same], p_ours[same], rtol=1e-12, atol=0) and (p_m >= p_ours * (1 - 1e-12)).all()
            exact = np.ceil(m * (k / m)) == k
            hb = compute_hoeffding_bentkus_p_value(k / m, m.astype(float), alpha, binary=False).ravel()
            assert np.allclose(_hb_p(k, m, alpha)[exact], hb[exact], rtol=1e-12, atol=0)
            r_asc = ((m - k) / m)[::-1]                                     # precision along MAPIE's ascending grid
            if np.mean(np.diff(1 - r_asc)) > 0 and not np.all(np.diff(1 - r_asc) <= 1e-6):
                seen['reversed order'] += 1; continue                      # (2)
            ours = c >= res.tau
            theirs = c >= (np.inf if ctl.best_predict_param is None else ctl.best_predict_param)
            stop = int(np.flatnonzero(np.r_[binom.cdf(k, m, alpha) > delta, True])[0])   # our first non-rejection
            if np.array_equal(ours, theirs):
                seen['equal'] += 1; seen['equal certified'] += res.status == 'ok'
            else:
                assert (~same[:stop + 1]).any() and not (theirs & ~ours).any(), (name, tier, alpha, res.tau, ctl.best_predict_param)
                seen['flip subset'] += 1
    print('LTT vs MAPIE cells:', seen)
    assert seen['equal certified'] >= 3 and seen['equal'] >= seen['flip subset'], seen
