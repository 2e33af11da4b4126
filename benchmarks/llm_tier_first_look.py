"""A first look at the LLM tiers on every enterprise task: T2 (SmolLM2-135M-Instruct, chat prompts) and T3
(Gemma-3-270M base, completion prompts) through the real tier classes and llama.cpp servers, with the prompts of
`routenlp.prompts` (`render`: per-task stop strings and max_tokens), on a small fixed subsample of each test split.

    ROUTENLP_DATA_DIR=../shared/data .venv/bin/python benchmarks/llm_tier_first_look.py --n 20

Prints per (tier, task): mean quality (the task metric per example, `routenlp.metrics.example_quality`; error
responses score 0), the acceptable rate (quality >= the task's threshold), parse failures, other errors, how many
prompts were truncated, per-query latency (mean, p95) and mean input / output tokens. Label tasks use
`--label-mode` (default: the label_constraint_bench recommendation per tier, see LABEL_MODE below).
Sizes for the collection run follow from the latency columns: queries x mean latency per (tier, task).
Servers run with `--logits_all False` and the tier with `logprobs=False` unless `--logprobs` is given
(llama-cpp-python's server default logits_all=True makes every request with logprobs seconds slower; the
confidence is then the tier's uninformative 0.5).
"""
from __future__ import annotations

import argparse, os, sys, time

import numpy as np
import pandas as pd

from routenlp.core import fixed_subsample, load_config
from routenlp.data import get_task, load_benchmark
from routenlp.llama_server import LlamaServer
from routenlp.llm_tiers import OpenAICompatibleTier
from routenlp.metrics import example_quality
from routenlp.outcomes import decode_value
from routenlp.prompts import N_CTX, PROMPT_SPECS, render
from routenlp.tiers import TierRequest

LABEL_MODE = {'T2': 'free', 'T3': 'free'}  # overridden by --label-mode


def quality(task: str, outputs, errors, refs) -> np.ndarray:
    spec = get_task(task)
    preds = [decode_value(o) if not e else None for o, e in zip(outputs, errors)]
    ok = [i for i, p in enumerate(preds) if p is not None]
    q = np.zeros(len(preds))
    if ok: q[ok] = example_quality(spec.metric, [preds[i] for i in ok], [refs[i] for i in ok])
    return q


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--tiers', default='T2,T3')
    ap.add_argument('--tasks', default=','.join(PROMPT_SPECS))
    ap.add_argument('--n', type=int, default=20)
    ap.add_argument('--label-mode', default=None, help='free | grammar | logprob for every tier (default: LABEL_MODE)')
    ap.add_argument('--out', default=None, help='CSV of per-query rows (ids, outputs, quality; no dataset text)')
    ap.add_argument('--logprobs', action='store_true', help='server logits_all=True and token logprobs for confidence')
    args = ap.parse_args(argv)
    config = load_config()
    by_name = {t.name: t for t in config.portfolio.tiers}
    rows = []
    for name in args.tiers.split(','):
        tier_cfg = by_name[name]
        mode = args.label_mode or LABEL_MODE.get(name, 'free')
        extra = [] if args.logprobs else ['--logits_all', 'False']
        with LlamaServer.from_tier(tier_cfg, config, n_ctx=N_CTX, extra_args=extra) as server:
            tier = OpenAICompatibleTier.from_config(tier_cfg, server=server, config=config, label_mode=mode,
                                                    build_prompt=render, logprobs=args.logprobs)
            for task in args.tasks.split(','):
                q = load_benchmark(task, 'test', 0, config).queries
                q = q[q.query_id.isin(set(fixed_subsample(q.query_id, args.n, 0, 'first-look', task)))]
                reqs = [TierRequest(task, r.query_id, r.text, dict(r.meta)) for r in q.itertuples()]
                cut = [render(task, r, tier_cfg.prompt_style, config=config).truncation is not None for r in reqs]
                t0 = time.perf_counter()
                resps = tier.predict(reqs)
                wall = time.perf_counter() - t0
                qual = quality(task, [r.output for r in resps], [r.error for r in resps], list(q.reference))
                for req, resp, qq, c in zip(reqs, resps, qual, cut):
                    rows.append(dict(tier=name, model=tier_cfg.model, task=task, label_mode=mode, query_id=req.query_id,
                                     output=resp.output, error=resp.error, reason=resp.error_reason or '',
                                     quality=qq, acceptable=qq >= get_task(task).acceptance_threshold, truncated=c,
                                     confidence=resp.confidence, latency_ms=resp.latency_ms,
                                     input_tokens=resp.input_tokens, output_tokens=resp.output_tokens, wall_s=wall))
                print(f'  {name} {task}: {len(reqs)} queries in {wall:.0f} s, load avg {os.getloadavg()[0]:.1f}',
                      file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    if args.out: df.to_csv(args.out, index=False)
    table = df.groupby(['tier', 'model', 'task', 'label_mode'], sort=False).agg(
        n=('query_id', 'size'), quality=('quality', 'mean'), acceptable=('acceptable', 'mean'),
        parse_fail=('reason', lambda r: r.str.startswith('unparseable').mean()),
        errors=('error', 'mean'), truncated=('truncated', 'sum'), confidence=('confidence', 'mean'),
        latency_ms_mean=('latency_ms', 'mean'), latency_ms_p95=('latency_ms', lambda x: x.quantile(0.95)),
        in_tokens=('input_tokens', 'mean'), out_tokens=('output_tokens', 'mean')).reset_index()
    print(f'\nLLM tiers, first look: {args.n} test queries per task, n_ctx {N_CTX}, load avg at end '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores ("errors" includes parse failures)')
    print(table.to_markdown(index=False, floatfmt='.3f'))


if __name__ == '__main__':
    main()
