"""Router latency vs signal (issue #10, deliverable 4): one decision on one CPU thread, and the test AUROC, per option.

Each option is a `ROUTERS` entry (with params), fitted per recorded suite (all its tasks, one router per suite and
seed, as `routenlp.systems` fits them) on the seed's train split, from `routenlp.router_train.load_router_data`:

- `difficulty-aware` served by torch (MiniLM-L6 forward per query) and `onnx` (the same router, ONNX Runtime int8 —
  today's serving form);
- `difficulty-aware-static` (the same head and trainer on model2vec static embeddings distilled offline from the local
  MiniLM; no transformer at inference), with and without PCA, and with trainer knobs given as params.

Per option it prints a markdown row: P50 / P99 wall ms of ONE decision (`router.route([text], [task])`: prefix strip,
tokenise / embed, head, routing policy — text in, start tier out) on ONE thread over `--n` real test queries pooled
over the suites (seed `--seeds[0]`'s routers, after a warm-up), and the mean test AUROC over (suite, task, tier)
cells per seed (`routenlp.router_train.evaluate_router`; a cell whose test split holds one class is skipped), with the
per-suite means. The difficulty-aware torch router's latency is measured with the transformer (no embedding cache).

Usage: python benchmarks/router_latency_auroc.py [--seeds 0,1] [--n 300] [--options minilm-torch,onnx-int8,static-pca256,...]
The static models are distilled into `<cache dir>/models/` on first use (~15-35 s each, offline).
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')   # one thread for numpy / ONNX Runtime / torch before they load
import argparse, platform, time

import numpy as np

# label -> (ROUTERS entry, params); the decision is always `router.route([text], [task])`
OPTIONS = {
    'minilm-torch': ('difficulty-aware', {}),
    'onnx-int8': ('onnx', {'quantized': True}),
    'static-pca256': ('difficulty-aware-static', {'pca': 256}),
    'static-full': ('difficulty-aware-static', {'pca': None}),
    'static-full-patience10': ('difficulty-aware-static', {'pca': None, 'patience': 10, 'max_epochs': 100}),
}
TARGET_P50, TARGET_P99 = 2.0, 5.0


def decision_latency(routers: dict, queries: list, n: int, warmup: int = 30) -> tuple[float, float]:
    "(P50, P99) wall ms of one decision: `routers[suite].route([text], [task])`, cycling over `queries`."
    decide = lambda q: routers[q[0]].route([q[1]], [q[2]])
    for i in range(warmup): decide(queries[i % len(queries)])
    wall = []
    for i in range(n):
        t = time.perf_counter(); decide(queries[i % len(queries)]); wall.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(wall, 50)), float(np.percentile(wall, 99))


def serving_form(router):
    "The router as a deployment would call it: the torch difficulty-aware router runs its transformer (no embedding cache)."
    from routenlp.router import StaticRouter
    if hasattr(router, 'embed_texts') and not isinstance(router, StaticRouter): router.embed_texts = None
    return router


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default='0,1')
    ap.add_argument('--n', type=int, default=300, help='timed decisions per option')
    ap.add_argument('--options', default=','.join(OPTIONS), help=f"comma-separated, from {', '.join(OPTIONS)}")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch
    torch.set_num_threads(1)
    from routenlp.core import load_config, provenance, provenance_line
    from routenlp.router_train import evaluate_router, fit_named_router, load_router_data

    config = load_config()
    seeds = [int(s) for s in args.seeds.split(',')]
    suites = {s: [(s, t) for t in c.tasks] for s, c in config.suites.items()}
    data = {(s, seed): load_router_data(pairs, seed, config) for s, pairs in suites.items() for seed in seeds}
    g = np.random.default_rng(0)   # the timed queries: an equal share of each suite's seed-0 test queries
    queries = []
    for s in suites:
        d = data[s, seeds[0]]
        idx = g.permutation(np.flatnonzero(d.splits == 'test'))[:args.n // len(suites) + 1]
        queries += [(s, d.texts[i], d.tasks[i]) for i in idx]
    queries = [queries[i] for i in g.permutation(len(queries))]

    rows = []
    for label in args.options.split(','):
        name, params = OPTIONS[label]
        aurocs, fit_s = [], []
        for seed in seeds:
            routers = {}
            for s in suites:
                t = time.perf_counter()
                routers[s] = fit_named_router(name, data[s, seed], config, seed, **params)
                fit_s.append(time.perf_counter() - t)
                ev = evaluate_router(routers[s], data[s, seed], 'test')
                aurocs += [dict(r, suite=s, seed=seed) for r in ev.dropna(subset=['auroc']).to_dict('records')]
            if seed == seeds[0]:
                p50, p99 = decision_latency({s: serving_form(r) for s, r in routers.items()}, queries, args.n)
        au = pd.DataFrame(aurocs)
        per_seed = au.groupby('seed').auroc.mean()
        per_suite = au.groupby('suite', sort=False).auroc.mean()
        rows.append({'option': label, 'router': f"{name}{'(' + ', '.join(f'{k}={v}' for k, v in params.items()) + ')' if params else ''}",
                     'P50 ms': p50, 'P99 ms': p99, 'target met': 'yes' if p50 <= TARGET_P50 and p99 <= TARGET_P99 else 'no',
                     'mean test AUROC': au.auroc.mean(), 'per seed': ' / '.join(f'{v:.3f}' for v in per_seed),
                     **{f'{s}': per_suite.get(s, np.nan) for s in suites}, 'cells': len(au),
                     'fit s (per suite)': float(np.mean(fit_s))})
        print(f'{label}: P50 {p50:.2f} ms, P99 {p99:.2f} ms, mean AUROC {au.auroc.mean():.4f}', flush=True)

    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'\n### Router options: latency of one decision vs test AUROC (seeds {args.seeds})\n')
    print(f'Latency measured on a shared {os.cpu_count()}-core machine ({platform.processor() or platform.machine()}, '
          f'1-min load average {load:.1f} at the end), ONE thread, ONE query per decision (text in -> start tier out: '
          f'prefix strip, tokenise / embed, head, policy), {args.n} real test queries pooled over {", ".join(suites)} '
          f'(seed {seeds[0]} routers) after 30 warm-up decisions. AUROC: mean over (suite, task, tier) test cells and '
          f'seeds; per-suite columns are means over that suite\'s cells. Target: P50 <= {TARGET_P50:g} ms and P99 <= {TARGET_P99:g} ms.\n')
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt='.3f'))
    print('\n' + provenance_line(provenance(config, seeds=seeds)))


if __name__ == '__main__':
    main()
