"""A PROV-JSON document drawn as an SVG graph, server-side (no JavaScript library, no CDN).

Layout in columns: the entities nothing generated (the inputs), the
activities, the entities the activities generated (the outputs), and the
agents.  Edges are the PROV relations between them, labelled with the
relation's name.  Shapes follow the PROV convention: entities as ellipses,
activities as rectangles, agents as pentagon-like house shapes.
"""

from __future__ import annotations

from html import escape
from typing import Any

RELATIONS = {  # relation: (from key, to key)
    "used": ("prov:activity", "prov:entity"),
    "wasGeneratedBy": ("prov:entity", "prov:activity"),
    "wasDerivedFrom": ("prov:generatedEntity", "prov:usedEntity"),
    "wasAssociatedWith": ("prov:activity", "prov:agent"),
    "wasAttributedTo": ("prov:entity", "prov:agent"),
    "wasInformedBy": ("prov:informed", "prov:informant"),
    "actedOnBehalfOf": ("prov:delegate", "prov:responsible"),
}
NODE_W, NODE_H, GAP_X, GAP_Y = 230, 44, 90, 22


def _records(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    out = dict(doc.get(kind, {}))
    for bundle in doc.get("bundle", {}).values():
        out.update(bundle.get(kind, {}))
    return out


def _edges(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    edges = []
    for name, (a, b) in RELATIONS.items():
        for rel in _records(doc, name).values():
            items = rel if isinstance(rel, list) else [rel]
            for item in items:
                if a in item and b in item:
                    edges.append((str(item[a]), str(item[b]), name))
    return edges


def _short(name: str, most: int = 32) -> str:
    text = name.split("#", 1)[-1] if "#" in name else name
    return text if len(text) <= most else text[:most - 1] + "…"


def to_svg(doc: dict[str, Any]) -> str:
    """The SVG drawing of a PROV-JSON document (a ``<svg>`` element as text)."""
    entities, activities = _records(doc, "entity"), _records(doc, "activity")
    agents = _records(doc, "agent")
    edges = _edges(doc)
    generated = {a for a, _, name in edges if name == "wasGeneratedBy"}
    columns = [sorted(e for e in entities if e not in generated), sorted(activities),
               sorted(e for e in entities if e in generated), sorted(agents)]
    position: dict[str, tuple[float, float]] = {}
    for col, names in enumerate(columns):
        for row, name in enumerate(names):
            position[name] = (20 + col * (NODE_W + GAP_X), 20 + row * (NODE_H + GAP_Y))
    rows = max((len(c) for c in columns), default=1)
    width = 40 + 4 * NODE_W + 3 * GAP_X
    height = 40 + rows * (NODE_H + GAP_Y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="prov-graph" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             '<title>Provenance graph (W3C PROV)</title>',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/>'
             '</marker></defs>']
    for a, b, name in edges:
        if a not in position or b not in position:
            continue
        (x1, y1), (x2, y2) = position[a], position[b]
        sx = x1 + (NODE_W if x2 > x1 else 0)
        ex = x2 + (0 if x2 > x1 else NODE_W)
        if x1 == x2:
            sx = ex = x1 + NODE_W
        sy, ey = y1 + NODE_H / 2, y2 + NODE_H / 2
        parts.append(f'<line class="edge" x1="{sx}" y1="{sy}" x2="{ex}" y2="{ey}" '
                     'marker-end="url(#arrow)"/>')
        parts.append(f'<text class="edge-label" x="{(sx + ex) / 2}" y="{(sy + ey) / 2 - 3}">'
                     f'{escape(name)}</text>')
    for kind, records in (("entity", entities), ("activity", activities), ("agent", agents)):
        for name in records:
            if name not in position:
                continue
            x, y = position[name]
            if kind == "entity":
                shape = (f'<ellipse cx="{x + NODE_W / 2}" cy="{y + NODE_H / 2}" '
                         f'rx="{NODE_W / 2}" ry="{NODE_H / 2}"/>')
            elif kind == "activity":
                shape = f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}"/>'
            else:
                shape = (f'<polygon points="{x},{y + 12} {x + NODE_W / 2},{y} {x + NODE_W},'
                         f'{y + 12} {x + NODE_W},{y + NODE_H} {x},{y + NODE_H}"/>')
            parts.append(f'<g class="node {kind}"><title>{escape(name)}</title>{shape}'
                         f'<text x="{x + NODE_W / 2}" y="{y + NODE_H / 2 + 4}">'
                         f'{escape(_short(name))}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)
