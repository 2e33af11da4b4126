"""`routenlp collect` end to end with the real tiers (no stand-ins): T1 (the MiniLM legal-risk head on ONNX Runtime,
trained on first use into the session's cache) and T2 (SmolLM2-135M behind a llama.cpp server that the portfolio
starts and stops), on the first queries of legal-risk, written into a temporary folder and then resumed."""
import os, shutil, subprocess, sys, time
from pathlib import Path

import pytest

from routenlp.core import file_sha256
from routenlp.outcomes import manifest_path, read_outcomes

ROOT = Path(__file__).resolve().parents[1]
CLI = shutil.which('routenlp', path=str(Path(sys.executable).parent)) or 'routenlp'


def _collect(out_dir, limit):
    cmd = [CLI, 'collect', '--tiers', 'T1,T2', '--tasks', 'legal-risk', '--limit', str(limit), '--out-dir', str(out_dir),
           '--quiet', '--chunk-size', '2']
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=1200)


@pytest.fixture(scope='module')
def collected(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('collect')
    first = _collect(out, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    table, manifest = read_outcomes(out / 'legal-risk.parquet')
    return out, first, table, manifest


def test_first_run_writes_real_answers(collected):
    out, run, table, manifest = collected
    assert 'legal-risk    T1: 0 before, +2' in run.stdout and 'legal-risk    T2: 0 before, +2' in run.stdout, run.stdout
    assert table.groupby('tier').size().to_dict() == {'T1': 2, 'T2': 2}
    assert (table['source'] == 'live').all() and (table['latency_source'] == 'measured').all()
    assert (table['latency_ms'] > 0).all() and (table['cost_usd'] > 0).all()
    t1 = table[table['tier'] == 'T1']
    assert t1['output'].isin(['fair', 'potentially unfair', 'clearly unfair']).all()   # a head only says its labels
    assert t1['confidence'].between(1 / 3, 1).all()                                      # softmax max of 3 classes
    assert (table['quality'] == table['acceptable'].astype(float)).all()                 # accuracy task: 0 or 1


def test_manifest_names_both_models(collected):
    out, _, table, manifest = collected
    tiers = manifest['tiers']
    assert tiers['T1']['model'] == 'minilm-l6-heads' and tiers['T2']['model'] == 'smollm2-135m-instruct'
    assert len(tiers['T1']['model_sha256']) == 64 and len(tiers['T2']['model_sha256']) == 64
    assert tiers['T1']['price_per_1k'] == 0.01 and tiers['T2']['price_per_1k'] == 0.10
    assert manifest['expected_queries_per_tier'] == 900 and manifest['complete'] is False
    assert manifest['provenance']['git_sha'] != 'unknown'


def test_resume_asks_only_new_queries_and_keeps_model_facts(collected):
    out, _, table, manifest = collected
    again = _collect(out, 3)
    assert again.returncode == 0, again.stderr[-2000:]
    assert 'T1: 2 before, +1' in again.stdout and 'T2: 2 before, +1' in again.stdout, again.stdout
    table2, manifest2 = read_outcomes(out / 'legal-risk.parquet')
    assert len(table2) == 6 and table2.iloc[:4].equals(table)                # the first rows untouched
    for tier in ('T1', 'T2'):
        assert manifest2['tiers'][tier]['model_sha256'] == manifest['tiers'][tier]['model_sha256']


def test_unknown_tier_fails_before_starting_anything(data_dir, tmp_path):
    cmd = [CLI, 'collect', '--tiers', 'T9', '--tasks', 'legal-risk', '--limit', '1', '--out-dir', str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert run.returncode == 2 and "unknown tier 'T9'" in run.stderr and not list(tmp_path.iterdir())
