"""Routing fairness (nbs/41_fairness.ipynb, nbs/98_fairness.ipynb) on real data (ROUTENLP_DATA_DIR), real code.

1. The experiment notebook under papermill, as `make reproduce` runs it but with tiny parameters (one seed, the
   BANKING77 intent-family segmenter on the committed enterprise cs-intent table, n-gram confidence features, few
   bootstrap draws) and `out_root` in a temporary folder:
   it must write the Markdown table, the CSVs and the figure, with the CSV's numbers in the Markdown.
2. The Mondrian thresholds on real outcome tables hold CRC's guarantee within every segment on its calibration rows,
   each one equal to `crc_threshold` recomputed on that segment's rows alone.
(That every recorded MMLU subject is in an MMLU group is checked by the experiment's own run: the segmenter raises on an
unknown subject; loading the 14 042 MMLU queries into a fresh cache would take ~15 s here.)"""
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from routenlp.conformal import crc_threshold
from routenlp.fairness import MIN_SEGMENT_ROWS, MondrianCalibrator, attach_segments
from routenlp.systems import prepare_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def hashing(config):
    "The project config with the fast n-gram confidence features."
    return dataclasses.replace(config, cascade=dataclasses.replace(config.cascade, confidence_features='hashing'))


def test_fairness_smoke(data_dir, tmp_path):
    pm.execute_notebook(str(ROOT / 'nbs' / '98_fairness.ipynb'), str(tmp_path / 'run.ipynb'),
                        parameters={'out_root': str(tmp_path), 'seeds': [0], 'segmenters': ['banking77-family'],
                                    'n_boot': 50, 'confidence_features': 'hashing'},
                        cwd=str(ROOT / 'nbs'), kernel_name='python3', progress_bar=False)
    tables = tmp_path / 'papers' / 'tables'
    md, csv = (tables / 'fairness.md').read_text(), pd.read_csv(tables / 'fairness.csv')
    cost, merges = pd.read_csv(tables / 'fairness.cost.csv'), pd.read_csv(tables / 'fairness.merges.csv')
    assert set(merges['label']) == {'card', 'cash', 'exchange', 'identity', 'other', 'top_up', 'transfer'}
    assert set(csv['segment']) == set(merges['segment']) and 'card' in set(csv['segment'])
    assert sorted(set(csv['tier'])) == ['T1', 'T2'] and len(csv) == 2 * merges['segment'].nunique()   # T3 answers
    assert (csv['mondrian thresholds'] == 'segment').all() and (csv['n_cal'] >= MIN_SEGMENT_ROWS).all()
    assert (csv['seeds'] == 1).all() and np.allclose(csv['bound'], 0.05 + 1 / (csv['n_cal'] + 1))
    for c in ('marginal risk', 'mondrian risk'):
        assert csv[c].between(0, 1).all() and (csv[f'{c}_lo'] <= csv[c]).all() and (csv[c] <= csv[f'{c}_hi']).all()
        for v in csv[c]: assert f'{v:.4f}' in md
    assert (csv['shows it'] == ((csv['marginal risk'] > csv['bound']) & (csv['mondrian risk'] <= csv['bound']))).all()
    assert ('**Yes:' in md) == csv['shows it'].any() and ('No segment in our data shows it' in md) != csv['shows it'].any()
    row = cost.iloc[0]
    assert row['segmenter'] == 'banking77-family' and row['segments (after merging)'] == merges['segment'].nunique()
    assert row['cost ratio'] == pytest.approx(row['mondrian cost/query'] / row['marginal cost/query'])
    assert 0 < row['marginal escalated'] <= 1 and 0 < row['mondrian escalated'] <= 1
    assert 'Seeds [0].' in md and 'at commit' in md and 'an offline audit, not a serving key' in md
    segs = pd.read_csv(tables / 'fairness.segments.csv')
    assert set(segs['calibrator']) == {'marginal', 'mondrian'}
    assert (segs.loc[segs['segment'] == 'all', 'n'] == 300).all()                      # cs-intent's test split
    assert (segs[segs['segment'] != 'all'].groupby('calibrator')['n'].sum() == 300).all()
    assert (tmp_path / 'figures' / 'fairness.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('suite, task, segmenter', [('enterprise', 'cs-intent', 'banking77-family'),
                                                    ('enterprise', 'legal-risk', 'claudette-tagged')])
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
