"""Router decision latency: one query in, start tier out (tokenise + graph + policy), single-threaded.

Targets (issue "router + conformal cascade"): ONNX int8, one thread, P50 <= 3 ms and P99 <= 10 ms per decision.
Prints two markdown tables:
1. per backend (torch fp32, ONNX fp32, ONNX int8), on the task's real test queries at the configured max length;
2. latency vs max sequence length (32 / 64 / 128 / 256 word pieces, queries padded out to exactly that length by
   repetition) per backend, with the test AUROC of the int8 router when queries are truncated to that length —
   the accuracy side of the trade-off.

Usage: python benchmarks/router_bench.py [--pairs routellm/gsm8k] [--seed 0] [--n 300] [--lengths 32,64,128,256]
Trains and exports the router into the cache dir first if it is not there (routenlp.router_train.train_router).
"""
import argparse, os, sys, time

import numpy as np


def percentiles(fn, inputs, n, warmup):
    """(P50, P99) of wall-clock ms and P50 of this thread's CPU ms per call.

    With one intra-op thread, ONNX Runtime and torch compute in the calling thread, so its CPU time is the
    decision's compute time without the waits a busy machine adds to the wall clock (on an idle core the two
    agree); both are reported."""
    for i in range(warmup): fn(*inputs[i % len(inputs)])
    wall, cpu = [], []
    for i in range(n):
        args = inputs[i % len(inputs)]
        t, c = time.perf_counter(), time.thread_time()
        fn(*args)
        cpu.append((time.thread_time() - c) * 1000); wall.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(wall, 50)), float(np.percentile(wall, 99)), float(np.percentile(cpu, 50)), float(np.percentile(cpu, 99))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pairs', default='routellm/gsm8k', help="comma-separated suite/task the router is trained on")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--n', type=int, default=300, help='timed decisions per cell')
    ap.add_argument('--warmup', type=int, default=30)
    ap.add_argument('--lengths', default='32,64,128,256')
    ap.add_argument('--no-torch', action='store_true', help='skip the torch backend')
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from sklearn.metrics import roc_auc_score
    from routenlp.core import load_config, provenance, provenance_line
    from routenlp.router import ONNX_FP32, ONNX_INT8, OnnxRouter, export_onnx, tokenize
    from routenlp.router_train import (default_router_name, load_router, load_router_data, router_dir, train_router,
                                       WEIGHTS_FILE)

    config = load_config()
    pairs = [tuple(p.split('/', 1)) for p in args.pairs.split(',')]
    directory = router_dir(default_router_name(pairs, args.seed), config)
    if not (directory / WEIGHTS_FILE).exists():
        print(f'training {args.pairs} seed {args.seed} into {directory} ...', file=sys.stderr)
        train_router(pairs, seed=args.seed, config=config)
    router = load_router(directory)
    if not (directory / ONNX_INT8).exists() or not (directory / ONNX_FP32).exists():
        print(f'exporting ONNX into {directory} ...', file=sys.stderr)
        export_onnx(router, directory)
    data = load_router_data(pairs, args.seed, config)
    test = data.subset(data.splits == 'test')
    queries = list(zip(test.texts, test.tasks))
    rc = router.spec.config

    backends = {'ONNX int8': OnnxRouter.load(directory, quantized=True, threads=1),
                'ONNX fp32': OnnxRouter.load(directory, quantized=False, threads=1)}
    if not args.no_torch: backends['torch fp32'] = router
    decide = lambda r: (lambda text, task: r.route([text], [task]))

    lengths_real = [int(m.sum()) for m in (tokenize(router.spec.prepare([t], [k]), router.spec.encoder_location, rc.max_length)[1]
                                           for t, k in queries)]
    print(f'\n### Router decision latency, one query, 1 thread — {args.pairs} test queries '
          f'(max_length {rc.max_length}; word pieces per query P50 {int(np.median(lengths_real))}, '
          f'max {max(lengths_real)})\n')
    print('| backend | wall P50 ms | wall P99 ms | CPU P50 ms | CPU P99 ms | target (int8: P50 <= 3, P99 <= 10 ms wall) |')
    print('|---|---|---|---|---|---|')
    for name, r in backends.items():
        p50, p99, c50, c99 = percentiles(decide(r), queries, args.n, args.warmup)
        ok = ('met' if p50 <= 3 and p99 <= 10 else 'not met') if name == 'ONNX int8' else ''
        print(f'| {name} | {p50:.2f} | {p99:.2f} | {c50:.2f} | {c99:.2f} | {ok} |')

    # latency vs max length: real queries extended with other test queries, then cut (at a word piece's end)
    # to exactly L word pieces, so that neither padding nor tokenising surplus text is timed
    from routenlp.router import router_tokenizer
    def exactly(L):
        tok, out = router_tokenizer(router.spec.encoder_location, L), []
        for i, (text, task) in enumerate(queries[:20]):
            body = router.spec.prepare([text], [task])[0] + ' ' + ' '.join(t for t, _ in queries[i + 1:i + 40])
            enc = tok.encode(body)
            out.append((body[:enc.offsets[-2][1]], task))   # end of the last word piece before [SEP]
        return out
    print('\n### Latency vs max sequence length (queries padded out to exactly L word pieces), one thread\n')
    names = list(backends)
    print('| max length L | ' + ' | '.join(f'{n} wall P50 / P99 (CPU P50) ms' for n in names) + ' | int8 test AUROC per (task,) tier at L |')
    print('|---|' + '---|' * len(names) + '---|')
    for L in [int(x) for x in args.lengths.split(',')]:
        cells, long_texts = [], exactly(L)
        for name in names:
            r = backends[name]
            old = r.max_length; r.max_length = L
            try:
                n_tok = {int(tokenize([t], router.spec.encoder_location, 4 * L)[1].sum()) for t, _ in long_texts}
                assert min(n_tok) >= L - 1, (n_tok, L)   # L (or L - 1 where the cut word re-tokenises shorter)
                p50, p99, c50, _ = percentiles(decide(r), long_texts, max(args.n // 2, 50), args.warmup)
            finally: r.max_length = old
            cells.append(f'{p50:.2f} / {p99:.2f} ({c50:.2f})')
        int8 = OnnxRouter.load(directory, quantized=True, threads=1, max_length=L)
        probs = int8.predict_proba(test.texts, test.tasks)
        aucs, task_of = [], np.array(test.tasks)
        for task in sorted(set(test.tasks)):   # within-task AUROC (pooling tasks would reward task identity)
            for k, tier in enumerate(test.tiers):
                y, p = test.acceptable[:, k], probs[:, k]
                m = (task_of == task) & ~np.isnan(y) & ~np.isnan(p)
                name = tier if len(set(test.tasks)) == 1 else f"{task.split('/')[1]} {tier}"
                aucs.append(f'{name} {roc_auc_score(y[m], p[m]):.3f}' if 0 < y[m].sum() < m.sum() else f'{name} n/a')
        print(f'| {L} | ' + ' | '.join(cells) + f' | {", ".join(aucs)} |')
    import onnxruntime, platform
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores visible, '
          f'1-min load average at the end {load:.1f}; '
          f'onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; {args.n} timed decisions per cell '
          f'after {args.warmup} warm-up; per-decision time = tokenise + graph + routing policy.')
    print(provenance_line(provenance(config, router=str(directory.name))))


if __name__ == '__main__':
    main()
