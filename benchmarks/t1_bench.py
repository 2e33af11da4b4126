"""T1 benchmark: latency, throughput and test-subsample quality of every MiniLM head, ONNX int8 vs fp32.

    python benchmarks/t1_bench.py [--seed 0] [--tasks cs-intent,legal-risk] [--n-latency 100] [--n-quality 100]

Builds the heads first when they are missing (`routenlp.t1_onnx.ensure_heads`: minutes of CPU), then per task head and
precision:
- P50 / P99 latency of one query, one thread (`Response.latency_ms`: tokenisation + ONNX Runtime + decoding, for a
  batch of one; the first 5 queries are warm-up and not counted), and the P50 CPU time of the same calls (thread
  CPU time: what the query costs when the machine is shared and wall-clock latency includes waiting for a core);
- throughput in queries/s at batch 32 (wall clock of `tier.predict` over the quality subsample in batches of 32);
- quality on the first `--n-quality` test queries: the task metric and the acceptable rate (quality >= the task's
  acceptance threshold in TASK_REGISTRY), from the batch-32 answers.
A second table states how each head was built (from its manifest). Target: classification heads P50 <= 3 ms (int8).
"""
import argparse, os, sys, time

import numpy as np
from tabulate import tabulate

from routenlp.core import load_config
from routenlp.data import TASK_REGISTRY, load_benchmark
from routenlp.t1_heads import HEADS
from routenlp.t1_onnx import LocalModelTier, ensure_heads, read_manifest, score_outputs
from routenlp.tiers import TierRequest

CLASSIFICATION_P50_TARGET_MS = 3.0


def requests_of(queries, task):
    return [TierRequest(task, r.query_id, r.text, r.meta) for r in queries.itertuples()]


def latency(tier, requests, warmup=5):
    "(wall ms, CPU ms) per query of batches of one, warm-up excluded."
    for r in requests[:warmup]: tier.predict([r])
    wall, cpu = [], []
    for r in requests:
        start = time.thread_time()  # predict runs in this thread, and so does a 1-thread ONNX Runtime session
        o = tier.predict([r])[0]
        cpu.append((time.thread_time() - start) * 1000)
        if o.error: raise RuntimeError(f"query {r.query_id} failed: {o.error_reason}")
        wall.append(o.latency_ms)
    return np.array(wall), np.array(cpu)


def batched(tier, requests, batch=32):
    "(responses, queries per second) of answering `requests` in batches of `batch`."
    t0, out = time.perf_counter(), []
    for i in range(0, len(requests), batch): out += tier.predict(requests[i:i + batch])
    return out, len(requests) / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--tasks', default=','.join(HEADS))
    ap.add_argument('--n-latency', type=int, default=100, help='test queries timed one by one per task and precision')
    ap.add_argument('--n-quality', type=int, default=100, help='test queries scored per task and precision')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    config = load_config()
    tasks = args.tasks.split(',')
    t0 = time.perf_counter()
    folders = ensure_heads(config, tasks, seed=args.seed, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"heads ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    rows = []
    for task in tasks:
        spec = TASK_REGISTRY[task]
        test = load_benchmark(task, 'test', 0, config).queries
        for quantize in (True, False):
            tier = LocalModelTier('T1', 0.01, {task: folders[task]}, threads=args.threads, quantize=quantize)
            ms, cpu_ms = latency(tier, requests_of(test.iloc[:args.n_latency], task))
            sub = test.iloc[:args.n_quality]
            out, qps = batched(tier, requests_of(sub, task))
            errors = sum(o.error for o in out)
            quality = score_outputs(task, [o.output for o in out], sub.reference, config)
            p50 = float(np.percentile(ms, 50))
            target = ('yes' if p50 <= CLASSIFICATION_P50_TARGET_MS else 'no') if spec.kind == 'classification' else ''
            rows.append([task, 'int8' if quantize else 'fp32', f'{p50:.2f}', f'{np.percentile(ms, 99):.2f}',
                         f'{np.percentile(cpu_ms, 50):.2f}', target,
                         f'{qps:.1f}', spec.metric, f'{quality.mean():.3f}',
                         f'{(quality >= spec.acceptance_threshold).mean():.3f}', len(sub), errors])
            tier.close()
            print(f"{task} {'int8' if quantize else 'fp32'} done", file=sys.stderr, flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(1/5/15 min) at the end of the run")
    print(f"T1 heads, seed {args.seed}, {args.threads} ONNX Runtime thread(s); latency = one query per call "
          f"({args.n_latency} test queries), throughput at batch 32 and quality on the first {args.n_quality} test queries\n")
    print(tabulate(rows, headers=['task', 'precision', 'P50 ms', 'P99 ms', 'P50 CPU ms', f'P50<={CLASSIFICATION_P50_TARGET_MS:g}ms',
                                  'q/s @32', 'metric', 'quality', 'acceptable', 'n', 'errors'], tablefmt='github'))

    build = []
    for task in tasks:
        m = read_manifest(folders[task])
        p = m['parity']
        build.append([task, m['kind'], m['n_train'], m['n_val'], m['n_rows'], m['epochs'], m['train_seconds'],
                      f"{p['fp32_max_abs_diff']:.1e}", f"{p.get('int8_max_abs_diff', float('nan')):.3f}",
                      ', '.join(f'{k}={v}' for k, v in m['settings'].items())])
    print('\nHow the heads were built (manifests)\n')
    print(tabulate(build, headers=['task', 'head', 'train', 'val', 'rows', 'epochs', 'train s', 'fp32 |diff|',
                                   'int8 |diff|', 'settings'], tablefmt='github'))
    print(f"\ntotal training time: {sum(r[6] for r in build):.0f} s")


if __name__ == '__main__':
    main()
