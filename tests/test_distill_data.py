"""Distillation data (routenlp.distill_data, issue #12 deliverable 2) on real data.

1. Over all six enterprise tasks and every configured seed, no candidate, so no generated query, is a query any seed
   uses for router training, calibration or test, nor one the seed-0 T1 heads train on.
2. On cs-intent, a targeted and a random generation from a real `FailureAnalyzer` (MiniLM embeddings, PCA + k-means,
   which spares umap's ~15 s numba compilation) return `budget` distinct queries with the reference labels and the
   teacher named. The failures are T1's unacceptable answers on seed 0's train + calibration rows of the committed
   outcome table: never test rows (the leakage rule), and T1 is the tier the loop distils into. Bounded: the
   candidates are cut to a seeded 800 (`max_candidates`) so the session's fresh embedding store embeds ~1000 texts.
3. A live tier as teacher: a real T1 ONNX tier (a small cs-intent head, 64 training queries, one epoch, fp32: ~13 s
   to build) labels a random generation; the labels are its answers and the rows name it."""
import numpy as np
import pandas as pd
import pytest

from routenlp.data import TASK_REGISTRY, load_benchmark, load_task_queries
from routenlp.distill_data import (DISTILL_COLUMNS, REFERENCE_TEACHER, DistillationDataGenerator, as_teacher,
                                   candidate_pool, normalized_text, t1_training_ids)
from routenlp.evaluation import TaskRun
from routenlp.failures import LABELS_TEACHER, FailureAnalyzer, failures_of
from routenlp.suites import load_outcomes, load_queries
from routenlp.t1_onnx import LocalModelTier, build_head
from routenlp.tiers import TierRequest

EXPECTED = {'fin-ner': 249, 'fin-sum': 1030, 'cs-intent': 9096, 'cs-response': 2401, 'legal-clause': 14812,
            'legal-risk': 11758}   # pool rows no seed or T1 head uses, less same-text twins of used queries


def _used_by_seeds(task, config) -> set:
    "Every query id any configured seed trains the router on, calibrates on or tests on."
    used = set()
    for s in config.seeds:
        q = load_benchmark(task, 'all', s, config).queries
        assert set(q['split']) == {'train', 'calibration', 'test'}
        used |= set(q['query_id'])
    return used


@pytest.mark.parametrize('task', list(TASK_REGISTRY))
def test_no_candidate_is_used_by_any_seed(task, config):
    assert len(TASK_REGISTRY) == 6 and list(config.seeds) == [0, 1, 2, 3, 4]
    cand, rep = candidate_pool(task, config)
    ids = set(cand['query_id'])
    full, _ = load_task_queries(task, config)
    assert not ids & _used_by_seeds(task, config)
    assert not ids & set(full.loc[full['split'] == 'test', 'query_id'])          # the whole test split, not its subsample
    assert not ids & t1_training_ids(task, config, 0)
    used = _used_by_seeds(task, config) | set(full.loc[full['split'] == 'test', 'query_id']) | t1_training_ids(task, config, 0)
    used_texts = set(full.loc[full['query_id'].isin(used), 'text'].map(normalized_text))
    assert not cand['text'].map(normalized_text).isin(used_texts).any()          # nor a same-text twin of one
    assert len(cand) == rep.candidates == EXPECTED[task] and cand['query_id'].is_unique
    # the generator returns candidates only: a random draw of up to 500 of them, reference-labelled
    out = DistillationDataGenerator(strategy='random', budget=500, config=config).generate(task)
    assert len(out) == min(500, EXPECTED[task]) and out['query_id'].is_unique and set(out['query_id']) <= ids
    assert (out['teacher'] == REFERENCE_TEACHER).all()


@pytest.fixture(scope='module')
def cs_intent_failures(config):
    o = load_outcomes('enterprise', 'cs-intent', seed=0, config=config)
    q = load_queries('enterprise', 'cs-intent', seed=0, config=config)
    frame = o[o['split'].isin(['train', 'calibration']) & (o['tier'] == 'T1')]
    f = failures_of(frame, TaskRun(o, q, config, 0), teacher=LABELS_TEACHER)
    fa = FailureAnalyzer('pca-kmeans', k=8, config=config)
    fa.fit_failures(f)
    return f, fa


def test_targeted_and_random_on_cs_intent(cs_intent_failures, config):
    f, fa = cs_intent_failures
    assert 150 <= len(f) <= 400 and not set(f['query_id']) & set(load_benchmark('cs-intent', 'test', 0, config).queries['query_id'])
    top = fa.clusters().query('not noise').head(5)
    budget, used = 40, _used_by_seeds('cs-intent', config)
    full, _ = load_task_queries('cs-intent', config)
    gold = full.set_index('query_id')['reference']
    outs = {}
    for strategy in ('targeted', 'random'):
        gen = DistillationDataGenerator(strategy=strategy, budget=budget, config=config, max_candidates=800)
        out = outs[strategy] = gen.generate('cs-intent', fa, k=5)
        assert list(out.columns) == DISTILL_COLUMNS and len(out) == budget and out['query_id'].is_unique
        assert not set(out['query_id']) & used
        assert (out['teacher'] == REFERENCE_TEACHER).all() and (out['strategy'] == strategy).all()
        assert out['label'].tolist() == gold.reindex(out['query_id']).tolist()       # the reference labels
        assert gen.report['given'].sum() == budget and gen.candidate_report.candidates == EXPECTED['cs-intent']
    t, r = outs['targeted'], outs['random']
    assert set(t['cluster']) <= set(top['cluster']) and r['cluster'].isna().all()
    # the budget follows the cluster scores (size x gap; gap 1 for every wrong intent, so size): the best cluster
    # gets the most
    given = t.groupby('cluster').size().reindex(top['cluster'], fill_value=0)
    assert given.iloc[0] == given.max() and given.sum() == budget
    # targeted picks lie nearer the failure clusters than random ones (mean cosine distance 0.21 vs 0.48 here), and
    # carry an intent of their own cluster's failures more often than random picks carry one of any top cluster's
    # (0.90 vs 0.65)
    assert t['distance'].mean() < r['distance'].mean() - 0.15, (t['distance'].mean(), r['distance'].mean())
    intents = {c: set(gold.reindex(f['query_id'][fa.labels_ == c])) for c in top['cluster']}
    hit_t = np.mean([l in intents[c] for l, c in zip(t['label'], t['cluster'])])
    hit_r = np.mean([l in set().union(*intents.values()) for l in r['label']])
    assert hit_t > hit_r + 0.1, (hit_t, hit_r)


def test_tier_teacher_real_t1(config, tmp_path):
    folder = build_head('cs-intent', config, seed=0, max_train=64, max_epochs=1, evaluate=False, quantize=False,
                        folder=tmp_path / 'head')
    tier = LocalModelTier('T1', 0.01, {'cs-intent': folder}, quantize=False)
    try:
        gen = DistillationDataGenerator(teacher=tier, strategy='random', budget=12, config=config)
        out = gen.generate('cs-intent')
        assert len(out) == 12 and (out['teacher'] == 'tier T1').all() and as_teacher(tier).name == 'tier T1'
        direct = tier.predict([TierRequest('cs-intent', q, t) for q, t in zip(out['query_id'], out['text'])])
        assert out['label'].tolist() == [r.output for r in direct]
        intents = set(load_task_queries('cs-intent', config)[0]['reference'])
        assert set(out['label']) <= intents                                   # intent names, as the reference labels
    finally:
        tier.close()
