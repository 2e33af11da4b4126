"""The documentation site (issue #13, deliverable 1): built with `mkdocs build --strict` (tools/build_docs.py), then
opened in headless Chromium (the distribution's `chromium` package): the index, a notebook page, an API page and an
experiment's results page must render with their real content; a screenshot of each is saved under
tests/screenshots/ (git-ignored). `make test` builds the site just before pytest; this test reuses that build when
its inputs hash matches the working tree (site/.build.json) and rebuilds otherwise."""
import html, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs, docs_hooks  # noqa: E402

SHOTS = ROOT / 'tests' / 'screenshots'
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


@pytest.fixture(scope='module')
def browser():
    "The Chromium executable; skips (before any build) when there is none."
    found = os.environ.get('CHROMIUM') or next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if not found:
        pytest.skip(f"no headless Chromium found (looked for {', '.join(BROWSERS)} on PATH and $CHROMIUM); "
                    "install the distribution's `chromium` package (.ci/run does, as root)")
    return found


@pytest.fixture(scope='module')
def site():
    site = ROOT / 'site'
    if not build_docs.is_current(site):
        build_docs.build(site)
    return site


def _chromium(browser, *args, url):
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                               f'--user-data-dir={profile}', '--window-size=1280,1600', *args, url],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f'chromium failed on {url}: {proc.stderr[-2000:]}'
    return proc.stdout


def _text(dom: str) -> str:
    "The visible text of a DOM dump: tags, scripts and styles removed, entities decoded, whitespace collapsed."
    dom = re.sub(r'<(script|style)\b.*?</\1>', ' ', dom, flags=re.S | re.I)
    return re.sub(r'\s+', ' ', html.unescape(re.sub(r'<[^>]+>', ' ', dom)))


def _render(browser, site, page, name):
    "DOM text of `page` (a path below site/) after Chromium ran its scripts, and a screenshot in tests/screenshots/."
    url = (site / page).as_uri()
    dom = _chromium(browser, '--dump-dom', url=url)
    SHOTS.mkdir(exist_ok=True)
    shot = SHOTS / f'{name}.png'
    shot.unlink(missing_ok=True)
    _chromium(browser, f'--screenshot={shot}', url=url)
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1280) and pixels[..., :3].std() > 0.05, f'{shot}: blank screenshot'
    return dom, _text(dom)


def test_site_pages_render_in_chromium(browser, site):
    dom, text = _render(browser, site, 'index.html', 'index')
    assert 'RouteNLP' in text and 'Quick start' in text and 'conformal cascade' in text   # README is Home
    for section in ('Notebooks', 'Experiments', 'Results', 'API reference', 'Compute resources'):
        assert section in text, f'nav section {section!r} missing from the index'
    assert 'href="api/routenlp.conformal/"' in dom and 'href="nbs/18_conformal/"' in dom

    dom, text = _render(browser, site, 'nbs/18_conformal/index.html', 'notebook_18_conformal')
    assert 'jp-Cell' in dom and 'jp-CodeCell' in dom, 'the notebook was not rendered as Jupyter cells'
    assert '#| default_exp conformal' in text and 'class ConformalCalibrator' in text   # code cells, not just prose
    title = docs_hooks.notebook_title(ROOT / 'nbs' / '18_conformal.ipynb')
    assert title.startswith('18 conformal') and title in text

    dom, text = _render(browser, site, 'api/routenlp.conformal/index.html', 'api_conformal')
    assert 'ConformalCalibrator' in text and "Conformal thresholds per (tier, task) from an outcome table's" in text
    assert 'doc-class' in dom and 'doc-function' in dom, 'mkdocstrings rendered no class or function'

    dom, text = _render(browser, site, 'results/92_coverage/index.html', 'results_92_coverage')
    assert 'papers/tables/coverage.md' in text and re.search(r'<img[^>]+src="\.\./\.\./figures/coverage\.png"', dom)
    assert (site / 'figures' / 'coverage.png').stat().st_size == (ROOT / 'figures' / 'coverage.png').stat().st_size


def test_nav_lists_every_notebook_and_module(site):
    "A notebook or module added to the repository appears in the nav and as a built page, without editing mkdocs.yml."
    nbs = sorted(p.stem for p in (ROOT / 'nbs').glob('*.ipynb'))
    built = sorted(['index'] * (site / 'nbs' / 'index.html').exists() + [p.parent.name for p in (site / 'nbs').glob('*/index.html')])
    assert built == nbs, f'notebooks without a page: {sorted(set(nbs) - set(built))}'
    mods = docs_hooks.modules()
    assert 'routenlp.conformal' in mods and 'routenlp.serving.app' in mods and not any('_modidx' in m for m in mods)
    assert all((site / 'api' / m / 'index.html').exists() for m in mods)
    nav = docs_hooks.nav()
    sections = [next(iter(entry)) for entry in nav]
    assert sections[:2] == ['Home', 'Notebooks']
    components = [next(iter(e.values())) for e in nav[1]['Notebooks']][1:]
    assert components == sorted(components) and all(int(Path(c).name[:2]) < 90 for c in components)
