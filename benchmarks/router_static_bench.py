"""Static embeddings for the router (issue #10, deliverable 4): latency vs signal of the query features.

Compares the router's query features — the MiniLM-L6 sentence embedding the routers use today (transformer
forward per query) against **model2vec static embeddings distilled offline from the same local MiniLM** (a token
lookup + mean, no transformer at inference) — on two axes:

1. **signal**: test AUROC per (task, tier) of the same simple heads fitted on the train split of seed `--seed`
   (logistic regression per tier on [features, task one-hot]; kNN k=40 within the task) — what a router can learn
   from those features;
2. **latency**: one query embedded on one CPU thread (P50 / P99 wall ms over `--n` real test queries, after a
   warm-up), the part of a routing decision the features cost; the heads add well under 0.1 ms.

Prints two markdown tables. Nothing here changes the default router; it measures whether the swap is worth making.
Usage: python benchmarks/router_static_bench.py [--pairs routellm/mmlu,routellm/gsm8k,routerbench/arc_challenge]
       [--seed 0] [--n 300] [--pca 256]
The distilled model is cached under `<cache dir>/models/model2vec-minilm-pca<d>` (13 s to distil on 2 cores).
"""
import argparse, time

import numpy as np


def distilled(config, pca: int):
    "The model2vec StaticModel distilled from the local MiniLM (cached on disk)."
    from model2vec import StaticModel
    from model2vec.distill import distill
    from routenlp.core import cache_dir
    from routenlp.encoder import encoder_path
    target = cache_dir(config, 'models') / f'model2vec-minilm-pca{pca}'
    if not (target / 'config.json').exists():
        distill(model_name=str(encoder_path(config)), pca_dims=pca).save_pretrained(str(target))
    return StaticModel.from_pretrained(str(target))


def aurocs(X, data, label):
    "Test AUROC per (task, tier) of a logistic head and a kNN(40) head fitted on the train rows."
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    tasks = np.array(data.tasks)
    onehot = (tasks[:, None] == np.unique(tasks)[None, :]).astype(np.float32)
    Z = np.hstack([X, onehot])
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    train, test = data.splits == 'train', data.splits == 'test'
    rows = []
    for k, tier in enumerate(data.tiers):
        y = data.acceptable[:, k]
        ok = ~np.isnan(y)
        fit = train & ok
        if len(np.unique(y[fit])) < 2: continue
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(Z[fit], y[fit])
        p_lr = lr.predict_proba(Z)[:, 1]
        p_knn = np.full(len(y), np.nan)
        for t in np.unique(tasks):
            tr, te = np.flatnonzero(fit & (tasks == t)), np.flatnonzero(test & ok & (tasks == t))
            if not len(tr) or not len(te): continue
            sims = Xn[te] @ Xn[tr].T
            nn = np.argsort(-sims, axis=1)[:, :min(40, len(tr))]
            p_knn[te] = y[tr][nn].mean(axis=1)
        for t in np.unique(tasks):
            m = test & ok & (tasks == t)
            if m.sum() < 10 or len(np.unique(y[m])) < 2: continue
            rows.append({'features': label, 'task': t, 'tier': tier, 'n_test': int(m.sum()),
                         'AUROC logistic': roc_auc_score(y[m], p_lr[m]), 'AUROC kNN-40': roc_auc_score(y[m], p_knn[m])})
    return rows


def latency(fn, texts, n, warmup=20):
    for t in texts[:warmup]: fn([t])
    wall = []
    for i in range(n):
        t0 = time.perf_counter(); fn([texts[i % len(texts)]]); wall.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(wall, 50)), float(np.percentile(wall, 99))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pairs', default='routellm/mmlu,routellm/gsm8k,routerbench/arc_challenge')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--n', type=int, default=300, help='timed single-query embeddings per option')
    ap.add_argument('--pca', type=int, default=256, help='model2vec output dimensions (PCA)')
    args = ap.parse_args(argv)

    import pandas as pd
    import torch
    torch.set_num_threads(1)
    from routenlp.confidence import minilm_embeddings
    from routenlp.core import load_config, provenance, provenance_line
    from routenlp.encoder import encoder_path, load_encoder
    from routenlp.router_train import build_spec, load_router_data

    config = load_config()
    static = distilled(config, args.pca)
    rows, lat = [], []
    for pair in args.pairs.split(','):
        suite, task = pair.split('/', 1)
        data = load_router_data([(suite, task)], args.seed, config)
        texts = build_spec(data, config).prepare(data.texts, data.tasks)
        rows += aurocs(minilm_embeddings(texts, config), data, 'MiniLM-L6 (today)')
        rows += aurocs(static.encode(texts), data, f'model2vec static (pca {args.pca})')
        test_texts = [t for t, s in zip(texts, data.splits) if s == 'test']
        st = load_encoder(encoder_path(config))
        lat.append({'task': pair, 'features': 'MiniLM-L6 (sentence-transformers, torch, 1 thread)',
                    **dict(zip(('P50 ms', 'P99 ms'), latency(lambda b: st.encode(b, show_progress_bar=False), test_texts, args.n)))})
        lat.append({'task': pair, 'features': f'model2vec static (pca {args.pca})',
                    **dict(zip(('P50 ms', 'P99 ms'), latency(static.encode, test_texts, args.n)))})
    au = pd.DataFrame(rows)
    summary = au.groupby(['task', 'tier', 'features'], sort=False)[['AUROC logistic', 'AUROC kNN-40']].first().unstack('features')
    summary.columns = [f'{m} · {f}' for m, f in summary.columns]
    print(f'## Test AUROC of simple heads on each feature set (seed {args.seed}, fitted on the train split)\n')
    print(summary.reset_index().to_markdown(index=False, floatfmt='.3f'))
    print('\nMean over cells:', au.groupby('features')[['AUROC logistic', 'AUROC kNN-40']].mean().round(3).to_dict('index'))
    print(f'\n## Latency of the features for one query, one thread, measured on this machine ({args.n} real test queries)\n')
    print(pd.DataFrame(lat).to_markdown(index=False, floatfmt='.2f'))
    print('\n' + provenance_line(provenance(config, seeds=[args.seed])))


if __name__ == '__main__':
    main()
