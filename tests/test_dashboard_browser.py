"""`unigrpo dashboard` in a real headless Chromium (Playwright driving Debian's chromium by path).

One server, started by the real CLI, serves a folder of run directories written by the run's own
writers; the browser checks what a user sees: charts, live updates, filters, the group view, the
denoising replay, escaping, token auth, path traversal and a corrupt partition."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dashboard_runs import XSS, make_run, write_step

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("UNIGRPO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--no-first-run", "--disable-dev-shm-usage"]


def start_dashboard(*args: str) -> tuple[subprocess.Popen, str, list[str]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "rl.cli", "dashboard", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("unigrpo dashboard: http://"):
            return proc, line.split()[2], lines
    proc.kill()
    raise AssertionError("dashboard did not start:\n" + "".join(lines))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(root / "fx", steps=4, xss=True)
    make_run(root / "live", steps=2)
    make_run(root / "img", steps=2, image=True)
    traced_run(root / "tok")
    traced_image_run(root / "tokimg")
    bad = make_run(root / "broken", steps=3)
    part = bad / "rollouts" / "step=2" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with (bad / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 4, "reward/mean": \n')
    return root


HOSTILE_TOKENS = (*XSS, "javascript:alert(4)")


def traced_run(run_dir: Path) -> Path:
    """A run whose tokens decode to hostile text (a word-level tokenizer.json in policy_init/) and whose group 0
    is traced by the real writers (trainer/token_trace.py, rl/token_traces.py) with stand-in log-probs; the
    learner scored the first 6 of 8 positions (as through_first_eos does when position 6 is EOS), so 6-7 are
    padding."""
    from tokenizers import Tokenizer, models

    from rl.store import RolloutStore

    make_run(run_dir, steps=2, xss=True)
    store = RolloutStore(run_dir)
    ids = sorted({i for s in (1, 2) for r in store.read_step(s) for i in r["response_ids"]})
    vocab = {f"{HOSTILE_TOKENS[k % len(HOSTILE_TOKENS)]}{i}": i for k, i in enumerate(ids)}
    (run_dir / "policy_init").mkdir()
    Tokenizer(models.WordLevel({**vocab, "[UNK]": max(ids) + 1}, unk_token="[UNK]")).save(
        str(run_dir / "policy_init" / "tokenizer.json"))
    trace_group0(run_dir, width=8, scored=6, seed=0, stale_steps=(1,))
    return run_dir


def traced_image_run(run_dir: Path) -> Path:
    """Text-to-image rollouts (4x4 image-token grids, a hostile caption on group 0 #0) whose group 0 is traced by
    the real writers as traced_run's: every image token is in the loss."""
    make_run(run_dir, steps=2, xss=True, image=True)
    trace_group0(run_dir, width=16, scored=16, seed=1)
    return run_dir


def trace_group0(run_dir: Path, width: int, scored: int, seed: int, stale_steps: tuple = ()) -> None:
    """Group 0 of steps 1 and 2 traced through trainer/token_trace.py and rl/token_traces.py (mu = 2) with
    stand-in log-probs: the 3 prompt columns, then `width` response columns of which the first `scored` are in
    the loss; iteration 2's log-probs moved off iteration 1's so that clips bind. In `stale_steps` the rows
    carry their sampling version's log-prob too (asynchronous rollouts), 0.3 nats off pi_old's."""
    import numpy as np
    import torch

    from rl.store import RolloutStore
    from rl.token_traces import trace_table, write_traces
    from rollout.record import RolloutRecord
    from trainer.token_trace import TokenTrace, merge_ranks
    from trainer.unigrpo import UniGRPOConfig, masks_for_update

    store = RolloutStore(run_dir)
    rng = np.random.default_rng(seed)
    for step in (1, 2):
        records = [RolloutRecord.from_row(r) for r in store.read_step(step) if r["group"] == 0]
        positions = np.zeros((len(records), 3 + width), bool)
        positions[:, 3:3 + scored] = True
        ratios, masked = masks_for_update(positions, UniGRPOConfig(mu=2, seed=step), 0)
        trace = TokenTrace(np.ones(len(records), bool), 0.2, 0.2)
        for n in range(2):
            m = torch.from_numpy(masked[n])
            k = int(m.sum())
            old = torch.from_numpy(np.log(rng.uniform(0.05, 1, k)).astype(np.float32))
            logp = old + torch.from_numpy(rng.normal(0, 0.4 * n, k).astype(np.float32))  # iteration 2 moved
            adv = torch.tensor([r.advantage for r in records], dtype=torch.float32)[torch.nonzero(m)[:, 0]]
            version = old + 0.3 if step in stale_steps else None
            trace.add(n, np.arange(len(records)), m, logp, old, None, adv, torch.rand(k), version)
        table = trace_table(step, records, merge_ranks([trace.result()], [0], ratios, positions))
        write_traces(store.traces_root, step, table)


@pytest.fixture(scope="module")
def server(runs):
    proc, url, _ = start_dashboard(str(runs), "--port", "0")
    yield url.rstrip("/")
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


def new_page(browser, bypass_csp=True):
    # Playwright's wait_for_function polls with eval(), which the dashboard's CSP forbids: tests that
    # wait on a JS condition bypass it; the XSS test keeps it
    ctx = browser.new_context(viewport={"width": 1300, "height": 900}, bypass_csp=bypass_csp)
    pg = ctx.new_page()
    pg.dialogs, pg.errors = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    return ctx, pg


@pytest.fixture
def page(browser):
    ctx, pg = new_page(browser)
    yield pg
    assert pg.errors == [], pg.errors
    ctx.close()


def test_overview_renders_charts_with_hover_and_controls(server, page):
    page.goto(f"{server}/run/fx")
    page.wait_for_selector("#charts[data-drawn]", state="attached")  # every chart (drawn in chunks)
    titles = page.locator(".chart-title").all_text_contents()
    for want in ("reward (mean ± std) and components", "math: reward status per step", "accuracy",
                 "learner loss", "KL to reference", "clip fraction (low / high)", "entropy", "response length",
                 "throughput", "policy version", "idle share of each actor group (1 - its compute / step wall time)",
                 "asynchronous rollouts: records per staleness (versions behind the learner), dropped",
                 "effective sample size of the importance weights (share of tokens)"):
        assert want in titles, titles
    assert any(t.startswith("step time") for t in titles)
    assert page.locator(".chart-box path.band").count() >= 1          # the reward std band
    assert page.locator(".chart-box g.bars rect").count() >= 4       # status counts, stacked
    box = page.locator(".chart-box svg").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
    tip = page.locator(".chart-box .tip").first
    assert tip.is_visible() and "step 4" in tip.text_content() and "reward/mean" in tip.text_content()
    page.select_option("#xmode", "wall")
    assert "x=wall" in page.url
    page.locator(".logy input").first.check()                         # log-y re-renders without error


def test_the_first_chart_is_painted_before_the_others_are_drawn(server, page):
    """The reward chart is drawn and painted alone (the `unigrpo:first-chart` mark, which
    benchmarks/dashboard.py reads), the others follow in chunks; a redraw while chunks are pending
    (the smoothing slider) leaves one chart per spec, none empty and none twice."""
    page.add_init_script("""(() => { const mark = performance.mark.bind(performance);
      performance.mark = (name, o) => { if (name === 'unigrpo:first-chart')
        window.__drawnAtMark = document.querySelectorAll('#charts .chart-box svg').length; return mark(name, o); }; })()""")
    page.goto(f"{server}/run/fx")
    page.wait_for_selector("#charts[data-drawn]", state="attached")
    first = page.evaluate("performance.getEntriesByName('unigrpo:first-chart').map((m) => m.startTime)")
    assert len(first) == 1 and 0 < first[0] < 60_000
    assert page.evaluate("window.__drawnAtMark") == 1
    boxes = page.locator("#charts .chart-box")
    n = boxes.count()
    assert n >= 10 and page.locator("#charts .chart-box svg").count() == n
    assert page.locator(".chart-title").first.text_content() == "reward (mean ± std) and components"
    page.evaluate("""() => { const s = document.getElementById('smooth');
      for (const v of ['0.1', '0.2', '0.3']) { s.value = v; s.dispatchEvent(new Event('input')); } }""")
    page.wait_for_selector("#charts[data-drawn]", state="attached")
    assert "smooth=0.3" in page.url
    assert boxes.count() == n and page.locator("#charts .chart-box svg").count() == n
    assert len(set(page.locator("#charts .chart-title").all_text_contents())) == n
    assert page.evaluate("performance.getEntriesByName('unigrpo:first-chart').length") == 1


def test_a_folder_of_runs_is_picked_and_compared_in_the_page(server, page):
    page.goto(f"{server}/")
    page.wait_for_selector("table#runs tbody tr")
    names = page.locator("table#runs tbody td:nth-child(2)").all_text_contents()
    assert {"fx", "live", "broken", "img"} <= set(names)
    assert "problems" in page.text_content("table#runs")  # the broken run is flagged in the list
    page.check("input.pick[value=fx]")
    page.check("input.pick[value=live]")
    page.click("#compare-selected")
    page.wait_for_selector("#compare-charts .chart-box svg path.line", state="attached")
    assert "runs=fx%2Clive" in page.url or "runs=fx,live" in page.url
    legend = page.locator("#compare-charts .chart-box").first.locator(".legend").text_content()
    assert "fx" in legend and "live" in legend  # two runs overlaid


def test_new_step_appears_without_reload(server, runs, page):
    page.goto(f"{server}/run/live")
    page.wait_for_function("(document.getElementById('live')?.textContent ?? '').includes('step 2')")
    page.wait_for_selector(".chart-box svg path.line", state="attached")
    page.evaluate("window.__not_reloaded = true")
    write_step(runs / "live", 3)
    page.wait_for_function("(document.getElementById('live')?.textContent ?? '').includes('step 3')", timeout=15000)
    page.wait_for_function("[...document.querySelectorAll('.chart-box svg text')].some(t => t.textContent === '3')")
    assert page.evaluate("window.__not_reloaded") is True
    page.goto(f"{server}/run/live/rollouts")
    page.wait_for_selector("table.rollouts tbody tr")
    page.evaluate("window.__not_reloaded = true")
    write_step(runs / "live", 4)
    page.wait_for_function("document.querySelector('table.rollouts tbody td').textContent === '4'", timeout=15000)
    assert page.evaluate("window.__not_reloaded") is True


def _rows(page):
    return page.locator("table.rollouts tbody tr")


def test_filters_change_the_table_and_the_url(server, page):
    page.goto(f"{server}/run/fx/rollouts")
    page.wait_for_selector("table.rollouts tbody tr")
    assert "of 32" in page.text_content("#table-status")
    page.fill("input[name=reward_min]", "1")
    page.click("button[type=submit]")
    page.wait_for_function("(document.getElementById('table-status')?.textContent ?? '').includes('of ') && "
                           "!(document.getElementById('table-status')?.textContent ?? '').includes('of 32')")
    rewards = [float(t) for t in page.locator("table.rollouts tbody td:nth-child(8)").all_text_contents()]
    assert rewards and all(r >= 1 for r in rewards)
    assert "reward_min=1" in page.url
    page.fill("input[name=reward_min]", "")
    page.select_option("select[name=status]", "math:timeout")
    page.click("button[type=submit]")
    page.wait_for_function("(document.getElementById('table-status')?.textContent ?? '').includes('of 2')")
    assert all("timeout" in t for t in page.locator("table.rollouts tbody td:nth-child(10)").all_text_contents())
    page.goto(page.url)  # the URL alone reproduces the view (a pasted link)
    page.wait_for_function("(document.getElementById('table-status')?.textContent ?? '').includes('of 2')")
    page.goto(f"{server}/run/fx/rollouts?q=javascript&step_max=2")
    page.wait_for_function("(document.getElementById('table-status')?.textContent ?? '').includes('matches')")
    assert _rows(page).count() == 4
    assert all(int(s) <= 2 for s in page.locator("table.rollouts tbody td:nth-child(1)").all_text_contents())
    page.goto(f"{server}/run/fx/rollouts?sort=advantage&order=asc")
    page.wait_for_selector("table.rollouts tbody tr")
    adv = [float(t) for t in page.locator("table.rollouts tbody td:nth-child(9)").all_text_contents()]
    assert adv == sorted(adv) and len(adv) == 32


def test_group_view_shows_the_g_responses(server, page):
    page.goto(f"{server}/run/fx/group?step=3&group=1")
    page.wait_for_selector(".card.response")
    cards = page.locator(".card.response")
    assert cards.count() == 4
    assert page.text_content("#gold") == "7"
    assert page.locator(".card.best").count() >= 1 and page.locator(".card.worst").count() >= 1
    assert page.locator(".card.worst .tag").first.text_content() == "worst"
    extracted = page.locator(".extracted").all_text_contents()
    assert len(extracted) == 4 and all(e.isdigit() for e in extracted)
    assert "timeout" in page.text_content("#responses")  # each response's reward components


def test_replay_slider_changes_the_canvas(server, page):
    page.goto(f"{server}/run/fx/replay?step=2&group=0&gi=3")
    page.wait_for_selector("#replay-canvas .tok")
    masked = "document.querySelectorAll('#replay-canvas .tok.masked').length"
    assert page.evaluate(masked) == 0
    final = page.text_content("#replay-canvas")
    page.eval_on_selector("#replay-slider", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    assert page.evaluate(masked) == 8 and page.text_content("#replay-canvas") == "[MASK]" * 8
    page.eval_on_selector("#replay-slider", "s => { s.value = 4; s.dispatchEvent(new Event('input')); }")
    assert page.evaluate(masked) == 4
    assert "4 of 8 tokens unmasked" in page.text_content("#replay-label")
    page.click("#play")  # plays from the start to the final text
    page.wait_for_function(f"{masked} === 0 && (document.getElementById('play')?.textContent ?? '').includes('play')")
    assert page.text_content("#replay-canvas") == final
    assert page.locator("canvas#heatmap").count() == 1


def test_token_overlay_colours_only_scored_response_tokens(server, browser):
    """The replay's token overlay (tokens.js), CSP on: one cell per response position in the sampler's row and
    each iteration's row; only scored positions the learner masked are coloured (prompt and padding never),
    clipped and mismatched tokens are marked as the trace says, and hostile token text stays text."""
    ctx, page = new_page(browser, bypass_csp=False)
    page.goto(f"{server}/run/tok/replay?step=2&group=0&gi=1")
    page.wait_for_selector("#token-overlay td.coloured")
    cells = page.evaluate("""[...document.querySelectorAll('#token-overlay td')].map(c => ({
        kind: c.dataset.kind, pos: c.dataset.pos === undefined ? null : +c.dataset.pos,
        iter: c.dataset.iter === undefined ? null : +c.dataset.iter, bg: c.style.background,
        cls: [...c.classList], text: c.textContent }))""")
    trace = json.loads(urllib.request.urlopen(f"{server}/api/run/tok/traces?step=2&group=0&gi=1", timeout=10).read())
    masked = {(p, n): i for i, (p, n) in enumerate(zip(trace["position"], trace["iteration"]))}
    assert trace["traced"] and trace["response_len"] == 6 and trace["iterations"] == 2
    kinds = {c["kind"] for c in cells}
    assert kinds == {"prompt", "response", "padding"}
    for c in cells:
        coloured = c["bg"] != "" or "coloured" in c["cls"]
        if c["kind"] in ("prompt", "padding"):  # outside the loss mask: never coloured, never marked
            assert not coloured and not {"mismatch", "clip-high", "clip-low"} & set(c["cls"]), c
            continue
        assert c["pos"] < 6
        if c["iter"] is not None:  # a learner row: coloured exactly where that iteration masked the token
            i = masked.get((c["pos"], c["iter"]))
            assert coloured == (i is not None), c
            if i is not None:
                assert ("clip-high" in c["cls"]) == (trace["clipped"][i] > 0)
                assert ("clip-low" in c["cls"]) == (trace["clipped"][i] < 0)
                gap = abs(trace["logp_old"][i] - trace["logp_sampler"][i])
                assert ("mismatch" in c["cls"]) == (gap > 1.0)
    learner = [c for c in cells if c["iter"] is not None and c["kind"] == "response"]
    assert len(learner) == 2 * 6 and sum(c["bg"] != "" for c in learner) == len(trace["position"])
    marks = {k for c in learner for k in c["cls"]}
    assert "mismatch" in marks and {"clip-high", "clip-low"} & marks  # the markers are exercised, not vacuous
    assert sum(c["kind"] == "padding" for c in cells) == 4 * 2  # positions 6, 7 in the header, sampler, 2 iterations
    assert page.locator("#token-legend").count() == 1
    text = page.text_content("#token-overlay")
    assert any(t in text for t in HOSTILE_TOKENS)  # rendered as text
    assert page.evaluate("document.querySelectorAll('script').length") == 5  # charts, tokens, histograms, timeline, app
    assert page.evaluate("document.querySelectorAll('img[src=x], [onerror], #token-overlay a').length") == 0
    assert page.dialogs == [] and page.errors == []
    page.goto(f"{server}/run/tok/replay?step=2&group=1&gi=0")  # not traced: a message and links to traced ones
    page.wait_for_selector("#token-trace .msg a")
    assert page.locator("#token-trace .msg a").first.get_attribute("href") == "/run/tok/replay?step=2&group=0&gi=0"
    page.goto(f"{server}/run/tok")  # the overview's mismatch and entropy-by-position charts
    page.wait_for_selector("#mismatch-chart svg path.line", state="attached")
    assert page.locator("#entropy-position-chart svg path.line").count() == 1
    # step 1's rows were stale: the policy-lag chart (|log pi_old - log pi_v| = 0.3 here), drawn from the API's figures
    assert page.locator("#lag-chart svg").count() == 1
    lag = json.loads(urllib.request.urlopen(f"{server}/api/run/tok/mismatch", timeout=10).read())["steps"]
    assert [round(x["lag_mean"], 3) if x["lag_pairs"] else None for x in lag] == [0.3, None]
    assert page.errors == []
    ctx.close()


def test_image_token_overlay_colours_only_scored_image_tokens(server, browser):
    """The replay of a traced text-to-image rollout (tokens.js), CSP on: small multiples of the image-token grid in
    the replay's layout, the sampler's and one per inner iteration; a cell is coloured exactly where the trace
    scored it (every sampled position in the sampler's grid, the positions that iteration masked in its grid),
    clip and mismatch marked as the trace says, the caption never coloured and its hostile text inert."""
    ctx, page = new_page(browser, bypass_csp=False)
    page.goto(f"{server}/run/tokimg/replay?step=2&group=0&gi=0")
    page.wait_for_selector("#token-overlay-image .tok-cell.coloured")
    trace = json.loads(urllib.request.urlopen(f"{server}/api/run/tokimg/traces?step=2&group=0&gi=0", timeout=10).read())
    replay = json.loads(urllib.request.urlopen(f"{server}/api/run/tokimg/replay?step=2&group=0&gi=0", timeout=10).read())
    assert trace["traced"] and trace["response_len"] == 16 and trace["iterations"] == 2
    grids = page.evaluate("""[...document.querySelectorAll('#token-overlay-image .trace-grid')].map(g => ({
        name: g.dataset.grid, columns: getComputedStyle(g).gridTemplateColumns.split(' ').length,
        cells: [...g.children].map(c => ({ kind: c.dataset.kind, pos: +c.dataset.pos,
            iter: c.dataset.iter === undefined ? null : +c.dataset.iter, bg: c.style.background, cls: [...c.classList] })) }))""")
    assert [g["name"] for g in grids] == ["sampler", "iteration-1", "iteration-2"]
    masked = {(p, n): i for i, (p, n) in enumerate(zip(trace["position"], trace["iteration"]))}
    for g in grids:
        assert g["columns"] == 4 and [c["pos"] for c in g["cells"]] == list(range(16))  # the replay's 4x4 layout
        for c in g["cells"]:
            assert c["kind"] == "response"
            coloured = c["bg"] != "" or "coloured" in c["cls"]
            if c["iter"] is None:  # the sampler's grid: its probability at unmask, every image token
                assert coloured and not {"mismatch", "clip-high", "clip-low"} & set(c["cls"]), c
                continue
            i = masked.get((c["pos"], c["iter"]))
            assert coloured == (i is not None) and ("unmasked" in c["cls"]) == (i is None), c
            if i is not None:
                assert ("clip-high" in c["cls"]) == (trace["clipped"][i] > 0)
                assert ("clip-low" in c["cls"]) == (trace["clipped"][i] < 0)
                gap = abs(trace["logp_old"][i] - trace["logp_sampler"][i])
                assert ("mismatch" in c["cls"]) == (gap > 1.0)
            else:
                assert not {"mismatch", "clip-high", "clip-low"} & set(c["cls"]), c
    learner = [c for g in grids[1:] for c in g["cells"]]
    assert sum("coloured" in c["cls"] for c in learner) == len(trace["position"])
    marks = {k for c in learner for k in c["cls"]}
    assert {"mismatch", "clip-high", "unmasked"} <= marks  # the markers are exercised, not vacuous
    assert page.locator("#replay-canvas .tok").count() == 16 and replay["image_codes"]  # next to the replay's grid
    prompt = page.locator("#token-trace [data-kind=prompt]")  # the caption's text tokens: shown, never coloured
    assert prompt.count() == 1 and XSS[0] in prompt.text_content()
    assert prompt.evaluate("c => c.style.background === '' && !c.classList.contains('coloured')")
    assert page.locator("#token-legend").count() == 1
    assert page.evaluate("document.querySelectorAll('script').length") == 5  # charts, tokens, histograms, timeline, app
    assert page.evaluate("document.querySelectorAll('img[src=x], [onerror], #token-trace a').length") == 0
    assert page.dialogs == [] and page.errors == []
    ctx.close()


def test_image_rollouts_grid_and_replay(server, page):
    page.goto(f"{server}/run/img/images")
    page.wait_for_selector("#images img.thumb")
    assert page.locator("#images .card").count() == 16  # 2 steps x 2 groups x 4
    page.wait_for_function("[...document.querySelectorAll('#images img')].every(i => i.complete && i.naturalWidth === 32)")
    assert "a red square" in page.text_content("#images")
    page.goto(f"{server}/run/img/images?step_min=2")
    page.wait_for_selector("#images img.thumb")
    assert page.locator("#images .card").count() == 8
    page.goto(f"{server}/run/img/replay?step=2&group=1&gi=2")
    page.wait_for_selector("#replay-canvas.grid-canvas .tok")
    assert page.locator("#replay-canvas .tok").count() == 16
    page.wait_for_function("document.querySelector('img.decoded').naturalWidth === 32")
    page.eval_on_selector("#replay-slider", "s => { s.value = 5; s.dispatchEvent(new Event('input')); }")
    assert page.locator("#replay-canvas .tok.masked").count() == 11
    assert "5 of 16 image tokens" in page.text_content("#replay-label")


def test_xss_payloads_render_as_text(server, browser):
    ctx, page = new_page(browser, bypass_csp=False)
    for path in ("/run/fx/rollouts", "/run/fx/group?step=4&group=0", "/run/fx/failures",
                 "/run/fx/rollouts?q=%3Cscript%3E", "/run/fx/histograms", "/run/tok/group?step=2&group=0",
                 "/run/fx/rollouts?flag=any&worker=%3Cscript%3Ealert(1)%3C/script%3E"):
        page.goto(server + path)
        page.wait_for_selector("table.rollouts tbody tr, .card.response, #failures .msg, #failures table, "
                               "#histograms a.bin, #table .msg")
        page.wait_for_timeout(200)
        assert page.evaluate("document.querySelectorAll('script').length") == 5  # charts, tokens, histograms, timeline, app
        assert page.evaluate("document.querySelectorAll('img[src=x], [onerror]').length") == 0
        assert page.evaluate("[...document.querySelectorAll('a')].filter(a => (a.getAttribute('href') || '')"  # SVG links too
                             ".trim().toLowerCase().startsWith('javascript')).length") == 0
    page.goto(f"{server}/run/fx/group?step=4&group=0")
    page.wait_for_selector(".card.response")
    body = page.text_content("#main")
    for payload in XSS:
        assert payload in body
    assert page.text_content("#gold") == XSS[1]
    assert page.dialogs == [] and page.errors == []
    ctx.close()
    csp = urllib.request.urlopen(f"{server}/run/fx", timeout=10).headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_token_auth(runs, browser):
    proc, url, lines = start_dashboard(str(runs / "fx"), "--host", "0.0.0.0", "--port", "0")
    try:
        assert any("generated a token" in line for line in lines)
        token = url.split("?token=")[1]
        base = url.split("?")[0].rstrip("/")
        for path in ("/", "/run/fx", "/api/runs", "/api/run/fx/rollouts", "/static/app.js"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=10)
            assert err.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/api/runs?token=wrong", timeout=10)
        assert err.value.code == 401
        req = urllib.request.Request(f"{base}/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.goto(url)  # the printed URL: the token becomes a cookie for the page's own requests
        pg.wait_for_selector(".chart-box svg path.line", state="attached")
        ctx.close()
    finally:
        stop(proc)


def test_path_traversal_is_refused(server, runs):
    host = server.split("//")[1]
    secret = runs.parent / "secret.txt"
    secret.write_text("do not serve")
    for path in ("/static/../../../../etc/passwd", "/static/..%2F..%2Fserver.py", "/static/%2Fetc%2Fpasswd",
                 "/run/..%2F..%2Fetc/rollouts", "/run/../secret.txt", "/api/run/..%2Fsecret.txt/info",
                 f"/api/run/{str(secret).replace('/', '%2F')}/info", "/api/run/../../etc/info",
                 "/api/prompt?runs=..%2Fsecret.txt&prompt_id=x", "/run/%2E%2E/overview", "//etc/passwd"):
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("GET", path)  # sent as is, not normalised by a client
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 404, (path, resp.status)
        assert b"do not serve" not in body and b"root:" not in body


def test_corrupt_partition_and_bad_line_show_a_message(server, page):
    page.goto(f"{server}/run/broken")
    page.wait_for_selector("#banner .msg")
    banner = page.text_content("#banner")
    assert "step=2/part-0.parquet: unreadable" in banner and "truncated or corrupt Parquet" in banner
    page.wait_for_selector(".chart-box svg path.line", state="attached")  # the readable steps still chart
    page.goto(f"{server}/run/broken/group?step=2&group=0")
    page.wait_for_selector("#main .msg.error")
    assert "no rollout at step 2" in page.text_content("#main .msg.error")
    page.goto(f"{server}/run/broken/rollouts")
    page.wait_for_selector("table.rollouts tbody tr")
    assert "of 16" in page.text_content("#table-status")
    for api in ("group?step=2&group=0", "replay?step=2&group=0&gi=0", "image?step=1&group=0&gi=0",
                "rollouts?status=nope:ok", "rollouts?step_min=x"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server}/api/run/broken/{api}", timeout=10)
        assert err.value.code in (400, 422), api
        assert b"error" in err.value.read()


@pytest.mark.slow
def test_real_tiny_run_started_with_its_dashboard_shows_on_every_page(tmp_path, browser):
    """`unigrpo train ... run.dashboard=true` prints a live URL; the finished run shows on every page."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "rl.cli", "train", "configs/tiny.yaml", f"run.dir={tmp_path}", "run.name=tiny", "run.steps=2",
           "run.checkpoint_every=2", "run.plot=false", "data.prompts_per_step=4", "rollout.group_size=4",
           "run.dashboard=true", "run.dashboard_port=0", "run.loggers=[jsonl,tensorboard]"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("unigrpo: dashboard at http://"):
            live = line.split()[3].rstrip("/")
            assert b'"tiny"' in urllib.request.urlopen(f"{live}/api/runs", timeout=30).read()
            break
    out = "".join(lines) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    run_dir = tmp_path / "tiny"
    assert f"unigrpo dashboard {run_dir}" in out  # the end-of-run message says how to look at it
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    comps = json.loads(pq.read_table(run_dir / "rollouts" / "step=1" / "part-0.parquet").column("reward_components")[0].as_py())
    assert "detail" in comps["math"]  # the failures page shows the reward's message

    srv, url, _ = start_dashboard(str(run_dir), "--port", "0")
    ctx, page = new_page(browser)
    try:
        base = url.rstrip("/")
        page.goto(f"{base}/run/tiny")
        page.wait_for_selector("#charts[data-drawn]", state="attached")
        titles = page.locator(".chart-title").all_text_contents()
        assert "reward (mean ± std) and components" in titles and "throughput" in titles
        assert page.locator(".chart-box svg path.line").count() >= 15
        # the step timeline: both steps' phases, one lane per group, from the run's span/* metrics
        page.wait_for_selector("#timeline-svg rect.span-update", state="attached")
        steps = page.eval_on_selector_all("#timeline-svg rect.span", "rs => rs.map(r => r.dataset.step + ':' + r.classList[1])")
        for step in ("1", "2"):
            assert {f"{step}:span-{p}" for p in ("generate", "reward", "update", "publish", "store")} <= set(steps), steps
        page.click("#more summary")  # "all other metrics" leaves the span/* series to the timeline
        assert not [t for t in page.locator("#more-charts .chart-title").all_text_contents() if t.startswith("span/")]
        page.goto(f"{base}/run/tiny/rollouts")
        page.wait_for_selector("table.rollouts tbody tr")
        assert "of 32" in page.text_content("#table-status")
        page.goto(f"{base}/run/tiny/group?step=2&group=1")
        page.wait_for_selector(".card.response")
        assert page.locator(".card.response").count() == 4
        page.goto(f"{base}/run/tiny/replay?step=2&group=1&gi=0")
        page.wait_for_selector("#replay-canvas .tok")
        page.eval_on_selector("#replay-slider", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
        assert page.locator("#replay-canvas .tok.masked").count() == page.locator("#replay-canvas .tok").count() > 0
        page.goto(f"{base}/run/tiny/images")
        page.wait_for_selector("#images .msg")
        page.goto(f"{base}/run/tiny/failures")
        page.wait_for_selector("#failures .msg, #failures table")
        page.goto(f"{base}/compare?runs=tiny")
        page.wait_for_selector("#compare-charts .chart-box svg path.line", state="attached")
        assert page.errors == []
    finally:
        ctx.close()
        stop(srv)


def _status_total(page) -> int:
    page.wait_for_function("/of \\d+/.test(document.getElementById('table-status')?.textContent ?? '') || "
                           "!!document.querySelector('#table .msg')")
    text = page.text_content("#table-status")
    return int(text.rsplit("of ", 1)[1]) if "of " in text else 0


def _table(page, col: int) -> list[str]:
    return page.locator(f"table.rollouts tbody td:nth-child({col})").all_text_contents()


def test_histogram_bar_click_lands_on_exactly_its_rows(server, page):
    """Each histogram (reward, the math component, advantage, length, NFE, gen_s) for a step range: clicking
    a bar opens the rollouts page listing exactly that bar's rows, and a split bar's piece its version's."""
    page.goto(f"{server}/run/fx/histograms?step_min=2&step_max=3")
    page.wait_for_selector("#histograms .hist[data-field=advantage] a.bin")
    fields = page.eval_on_selector_all("#histograms .hist", "bs => bs.map(b => b.dataset.field)")
    assert fields == ["reward", "value:math", "advantage", "length", "nfe", "gen_s"]
    bars = page.locator("#histograms .hist[data-field=advantage] a.bin")
    assert sum(int(c) for c in bars.evaluate_all("bs => bs.map(b => b.dataset.count)")) == 16  # 2 steps x 8
    last = bars.nth(bars.count() - 1)
    count = int(last.get_attribute("data-count"))
    last.click()
    page.wait_for_url("**/rollouts?**")
    assert _status_total(page) == count and "advantage_max=" in page.url  # the closed last bin
    adv = [float(a) for a in _table(page, 9)]
    steps = {int(s) for s in _table(page, 1)}
    assert len(adv) == count and steps <= {2, 3}
    assert page.locator("#range-chips .chip").count() == 1 and "advantage" in page.text_content("#range-chips")
    page.select_option("select[name=sort]", "reward")  # the bar's range survives "apply"
    page.click("#filters button[type=submit]")
    page.wait_for_url("**sort=reward**")
    assert _status_total(page) == count and "advantage_max=" in page.url
    # every bar of every histogram: the count on the bar is the number of rows listed
    page.goto(f"{server}/run/fx/histograms?step_min=2&step_max=3")
    page.wait_for_selector("#histograms .hist[data-field=advantage] a.bin")
    links = page.eval_on_selector_all("#histograms a.bin", "as => as.map(a => [a.getAttribute('href'), +a.dataset.count])")
    assert len(links) > 8
    for href, n in links:
        assert href.startswith("/run/fx/rollouts?") and "step_min=2" in href
        body = json.loads(urllib.request.urlopen(server + href.replace("/run/fx/rollouts", "/api/run/fx/rollouts"),
                                                 timeout=10).read())
        assert body["total"] == n, href
    page.goto(f"{server}/run/fx/histograms?by=version&bins=5")  # split by version: one colour per version
    page.wait_for_selector("#histograms .hist[data-field=reward] a.bin[data-key='2']")
    piece = page.locator("#histograms .hist[data-field=reward] a.bin[data-key='2']").first
    n = int(piece.get_attribute("data-count"))
    piece.click()
    page.wait_for_url("**version=2**")
    assert _status_total(page) == n and set(_table(page, 12)) == {"2"}


def test_version_worker_and_flag_filters(server, page):
    page.goto(f"{server}/run/fx/rollouts")
    page.wait_for_selector("table.rollouts tbody tr")
    page.fill("input[name=version]", "2")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**version=2**")
    assert _status_total(page) == 8 and set(_table(page, 12)) == {"2"} and set(_table(page, 1)) == {"3"}
    page.wait_for_selector("#worker-filter option[value=rollout-1]", state="attached")
    page.select_option("#worker-filter", "rollout-1")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**worker=rollout-1**")
    assert _status_total(page) == 4 and set(_table(page, 13)) == {"rollout-1"}
    page.goto(f"{server}/run/fx/rollouts?flag=cut")  # response (0, 1) of every step ran into the length limit
    assert _status_total(page) == 4
    assert set(_table(page, 15)) == {"cut at length limit"} and set(_table(page, 2)) == {"0"}
    assert all("fwd" in c for c in _table(page, 14))  # sampler cost: NFE, length, early stop, gen_s
    page.select_option("#flag-filter", "none")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**flag=none**")
    assert _status_total(page) == 24 and set(_table(page, 15)) == {""}
    page.goto(f"{server}/run/fx")  # the overview's flagged share per step: 2 of 8 every step
    page.wait_for_selector(".chart-box svg path.line", state="attached")
    box = page.locator(".chart-box", has_text="garbled-output flags")
    assert box.count() == 1 and box.locator("path.line").count() >= 1
    assert "flagged (any reason)" in box.text_content()
    flags = json.loads(urllib.request.urlopen(f"{server}/api/run/fx/metrics", timeout=10).read())["rollout_steps"]
    assert [(s["flagged"], s["flags_known"]) for s in flags] == [(2, 8)] * 4


def test_group_view_shows_length_cost_and_differing_tokens(server, browser):
    """Length, NFE and flags per response; the tokens that differ from the group's most common token at
    their position are marked; hostile token text (the `tok` run's tokenizer) stays text, CSP on."""
    ctx, page = new_page(browser, bypass_csp=False)
    page.goto(f"{server}/run/tok/group?step=2&group=0")
    page.wait_for_selector(".card.response .token-diff .tok")
    g = json.loads(urllib.request.urlopen(f"{server}/api/run/tok/group?step=2&group=0", timeout=10).read())
    cards = page.locator(".card.response")
    for k, r in enumerate(g["responses"]):
        card = cards.nth(k)
        marked = card.locator(".token-diff .tok").evaluate_all("ts => ts.map(t => t.classList.contains('diff'))")
        assert marked == r["differs"] and len(marked) == len(r["ids"])
        assert card.locator(".token-diff .tok").all_text_contents() == r["token_text"]
        assert f"{r['nfe']} fwd · len {r['length']}" in card.locator(".cost-line").text_content()
    assert any(any(r["differs"]) for r in g["responses"]) and not all(all(r["differs"]) for r in g["responses"])
    assert "cut at length limit" in cards.nth(1).locator(".cost-line").text_content()
    text = page.text_content("#responses")
    assert any(t in text for t in HOSTILE_TOKENS)
    assert page.evaluate("document.querySelectorAll('img[src=x], [onerror], .token-diff a, .token-diff script').length") == 0
    assert page.dialogs == [] and page.errors == []
    ctx.close()
