"""``/docs``: the API reference as one self-contained HTML page, made from the OpenAPI schema
on the server (no script, no stylesheet or font from a CDN: it works without internet).
FastAPI's Swagger UI and ReDoc pages load their assets from a CDN, so they are off."""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.op{border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}
.m{display:inline-block;min-width:4.5em;font-weight:bold;font-family:monospace}
.GET{color:#1f6feb}.POST{color:#1a7f37}.DELETE{color:#cf222e}
code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:24em}
table{border-collapse:collapse}td,th{padding:.15em .6em;border-bottom:1px solid #eee;text-align:left}
details summary{cursor:pointer}
"""


def _schema_name(s: dict[str, Any]) -> str:
    if "$ref" in s:
        return s["$ref"].rsplit("/", 1)[-1]
    if s.get("type") == "array" and isinstance(s.get("items"), dict):
        return f"list of {_schema_name(s['items'])}"
    if "anyOf" in s:
        return " | ".join(_schema_name(x) for x in s["anyOf"])
    return str(s.get("type", "object"))


def docs_page(spec: dict[str, Any]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(spec['info']['title'])}"
           f" API</title><style>{_STYLE}</style></head><body>",
           f"<h1>{escape(spec['info']['title'])} {escape(spec['info']['version'])}</h1>",
           f"<p>{escape(spec['info'].get('description', ''))}</p>",
           "<p>The machine-readable schema: <a href='openapi.json'>openapi.json</a> "
           "(OpenAPI 3.1). Send <code>Authorization: Bearer &lt;JWT or API token&gt;</code>.</p>"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method.upper(), path, op))
    for tag, ops in by_tag.items():
        out.append(f"<h2>{escape(tag)}</h2>")
        for method, path, op in ops:
            out.append(f"<div class='op'><span class='m {method}'>{method}</span> "
                       f"<code>{escape(path)}</code> — {escape(op.get('summary', ''))}")
            if op.get("description"):
                out.append(f"<p>{escape(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>type</th></tr>")
                for p in params:
                    out.append(f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}"
                               f"</td><td>{escape(_schema_name(p.get('schema', {})))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                out.append(f"<p>body: <code>{escape(_schema_name(body.get('schema', {})))}</code></p>")
            codes = ", ".join(f"{escape(c)} {escape(r.get('description', ''))}"
                              for c, r in op.get("responses", {}).items())
            out.append(f"<p>responses: {codes}</p></div>")
    out.append("<h2>schemas</h2>")
    for name, s in spec.get("components", {}).get("schemas", {}).items():
        out.append(f"<details><summary><code>{escape(name)}</code></summary><pre>"
                   f"{escape(json.dumps(s, indent=2, ensure_ascii=False))}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)
