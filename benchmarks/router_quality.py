"""Router quality on the recorded suites' test splits: per (task, tier) AUROC, BCE vs the constant predictor,
mean ± std over seeds, plus epochs and training time. Frozen encoder (cached embeddings), config defaults.

Usage: python benchmarks/router_quality.py [--seeds 0,1,2,3,4] [--routers "routerbench/arc_challenge+routerbench/mbpp,..."]
Each router is trained (and saved under <cache>/routers/) with routenlp.router_train.train_router.
"""
import argparse, time

import pandas as pd

DEFAULT_ROUTERS = ('routerbench/arc_challenge+routerbench/mbpp,routerbench/arc_challenge,routerbench/mbpp,'
                   'routellm/gsm8k')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default='0,1,2,3,4')
    ap.add_argument('--routers', default=DEFAULT_ROUTERS, help="comma-separated routers, each '+'-joined suite/task")
    args = ap.parse_args(argv)
    from routenlp.core import load_config, provenance, provenance_line
    from routenlp.router_train import train_router

    config = load_config()
    seeds = [int(s) for s in args.seeds.split(',')]
    rows, runs = [], []
    for spec in args.routers.split(','):
        pairs = [tuple(p.split('/', 1)) for p in spec.split('+')]
        for seed in seeds:
            t = time.perf_counter()
            _, rep = train_router(pairs, seed=seed, config=config)
            runs.append({'router': spec, 'seed': seed, 'epochs': rep['epochs'], 'best_epoch': rep['best_epoch'],
                         'n_fit': rep['n_fit'], 'n_val': rep['n_val'], 'fit_s': rep['train_seconds'],
                         'total_s': time.perf_counter() - t})
            rows += [dict(r, router=spec, seed=seed) for r in rep['test']]
    df, runs = pd.DataFrame(rows), pd.DataFrame(runs)
    fmt = lambda s: f'{s.mean():.3f} ± {s.std(ddof=1) if len(s) > 1 else 0:.3f}'
    print(f'\n### Router test quality, seeds {args.seeds} (mean ± std), frozen MiniLM-L6, config defaults\n')
    print('| router (trained on) | task | tier | n test | acceptable | AUROC | BCE | BCE, cost shift undone | constant-predictor BCE |')
    print('|---|---|---|---|---|---|---|---|---|')
    for (router, task, tier), g in df.groupby(['router', 'task', 'tier'], sort=False):
        print(f'| {router} | {task} | {tier} | {int(g.n.iloc[0])} | {g.acceptable_rate.iloc[0]:.3f} | {fmt(g.auroc)} | '
              f'{fmt(g.bce)} | {fmt(g.bce_calibrated)} | {fmt(g.prior_bce)} |')
    print('\n| router | fit / validation queries | epochs (best) | fit seconds | train_router seconds (incl. data, embeddings) |')
    print('|---|---|---|---|---|')
    for router, g in runs.groupby('router', sort=False):
        print(f'| {router} | {g.n_fit.iloc[0]} / {g.n_val.iloc[0]} | {g.epochs.mean():.1f} ({g.best_epoch.mean():.1f}) | '
              f'{g.fit_s.mean():.2f} | {g.total_s.mean():.1f} |')
    print('\n' + provenance_line(provenance(config, seeds=seeds)))


if __name__ == '__main__':
    main()
