"""Routing fairness (nbs/41_fairness.ipynb, nbs/98_fairness.ipynb) on real data (ROUTENLP_DATA_DIR), real code.

1. The experiment notebook under papermill, as `make reproduce` runs it but with tiny parameters (one seed, the
   AlpacaEval source segmenter, n-gram confidence features, few bootstrap draws) and `out_root` in a temporary folder:
   it must write the Markdown table, the CSVs and the figure, with the CSV's numbers in the Markdown.
2. The Mondrian thresholds on real outcome tables hold CRC's guarantee within every segment on its calibration rows,
   each one equal to `crc_threshold` recomputed on that segment's rows alone.
3. Every MMLU subject of the recorded rows is in one of the four MMLU groups."""
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from routenlp.conformal import crc_threshold
from routenlp.fairness import MIN_SEGMENT_ROWS, MondrianCalibrator, attach_segments, segment_labels
from routenlp.suites import load_queries
from routenlp.systems import prepare_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def hashing(config):
    "The project config with the fast n-gram confidence features."
    return dataclasses.replace(config, cascade=dataclasses.replace(config.cascade, confidence_features='hashing'))


def test_fairness_smoke(data_dir, tmp_path):
    pm.execute_notebook(str(ROOT / 'nbs' / '98_fairness.ipynb'), str(tmp_path / 'run.ipynb'),
                        parameters={'out_root': str(tmp_path), 'seeds': [0], 'segmenters': ['alpacaeval-source'],
                                    'n_boot': 50, 'confidence_features': 'hashing'},
                        cwd=str(ROOT / 'nbs'), kernel_name='python3', progress_bar=False)
    tables = tmp_path / 'papers' / 'tables'
    md, csv = (tables / 'fairness.md').read_text(), pd.read_csv(tables / 'fairness.csv')
    cost = pd.read_csv(tables / 'fairness.cost.csv')
    assert set(csv['segment']) == {'helpful_base', 'koala', 'oasst', 'selfinstruct', 'vicuna'}
    assert sorted(set(csv['tier'])) == ['T1', 'T2', 'T3'] and len(csv) == 15            # T4 answers: not thresholded
    assert (csv['mondrian thresholds'] == 'segment').all() and (csv['n_cal'] >= MIN_SEGMENT_ROWS).all()
    assert np.allclose(csv['bound'], 0.05 + 1 / (csv['n_cal'] + 1))
    for c in ('marginal risk', 'mondrian risk'):
        assert csv[c].between(0, 1).all() and (csv[f'{c}_lo'] <= csv[c]).all() and (csv[c] <= csv[f'{c}_hi']).all()
        for v in csv[c]: assert f'{v:.4f}' in md
    assert (csv['shows it'] == ((csv['marginal risk'] > csv['bound']) & (csv['mondrian risk'] <= csv['bound']))).all()
    assert ('**Yes:' in md) == bool(csv['shows it'].any()) and ('No segment in our data shows it' in md) != csv['shows it'].any()
    row = cost.iloc[0]
    assert row['segmenter'] == 'alpacaeval-source' and row['segments (after merging)'] == 5
    assert row['cost ratio'] == pytest.approx(row['mondrian cost/query'] / row['marginal cost/query'])
    assert 0 < row['marginal escalated'] <= 1 and 0 < row['mondrian escalated'] <= 1
    assert 'seeds [0]' in md and 'at commit' in md
    segs = pd.read_csv(tables / 'fairness.segments.csv')
    assert set(segs['calibrator']) == {'marginal', 'mondrian'} and (segs.loc[segs['segment'] == 'all', 'n'] == segs.loc[segs['segment'] != 'all'].groupby('calibrator')['n'].sum().iloc[0]).all()
    assert (tmp_path / 'figures' / 'fairness.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('suite, task, segmenter', [('enterprise', 'cs-intent', 'banking77-family'),
                                                    ('alpacaeval', 'alpaca_eval', 'alpacaeval-source')])
def test_mondrian_holds_each_segment(hashing, suite, task, segmenter):
    run = prepare_run(suite, task, 0, hashing)
    out, merged = attach_segments(run.outcomes, run.queries, segmenter)
    assert (merged.loc[merged['segment'] != 'other', 'n_calibration'] >= MIN_SEGMENT_ROWS).all()
    cal = MondrianCalibrator(alpha=0.05, method='crc', config=hashing).fit(out, run.tiers)
    rep = cal.report()
    thresholded = rep[rep['tier'] != run.tiers[-1]]
    assert len(thresholded) == (len(run.tiers) - 1) * out['segment'].nunique() and (thresholded['status'] == 'ok').all()
    rows = out[out['split'] == 'calibration']
    for r in thresholded.itertuples():
        g = rows[(rows['tier'] == r.tier) & (rows['segment'] == r.segment)]
        c, bad = g['confidence'].to_numpy(float), ~g['acceptable'].to_numpy(bool)
        risk = np.mean((c >= r.tau) & bad)
        assert len(g) == r.n and risk == pytest.approx(r.risk)
        assert (len(g) * risk + 1) / (len(g) + 1) <= 0.05 + 1e-12, (r.tier, r.segment)   # CRC, at the segment's own n
        assert r.tau == crc_threshold(c, bad, 0.05).tau                                  # the same code, one segment
    assert not cal.fallbacks


def test_mmlu_subject_groups_cover_the_data(config):
    q = load_queries('routellm', 'mmlu', config=config)
    groups = segment_labels('mmlu-subject-group', q)
    assert groups.value_counts().to_dict().keys() == {'STEM', 'humanities', 'social sciences', 'other (business, health, misc.)'}
    assert len(q) == 14042 and groups.value_counts().min() > 2000
