"""Shared fixtures. Tests here read the real datasets from ROUTENLP_DATA_DIR (the Makefile and .ci/run point it at
../shared/data); a missing data dir fails the test with the loader's own message instead of skipping it."""
import dataclasses
from pathlib import Path

import pytest

from routenlp.core import DataDirError, load_config, resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session', autouse=True)
def isolated_cache(tmp_path_factory):
    "Every test session builds recorded outcome tables into its own cache, never the developer's .cache/."
    mp = pytest.MonkeyPatch()
    mp.setenv('ROUTENLP_CACHE_DIR', str(tmp_path_factory.mktemp('routenlp-cache')))
    yield
    mp.undo()


@pytest.fixture(scope='session')
def data_dir():
    "The real data dir; fails (not skips) with a message naming ROUTENLP_DATA_DIR when it is missing."
    try:
        return resolve_data_dir()
    except DataDirError as e:
        pytest.fail(str(e))


@pytest.fixture(scope='session')
def config(data_dir):
    "The project config (configs/default.yaml) pointed at the real data dir."
    return dataclasses.replace(load_config(ROOT / 'configs' / 'default.yaml'), data_dir=str(data_dir))
