"""Which label constraint should the LLM tiers use? Free generation + parse vs a llama.cpp grammar restricting the
output to the label set vs log-probability scoring of every candidate label, for T2 (SmolLM2-135M-Instruct, chat
prompts) and T3 (Gemma-3-270M base, completion prompts) on cs-intent and legal-risk.

Modes (all with the prompts of `routenlp.prompts.render`: per-task stop strings and max_tokens, greedy decoding):
- `free`, `grammar`: the real tier class (`routenlp.llm_tiers.OpenAICompatibleTier`, label_mode free / grammar,
  `logprobs=False`) against a real llama.cpp server (`LlamaServer`, the tier's `threads`, n_ctx 2048) started with
  `--logits_all False`. (llama-cpp-python's server defaults to logits_all=True, and any request with logprobs then
  log-softmaxes the whole n_ctx x vocab score matrix: seconds per request, see the report.)
- `logprob`: each candidate's log-probability sum(log p(token)) of `label + end-of-answer` (the chat template's
  end-of-turn token, or the newline that ends a completion answer), scored in-process with llama_cpp over a token
  trie of the candidates (one single-token decode per trie node, the prompt evaluated once with prefix reuse);
  the answer is the arg-max, the confidence its softmax over the candidates. Same library, model file, threads and
  n_ctx as the server.
- `server-logprob` (opt-in, slow): the tier's own logprob mode (one server call per candidate, logits_all=True).

Queries: a fixed subsample of each task's test split (`fixed_subsample`, salt 'label-bench'). Modes run in
rotating chunks of `--chunk` queries so that a change in machine load hits every mode alike and each mode sees the
same prefix-cache state (the fixed part of the prompt cached, the query not). One unscored warm-up query per
(tier, task, mode) fills the prefix cache first.

    ROUTENLP_DATA_DIR=../shared/data .venv/bin/python benchmarks/label_constraint_bench.py --n 30 --mode-n logprob:cs-intent=15

Prints one row per (tier, task, mode): accuracy, macro-F1 (routenlp.metrics; errors count as a wrong label),
parse failures (free text that names no label), other errors, queries per second (n / wall seconds of that mode),
correct answers per second, per-query latency; plus the majority-label accuracy of the same queries. `--out`
appends the per-query rows (ids, outputs, latencies; no dataset text) to a CSV as they come; `--summarise CSV`
prints the table of such a file.
"""
from __future__ import annotations

import argparse, os, sys, time
from collections import Counter

import numpy as np
import pandas as pd

from routenlp.core import fixed_subsample, load_config
from routenlp.data import load_benchmark
from routenlp.llama_server import LlamaServer, model_file
from routenlp.llm_tiers import OpenAICompatibleTier, candidate_softmax
from routenlp.metrics import macro_f1
from routenlp.prompts import N_CTX, label_candidates, render
from routenlp.tiers import Response, TierRequest

MODES = ('free', 'grammar', 'logprob', 'server-logprob')


class TrieScorer:
    "Candidate-label log-probabilities in-process (llama_cpp), over a token trie; a `predict` like a tier's."
    def __init__(self, tier_cfg, config):
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        self.llama_cpp, self.style = llama_cpp, tier_cfg.prompt_style
        self.llm = llama_cpp.Llama(str(model_file(tier_cfg.server, config)), n_ctx=N_CTX, n_threads=tier_cfg.threads,
                                   n_threads_batch=tier_cfg.threads, logits_all=False, verbose=False)
        text = lambda t: self.llm._model.token_get_text(t) if t >= 0 else ''
        self.fmt = (Jinja2ChatFormatter(self.llm.metadata['tokenizer.chat_template'], text(self.llm.token_eos()),
                                        text(self.llm.token_bos())) if self.style == 'chat' else None)
        self.config, self._cont = config, {}

    def _prompt_tokens(self, prompt) -> list[int]:
        if self.fmt is None: return self.llm.tokenize(prompt.encode(), add_bos=True, special=False)
        r = self.fmt(messages=prompt)
        return self.llm.tokenize(r.prompt.encode(), add_bos=not r.added_special, special=True)

    def _continuation(self, label: str) -> tuple[int, ...]:
        if label not in self._cont:
            if self.fmt is None: toks = self.llm.tokenize(f' {label}\n'.encode(), add_bos=False, special=False)
            else: toks = self.llm.tokenize(label.encode(), add_bos=False, special=False) + [self.llm.token_eos()]
            self._cont[label] = tuple(toks)
        return self._cont[label]

    def _last_logprobs(self) -> np.ndarray:
        ptr = self.llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        row = np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).astype(np.float64)
        m = row.max()
        return row - (m + np.log(np.exp(row - m).sum()))

    def score(self, prompt, labels) -> list[float]:
        toks = self._prompt_tokens(prompt)
        cached = list(self.llm.input_ids[:self.llm.n_tokens])
        n = 0
        while n < min(len(cached), len(toks) - 1) and cached[n] == toks[n]: n += 1
        self.llm.n_tokens = n
        self.llm.eval(toks[n:])
        base = len(toks)
        trie: dict = {}
        for i, label in enumerate(labels):
            node = trie
            for t in self._continuation(label): node = node.setdefault(t, {})
            node.setdefault(None, []).append(i)
        scores = [0.0] * len(labels)
        def walk(node, depth, logprobs, acc):
            for tok, child in node.items():
                if tok is None: continue
                s = acc + logprobs[tok]
                for i in child.get(None, []): scores[i] = s
                if any(k is not None for k in child):
                    self.llm.n_tokens = base + depth
                    self.llm.eval([tok])
                    walk(child, depth + 1, self._last_logprobs(), s)
        walk(trie, 0, self._last_logprobs(), 0.0)
        return scores

    def predict(self, requests) -> list[Response]:
        out = []
        for req in requests:
            t0 = time.perf_counter()
            labels = label_candidates(req.task, self.config)
            best, conf = candidate_softmax(self.score(render(req.task, req, self.style, config=self.config).prompt, labels))
            out.append(Response(labels[best], conf, latency_ms=(time.perf_counter() - t0) * 1000))
        return out

    def close(self): self.llm.close()


def requests_for(task: str, n: int, config, balanced: bool = False) -> tuple[list[TierRequest], list[str]]:
    "A fixed subsample of the test split; `balanced`: up to n // labels per gold label, filled up to n."
    q = load_benchmark(task, 'test', 0, config).queries
    keep = set(fixed_subsample(q.query_id, n, 0, 'label-bench', task))
    if balanced:
        per = n // q.reference.nunique()
        keep = {i for _, g in q.groupby('reference') for i in fixed_subsample(g.query_id, per, 0, 'label-bench', task)}
        rest = [i for i in fixed_subsample(q.query_id, None, 0, 'label-bench', task) if i not in keep]
        keep |= set(rest[:max(0, n - len(keep))])
    q = q[q.query_id.isin(keep)]
    return [TierRequest(task, r.query_id, r.text, dict(r.meta)) for r in q.itertuples()], list(q.reference)


def run_task(tier_cfg, predictors: dict, task: str, n: int, chunk: int, config, mode_n: dict, sink=None,
             balanced: bool = False) -> list[dict]:
    requests, refs = requests_for(task, n, config, balanced)
    modes = list(predictors)
    warm = load_benchmark(task, 'train', 0, config).queries.iloc[0]
    for p in predictors.values(): p.predict([TierRequest(task, warm.query_id, warm.text, dict(warm.meta))])
    rows = []
    for start in range(0, len(requests), chunk):
        part = requests[start:start + chunk]
        for mode in modes:
            if start >= mode_n.get((mode, task), len(requests)): continue
            t0 = time.perf_counter()
            responses = predictors[mode].predict(part)
            new = [dict(tier=tier_cfg.name, model=tier_cfg.model, task=task, mode=mode, query_id=req.query_id,
                        reference=ref, output=resp.output, error=resp.error, reason=resp.error_reason or '',
                        confidence=resp.confidence, latency_ms=resp.latency_ms, input_tokens=resp.input_tokens,
                        output_tokens=resp.output_tokens, chunk_wall_s=(time.perf_counter() - t0) / len(part))
                   for req, ref, resp in zip(part, refs[start:start + chunk], responses)]
            rows += new
            if sink: sink(new)
        done = min(start + chunk, len(requests))
        print(f'  {tier_cfg.name} {task}: {done}/{len(requests)} queries, load avg {os.getloadavg()[0]:.1f}',
              file=sys.stderr, flush=True)
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    "One row per (tier, task, mode); queries/s = n / the mode's summed wall time (each row carries its share)."
    df = df.assign(mode_wall_s=df.groupby(['tier', 'task', 'mode']).chunk_wall_s.transform('sum'))
    out = []
    for (tier, model, task, mode), g in df.groupby(['tier', 'model', 'task', 'mode'], sort=False):
        preds = [o if not e else '<error>' for o, e in zip(g.output, g.error)]
        parse_fail = g.reason.str.startswith('unparseable').mean()
        out.append(dict(tier=tier, model=model, task=task, mode=mode, n=len(g),
                        accuracy=np.mean([p == r for p, r in zip(preds, g.reference)]),
                        macro_f1=macro_f1(preds, list(g.reference)),
                        parse_fail=parse_fail, other_errors=g.error.mean() - parse_fail,
                        queries_per_s=len(g) / g.mode_wall_s.iloc[0],
                        acc_per_s=np.mean([p == r for p, r in zip(preds, g.reference)]) * len(g) / g.mode_wall_s.iloc[0],
                        latency_ms_mean=g.latency_ms.mean(), latency_ms_p95=g.latency_ms.quantile(0.95),
                        in_tokens=g.input_tokens.mean(), out_tokens=g.output_tokens.mean()))
        if mode == df[df.task == task]['mode'].iloc[0]:
            majority = Counter(load_benchmark(task, 'train', 0).queries.reference).most_common(1)[0][0]
            out.append(dict(tier=tier, model=model, task=task, mode=f'(majority: {majority})', n=len(g),
                            accuracy=np.mean([majority == r for r in g.reference]),
                            macro_f1=macro_f1([majority] * len(g), list(g.reference))))
    return pd.DataFrame(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--tiers', default='T2,T3', help='config tier names (kind openai, with a managed server)')
    ap.add_argument('--tasks', default='cs-intent,legal-risk')
    ap.add_argument('--modes', default='free,grammar,logprob', help=f'any of {MODES}')
    ap.add_argument('--n', type=int, default=60, help='test queries per task')
    ap.add_argument('--chunk', type=int, default=5, help='queries per mode before rotating to the next mode')
    ap.add_argument('--balanced', action='store_true', help='n // labels queries per gold label (legal-risk: its '
                    'rare unfair labels), filled up to n; "(majority)" rows then show the skew removed')
    ap.add_argument('--mode-n', default='', help="mode:task=n,...: run that mode only on the first n queries of the task")
    ap.add_argument('--out', default=None, help='CSV of per-query rows, appended as they come (no dataset text)')
    ap.add_argument('--summarise', default=None, help='only print the table of an earlier --out CSV')
    args = ap.parse_args(argv)
    config = load_config()
    if args.summarise:
        df = pd.read_csv(args.summarise, keep_default_na=False)
        refs = {t: dict(zip(q.query_id, q.reference)) for t in df.task.unique()
                for q in [load_benchmark(t, 'test', 0, config).queries]}
        df['reference'] = [refs[t][i] for t, i in zip(df.task, df.query_id)]
        df['error'] = df.error.astype(str) == 'True'
        return print(summarise(df).to_markdown(index=False, floatfmt='.3f'))
    modes = args.modes.split(',')
    if bad := [m for m in modes if m not in MODES]: ap.error(f'unknown mode(s) {bad}; known: {MODES}')
    by_name = {t.name: t for t in config.portfolio.tiers}
    if bad := [t for t in args.tiers.split(',') if t not in by_name or not by_name[t].server]:
        ap.error(f'tier(s) {bad} are not managed llama.cpp tiers in the config ({", ".join(by_name)})')
    mode_n = {tuple(k.split(':')): int(v) for k, v in (kv.split('=') for kv in args.mode_n.split(',') if kv)}
    rows = []
    def sink(new):
        if args.out:
            pd.DataFrame(new).drop(columns=['reference']).to_csv(args.out, mode='a', index=False,
                                                                 header=not os.path.exists(args.out))
    if args.out and os.path.exists(args.out): os.remove(args.out)
    for name in args.tiers.split(','):
        tier_cfg = by_name[name]
        servers, predictors = [], {}
        try:
            for mode in modes:
                if mode in ('free', 'grammar', 'server-logprob'):
                    plain = mode != 'server-logprob'  # server-logprob needs the server's default logits_all=True
                    if not any(k == plain for k, _ in servers):
                        extra = ['--logits_all', 'False'] if plain else []
                        servers.append((plain, LlamaServer.from_tier(tier_cfg, config, n_ctx=N_CTX, extra_args=extra).start()))
                        print(f'{name}: {tier_cfg.server} up (logits_all {not plain}), threads {tier_cfg.threads}',
                              file=sys.stderr, flush=True)
                    server = next(s for k, s in servers if k == plain)
                    predictors[mode] = OpenAICompatibleTier.from_config(
                        tier_cfg, server=server, config=config, build_prompt=render, logprobs=not plain,
                        label_mode={'server-logprob': 'logprob'}.get(mode, mode))
                else: predictors[mode] = TrieScorer(tier_cfg, config)
            for task in args.tasks.split(','):
                rows += run_task(tier_cfg, predictors, task, args.n, args.chunk, config, mode_n, sink, args.balanced)
        finally:
            for _, server in servers: server.stop()
            for p in predictors.values(): p.close()
    df = pd.DataFrame(rows)
    table = summarise(df)
    print(f'\nLabel constraints, up to {args.n} test queries per task, n_ctx {N_CTX}, load avg at end '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
    print(table.to_markdown(index=False, floatfmt='.3f'))


if __name__ == '__main__':
    main()
