"""Smoke run of nbs/99_judge_agreement.ipynb under papermill on the first instructions of AlpacaEval (ROUGE-L only, a
small bootstrap), `out_root` in a temporary folder so the committed tables are untouched. The numbers are checked
against an independent reading of the raw annotation files and an independent scoring of the pairs. Real data."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from routenlp.metrics import example_quality

ROOT = Path(__file__).resolve().parents[1]
N = 20
JUDGED = {'gpt-3.5-turbo-1106': 'weighted_alpaca_eval_gpt4_turbo', 'claude-2.1': 'weighted_alpaca_eval_gpt4_turbo',
          'claude-instant-1.2': 'weighted_alpaca_eval_gpt4_turbo', 'gpt4_1106_preview': 'weighted_alpaca_eval_gpt4_turbo',
          'Mixtral-8x7B-Instruct-v0.1': 'alpaca_eval_gpt4_turbo_fn', 'Mistral-7B-Instruct-v0.2': 'alpaca_eval_gpt4_turbo_fn'}


@pytest.fixture(scope='module')
def tables(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('judge')
    pm.execute_notebook(str(ROOT / 'nbs' / '99_judge_agreement.ipynb'), str(out / 'run.ipynb'),
                        parameters={'out_root': str(out), 'max_instructions': N, 'metrics': ['rouge_l'], 'n_boot': 200,
                                    'alt_references': []},
                        cwd=str(ROOT / 'nbs'), kernel_name='python3', progress_bar=False)
    t = out / 'papers' / 'tables'
    return (pd.read_csv(t / 'judge_agreement.csv'), pd.read_csv(t / 'judge_agreement.labels.csv'),
            (t / 'judge_agreement.md').read_text(), out)


def raw(data_dir, model, name):
    return json.loads((Path(data_dir) / 'alpacaeval' / 'results' / model / name).read_text())


def test_judge_counts_match_the_raw_annotations(data_dir, tables):
    res = tables[0].set_index(['rule', 'model', 'subset'])
    first = [r['instruction'] for r in raw(data_dir, 'gpt4_1106_preview', 'model_outputs.json')][:N]
    for model, d in JUDGED.items():
        pref = {a['instruction']: a['preference'] for a in raw(data_dir, model, f'{d}/annotations.json')}
        wins, ties = sum(pref[i] > 1.5 for i in first), sum(pref[i] == 1.5 for i in first)
        row = res.loc[('baseline always wins', model, 'all')]
        assert (row['pairs'], row['judge ties'], row['model wins (judge)']) == (N, ties, wins), model
        if model == 'gpt4_1106_preview':                       # judged against itself: every verdict a tie
            assert ties == N and row['decisive'] == 0 and np.isnan(row['agreement'])
        else:                                                  # the constant rule agrees exactly on the baseline's wins
            assert row['agreement'] == pytest.approx(1 - wins / (N - ties))
    pooled = res.xs('all five (pooled)', level='model')
    assert pooled.loc[('baseline always wins', 'all'), 'balanced'] == pytest.approx(0.5)
    assert pooled.loc[('baseline always wins', 'all'), 'decisive'] == 5 * N - sum(
        r['judge ties'] for (rule, m, s), r in res.iterrows() if rule == 'baseline always wins' and s == 'all'
        and m not in ('all five (pooled)', 'gpt4_1106_preview'))


def test_rouge_agreement_matches_an_independent_scoring(data_dir, tables):
    res = tables[0].set_index(['rule', 'model', 'subset'])
    model = 'claude-2.1'
    base = [r['output'] for r in raw(data_dir, 'gpt4_1106_preview', 'model_outputs.json')][:N]
    ref = [r['output'] for r in raw(data_dir, 'gpt-4o-2024-05-13', 'model_outputs.json')][:N]
    by_ins = {a['instruction']: a for a in raw(data_dir, model, f'{JUDGED[model]}/annotations.json')}
    first = [r['instruction'] for r in raw(data_dir, 'gpt4_1106_preview', 'model_outputs.json')][:N]
    mine = [by_ins[i]['output_2'] for i in first]
    pick = np.sign(example_quality('rouge_l', mine, ref) - example_quality('rouge_l', base, ref))
    judge = np.sign(np.array([by_ins[i]['preference'] for i in first]) - 1.5)
    keep = (pick != 0) & (judge != 0)
    row = res.loc[('rouge_l vs pseudo-ref', model, 'all')]
    assert row['agreement'] == pytest.approx((pick == judge)[keep].mean())
    assert row['ci_lo'] <= row['agreement'] <= row['ci_hi'] and 0 <= row['ci_lo'] and row['ci_hi'] <= 1


def test_label_tables_and_figure(tables):
    res, labels, md, out = tables
    assert set(res['rule']) == {'rouge_l vs pseudo-ref', 'longer answer wins', 'baseline always wins'}
    alp = labels[labels['table'] == 'alpacaeval'].set_index('labeller')
    assert ((alp['precision'] >= 0) & (alp['precision'] <= 1)).all() and (alp['answers'] == 5 * N).all()
    proxy = alp.loc['suite proxy: ROUGE-L vs baseline < 0.5']
    assert proxy['flagged'] <= 5 * N and proxy['noise among flagged'] == pytest.approx(1 - proxy['precision'])
    ent = labels[labels['table'] == 'enterprise'].set_index(['task', 'tier'])
    assert ent.loc[('fin-sum', 'T1'), 'threshold'] == 0.30 and ent.loc[('cs-response', 'T1'), 'threshold'] == 0.65
    assert ent['failure rate'].between(0, 1).all()
    assert '## Headline' in md and 'pseudo-reference `gpt-4o-2024-05-13`' in md
    assert (out / 'figures' / 'judge_agreement.png').stat().st_size > 10_000
