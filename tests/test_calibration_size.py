"""Smoke run of the calibration-size experiment (nbs/96_calibration_size.ipynb) under papermill, as `make reproduce`
runs it but with tiny parameters (one seed, routellm/gsm8k, a few draws, n-gram confidence features) and `out_root` in
a temporary folder. It must write its Markdown table and the CSVs beside it: per-cell rows for gsm8k's thresholded
tier, a — for n = 1000 (its pool holds 902 queries), the CSV's numbers shown in the Markdown, and the figure.
Real data (ROUTENLP_DATA_DIR), real code."""
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_calibration_size_smoke(data_dir, tmp_path):
    pm.execute_notebook(str(ROOT / 'nbs' / '96_calibration_size.ipynb'), str(tmp_path / 'run.ipynb'),
                        parameters={'out_root': str(tmp_path), 'seeds': [0], 'pairs_only': ['routellm/gsm8k'],
                                    'sizes': [100, 500, 1000], 'draws': 20, 'include_enterprise': False,
                                    'confidence_features': 'hashing'},
                        cwd=str(ROOT / 'nbs'), kernel_name='python3', progress_bar=False)
    tables = tmp_path / 'papers' / 'tables'
    md, csv = (tables / 'calibration_size.md').read_text(), pd.read_csv(tables / 'calibration_size.csv')
    head = pd.read_csv(tables / 'calibration_size.headline.csv')
    assert csv[['suite', 'task', 'tier']].values.tolist() == [['routellm', 'gsm8k', 'T1']]
    row = csv.iloc[0]
    assert 902 >= row['pool'] > 500                                   # non-test pool: train + calibration
    assert row['n=100 draws'] == row['n=500 draws'] == 20 and row['n=1000 draws'] == 0
    assert pd.isna(row['n=1000 risk mean']) and head['cells'].tolist() == [1, 1, 0]
    for n in (100, 500):
        assert 0 <= row[f'n={n} violation rate'] <= 1 and 0 <= row[f'n={n} risk mean'] <= 0.2
        assert f"{row[f'n={n} risk mean']:.4f}" in md and f"{row[f'n={n} violation rate']:.1%}" in md
    assert row['n=500 risk sd'] < row['n=100 risk sd']                # a larger calibration set varies less
    assert row['test'] > 300 and row['test SE'] == pytest.approx((0.05 * 0.95 / row['test']) ** 0.5)
    assert 0 <= row['whole-pool risk'] <= 0.2 and f"{row['whole-pool risk']:.4f}" in md
    assert 'seeds [0]' in md and 'at commit' in md and '| —' in md
    assert (tmp_path / 'figures' / 'calibration_size.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
