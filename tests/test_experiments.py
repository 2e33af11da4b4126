"""Smoke runs of the experiment notebooks 92-95 and 97 under papermill, as `make reproduce` runs them but with tiny parameters
(one seed, one small task, a few sweep points or re-splits, n-gram confidence features) and `out_root` in a temporary
folder, so the committed tables are untouched. Each must write its Markdown table(s) and the CSV(s) beside them with the
expected rows; the CSV holds the Markdown table's rows at full precision. Real data (ROUTENLP_DATA_DIR), real code."""
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(notebook: str, out: Path, **params) -> Path:
    pm.execute_notebook(str(ROOT / 'nbs' / notebook), str(out / 'run.ipynb'), parameters={'out_root': str(out), **params},
                        cwd=str(ROOT / 'nbs'), kernel_name='python3', progress_bar=False)
    return out / 'papers' / 'tables'


def md_rows(text: str, *header: str) -> list[list[str]]:
    "Body rows of the first Markdown table whose header row starts with the column names `header`."
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines)
             if [c.strip() for c in l.strip('|').split('|')][:len(header)] == list(header))
    rows = []
    for l in lines[i + 2:]:
        if not l.startswith('|'): break
        rows.append([c.strip() for c in l.strip('|').split('|')])
    return rows


def test_frontier_smoke(data_dir, tmp_path):
    tables = run('94_frontier.ipynb', tmp_path, seeds=[0], suites=['routellm'], tasks=['mt_bench'], alphas=[0.05, 0.2],
                 lams=[0.0, 1.0], include_enterprise=False, confidence_features='hashing')
    md, csv = (tables / 'frontier.md').read_text(), pd.read_csv(tables / 'frontier.csv')
    assert 'seeds [0]' in md and 'anchored at Always-weak' in md and 'at commit' in md
    cascade = md_rows(md, 'suite')
    assert [r[:2] for r in cascade] == [['routellm', 'mt_bench']] == csv[['suite', 'task']].values.tolist()
    assert csv['n_seeds'].tolist() == [1] and csv['n_test'].tolist() == [int(cascade[0][2])]
    for col in ('cascade APGR', 'router APGR', 'router+cascade APGR'):
        v = csv[f'{col} mean'].iloc[0]
        assert 0 <= v <= 1.5, (col, v)
        assert f'{v:.3f}' in md, (col, v)                      # the Markdown shows the CSV's number, rounded
    assert (tmp_path / 'figures' / 'frontier.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_coverage_smoke(data_dir, tmp_path):
    tables = run('92_coverage.ipynb', tmp_path, seeds=[0], pairs_only=['routellm/mt_bench'], resplits=5,
                 include_enterprise=False, confidence_features='hashing')
    md, csv = (tables / 'coverage.md').read_text(), pd.read_csv(tables / 'coverage.csv')
    cells = md_rows(md, 'suite')
    assert [r[:4] for r in cells] == [['routellm', 'mt_bench', t, a] for t in ('T1', 'T2') for a in ('0.05', '0.10')]
    assert csv[['suite', 'task', 'tier']].values.tolist() == [r[:3] for r in cells]
    assert csv['alpha'].tolist() == [0.05, 0.1, 0.05, 0.1] and csv['last_tier'].tolist() == [False, False, True, True]
    t1 = csv.iloc[0]
    assert f"{t1['CRC joint risk mean']:.3f}" == cells[0][5].split(' ')[0]
    assert pd.read_csv(tables / 'coverage.headline.csv')['suite'].tolist() == ['routellm']
    assert len(pd.read_csv(tables / 'coverage.ltt.csv')) == 2


def test_shift_smoke(data_dir, tmp_path):
    tables = run('93_shift.ipynb', tmp_path, seeds=[0], scenarios=['model swap'], gammas=[0.02], audit_rates=[1.0],
                 confidence_features='hashing')
    md, csv = (tables / 'shift.md').read_text(), pd.read_csv(tables / 'shift.csv')
    rows = md_rows(md, 'scenario', 'method')
    assert [r[1] for r in rows] == ['static CRC', 'ACI'] == csv['method'].tolist()
    assert csv['gamma'].iloc[1] == 0.02 and csv['audit_rate'].iloc[1] == 1.0
    assert csv['violation phase 2 mean'].iloc[0] > 0.05 + 0.03          # the silent model swap breaks static CRC
    assert abs(csv['violation phase 2 mean'].iloc[1] - 0.05) <= 0.01    # ACI pulls it back
    assert f"{csv['violation phase 2 mean'].iloc[0]:.3f}" in rows[0][5]
    assert pd.read_csv(tables / 'shift.sizes.csv')['phase 2 queries'].iloc[0] > 900


def test_numbers_do_not_depend_on_the_cache_state(data_dir, tmp_path):
    """Reproducibility: the frontier's cascade and router curves for one task and seed (MiniLM confidence, the
    difficulty-aware router) come out bit-identical from a cold cache and from a cache whose embedding store was
    filled beforehand in another order and composition (other texts first, in other batches) — embeddings are a
    function of (encoder, text) alone, and training runs on a fixed thread count (the two runs start from different
    torch thread settings)."""
    import torch
    import dataclasses
    from routenlp.confidence import minilm_embeddings
    from routenlp.core import load_config
    from routenlp.suites import load_queries
    from routenlp.systems import fit_suite_routers, prepare_run
    from routenlp.evaluation import sweep_system
    base = dataclasses.replace(load_config(ROOT / 'configs' / 'default.yaml'), data_dir=str(data_dir))
    curves = []
    threads = torch.get_num_threads()
    for name, prefill, n_threads in (('cold', False, 2), ('prefilled', True, 1)):
        torch.set_num_threads(n_threads)
        config = dataclasses.replace(base, cache_dir=str(tmp_path / name))
        if prefill:   # a different history: other texts first, the task's queries reversed and in chunks of 7
            texts = load_queries('routellm', 'mt_bench', config=config)['text'].tolist()[::-1]
            minilm_embeddings(['an unrelated query', 'another one, longer than the first'], config)
            for s in range(0, len(texts), 7): minilm_embeddings(texts[s:s + 7], config, chunk=3)
        run = prepare_run('routellm', 'mt_bench', 0, config)
        fit_suite_routers([run])
        curves.append({n: sweep_system(n, run, **kw) for n, kw in
                       (('cascade', {}), ('router', {}), ('router+cascade', {}))})
    torch.set_num_threads(threads)
    for n in curves[0]:
        pd.testing.assert_frame_equal(curves[0][n], curves[1][n], check_exact=True)


def test_main_results_smoke(data_dir, tmp_path):
    labels = ['random mixing', 'kNN k=10', 'RouteLLM mf', 'FrugalGPT', 'AutoMix-style', 'RouteNLP cascade',
              'RouteNLP joint cascade', 'oracle']
    tables = run('95_main_results.ipynb', tmp_path, seeds=[0], suites=['routellm'], tasks=['mt_bench'], n_boot=200,
                 systems=labels, include_enterprise=False, confidence_features='hashing')
    md, csv = (tables / 'main_results.md').read_text(), pd.read_csv(tables / 'main_results.csv')
    assert 'seeds [0]' in md and 'Zero router' in md and 'at commit' in md
    head = md_rows(md, 'suite', 'task', 'system')
    assert {r[2] for r in head} == set(labels) | {'Always-Tk', 'Zero router (hull)'} == set(csv['system'])
    rows = csv.set_index('system')
    # the oracle is above the hull at its one point (CI wholly above 0); Always-Tk points never are
    assert rows.loc['oracle', 'n_above_hull mean'] == 1 and rows.loc['Always-Tk', 'n_above_hull mean'] == 0
    zero = rows.loc['Zero router (hull)']
    assert zero['quality_ratio mean'] == pytest.approx(0.97) and 0 < zero['cost_ratio mean'] <= 1
    reached = csv[csv['seeds_reaching'] > 0]
    assert (reached['quality_ratio mean'] >= 0.97 - 1e-9).all()     # the headline point keeps the level
    pts = pd.read_csv(tables / 'main_results.points.csv')
    assert (pts['margin_lo'] <= pts['margin_hi']).all() and pts['margin'].notna().all()
    rl = pd.read_csv(tables / 'routellm_comparison.csv')
    assert 'RouteLLM published (mf, augmented)' in set(rl['system']) and (rl['task'] == 'mt_bench').all()
    assert set(pd.read_csv(tables / 'deviations.csv')['baseline']) == {'knn', 'mlp', 'routellm-mf', 'routellm-sw', 'hybrid-det',
                                                                      'hybrid-trans', 'frugalgpt', 'automix'}
    assert (tmp_path / 'figures' / 'main_pareto.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_joint_cascade_smoke(data_dir, tmp_path):
    tables = run('97_joint_cascade.ipynb', tmp_path, seeds=[0], pairs_only=['routerbench/mbpp'], alphas=[0.1], draws=30,
                 include_enterprise=False, confidence_features='hashing')
    md = (tables / 'joint_cascade.md').read_text()
    sig = pd.read_csv(tables / 'joint_cascade.signals.csv')
    assert sig['tier'].tolist() == ['T1', 'T2', 'T3', 'T4'] and sig['agreement_cheaper'].isna().tolist() == [True, False, False, False]
    assert sig[['own', 'agreement_all']].apply(lambda c: c.between(0, 1)).all().all()
    st = pd.read_csv(tables / 'joint_cascade.structure.csv').iloc[0]
    assert st['answer'] == 'T4' and st['path'].endswith('T4') and st['candidates'] == 27 * 2 - 8   # 8 paths accept nowhere
    risk = pd.read_csv(tables / 'joint_cascade.risk.csv').set_index('mode')
    assert risk.loc['per-tier (full path)', 'path'] == 'T1 accept > T2 accept > T3 accept > T4'
    assert risk.loc['joint (learned path)', 'path'] == st['path'] and (risk['draws'] == 30).all()
    assert risk['system_risk'].between(0, 1).all() and (risk['bound'] == 0.1 + 1 / (risk['n_cal'] + 1)).all()
    joint = risk.loc['joint (learned path)']   # CRC: mean risk <= alpha; 30 draws of one seed, so allow 3 standard errors
    assert joint['system_risk'] <= joint['bound_loss'] <= joint['bound'] + 3 * joint['system_risk_se']
    assert f"{risk.loc['joint (learned path)', 'system_risk']:.4f}" in md and 'seeds [0]' in md and 'at commit' in md
