"""Acceptance counts of the enterprise-suite loaders on the real datasets (ROUTENLP_DATA_DIR; a missing data dir
fails, it does not skip). Counts, ids and shapes only: no dataset text in assertions."""
import dataclasses, re

import pytest

from routenlp.data import (LOADERS, QUERY_COLUMNS, RISK_LABELS, TASK_REGISTRY, load_benchmark, load_task_queries,
                           read_json)

TASKS = sorted(TASK_REGISTRY)


def queries(task, config, split=None):
    q, report = load_task_queries(task, config)
    return (q if split is None else q[q.split == split]), report


@pytest.mark.parametrize('task', TASKS)
def test_every_row_is_accounted_for(task, config):
    q, report = queries(task, config)
    assert tuple(q.columns) == QUERY_COLUMNS
    assert set(q.split) == {'test', 'pool'} and set(q.task) == {task} and set(q.suite) == {'enterprise'}
    assert q.query_id.is_unique and q.text.str.strip().ne('').all()
    assert report.accounted and report.rows_kept == len(q)
    assert all(isinstance(m, dict) for m in q.meta)


def test_banking77(config, data_dir):
    q, report = queries('cs-intent', config)
    assert (q.split == 'pool').sum() == 10_003 and (q.split == 'test').sum() == 3_080
    categories = read_json(data_path := data_dir / 'banking77' / 'categories.json')
    assert len(categories) == 77, data_path
    assert report.labels == tuple(categories) and set(q.reference) == set(categories)
    assert load_benchmark('cs-intent', config=config).spec.labels == tuple(categories)
    assert q.query_id.str.fullmatch(r'banking77-(train|test)-\d{5}').all()


def test_sec_filings_ner(config):
    q, report = queries('fin-ner', config)
    assert (q.split == 'test').sum() == 303 and (q.split == 'pool').sum() == 1_164
    assert (report.notes['FIN3_tokens'], report.notes['FIN5_tokens']) == (13_246, 41_010)
    assert all(len(r) == len(m['tokens']) for r, m in zip(q.reference, q.meta))
    assert all(t == ' '.join(m['tokens']) for t, m in zip(q.text, q.meta))
    for tags in q.reference:  # valid IOB2: an I- tag continues an entity of the same type
        for prev, tag in zip(['O'] + tags, tags):
            assert tag == 'O' or re.fullmatch(r'[BI]-(PER|LOC|ORG|MISC)', tag)
            assert not tag.startswith('I-') or prev[2:] == tag[2:]
    entities = {t: sum(tags.count(f'B-{t}') for tags in q[q.split == 'test'].reference) for t in ('PER', 'LOC', 'ORG', 'MISC')}
    assert entities == {'PER': 216, 'LOC': 39, 'ORG': 56, 'MISC': 7}  # after IO -> IOB2; MISC is tiny
    assert sum(any(t != 'O' for t in tags) for tags in q[q.split == 'test'].reference) == 100


def test_claudette(config):
    q, report = queries('legal-risk', config)
    assert report.rows_read == len(q) == 17_383 and report.notes['documents'] == 50
    assert set(q.reference) == set(RISK_LABELS)
    assert q.meta.map(lambda m: m['doc']).nunique() == 50
    test_docs = []
    for k in range(5):
        fold = dataclasses.replace(config, splits=dataclasses.replace(config.splits, claudette_test_fold=k))
        qk, _ = load_task_queries('legal-risk', fold)
        docs = qk.groupby('split').meta.agg(lambda ms: {m['doc'] for m in ms})
        assert len(docs['test']) == 10 and len(docs['pool']) == 40 and not docs['test'] & docs['pool']
        test_docs.append(docs['test'])
    assert len(set().union(*test_docs)) == 50  # the five test folds partition the documents
    assert report.notes['tags_without_risk_digit'] == {'countrym': 191}


def test_sgd_banking(config):
    q, report = queries('cs-response', config)
    assert report.notes['dialogues'] == 1_021
    assert report.notes['dialogues_by_split'] == {'train': 727, 'dev': 294}
    assert report.rows_read == 10_151 and len(q) == 4_638
    services = q.groupby('split').meta.agg(lambda ms: {m['service'] for m in ms})
    assert services['pool'] == {'Banks_1'} and services['test'] == {'Banks_2'}
    n = config.splits.sgd_context_turns
    assert all(1 <= len(t.split('\n')) <= n for t in q.text)  # utterances hold no newline
    assert q.text.str.match(r'(USER|SYSTEM): ').all()


def test_ectsum(config):
    q, report = queries('fin-sum', config)
    assert q.meta.map(lambda m: m['source_split']).value_counts().to_dict() == {'train': 1_681, 'test': 495, 'val': 249}
    assert (q.split == 'test').sum() == 495 and (q.split == 'pool').sum() == 1_930
    assert q.reference.map(lambda r: r.count('\n') + 1).eq(q.meta.map(lambda m: m['bullets'])).all()


def test_cuad(config):
    q, report = queries('legal-clause', config)
    n = report.notes
    assert (n['contracts'], n['clause_types']) == (510, 41)
    assert report.rows_read == 510 * 41 == len(q) + sum(report.skipped.values()) == 20_910
    assert n['answers_unlocated'] <= 0.01 * n['answers']
    assert set(report.skipped) <= {'no_answer_located', 'all_answers_longer_than_window'}
    assert q.meta.map(lambda m: m['contract']).nunique() == 510
    width = config.splits.cuad_window_chars
    assert q.text.str.len().le(width).all()
    for window, answers, meta in zip(q.text, q.reference, q.meta):
        assert [window[s:s + len(a)] for s, a in zip(meta['answer_starts'], answers)] == answers
    test_share = q[q.split == 'test'].meta.map(lambda m: m['contract']).nunique() / 510
    assert 0.15 < test_share < 0.25


@pytest.mark.parametrize('task', TASKS)
def test_subsamples(task, config):
    s = config.splits
    test_ids, pool_ids, splits = None, None, []
    for seed in config.seeds:
        test = load_benchmark(task, 'test', seed, config)
        train, cal = load_benchmark(task, 'train', seed, config), load_benchmark(task, 'calibration', seed, config)
        t, tr, ca = (set(d.queries.query_id) for d in (test, train, cal))
        assert len(t) <= s.max_test and len(tr) + len(ca) <= s.max_pool and not tr & ca and not t & (tr | ca)
        assert set(test.queries.split) == {'test'} and set(train.queries.split) == {'train'}
        test_ids, pool_ids = test_ids or t, pool_ids or tr | ca
        assert t == test_ids and tr | ca == pool_ids  # the same queries for every seed
        splits.append(frozenset(ca))
    assert len(set(splits)) == len(config.seeds)  # ... split differently per seed
    full = load_benchmark(task, 'all', 0, config, subsample=False)
    q, _ = queries(task, config)
    assert len(full) == len(q) and (full.queries.split == 'test').sum() == (q.split == 'test').sum()


def test_parsed_once_per_process(config):
    from routenlp.data import _load_cached
    load_task_queries('fin-ner', config)
    hits = _load_cached.cache_info().hits
    load_task_queries('fin-ner', config)
    assert _load_cached.cache_info().hits == hits + 1


def test_bad_names(config):
    with pytest.raises(ValueError, match='allowed: train, calibration, test, pool, all'):
        load_benchmark('cs-intent', 'dev', config=config)
    with pytest.raises(KeyError, match='known: cs-intent'):
        load_benchmark('cs-chat', config=config)
    assert set(LOADERS) == set(TASK_REGISTRY)


def test_enterprise_queries_through_load_queries(config):
    "outcomes.load_queries reads enterprise text from the data dir with the same splits as load_benchmark and the outcome tables."
    from routenlp.suites import load_outcomes, load_queries
    q = load_queries('enterprise', 'legal-risk', seed=2, config=config)
    ref = load_benchmark('legal-risk', 'all', 2, config).queries
    assert q[['query_id', 'split']].equals(ref[['query_id', 'split']]) and set(q['suite']) == {'enterprise'}
    o = load_outcomes('enterprise', 'legal-risk', seed=2, config=config)
    split_of = dict(zip(q['query_id'], q['split']))
    assert (o['query_id'].map(split_of) == o['split']).all()     # the committed table's rows re-split identically
    unsplit = load_queries('enterprise', 'legal-risk', config=config)
    assert set(unsplit['split']) == {'test', 'pool'} and (unsplit['split'] == 'test').sum() == (q['split'] == 'test').sum()
