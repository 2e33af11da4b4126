"""Do the conformal guarantees hold on the recorded suites, and how good is the learned confidence?

For every recorded (suite, task) and seed: the confidence of every tier is fitted on that seed's train split
(`routenlp.confidence.fill_confidence`, MiniLM features unless `--features hashing`), thresholds are calibrated on
its calibration split (`routenlp.conformal.ConformalCalibrator`, CRC and LTT, each alpha), and the realised risks are
measured on the fixed test split: joint P(accept and unacceptable) — what CRC bounds in expectation — and conditional
P(unacceptable | accept) — what LTT bounds with probability >= 1 - delta. Then the cascade itself is replayed on the
test split with the CRC thresholds (fixed start at T1).

    ROUTENLP_DATA_DIR=../shared/data .venv/bin/python benchmarks/cascade_guarantees.py [--tasks routerbench/arc_challenge ...]

Prints markdown tables: (1) estimator AUROC / Brier per suite x task x tier (calibration and test, mean +- sd over
seeds); (2) realised risks per method x alpha x cell (mean over seeds; `ok` = seeds in which the cell got a finite
threshold; `over` = seeds whose realised risk exceeds alpha + 1/(n+1)); (3) CRC under exchangeable re-splits: the
held-out (calibration + test) rows re-split at random `--resplits` times per seed — the fixed test split's own
sampling noise (sd ~1-4 pp per cell) does not average out over seeds, the re-split mean does; (4) wall time to
calibrate all cells of a table; (5) the cascade on the test split, thresholds at alpha per tier or alpha/(K-1) (so
that the rate of wrong answers accepted below the last tier is <= alpha). MiniLM embeddings are cached under the cache dir (cold: minutes per task on
two cores; MMLU's 14k queries the longest).
"""
from __future__ import annotations

import argparse, time

import numpy as np
import pandas as pd

from routenlp.cascade import CascadeEngine
from routenlp.conformal import ConformalCalibrator
from routenlp.outcomes import tier_order
from routenlp.confidence import fill_confidence, score_confidence
from routenlp.core import load_config, provenance, provenance_line
from routenlp.suites import load_outcomes, load_queries


def run(pairs, seeds, alphas, features, config, draws):
    scores, risks, timing, cascade, resplit = [], [], [], [], []
    for suite, task in pairs:
        queries = load_queries(suite, task, config=config)
        for seed in seeds:
            t0 = time.perf_counter()
            table = fill_confidence(load_outcomes(suite, task, seed=seed, config=config), queries, seed, config, features)
            fit_s = time.perf_counter() - t0
            scores.append(score_confidence(table).assign(seed=seed))
            tiers = tier_order(table)
            for method in ('crc', 'ltt'):
                for alpha in alphas:
                    t0 = time.perf_counter()
                    cal = ConformalCalibrator(alpha=alpha, method=method, config=config).fit(table, tiers)
                    timing.append({'suite': suite, 'task': task, 'method': method, 'cells': len(cal.results),
                                   'calibrate_ms': 1000 * (time.perf_counter() - t0), 'confidence_fit_s': fit_s})
                    ev = cal.evaluate(table).merge(cal.report()[['tier', 'task', 'tau', 'n']], on=['tier', 'task'])
                    risks.append(ev.assign(suite=suite, seed=seed, method=method, alpha=alpha))
                    if method == 'crc':
                        if draws:   # ConformalCalibrator.resplit: the same re-split check as nbs/92_coverage
                            resplit.append(cal.resplit(table, draws, seed).assign(suite=suite, seed=seed))
                        top = table[(table['split'] == 'test') & (table['tier'] == tiers[-1])]
                        for per_tier in ('alpha', 'alpha/(K-1)'):
                            a = alpha if per_tier == 'alpha' else alpha / max(1, len(tiers) - 1)
                            c = cal if a == alpha else ConformalCalibrator(alpha=a, method=method, config=config).fit(table, tiers)
                            out = CascadeEngine(tiers, c, config).replay(table[table['split'] == 'test'])
                            cascade.append({'suite': suite, 'task': task, 'alpha': alpha, 'per_tier': per_tier,
                                            'seed': seed, 'acceptable': out['acceptable'].mean(),
                                            'early_and_bad': (out['accepted_early'] & ~out['acceptable']).mean(),
                                            'answered_early': out['accepted_early'].mean(),
                                            'cost_vs_last': out['cost_usd'].sum() / top['cost_usd'].sum(),
                                            'last_acceptable': top['acceptable'].mean()})
            print(f'# done {suite}/{task} seed {seed} (confidence fit {fit_s:.1f}s)', flush=True)
    return (pd.concat(scores), pd.concat(risks), pd.DataFrame(timing), pd.DataFrame(cascade),
            pd.concat(resplit) if resplit else pd.DataFrame())


def pm(x: pd.Series) -> str:
    return f'{x.mean():.3f} ± {x.std(ddof=0):.3f}' if len(x) > 1 else f'{x.mean():.3f}'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tasks', nargs='*', default=None, help='suite/task pairs (default: every configured recorded task)')
    p.add_argument('--seeds', nargs='*', type=int, default=None)
    p.add_argument('--alphas', nargs='*', type=float, default=[0.05, 0.10])
    p.add_argument('--features', default=None, help="'minilm' (config default) or 'hashing'")
    p.add_argument('--resplits', type=int, default=200, help='random calibration/test re-splits per seed (0: skip)')
    p.add_argument('--out', default=None, help='folder for the raw per-seed tables (CSV; ids and numbers only)')
    args = p.parse_args(argv)
    config = load_config()
    pairs = ([tuple(t.split('/', 1)) for t in args.tasks] if args.tasks else
             [(s, t) for s, sc in config.suites.items() for t in sc.tasks])
    seeds = args.seeds if args.seeds is not None else config.seeds
    scores, risks, timing, cascade, resplit = run(pairs, seeds, args.alphas, args.features, config, args.resplits)
    if args.out:
        from pathlib import Path
        out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
        for name, df in [('confidence', scores), ('risks', risks), ('timing', timing), ('cascade', cascade),
                         ('resplit', resplit)]:
            df.to_csv(out / f'{name}.csv', index=False)
    pd.set_option('display.width', 250)

    print(f'\n## Confidence estimator ({args.features or config.cascade.confidence_features}), {len(seeds)} seeds\n')
    est = (scores.groupby(['suite', 'task', 'tier', 'split'])
           .agg(n=('n', 'first'), accept=('accept_rate', 'mean'), auroc=('auroc', pm), brier=('brier', pm))
           .unstack('split'))
    est.columns = [f'{a} {b}' for a, b in est.columns]
    print(est[[c for c in est.columns if not c.startswith(('n ', 'accept test'))]].to_markdown())

    print(f'\n## Realised risk on the test split (mean over {len(seeds)} seeds; last tiers omitted)\n')
    r = risks[risks['status'] != 'last tier'].reset_index(drop=True)
    r['finite'] = np.isfinite(r['tau'])
    r['conditional_when_finite'] = r['conditional_risk'].where(r['finite'])
    r['over'] = r['joint_risk'] > r['alpha'] + 1 / (r['n_cal'] + 1)
    r['cond_over'] = r['finite'] & (r['conditional_risk'] > r['alpha'])
    tab = r.groupby(['method', 'alpha', 'suite', 'task', 'tier']).agg(
        n_cal=('n_cal', 'first'), ok=('finite', 'sum'), accept=('accept_rate', 'mean'), joint=('joint_risk', 'mean'),
        joint_max=('joint_risk', 'max'), over=('over', 'sum'), conditional=('conditional_risk', 'mean'),
        cond_over=('cond_over', 'sum'))
    print(tab.round(4).to_markdown())
    summ = r.groupby(['method', 'alpha']).agg(cells=('tier', 'size'), finite=('finite', 'mean'), joint=('joint_risk', 'mean'),
                                             conditional_when_finite=('conditional_when_finite', 'mean'),
                                             joint_over_bound=('over', 'mean'), cond_over_alpha=('cond_over', 'mean'))
    print('\nPooled over every (suite, task, tier, seed) cell:\n')
    print(summ.round(4).to_markdown())

    if args.resplits:
        print(f'\n## CRC under exchangeable re-splits ({args.resplits} random calibration/test splits of the held-out '
              f'rows per seed; mean over draws and seeds; the guarantee says <= alpha)\n')
        rs = resplit.merge(r[r['method'] == 'crc'].groupby(['suite', 'task', 'tier', 'alpha'])['joint_risk'].mean()
                           .rename('fixed_test_risk').reset_index(), on=['suite', 'task', 'tier', 'alpha'])
        rs = rs.groupby(['alpha', 'suite', 'task', 'tier']).agg(
            n_cal=('n_cal', 'first'), resplit_risk=('joint_risk', 'mean'), resplit_se=('joint_risk_se', 'mean'),
            fixed_test_risk=('fixed_test_risk', 'first'))
        rs['bound'] = rs.index.get_level_values('alpha') + 1 / (rs['n_cal'] + 1)
        print(rs.round(4).to_markdown())

    print('\n## Calibration time (all cells of one table, one method and alpha)\n')
    print(timing.groupby(['suite', 'task', 'method']).agg(cells=('cells', 'first'), calibrate_ms=('calibrate_ms', 'median'),
                                                          confidence_fit_s=('confidence_fit_s', 'median')).round(2).to_markdown())

    print('\n## Cascade on the test split (CRC thresholds at alpha or alpha/(K-1) per tier, start at T1; cost relative '
          'to always calling the last tier; early_and_unacceptable = accepted below the last tier and unacceptable)\n')
    print(cascade.groupby(['suite', 'task', 'alpha', 'per_tier']).agg(
        acceptable=('acceptable', pm), last_tier_acceptable=('last_acceptable', 'mean'),
        answered_early=('answered_early', pm), early_and_unacceptable=('early_and_bad', pm),
        cost_vs_last=('cost_vs_last', pm)).to_markdown())
    print('\n' + provenance_line(provenance(config, features=args.features or config.cascade.confidence_features,
                                            seeds=list(seeds))))


if __name__ == '__main__':
    main()
