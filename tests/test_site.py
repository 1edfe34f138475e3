"""The docs site (`manifold_nb.site`): built from the session's quick-profile notebooks (no second execution), read as
files, then opened in headless Chromium (Debian's `chromium` driven by Selenium through `/usr/bin/chromedriver`)."""
import functools, http.server, json, re, shutil, threading, time
from contextlib import contextmanager
from pathlib import Path

import pytest

from manifold_nb.harness import notebooks
from manifold_nb.site import build_site

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), Path("/usr/bin/chromedriver")
API_PAGES = ("api/manifold_nb.generators.html", "api/manifold_nb.utils.html")


def _demo_sweep(run_dir):
    "A small sweep in the run folder (as `manifold-nb sweep` leaves one): sweeps/demo/sweep.csv and a figure."
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    d = run_dir / "sweeps" / "demo"; d.mkdir(parents=True, exist_ok=True)
    (d / "sweep.csv").write_text("lr,seed,loss\n0.1,0,2.5\n0.01,0,1.25\n0.001,0,0.75\n")
    fig, ax = plt.subplots(figsize=(3, 2)); ax.semilogx([0.1, 0.01, 0.001], [2.5, 1.25, 0.75], "o-")
    fig.savefig(d / "loss.png"); plt.close(fig)


@pytest.fixture(scope="module")
def site(quick_run):
    "The site of the session's run folder (with a demo sweep): OUT/site/, built once per session (xdist workers share it)."
    from manifold_nb.cache import file_lock
    built = quick_run / ".runs" / "site.built"
    with file_lock(quick_run / ".runs" / "site.lock"):
        if not built.exists():
            if not (quick_run / "sweeps").exists(): _demo_sweep(quick_run)
            t0 = time.perf_counter()
            build_site(quick_run)
            print(f"site built from an existing run in {time.perf_counter() - t0:.1f} s")
            built.write_text("")
    return quick_run / "site"


def pages():
    "Landing page, every notebook page, two API pages (paths relative to the site)."
    return ["index.html", *(f"{p.stem}.html" for p in notebooks().values()), "sweeps.html", *API_PAGES]


def test_site_files(site):
    html = {p: (site / p).read_text() for p in pages()}
    assert "core/00_utils.html" in html["index.html"] and "api/index.html" in html["index.html"]   # Library, API in the nav
    for p, text in html.items():   # no CDN: every script and stylesheet is served from the site
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), p
    assert (site / "_static/mathjax/tex-mml-chtml.js").exists()
    utils = (site / "core/00_utils.html").read_text()
    assert "default_exp" not in utils and "from fastcore.test import" not in utils   # `#| hide` cells are gone
    assert "Show test" in utils and "#| export" not in utils                          # tests collapsed, directives stripped
    sweeps = html["sweeps.html"]   # the sweep's table and figure
    assert sweeps.count("<tr") == 4 and "<td><p>0.001</p></td>" in sweeps and re.search(r'<img[^>]+loss\.png', sweeps)
    api = html["api/manifold_nb.utils.html"]   # docments as parameter descriptions, a link to the defining notebook
    assert "parameter name, quoted in the error" in api and 'href="../core/00_utils.html"' in api


@contextmanager
def serve(folder):
    "Serve `folder` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: yield f"http://127.0.0.1:{srv.server_port}/"
    finally: srv.shutdown(); srv.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not CHROMEDRIVER.exists():
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()


def _wait(driver, js, timeout=30):
    "Poll the JavaScript expression `js` until it is truthy; return its value (falsy after `timeout` s)."
    t0 = time.time()
    while not (v := driver.execute_script(f"return {js}")) and time.time() - t0 < timeout: time.sleep(0.2)
    return v


def page_problems(driver, url):
    "Open `url`; list what is wrong: images not loaded, maths not typeset, console errors, requests off the site."
    driver.get(url)
    _wait(driver, "document.readyState === 'complete'")
    out = []
    if driver.execute_script("return document.querySelectorAll('.math').length"):
        if _wait(driver, "window.MathJax && MathJax.startup && MathJax.startup.promise && true", timeout=20):
            driver.execute_async_script("const done = arguments[arguments.length - 1]; MathJax.startup.promise.then(() => done())")
        else: out.append(f"{url}: MathJax did not load")
    out += [f"{url}: image not loaded: {s}" for s in driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")]
    raw = driver.execute_script("return Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container')).length")
    if raw: out.append(f"{url}: {raw} maths elements not rendered by MathJax")
    if driver.execute_script("return document.querySelectorAll('mjx-merror').length"): out.append(f"{url}: TeX errors")
    out += [f"{url}: console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    out += [f"{url}: request off the site: {n}" for n in driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin))")]
    return out


def full_page_screenshot(driver, path):
    "Save a screenshot of the whole page (up to 4000 px high) to `path`."
    w, h = driver.get_window_size()["width"], driver.get_window_size()["height"]
    driver.set_window_size(w, min(4000, driver.execute_script("return document.documentElement.scrollHeight") + 140))
    driver.save_screenshot(str(path))
    driver.set_window_size(w, h)


def test_site_in_browser(site, browser, quick_run):
    from selenium.webdriver.common.by import By
    shots = quick_run / "screenshots"; shots.mkdir(exist_ok=True)
    with serve(site) as base:
        problems = []
        for p in pages():
            problems += page_problems(browser, base + p)
            stem = p.removesuffix(".html").split("_", 1)[-1]
            if (quick_run / stem / "metrics.json").exists():   # every figure the run saved is on the notebook's page
                saved = len(json.loads((quick_run / stem / "metrics.json").read_text()).get("figures", []))
                shown = browser.execute_script("return document.querySelectorAll('.cell_output img').length")
                assert shown >= saved, f"{p}: {shown} figures shown, {saved} saved"
            if p == "index.html":
                rows = browser.find_elements(By.CSS_SELECTOR, "table.key-metrics tbody tr")
                assert len(rows) == len(notebooks()), f"{len(rows)} rows in the metrics table"
                links = [r.find_element(By.TAG_NAME, "a").get_attribute("href") for r in rows]
                assert [l.rsplit("/", 1)[1] for l in links] == [f"{q.stem}.html" for q in notebooks().values()]
                assert browser.find_elements(By.CSS_SELECTOR, ".sidebar-tree a"), "no sidebar navigation"
                full_page_screenshot(browser, shots / "landing.png")
            if p == "01_generators.html":
                assert browser.find_elements(By.CSS_SELECTOR, "mjx-container"), "no maths on the generators page"
                browser.save_screenshot(str(shots / "generators.png"))
        assert not problems, "\n".join(problems)
        browser.get(base + "search.html?q=lie_generator")
        hrefs = _wait(browser, "Array.from(document.querySelectorAll('#search-results a')).map(a => a.href).filter(h => h.length)")
        assert any("api/manifold_nb.generators.html#manifold_nb.generators.lie_generator" in h for h in hrefs or []), hrefs
    print(f"screenshots: {shots}")


def test_browser_check_catches_a_missing_figure(site, browser, tmp_path):
    "The browser check can fail: with one figure file deleted from a copy of the site, it reports that image."
    copy = shutil.copytree(site, tmp_path / "site")
    img = re.search(r'<img[^>]+src="(_images/[^"]+\.png)"', (copy / "01_generators.html").read_text()).group(1)
    (copy / img).unlink()
    with serve(copy) as base:
        problems = page_problems(browser, base + "01_generators.html")
    assert any("image not loaded" in p and img in p for p in problems), problems
    assert any("console" in p for p in problems), problems   # the 404 is a console error too
