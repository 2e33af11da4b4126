"""Shared fixtures. Tests here read the real datasets from ROUTENLP_DATA_DIR (the Makefile and .ci/run point it at
../shared/data); a missing data dir fails the test with the loader's own message instead of skipping it."""
import pytest

from routenlp.core import DataDirError, resolve_data_dir


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
