"""One study as one self-contained HTML file: every figure embedded as Plotly JSON, and
plotly.js and the stylesheet inlined, so it opens offline and can be mailed around."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup

from stagetune.service.figures import FigureCache
from stagetune.service.web._templates import STATIC, plotly_js, templates
from stagetune.studies.reporting import views
from stagetune.studies.reporting.plots import kinds_for
from stagetune.studies.store import Store

SECTIONS = ("study", "init_check", "overfit", "lr_probe", "coarse", "refine", "confirm")


def render_report(store: Store, study: str, figures: FigureCache | None = None) -> str:
    figures = figures or FigureCache()
    record = store.study(study)
    detail = views.detail(store, record)
    kinds = [k for k in kinds_for(record.spec) if not k.per_trial]
    # Plotly JSON inside <script type="application/json">: only "</" could end the tag early.
    embedded = {k.name: Markup(figures.get(store, study, k.name).replace("</", "<\\/"))
                for k in kinds}
    return templates().get_template("report.html").render(
        study=detail, stages={s["name"]: s for s in detail["stages"]},
        sections={s: [k for k in kinds if k.section == s] for s in SECTIONS},
        figures=embedded, plotly_js=Markup(plotly_js()),
        css=Markup((STATIC / "dashboard.css").read_text(encoding="utf-8")),
        script=Markup((STATIC / "dashboard.js").read_text(encoding="utf-8")),
        made=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
