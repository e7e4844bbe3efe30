"""The dashboard at /ui in headless Chromium against a real embedded service (SQLite + its own
worker) running tiny digits jobs: the list, a job's curves and table, the submit form, compare."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _until(browser: Any, wait_for: Callable[..., Any], script: str, what: str, timeout: float = 30) -> Any:
    """Poll a JavaScript expression in the page until it is truthy (the page polls the API itself)."""
    return wait_for(lambda: browser.execute_script("return " + script), timeout=timeout, what=what)


def _whole_page(browser: Any, name: str) -> None:
    """A screenshot of the whole page (the window grown to its height), to look at once."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(1000, min(height + 140, 6000)))
    browser.shot(name)
    browser.set_window_size(1400, 1000)


def test_dashboard_lists_draws_submits_and_compares(
    processes: Any, fast_settings: Any, wait_for: Callable[..., Any], tiny_train: dict[str, Any], browser: Any
) -> None:
    api = processes.api(fast_settings(processes.tmp), embedded_worker=True)
    base = str(api.base_url)
    first = api.post("/jobs/train", json={**tiny_train, "name": "first-run"}).json()["id"]
    wait_for(lambda: api.get(f"/jobs/{first}").json()["status"] not in ("queued", "running"),
             timeout=240, what="the first job")  # fmt: skip
    assert api.get(f"/jobs/{first}").json()["status"] == "succeeded"

    # The list shows the finished job, live (the page fetches it; nothing is rendered server-side).
    browser.get(base + "/ui")
    row = f"document.querySelector('#jobs tr[data-job-id=\"{first}\"]')"
    _until(browser, wait_for, f"{row} && {row}.dataset.status === 'succeeded'", "the job in the list")
    assert "first-run" in browser.execute_script(f"return {row}.textContent")
    browser.shot("jobs")
    browser.get(base + "/ui?status=failed")  # filters come from (and go to) the URL
    _until(
        browser,
        wait_for,
        "document.getElementById('list-updated').textContent.startsWith('0 shown')",
        "filter",
    )
    assert browser.execute_script(f"return {row}") is None

    # Its page draws the three training charts with one point per epoch, and the results table.
    browser.get(f"{base}/ui/jobs/{first}")
    _until(
        browser, wait_for, "document.querySelectorAll('#results table.results td.cell').length", "the table"
    )
    points = browser.execute_script(
        "return [...document.querySelectorAll('#curves svg.chart path.series')]"
        ".map(p => [p.closest('svg').id, p.dataset.name, +p.dataset.points])"
    )
    by_chart: dict[str, dict[str, int]] = {}
    for chart, name, n in points:
        by_chart.setdefault(chart, {})[name] = n
    assert by_chart["chart-loss"] == {"loss": 3}
    assert by_chart["chart-acc"] == {"train clean": 3, "train adv": 3, "val clean": 3, "val PGD": 3}
    assert by_chart["chart-sigma"] == {"Σσ": 3, "bound A": 3, "bound B": 3}
    table = api.get(f"/jobs/{first}/results").json()
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#results td.cell strong')].map(e => e.textContent)"
    )
    want = [f"{100 * table['rows'][0]['cells'][c['key']]['accuracy']:.1f}" for c in table["columns"]]
    assert cells == want
    verdicts = browser.execute_script("return document.querySelector('#diagnostics').textContent")
    assert all(d["name"] in verdicts for d in table["diagnostics"]) and table["diagnostics"]
    assert (
        browser.execute_script("return document.querySelectorAll('#sigma-layers svg.hist rect.bin').length")
        > 0
    )
    # The worker drew the job's figures; the page shows them and the API serves PNG and SVG.
    _until(browser, wait_for, "document.querySelectorAll('#figures img').length === 4", "the figures")
    for name in ("curves", "sigma", "sigma_hist", "robust"):
        png = api.get(f"/jobs/{first}/figures/{name}")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), name
        assert "<svg" in api.get(f"/jobs/{first}/figures/{name}", params={"format": "svg"}).text
    missing = api.get(f"/jobs/{first}/figures/fig3b")
    assert missing.status_code == 404 and "curves" in missing.json()["detail"]
    assert "undefined" not in browser.find_element("tag name", "body").text
    _whole_page(browser, "train-job")

    # A bad config is refused at its field; a good one lands on the new job's page.
    browser.get(base + "/ui/submit")
    text = browser.find_element("id", "config-text")
    bad = {**tiny_train, "optim": {**tiny_train["optim"], "epochs": -1}}
    browser.execute_script("arguments[0].value = arguments[1]", text, json.dumps(bad))
    browser.find_element("id", "submit-button").click()
    _until(browser, wait_for, "document.querySelector('#submit-errors li')", "the field error")
    assert browser.execute_script("return document.querySelector('#submit-errors li').dataset.loc") == (
        "body.optim.epochs"
    )
    selected = "const t = document.getElementById('config-text'); return t.value.slice(t.selectionStart, t.selectionEnd)"
    assert browser.execute_script(selected) == "epochs"  # the cursor is on the field
    browser.shot("submit-error")
    # configs/ use `preset: published` (a CLI shorthand): the editor sends the full config it stands for.
    expanded = api.post(
        "/ui/parse", content="preset: published\nname: pub\n", headers={"Content-Type": "text/plain"}
    )
    assert expanded.status_code == 200 and "preset" not in expanded.json(), expanded.text
    assert expanded.json()["name"] == "pub" and expanded.json()["bounds"]["upper"] is None  # published: no B
    bad_preset = api.post("/ui/parse", content="preset: published\noptim: {epochs: 0}\n")
    assert bad_preset.status_code == 422 and bad_preset.json()["detail"][0]["loc"] == [
        "body",
        "optim",
        "epochs",
    ]
    browser.execute_script("arguments[0].value = arguments[1]", text, "model:\n  name: [small_cnn\n")
    browser.find_element("id", "submit-button").click()
    _until(
        browser, wait_for, "document.querySelector('#submit-errors li[data-loc=\"body\"]')", "the YAML error"
    )
    assert "not valid YAML/JSON at line" in browser.find_element("id", "submit-errors").text
    browser.execute_script(
        "arguments[0].value = arguments[1]", text, json.dumps({**tiny_train, "name": "from-form"})
    )
    browser.find_element("id", "submit-button").click()
    _until(browser, wait_for, "location.pathname.startsWith('/ui/jobs/')", "the new job's page")
    second = browser.execute_script("return document.body.dataset.jobId")
    assert second != first and api.get(f"/jobs/{second}").json()["config"]["name"] == "from-form"
    wait_for(lambda: api.get(f"/jobs/{second}").json()["status"] not in ("queued", "running"),
             timeout=240, what="the submitted job")  # fmt: skip
    browser.get(base + "/ui")
    _until(
        browser,
        wait_for,
        f"document.querySelector('#jobs tr[data-job-id=\"{second}\"]')",
        "the new job listed",
    )

    # An attack job's page: its table, its diagnostics and a link to the train job it attacked.
    attack = api.post("/jobs/attack", json={"train_job_id": first, "evaluation": {
        "attacks": [{"name": "fgsm"}], "n_examples": 64, "score_draws": 2}}).json()["id"]  # fmt: skip
    wait_for(lambda: api.get(f"/jobs/{attack}").json()["status"] not in ("queued", "running", "waiting"),
             timeout=120, what="the attack job")  # fmt: skip
    browser.get(f"{base}/ui/jobs/{attack}")
    _until(
        browser, wait_for, "document.querySelectorAll('#results td.cell').length === 1", "the attack table"
    )
    assert browser.execute_script(
        f"return !!document.querySelector('#job-head a[href=\"/ui/jobs/{first}\"]')"
    )
    assert not browser.execute_script("return document.querySelector('#diagnostics').hidden")
    _until(browser, wait_for, "document.querySelectorAll('#figures img').length === 1", "the robust figure")
    assert "undefined" not in browser.find_element("tag name", "body").text
    _whole_page(browser, "attack-job")

    # The list pages through every job with the API's cursor (pages of 2 here: 3 jobs), and the
    # polls keep what was loaded; the text filter searches the loaded rows.
    browser.get(base + "/ui?page_size=2")
    listed = "[...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId)"
    _until(browser, wait_for, f"{listed}.length === 2", "the first page")
    assert browser.execute_script(f"return {listed}") == [attack, second]
    assert "(3 jobs in all)" in browser.find_element("id", "list-updated").text
    browser.find_element("id", "load-more").click()
    _until(browser, wait_for, f"{listed}.length === 3", "the second page")
    assert browser.execute_script(f"return {listed}") == [attack, second, first]
    assert browser.execute_script("return document.getElementById('load-more').hidden")
    fetches = "+document.getElementById('list-updated').dataset.fetches"
    polled = browser.execute_script(f"return {fetches}") + 2
    _until(browser, wait_for, f"{fetches} >= {polled}", "two more polls")
    assert browser.execute_script(f"return {listed}") == [attack, second, first]
    browser.execute_script(
        "const t = document.querySelector('#filters [name=text]'); t.value = 'first-run';"
        "t.dispatchEvent(new Event('input'))"
    )
    # The attack job matches too: it shows its train job's name.
    assert browser.execute_script(f"return {listed}") == [attack, first]
    assert "page_size=2" in browser.current_url and "text=first-run" in browser.current_url
    browser.shot("jobs-paged")

    # Compare (by URL): both tables and the curves of both runs overlaid.
    browser.get(f"{base}/ui/compare?ids={first},{second}")
    _until(
        browser,
        wait_for,
        "document.querySelectorAll('section.compared table.results').length === 2",
        "compare",
    )
    overlaid = browser.execute_script(
        "return [...document.querySelectorAll('#chart-loss path.series')].map(p => +p.dataset.points)"
    )
    assert overlaid == [3, 3]
    # ONE merged table: a row per attack x protocol, a column group per job, each job's own value.
    merged = "[...document.querySelectorAll('#merged tbody tr')]"
    groups = "[...document.querySelectorAll('#merged th.job-group')].map(th => th.dataset.jobId)"
    cells = (
        f"{merged}.map(tr => [tr.dataset.key, [...tr.querySelectorAll('td.cell')]"
        ".map(td => [td.dataset.jobId, td.querySelector('.acc') ? td.querySelector('.acc').textContent : null])])"
    )

    def accuracies(job_id: str) -> dict[str, str]:
        t = api.get(f"/jobs/{job_id}/results").json()
        return {f"{c['attack']}|{c['protocol']}": f"{100 * t['rows'][0]['cells'][c['key']]['accuracy']:.1f}"
                for c in t["columns"]}  # fmt: skip

    assert browser.execute_script(f"return {groups}") == [first, second]
    ours = {job_id: accuracies(job_id) for job_id in (first, second, attack)}
    assert browser.execute_script(f"return {cells}") == [
        [key, [[first, acc], [second, ours[second][key]]]] for key, acc in ours[first].items()
    ]
    assert "undefined" not in browser.find_element("tag name", "body").text
    _whole_page(browser, "compare")
    # A train job beside an attack on it: the union of their rows, "—" where a job has none.
    browser.get(f"{base}/ui/compare?ids={first},{attack}")
    _until(browser, wait_for, f"{merged}.length === 3", "the merged table of train and attack job")
    rows = browser.execute_script(f"return {cells}")
    assert [r[0] for r in rows] == [*ours[first], *ours[attack]]
    assert rows[-1][1] == [[first, None], [attack, ours[attack]["fgsm|paper"]]]
    _whole_page(browser, "compare-train-attack")


def test_a_suite_page_shows_sub_jobs_tables_with_paper_values_and_figures(
    processes: Any, fast_settings: Any, wait_for: Callable[..., Any], browser: Any
) -> None:
    api = processes.api(fast_settings(processes.tmp), embedded_worker=True)
    suite = api.post("/jobs/suite", json={"suite": "fig3c", "smoke": True}).json()["id"]
    browser.get(f"{api.base_url}/ui/jobs/{suite}")
    # Progress over the sub-jobs shows while they run; the page polls until the suite is done.
    _until(browser, wait_for, "document.querySelectorAll('#suite tbody tr').length === 2", "the sub-jobs")
    _until(browser, wait_for, "document.querySelectorAll('#results table.results').length", "the suite table",
           timeout=300)  # fmt: skip
    results = api.get(f"/jobs/{suite}/results").json()
    assert results["status"] == "succeeded", results.get("error")
    table = results["tables"]["fig3c"]
    ours = [f"{cell['ours']:.1f}" for row in table["rows"] for c in table["columns"]
            if (cell := row["cells"].get(c["key"])) and cell.get("ours") is not None]  # fmt: skip
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#results td.cell strong')].map(e => e.textContent)"
        ".filter(t => t !== '—')"
    )
    assert shown == ours and ours
    _until(browser, wait_for, "document.querySelectorAll('#figures img').length === 1", "the suite figure")
    assert browser.execute_script("return document.querySelector('#figures img').naturalWidth") > 400
    assert "undefined" not in browser.find_element("tag name", "body").text
    # A smoke suite says it ran on digits (the page and the figure), and the figure has CI bars.
    assert "digits" in browser.find_element("id", "job-head").text
    assert "Ours ran on digits (smoke run)" in browser.find_element("id", "results").text
    svg = api.get(results["figures"]["fig3c"]["svg"]).text
    assert 'id="ci-paper"' in svg and 'id="ci-adaptive"' in svg
    _whole_page(browser, "suite")
    # The suite filter: the fig3c suite and its two sub-jobs.
    browser.get(f"{api.base_url}/ui?suite=fig3c")
    listed = "[...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId)"
    _until(browser, wait_for, f"{listed}.length === 3", "the suite's jobs")
    sub_jobs = {sj["job_id"] for sj in api.get(f"/jobs/{suite}").json()["suite"]["sub_jobs"]}
    assert set(browser.execute_script(f"return {listed}")) == {suite, *sub_jobs}
    browser.shot("jobs-of-suite")


def test_compare_gets_the_papers_value_of_a_suite_sub_jobs_columns() -> None:
    # What GET /ui/paper-values/{suite} serves the compare page: per sub-job, its result columns'
    # paper values (Table 1 smoke: PGD-20 is pgd2 there).
    from app.ui import sub_job_paper_values
    from ctrw.paper import SuiteRequest, assemble_suite
    from tests.support.rows import suite_results

    req = SuiteRequest(suite="table1", smoke=True)
    results = suite_results(req, 0.5)
    tables = assemble_suite(req, results).tables
    values = sub_job_paper_values(req, tables, {key: f"id-{key}" for key in results})
    ctrw = values["id-resnet18/digits/ctrw"]
    assert ctrw["clean|paper"] == 83.69 and ctrw["pgd2|paper"] == 69.48 and "eotpgd2|adaptive" not in ctrw


def test_with_keys_required_the_dashboard_asks_for_a_key_once_per_session(
    processes: Any, fast_settings: Any, wait_for: Callable[..., Any], tiny_train: dict[str, Any], browser: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from sqlalchemy.orm import Session

    from app.core.db import make_engine
    from app.core.migrate import upgrade
    from app.services import auth

    settings = fast_settings(processes.tmp)
    upgrade(settings)
    with Session(make_engine(settings.database_url)) as session:
        key = auth.create_key(session=session, owner="alice")[1]  # a key exists: keys are required
    api = processes.api(settings, embedded_worker=True)
    assert api.get("/jobs").status_code == 401
    bearer = {"Authorization": f"Bearer {key}"}
    job = api.post("/jobs/train", json=tiny_train, headers=bearer).json()["id"]
    wait_for(lambda: api.get(f"/jobs/{job}", headers=bearer).json()["status"] == "succeeded",
             timeout=240, what="the job")  # fmt: skip

    def alert() -> Any:
        try:
            return browser.switch_to.alert
        except NoAlertPresentException:
            return None

    browser.get(f"{api.base_url}/ui")
    prompt = wait_for(alert, timeout=30, what="the key prompt")
    assert "API key" in prompt.text
    prompt.send_keys(key)
    prompt.accept()
    _until(browser, wait_for, f"document.querySelector('#jobs tr[data-job-id=\"{job}\"]')", "alice's job")
    # The rest of the session needs no second prompt: the job page, its table and its figures load.
    browser.get(f"{api.base_url}/ui/jobs/{job}")
    _until(browser, wait_for, "document.querySelectorAll('#figures img').length === 4", "the figures")
    assert alert() is None
    assert browser.execute_script("return sessionStorage.getItem('ctrw-api-key')") == key
    browser.shot("with-key")
