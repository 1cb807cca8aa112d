"""Self-contained HTML reports: lead tables (e.g. verdicts against claims) and findings first, then
sections of inline-SVG figures and tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "perf_report.html.j2"


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()  # inline SVG documents
    tables: tuple[Table, ...] = ()


def render_report(title: str, subtitle: str, findings: Sequence[str], sections: Sequence[Section],
                  meta: Mapping[str, str], lead: Sequence[Table] = ()) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)))
    return env.get_template(TEMPLATE.name).render(title=title, subtitle=subtitle, findings=list(findings),
                                                   sections=list(sections), meta=dict(meta), lead=list(lead))


def write_report(path: Path, html: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
