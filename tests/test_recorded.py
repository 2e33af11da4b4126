"""Recorded suites on the real data (ROUTENLP_DATA_DIR; a missing data dir fails, never skips): row counts, the
published acceptance numbers, schema, tier mapping, costs, and the per-seed train / calibration split.
Tables are built once per session into conftest's temporary cache."""
import csv
import json
import time

import numpy as np
import pytest

from routenlp.outcomes import OUTCOME_COLUMNS, QUERY_COLUMNS, SUITES, validate_outcomes
from routenlp.suites import load_outcomes, load_queries, manifest_of
from routenlp.recorded import RECORDED_TASKS, token_cost

TASKS = list(RECORDED_TASKS)


@pytest.fixture(scope='module')
def tables(config):
    "Every recorded (suite, task) outcome table, all models, built once (cold) into the session's cache."
    return {key: load_outcomes(*key, config=config, all_models=True) for key in TASKS}


def _mean(df, model, split=None):
    rows = df[(df['model'] == model) & ((df['split'] == split) if split else True)]
    assert len(rows), (model, split)
    return rows['quality'].mean()


def test_schema_and_recorded_conventions(tables):
    for (suite, task), df in tables.items():
        assert list(df.columns) == list(OUTCOME_COLUMNS), (suite, task)
        validate_outcomes(df)
        spec = RECORDED_TASKS[(suite, task)]
        assert set(df['split']) == {'test', 'pool'}
        assert (df['source'] == 'recorded').all() and (df['latency_source'] == 'unavailable').all()
        assert df['confidence'].isna().all() and df['latency_ms'].isna().all()
        assert (df['cost_usd'] > 0).all(), (suite, task)
        assert (df['input_tokens'] > 0).all() and df['output_tokens'].notna().all()
        assert (df['acceptable'] == (df['quality'] >= spec.acceptance_threshold - 1e-9)).all()


def test_row_counts(tables, config):
    n = {key: df['query_id'].nunique() for key, df in tables.items()}
    models = {key: df['model'].nunique() for key, df in tables.items()}
    arc = tables[('routerbench', 'arc_challenge')].drop_duplicates('query_id')['split'].value_counts()
    # 1,039 / 445 CSV rows; 14 questions are recorded in two rows (see nbs/04_recorded), merged by sample_id
    assert manifest_of('routerbench', 'arc_challenge', config)['notes']['rows_read'] == {
        'arc_challenge_train.csv': 1039, 'arc_challenge_test.csv': 445}
    assert (arc['pool'], arc['test']) == (1031, 439)
    mbpp = tables[('routerbench', 'mbpp')].drop_duplicates('query_id')['split'].value_counts()
    assert (mbpp['pool'], mbpp['test']) == (299, 128)
    assert n[('routellm', 'gsm8k')] == 1319 and n[('routellm', 'mmlu')] == 14042
    assert n[('routellm', 'mt_bench')] == 80 and n[('alpacaeval', 'alpaca_eval')] == 805
    assert models == {('routerbench', 'arc_challenge'): 11, ('routerbench', 'mbpp'): 11, ('routellm', 'gsm8k'): 2,
                      ('routellm', 'mmlu'): 2, ('routellm', 'mt_bench'): 2, ('alpacaeval', 'alpaca_eval'): 18}
    # every query has every model, except AlpacaEval's one missing llama-2-70b-chat-hf answer
    for key, df in tables.items():
        missing = n[key] * models[key] - len(df)
        assert missing == (1 if key[0] == 'alpacaeval' else 0), key
    notes = manifest_of('alpacaeval', 'alpaca_eval', config)['notes']
    assert notes['skipped'] == {'missing_output': 1}
    assert notes['skipped_by_model'] == {'missing_output': {'llama-2-70b-chat-hf': 1}}


def test_published_acceptance_numbers(tables):
    arc = tables[('routerbench', 'arc_challenge')]
    assert abs(_mean(arc, 'gpt-4-1106-preview', 'test') - 0.96) <= 0.01
    assert abs(_mean(arc, 'mistralai/mistral-7b-chat', 'test') - 0.67) <= 0.01
    gsm = tables[('routellm', 'gsm8k')]
    assert round(_mean(gsm, 'gpt-4-1106-preview'), 3) == 0.857
    assert round(_mean(gsm, 'mistralai/Mixtral-8x7B-Instruct-v0.1'), 3) == 0.638
    mmlu = tables[('routellm', 'mmlu')]
    assert round(_mean(mmlu, 'gpt-4-1106-preview'), 3) == 0.806
    assert round(_mean(mmlu, 'mistralai/Mixtral-8x7B-Instruct-v0.1'), 3) == 0.681
    mt = tables[('routellm', 'mt_bench')]  # quality = mean judge score / 10; RouteLLM reports 9.23 / 8.34
    assert round(10 * _mean(mt, 'gpt-4-1106-preview'), 2) == 9.23
    assert round(10 * _mean(mt, 'mistralai/Mixtral-8x7B-Instruct-v0.1'), 2) == 8.34


def test_alpaca_judge_quality_matches_the_leaderboard(tables, data_dir, config):
    "Mean judge quality of the weighted-annotator models = AlpacaEval's published win rate / 100."
    df = tables[('alpacaeval', 'alpaca_eval')]
    kinds = manifest_of('alpacaeval', 'alpaca_eval', config)['notes']['quality_kind']
    judged = {m for m, k in kinds.items() if k.startswith('judge:')}
    assert judged == {'gpt4_1106_preview', 'gpt-3.5-turbo-1106', 'claude-2.1', 'claude-instant-1.2',
                      'Mixtral-8x7B-Instruct-v0.1', 'Mistral-7B-Instruct-v0.2'}
    board = data_dir / 'alpacaeval' / 'docs' / 'data_AlpacaEval_2' / 'weighted_alpaca_eval_gpt4_turbo_leaderboard.csv'
    with open(board, newline='') as f:
        win_rate = {r['samples'].split('/results/')[1].split('/')[0]: float(r['win_rate'])
                    for r in csv.DictReader(f) if '/results/' in r['samples']}
    for m in judged:
        if kinds[m] == 'judge:weighted_alpaca_eval_gpt4_turbo':
            assert abs(_mean(df, m) - win_rate[m] / 100) < 1e-6, m
    assert (df.loc[df['model'] == 'gpt4_1106_preview', 'quality'] == 0.5).all()  # the reference against itself
    assert df['quality'].between(0, 1).all()


def test_tiers_as_configured(config):
    for (suite, task) in TASKS:
        df = load_outcomes(suite, task, config=config)
        assert df['tier'].notna().all()
        got = df.drop_duplicates('tier').set_index('tier')['model'].to_dict()
        assert got == config.suites[suite].tiers, (suite, task)
        assert df.groupby('query_id').size().max() == len(config.suites[suite].tiers)


def test_costs(tables, config):
    gsm = tables[('routellm', 'gsm8k')]
    expected = token_cost(gsm['model'], gsm['input_tokens'], gsm['output_tokens'], config)
    assert np.allclose(gsm['cost_usd'], expected, rtol=1e-12)
    by_tier = load_outcomes('routellm', 'gsm8k', config=config).groupby('tier')['cost_usd'].mean()
    assert by_tier['T2'] > 10 * by_tier['T1']  # GPT-4 costs far more than Mixtral
    # our MiniLM token counts x OpenAI list prices land within 15 % of RouterBench's recorded USD cost
    for task in ('arc_challenge', 'mbpp'):
        df = tables[('routerbench', task)]
        for m in ('gpt-4-1106-preview', 'gpt-3.5-turbo-1106'):
            r = df[df['model'] == m]
            est = token_cost(r['model'], r['input_tokens'], r['output_tokens'], config).sum()
            assert 0.85 < r['cost_usd'].sum() / est < 1.15, (task, m)


def test_queries_tables(config):
    contaminated = {'gsm8k': 12, 'mmlu': 5, 'mt_bench': 8}
    for (suite, task) in TASKS:
        q = load_queries(suite, task, config=config)
        assert list(q.columns) == list(QUERY_COLUMNS) and q['query_id'].is_unique
        meta = [json.loads(m) for m in q['meta']]
        if suite == 'routellm':
            assert sum(m['contaminated'] for m in meta) == contaminated[task]
    gsm = load_queries('routellm', 'gsm8k', config=config)
    assert (gsm['reference'].str.len() > 0).all()
    assert (load_outcomes('routellm', 'mmlu', config=config)['output'] == '').all()
    subjects = {json.loads(m)['subject'] for m in load_queries('routellm', 'mmlu', config=config)['meta']}
    assert len(subjects) == 57


@pytest.mark.parametrize('suite,task', [('routerbench', 'arc_challenge'), ('routellm', 'gsm8k'),
                                        ('alpacaeval', 'alpaca_eval')])
def test_seed_splits(config, suite, task):
    base = load_outcomes(suite, task, config=config)
    pool = set(base.loc[base['split'] == 'pool', 'query_id'])
    test = set(base.loc[base['split'] == 'test', 'query_id'])
    draws = []
    for seed in (0, 1):
        df = load_outcomes(suite, task, seed=seed, config=config)
        ids = {s: set(df.loc[df['split'] == s, 'query_id']) for s in ('train', 'calibration', 'test')}
        assert set(df['split']) == {'train', 'calibration', 'test'}
        assert ids['test'] == test and not ids['train'] & ids['calibration']
        assert ids['train'] | ids['calibration'] == pool
        assert df.groupby('query_id')['split'].nunique().max() == 1  # all tiers of a query on one side
        q = load_queries(suite, task, seed=seed, config=config)
        assert set(q.loc[q['split'] == 'calibration', 'query_id']) == ids['calibration']
        draws.append(ids['calibration'])
    assert draws[0] != draws[1]


def test_warm_load_reuses_the_cache(tables, config):
    path = SUITES['alpacaeval'].table_path('alpaca_eval', config)
    before = path.stat().st_mtime_ns
    t = time.perf_counter()
    load_outcomes('alpacaeval', 'alpaca_eval', config=config)
    assert time.perf_counter() - t < 5
    assert path.stat().st_mtime_ns == before
