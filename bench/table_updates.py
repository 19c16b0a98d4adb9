"""Trial-table updates in the dashboard: a store holding a finished study of 10,000 trials
(written in bulk, as tests/e2e/test_dashboard_actions.py writes it), served by a real
`stagetune serve` with a token, its study page driven by headless Chromium. Goal: each
update (a sort, a filter, the next page) drawn within 1 s of the click, on 2 cores.

An update's time is the page's own (`#trials[data-ms]`: request, answer, rows drawn).
Each round opens the page afresh and runs the same updates; the first round's queries
are new to the server, later rounds' are answered from its read cache, so the table shows
the first round and the median of the others.

    python bench/table_updates.py               # 3 rounds
    python bench/table_updates.py --rounds 5

Results go to bench/results/table_updates.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
from playwright.sync_api import BrowserContext, Page, sync_playwright  # noqa: E402

from tests.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.e2e.test_dashboard_actions import BIG, TOKEN, build_store, update  # noqa: E402
from tests.service.server import Server  # noqa: E402

GOAL_MS = 1000
ALL_RENDERED = "[...document.querySelectorAll('.plot')].every(d => d.dataset.rendered)"


def updates(page: Page) -> dict[str, Callable[[], None]]:
    """The updates a round runs, in order, each a click or a submit on `page`."""
    def click(selector: str) -> Callable[[], None]:
        return lambda: page.click(selector)

    def filter_by() -> None:
        page.fill("input[name=q]", "optimizer=adamw lr<0.001")
        page.click("#trial-filter button[type=submit]")

    def pruned_only() -> None:
        page.select_option("select[name=state]", "pruned")

    return {"sort by value, ascending": click("th[data-sort='value'] button"),
            "sort by value, descending": click("th[data-sort='value'] button"),
            "sort by a parameter": click("th[data-sort='param:width'] button"),
            "sort by duration": click("th[data-sort='duration'] button"),
            "filter": filter_by,
            "filter by state": pruned_only,
            "next page": click("#trials-next")}


def log_in(context: BrowserContext, url: str) -> None:
    """Through the login page, as a person does: the session cookie rides along after."""
    page = context.new_page()
    page.goto(f"{url}/login")
    page.fill("input[name=token]", TOKEN)
    with page.expect_response(f"{url}/login") as answer:
        page.click("button[type=submit]")
    if answer.value.status != 204:
        raise SystemExit(f"the login failed: {answer.value.status}")
    page.close()


def one_round(context: BrowserContext, url: str) -> dict[str, int]:
    page = context.new_page()
    page.goto(f"{url}/studies/{BIG}")
    page.wait_for_function(ALL_RENDERED, timeout=120_000)
    times = {what: update(page, action) for what, action in updates(page).items()}
    page.close()
    return times


def measure(rounds: int) -> list[dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        store = f"sqlite:///{tmp}/store.db"
        build_store(store)
        server = Server(store, Path(tmp) / "data", tokens=TOKEN).start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http:
                http.get(f"{server.url}/api/studies/{BIG}/trials", params={"limit": 1})  # loaded
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            log_in(context, server.url)
            return [one_round(context, server.url) for _ in range(rounds)]
        finally:
            browser.close()
            server.stop()


def render(results: list[dict[str, int]], args: argparse.Namespace) -> str:
    load = os.getloadavg()[0]
    lines = [f"# Trial-table updates, a study of 10,000 trials (goal: {GOAL_MS} ms)", "",
             f"{dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
             f"{load:.1f} at the end; {args.rounds} rounds, headless Chromium, SQLite.", "",
             "Command: `python bench/table_updates.py`", "",
             "| update | first round ms | later rounds, median ms | within goal |",
             "|---|--:|--:|---|"]
    for what, first in results[0].items():
        later = [r[what] for r in results[1:]]
        median = f"{statistics.median(later):.0f}" if later else "-"
        lines.append(f"| {what} | {first} | {median} | {'yes' if first <= GOAL_MS else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    table = render(measure(args.rounds), args)
    print(table)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "table_updates.md").write_text(table)


if __name__ == "__main__":
    main()
