"""The status page's HTML, rendered on the server (DESIGN §13): every number is in the page
before any script runs, so it reads without JavaScript; `static/status.js` then rebuilds
the same sections from each server-sent snapshot, with the same structure and wording.

Every name (key, model, route, error code) goes through `html.escape`: a model id such as
`acme/<img src=x onerror=alert(1)>` is shown as text. No inline script or style attribute
(the CSP forbids both); charts are inline SVG whose bars carry a `<title>` with the values.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from typing import Any

LIMITS = ("rpm", "rpd", "tpd", "concurrency")
# Charts show this many keys and models at most, the busiest first.
MAX_CHARTS = 8
_BAR_WIDTH = 10
_CHART_HEIGHT = 40


def clock_time(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def countdown(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def number(value: Any) -> str:
    return "—" if value is None else str(value)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def _cells(*values: str) -> str:
    return "".join(f"<td>{escape(v)}</td>" for v in values)


def limit_text(key: dict[str, Any], name: str) -> str:
    limit = key["limits"][name]
    if limit is None:
        return "no limit"
    return f"{key['used'][name]} / {limit} ({key['remaining'][name]} left)"


def _page(title: str, body: str, *, live: bool) -> str:
    script = '<script src="/status/static/status.js" defer></script>' if live else ""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel=stylesheet href="/status/static/status.css">'
        f"{script}</head><body>{body}</body></html>\n"
    )


def message_page(heading: str, text: str) -> str:
    """A page with no data: why, and what to do."""
    return _page(
        "openrouter-proxy status",
        f"<main><h1>{escape(heading)}</h1><p>{escape(text)}</p></main>",
        live=False,
    )


def login_page(error: str | None = None) -> str:
    shown = f"<p class=error>{escape(error)}</p>" if error else ""
    return _page(
        "openrouter-proxy status: log in",
        "<main><h1>openrouter-proxy status</h1>"
        "<p>Log in with the proxy's admin key (PROXY_ADMIN_KEY).</p>"
        f"{shown}"
        '<form method=post action="/status/login">'
        "<label>Admin key <input type=password name=admin_key autocomplete=current-password "
        "required></label> <button type=submit>Log in</button></form></main>",
        live=False,
    )


def status_page(
    snap: dict[str, Any], *, csrf: str | None, new_key: dict[str, Any] | None = None
) -> str:
    """The page; `csrf` is the session's token in key mode (forms shown), None in open mode."""
    now = snap["generated_at"]
    free = snap["free_budget"]
    parts = [
        "<header><h1>openrouter-proxy status</h1>",
        f"<p>Mode: <span id=mode>{escape(snap['mode'])}</span>. Updated "
        f"<span id=updated>{clock_time(now)}</span>.</p>",
    ]
    if csrf is not None:
        parts.append(
            '<form method=post action="/status/logout">'
            f'<input type=hidden name=csrf value="{escape(csrf)}">'
            "<button type=submit>Log out</button></form>"
        )
    parts.append("</header><main>")
    if new_key is not None:
        parts.append(
            "<section id=new-key><h2>New key created</h2>"
            f"<p>Key <b>{escape(new_key['name'])}</b>: copy its secret now, it is shown only "
            f"this once.</p><p><code id=new-secret>{escape(new_key['key'])}</code></p></section>"
        )
    parts.append(
        "<section><h2>Free allowance today</h2>"
        f"<p><b id=free-remaining>{number(free['remaining_today'])}</b> of "
        f"<span id=free-limit>{number(free['limit_today'])}</span> requests to free models "
        f"left; resets at <span id=free-resets>{clock_time(free['resets_at'])}</span>.</p>"
        "</section>"
    )
    parts.append(_keys(snap, csrf))
    if csrf is not None:
        parts.append(_create_form(csrf))
    parts.append(_models(snap, now))
    parts.append(_charts(snap))
    cache, overhead, replicas, health = (
        snap["cache"],
        snap["overhead_ms"],
        snap["replicas"],
        snap["health"],
    )
    parts.append(
        "<section><h2>Cache and proxy</h2><dl>"
        f"<dt>Cache entries</dt><dd id=cache-entries>{cache['entries']}</dd>"
        f"<dt>Cache bytes</dt><dd id=cache-bytes>{cache['bytes']}</dd>"
        "<dt>Cache hit rate today</dt>"
        f"<dd id=cache-hit-rate>{percent(cache['hit_rate_today'])}</dd>"
        f"<dt>Proxy overhead p50</dt><dd id=overhead-p50>{_ms(overhead['p50'])}</dd>"
        f"<dt>Proxy overhead p99</dt><dd id=overhead-p99>{_ms(overhead['p99'])}</dd>"
        f"<dt>Replicas alive</dt><dd><span id=replicas>{replicas['alive']}</span> "
        f"(<span id=replicas-note>{escape(replicas['note'])}</span>)</dd>"
        f"<dt>Database</dt><dd id=database>{_health(health['database'])}</dd>"
        f"<dt>Redis</dt><dd id=redis>{_health(health['redis'])}</dd>"
        "</dl></section>"
    )
    parts.append(_failures(snap))
    parts.append("</main>")
    return _page("openrouter-proxy status", "".join(parts), live=True)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value} ms"


def _health(check: dict[str, Any]) -> str:
    state = {True: "ok", False: "failing", None: "—"}[check["ok"]]
    return escape(f"{state}: {check['detail']}")


def _table(table_id: str, heads: Iterable[str], rows: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    return (
        f"<div class=scroll><table id={table_id}><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _keys(snap: dict[str, Any], csrf: str | None) -> str:
    rows = []
    for key in snap["keys"]:
        cells = _cells(
            key["name"],
            *(limit_text(key, name) for name in LIMITS),
            str(key["requests_today"]),
            str(key["tokens_today"]),
            str(key["fair_share"]),
        )
        if csrf is not None:
            cells += (
                f'<td><form method=post action="/status/keys/{escape(_path(key["name"]))}/revoke">'
                f'<input type=hidden name=csrf value="{escape(csrf)}">'
                "<button type=submit>Revoke</button></form></td>"
            )
        rows.append(f'<tr data-key="{escape(key["name"])}">{cells}</tr>')
    heads = ["Key", *LIMITS, "Requests today", "Tokens today", "Fair share"]
    if csrf is not None:
        heads.append("")
    empty = "" if rows else "<p class=note>No client keys: open mode.</p>"
    return f"<section><h2>Keys</h2>{empty}{_table('keys', heads, ''.join(rows))}</section>"


def _path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _create_form(csrf: str) -> str:
    fields = "".join(
        f"<label>{name} <input name={name} type=number min=1 inputmode=numeric></label> "
        for name in LIMITS
    )
    return (
        "<section><h2>Create a key</h2>"
        '<form method=post action="/status/keys" id=create-key>'
        f'<input type=hidden name=csrf value="{escape(csrf)}">'
        "<label>Name <input name=name required maxlength=64></label> "
        f"{fields}"
        '<label>Models <input name=models placeholder="*:free,openai/*"></label> '
        "<label>Paid <input type=checkbox name=paid value=true></label> "
        "<button type=submit>Create</button></form></section>"
    )


def model_state(model: dict[str, Any], now: float) -> tuple[str, str]:
    """The state's text, and the countdown's text when cooling."""
    if model["state"] == "cooling" and model["cooling_until"] is not None:
        return f"cooling until {clock_time(model['cooling_until'])}", countdown(
            model["cooling_until"] - now
        )
    return model["state"], ""


def _models(snap: dict[str, Any], now: float) -> str:
    rows = []
    for model in snap["models"]:
        state, left = model_state(model, now)
        until = model["cooling_until"]
        timer = f' <span class=countdown data-until="{until}">{escape(left)}</span>' if left else ""
        rows.append(
            f'<tr data-model="{escape(model["id"])}" class="state-{escape(model["state"])}">'
            f"<td>{escape(model['id'])}</td><td>{model['requests_today']}</td>"
            f"<td>{escape(state)}{timer}</td>"
            f"{_cells(percent(model['success_rate']), _ms(model['p50_ms']))}</tr>"
        )
    heads = ["Model", "Requests today", "State", "Success (15 min)", "p50 latency (15 min)"]
    return f"<section><h2>Models</h2>{_table('models', heads, ''.join(rows))}</section>"


def chart(name: str, days: list[str], series: dict[str, list[int]]) -> str:
    """Requests per day as bars; each bar's <title> carries the day, requests and tokens."""
    requests, tokens = series["requests"], series["tokens"]
    top = max(requests) or 1
    bars = []
    for i, day in enumerate(days):
        height = round(requests[i] / top * _CHART_HEIGHT)
        label = f"{name} {day}: {requests[i]} requests, {tokens[i]} tokens"
        bars.append(
            f'<rect x="{i * _BAR_WIDTH}" y="{_CHART_HEIGHT - height}" width="{_BAR_WIDTH - 2}" '
            f'height="{max(height, 1)}"><title>{escape(label)}</title></rect>'
        )
    width = len(days) * _BAR_WIDTH
    return (
        f"<figure><figcaption>{escape(name)}: {sum(requests)} requests, {sum(tokens)} tokens"
        f'</figcaption><svg role=img viewBox="0 0 {width} {_CHART_HEIGHT}" '
        f'aria-label="{escape(name)}">{"".join(bars)}</svg></figure>'
    )


def busiest(table: dict[str, dict[str, list[int]]]) -> list[str]:
    return sorted(table, key=lambda n: (-sum(table[n]["requests"]), n))[:MAX_CHARTS]


def _charts(snap: dict[str, Any]) -> str:
    daily = snap["daily"]
    parts = [f"<section><h2>Last {len(daily['days'])} days</h2>"]
    for title, table_id, table in (
        ("By key", "chart-keys", daily["by_key"]),
        ("By model", "chart-models", daily["by_model"]),
    ):
        charts = "".join(chart(name, daily["days"], table[name]) for name in busiest(table))
        parts.append(f"<h3>{title}</h3><div class=charts id={table_id}>{charts}</div>")
    parts.append("</section>")
    return "".join(parts)


def _failures(snap: dict[str, Any]) -> str:
    rows = "".join(
        "<tr>"
        + _cells(
            clock_time(f["time"]),
            f["key"] or "—",
            f["route"],
            f["model"] or "—",
            str(f["status"]),
            f["code"],
        )
        + "</tr>"
        for f in snap["failures"]
    )
    heads = ["Time", "Key", "Route", "Model", "Status", "Error code"]
    return f"<section><h2>Last failed requests</h2>{_table('failures', heads, rows)}</section>"
