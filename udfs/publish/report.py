"""The HTML report: one self-contained page from plain facts (no Spark, no network).

`render(facts)` turns the dict the report job collects into a single HTML document with
inline SVG charts and inline images (data: URIs): no script, font or stylesheet is
fetched, so the page opens offline, from a bucket, or as an e-mail attachment. Charts
are hand-made SVG bars: a page of counts needs no plotting library.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from crawlpairs.udfs.publish.tables import concentration

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:24px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}
td.n{text-align:right;font-variant-numeric:tabular-nums}.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:160px;font-size:11px;overflow-wrap:anywhere}figure img{width:160px;height:160px;object-fit:cover;background:#eee}
.row{display:flex;flex-wrap:wrap;gap:24px}.muted{color:#777;font-size:12px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(n: Any) -> str:
    if isinstance(n, float):
        return f"{n:,.3f}"
    return f"{n:,}" if isinstance(n, int) else esc(n)


def bar_chart(items: Sequence[tuple[str, float]], title: str, width: int = 520, unit: str = "") -> str:
    """Horizontal bars, one per (label, value), longest first as given; an empty chart says so."""
    if not items:
        return f'<figure class="chart"><figcaption>{esc(title)}</figcaption><p class="muted">no data</p></figure>'
    label_w, bar_h, gap = 190, 16, 4
    top = max(v for _, v in items) or 1
    h = len(items) * (bar_h + gap) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}" class="bars" '
             f'width="{width}" height="{h}" viewBox="0 0 {width} {h}">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{esc(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 24 + i * (bar_h + gap)
        w = max(1.0, (width - label_w - 80) * value / top)
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" font-size="11" text-anchor="end">{esc(short)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4a78b5">'
                     f"<title>{esc(label)}: {fmt(value)}</title></rect>")
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="11">{fmt(value)}{esc(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(edges: Sequence[float], counts: Sequence[int], title: str, width: int = 340, height: int = 170) -> str:
    """Vertical bars over equal bins `edges[i]..edges[i+1]`."""
    if not counts or not sum(counts):
        return f'<figure class="chart"><figcaption>{esc(title)}</figcaption><p class="muted">no data</p></figure>'
    top = max(counts)
    plot_h, left, bottom = height - 44, 6, 22
    bw = (width - 2 * left) / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}" class="hist" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{esc(title)}</text>']
    for i, c in enumerate(counts):
        h = plot_h * c / top
        x = left + i * bw
        parts.append(f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{max(1.0, bw - 1):.1f}" '
                     f'height="{h:.1f}" fill="#d08c2b"><title>{edges[i]:.3f}–{edges[i + 1]:.3f}: {c:,}</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="11">{edges[0]:.2f}</text>')
    parts.append(f'<text x="{width - left}" y="{height - 6}" font-size="11" text-anchor="end">{edges[-1]:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{fmt(c)}</td>' if isinstance(c, (int, float)) else
                                    f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def top(counts: Mapping[str, int], n: int = 15) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def _concentration_block(counts: Mapping[str, int], what: str) -> str:
    c = concentration(counts)
    return (f'<p class="concentration">{esc(what)}: {len(counts):,} domains; the top 10 hold '
            f"<b>{c['top10']:.1%}</b> of the rows, the top 100 <b>{c['top100']:.1%}</b>; "
            f"Herfindahl index <b>{c['hhi']:.4f}</b> (1 = a single domain, 1/N = evenly spread).</p>")


def _compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """What changed from `b` (the older root) to `a`: the funnel, languages, and domains."""
    rows = []
    fa, fb = dict(a.get("funnel", [])), dict(b.get("funnel", []))
    for step in dict.fromkeys([*fa, *fb]):
        x, y = fa.get(step), fb.get(step)
        rows.append((step, y if y is not None else "—", x if x is not None else "—",
                     (x - y) if isinstance(x, int) and isinstance(y, int) else "—"))
    out = table(rows, ["step", f"before ({b.get('root', '')})", f"now ({a.get('root', '')})", "change"])
    la, lb = a.get("languages", {}), b.get("languages", {})
    lang_rows = [(k, lb.get(k, 0), la.get(k, 0), la.get(k, 0) - lb.get(k, 0))
                 for k in sorted(set(la) | set(lb), key=lambda k: -abs(la.get(k, 0) - lb.get(k, 0)))[:15]]
    out += "<h3>Languages</h3>" + table(lang_rows, ["language", "before", "now", "change"])
    da, db = a.get("image_domains", {}), b.get("image_domains", {})
    new = [d for d, _ in top(da, 200) if d not in db][:15]
    gone = [d for d, _ in top(db, 200) if d not in da][:15]
    out += ("<h3>Image domains</h3>" + f"<p>new among the top 200: {esc(', '.join(new) or 'none')}</p>"
            + f"<p>gone from the top 200: {esc(', '.join(gone) or 'none')}</p>")
    return out


def render(facts: Mapping[str, Any], compare: Mapping[str, Any] | None = None) -> str:
    """The whole page. `facts` keys: root, generated, source, funnel [(step, rows)], drops {stage: {reason: n}},
    languages, image_domains, page_domains, licenses, statuses, refusals ({reason: n}), histograms
    {name: (edges, counts)}, samples [(data_uri, caption, url)]."""
    funnel = list(facts.get("funnel", []))
    drops = facts.get("drops", {})
    drop_rows = [(stage, reason, n) for stage, reasons in drops.items()
                 for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    langs, licenses = facts.get("languages", {}), facts.get("licenses", {})
    img_dom, page_dom = facts.get("image_domains", {}), facts.get("page_domains", {})
    hists = facts.get("histograms", {})
    samples = facts.get("samples", [])
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>crawlpairs report — {esc(facts.get('root', ''))}</title><style>{CSS}</style></head><body>",
        f"<h1>crawlpairs report</h1><p class=\"muted\">{esc(facts.get('root', ''))} · rows from "
        f"<code>{esc(facts.get('source', ''))}/</code> · generated {esc(facts.get('generated', ''))}</p>",
        _section("funnel", "Funnel: from pairs found to pairs published",
                 bar_chart(funnel, "rows after each step") + table(drop_rows, ["stage", "dropped because", "rows"])),
        _section("languages", "Languages", bar_chart(top(langs), f"top languages ({len(langs)} in all)")),
        _section("domains", "Domains and their concentration",
                 '<div class="row">' + bar_chart(top(img_dom), "top image domains")
                 + bar_chart(top(page_dom), "top page domains") + "</div>"
                 + _concentration_block(img_dom, "Image domains") + _concentration_block(page_dom, "Page domains")),
        _section("licenses", "Page licenses", bar_chart(top(licenses), "rows by page license")),
        _section("download", "Download: statuses, opt-outs, robots and SSRF refusals",
                 '<div class="row">' + bar_chart(top(facts.get("statuses", {})), "download status")
                 + bar_chart(top(facts.get("refusals", {})), "refused because") + "</div>"),
        _section("scores", "Scores",
                 '<div class="row">' + "".join(histogram(e, c, name) for name, (e, c) in hists.items())
                 + ("" if hists else '<p class="muted">not scored</p>') + "</div>"),
        _section("samples", "Sample images",
                 '<div class="grid">' + "".join(
                     f'<figure><img src="{esc(uri)}" alt="{esc(cap)}"><figcaption>{esc(cap[:90])}'
                     f'<br><span class="muted">{esc(url[:60])}</span></figcaption></figure>'
                     for uri, cap, url in samples) + ("" if samples else '<p class="muted">no images</p>') + "</div>"),
    ]
    if compare is not None:
        parts.append(_section("compare", "What changed between the two roots", _compare(facts, compare)))
    parts.append("</body></html>")
    return "\n".join(parts)
