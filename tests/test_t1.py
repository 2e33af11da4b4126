"""T1 on real data (ROUTENLP_DATA_DIR): a small cs-intent head trained for one epoch, exported to ONNX (fp32 + int8),
served by LocalModelTier. Sizes are kept small so the file runs in about a minute on 2 CPU cores; the full heads are
built by `nbs/13_t1_onnx.ipynb` (slow cells) and `benchmarks/t1_bench.py`. Labels, counts and numbers only in assertions."""
import dataclasses, re, time
from pathlib import Path

import numpy as np
import pytest

from routenlp.core import load_config
from routenlp.data import load_benchmark
from routenlp.t1_onnx import (LocalModelTier, T1HeadError, build_head, ensure_heads, head_complete, head_dir, load_head,
                              read_manifest)
from routenlp.tiers import TierRequest

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 200, 20


@pytest.fixture(scope='module')
def config(data_dir, tmp_path_factory):
    "The project config on the real data, with a cache of its own (the session fixture already isolates it)."
    return dataclasses.replace(load_config(ROOT / 'configs' / 'default.yaml'), data_dir=str(data_dir),
                               cache_dir=str(tmp_path_factory.mktemp('t1-cache')))


@pytest.fixture(scope='module')
def head(config):
    "A cs-intent head: ~200 train queries (160 fit + 40 validation), one epoch, exported fp32 + int8."
    folder = head_dir(config, 'cs-intent', seed=0, max_train=N_TRAIN)
    build_head('cs-intent', config, seed=0, max_train=N_TRAIN, max_epochs=1, evaluate=False, folder=folder)
    return folder


@pytest.fixture(scope='module')
def test_queries(config):
    return load_benchmark('cs-intent', 'test', 0, config).queries.iloc[:N_TEST]


def test_manifest_and_parity(head):
    m = read_manifest(head)
    assert (m['task'], m['seed'], m['max_train'], m['epochs']) == ('cs-intent', 0, N_TRAIN, 1)
    assert m['n_train'] + m['n_val'] == N_TRAIN and m['n_val'] == 40
    assert set(m['files']) == {'model.onnx', 'model.int8.onnx', 'head.json'}
    assert m['parity']['fp32_max_abs_diff'] < 1e-4, m['parity']
    assert np.isfinite(m['parity']['int8_max_abs_diff']), m['parity']
    assert m['train_seconds'] > 0 and m['provenance']['config_hash']
    assert head_complete(head)


def test_ensure_heads_reuses_a_complete_head(config, head):
    before = (head / 'model.onnx').stat().st_mtime_ns
    t0 = time.perf_counter()
    folders = ensure_heads(config, ['cs-intent'], seed=0, max_train=N_TRAIN)
    assert folders == {'cs-intent': head} and time.perf_counter() - t0 < 10
    assert (head / 'model.onnx').stat().st_mtime_ns == before


@pytest.mark.parametrize('quantize', [True, False])
def test_tier_answers_and_beats_majority(config, head, test_queries, quantize):
    train = load_benchmark('cs-intent', 'heldout', 0, config)   # what the heads train on
    labels = set(train.spec.labels)
    majority = train.queries.reference.value_counts().index[0]
    tier = LocalModelTier('T1', 0.01, {'cs-intent': head}, threads=1, quantize=quantize)
    requests = [TierRequest('cs-intent', r.query_id, r.text, r.meta) for r in test_queries.itertuples()]
    out = tier.predict(requests)
    assert len(out) == N_TEST and not any(o.error for o in out), [o.error_reason for o in out if o.error]
    assert all(o.output in labels for o in out)
    assert all(0 <= o.confidence <= 1 and o.input_tokens > 2 and o.output_tokens == 0 for o in out)
    assert all(o.cost_usd == pytest.approx(o.input_tokens / 1000 * 0.01) for o in out)
    accuracy = np.mean([o.output == ref for o, ref in zip(out, test_queries.reference)])
    baseline = np.mean(test_queries.reference == majority)
    assert accuracy > baseline + 0.2, (accuracy, baseline)


def test_batched_equals_one_by_one(head, test_queries):
    tier = LocalModelTier('T1', 0.01, {'cs-intent': head}, quantize=False)
    requests = [TierRequest('cs-intent', r.query_id, r.text) for r in test_queries.iloc[:6].itertuples()]
    batched = tier.predict(requests)
    single = [tier.predict([r])[0] for r in requests]
    assert [b.output for b in batched] == [s.output for s in single]
    assert np.allclose([b.confidence for b in batched], [s.confidence for s in single], atol=1e-5)


def test_missing_or_corrupt_head_names_the_file(head, tmp_path):
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(head, broken)
    with open(broken / 'model.int8.onnx', 'r+b') as f:  # fault injection: overwrite bytes inside the model
        f.seek(1000); f.write(b'\xff' * 256)
    with pytest.raises(T1HeadError, match=re.escape(str(broken / 'model.int8.onnx'))):
        LocalModelTier('T1', 0.01, {'cs-intent': broken})
    (broken / 'model.onnx').unlink()
    with pytest.raises(T1HeadError, match=re.escape(str(broken / 'model.onnx'))):
        load_head(broken, quantize=False)
    with pytest.raises(T1HeadError, match=re.escape(str(tmp_path / 'nowhere' / 'manifest.json'))):
        load_head(tmp_path / 'nowhere')
    assert not head_complete(broken)
