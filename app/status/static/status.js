// The status page, live (DESIGN §13): each server-sent snapshot rebuilds the sections that
// app/status/page.py rendered, with the same wording. Data only ever goes into the page as
// text (textContent, attributes): never as HTML.
"use strict";
(function () {
  const LIMITS = ["rpm", "rpd", "tpd", "concurrency"];
  const SVG = "http://www.w3.org/2000/svg";
  const csrfInput = document.querySelector("input[name=csrf]");
  const csrf = csrfInput ? csrfInput.value : null;

  function pad(n) { return String(n).padStart(2, "0"); }
  function clockTime(epoch) {
    if (epoch === null || epoch === undefined) return "—";
    const d = new Date(epoch * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }
  function countdown(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? h + "h " + m + "m " + s + "s" : m + "m " + s + "s";
  }
  function number(v) { return v === null || v === undefined ? "—" : String(v); }
  function percent(r) { return r === null || r === undefined ? "—" : (r * 100).toFixed(1) + " %"; }
  function ms(v) { return v === null || v === undefined ? "—" : v + " ms"; }
  function health(c) {
    const state = c.ok === true ? "ok" : c.ok === false ? "failing" : "—";
    return state + ": " + c.detail;
  }
  function limitText(key, name) {
    const limit = key.limits[name];
    if (limit === null) return "no limit";
    return key.used[name] + " / " + limit + " (" + key.remaining[name] + " left)";
  }
  function el(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
  }
  function fill(tableId, rows) {
    const table = document.getElementById(tableId);
    if (!table) return;
    const body = table.tBodies[0];
    body.replaceChildren.apply(body, rows);
  }
  function row(values) {
    const tr = el("tr");
    values.forEach(function (v) { tr.appendChild(el("td", v)); });
    return tr;
  }

  function keyRow(key) {
    const tr = row([key.name].concat(LIMITS.map(function (n) { return limitText(key, n); }),
      [String(key.requests_today), String(key.tokens_today), String(key.fair_share)]));
    tr.dataset.key = key.name;
    if (csrf !== null) {
      const form = el("form");
      form.method = "post";
      form.action = "/status/keys/" + encodeURIComponent(key.name) + "/revoke";
      const hidden = el("input");
      hidden.type = "hidden"; hidden.name = "csrf"; hidden.value = csrf;
      const button = el("button", "Revoke");
      button.type = "submit";
      form.append(hidden, button);
      const td = el("td");
      td.appendChild(form);
      tr.appendChild(td);
    }
    return tr;
  }

  function modelRow(model, now) {
    let state = model.state, left = "";
    if (model.state === "cooling" && model.cooling_until !== null) {
      state = "cooling until " + clockTime(model.cooling_until);
      left = countdown(model.cooling_until - now);
    }
    const tr = el("tr");
    tr.dataset.model = model.id;
    tr.className = "state-" + model.state;
    tr.appendChild(el("td", model.id));
    tr.appendChild(el("td", String(model.requests_today)));
    const stateCell = el("td", state);
    if (left) {
      stateCell.appendChild(document.createTextNode(" "));
      const timer = el("span", left);
      timer.className = "countdown";
      timer.dataset.until = String(model.cooling_until);
      stateCell.appendChild(timer);
    }
    tr.appendChild(stateCell);
    tr.appendChild(el("td", percent(model.success_rate)));
    tr.appendChild(el("td", ms(model.p50_ms)));
    return tr;
  }

  function chart(name, days, series) {
    const top = Math.max.apply(null, series.requests) || 1;
    const figure = el("figure");
    const sum = function (a) { return a.reduce(function (x, y) { return x + y; }, 0); };
    figure.appendChild(el("figcaption", name + ": " + sum(series.requests) + " requests, " +
      sum(series.tokens) + " tokens"));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("role", "img");
    svg.setAttribute("viewBox", "0 0 " + days.length * 10 + " 40");
    svg.setAttribute("aria-label", name);
    days.forEach(function (day, i) {
      const height = Math.round(series.requests[i] / top * 40);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(i * 10));
      rect.setAttribute("y", String(40 - height));
      rect.setAttribute("width", "8");
      rect.setAttribute("height", String(Math.max(height, 1)));
      const title = document.createElementNS(SVG, "title");
      title.textContent = name + " " + day + ": " + series.requests[i] + " requests, " +
        series.tokens[i] + " tokens";
      rect.appendChild(title);
      svg.appendChild(rect);
    });
    figure.appendChild(svg);
    return figure;
  }
  function busiest(table) {
    const total = function (n) { return table[n].requests.reduce(function (x, y) { return x + y; }, 0); };
    return Object.keys(table).sort(function (a, b) {
      return total(b) - total(a) || (a < b ? -1 : a > b ? 1 : 0);
    }).slice(0, 8);
  }
  function charts(id, days, table) {
    const box = document.getElementById(id);
    if (!box) return;
    box.replaceChildren.apply(box, busiest(table).map(function (n) { return chart(n, days, table[n]); }));
  }

  function render(snap) {
    const now = snap.generated_at;
    setText("mode", snap.mode);
    setText("updated", clockTime(now));
    setText("free-remaining", number(snap.free_budget.remaining_today));
    setText("free-limit", number(snap.free_budget.limit_today));
    setText("free-resets", clockTime(snap.free_budget.resets_at));
    fill("keys", snap.keys.map(keyRow));
    fill("models", snap.models.map(function (m) { return modelRow(m, now); }));
    charts("chart-keys", snap.daily.days, snap.daily.by_key);
    charts("chart-models", snap.daily.days, snap.daily.by_model);
    setText("cache-entries", String(snap.cache.entries));
    setText("cache-bytes", String(snap.cache.bytes));
    setText("cache-hit-rate", percent(snap.cache.hit_rate_today));
    setText("overhead-p50", ms(snap.overhead_ms.p50));
    setText("overhead-p99", ms(snap.overhead_ms.p99));
    setText("replicas", String(snap.replicas.alive));
    setText("replicas-note", snap.replicas.note);
    setText("database", health(snap.health.database));
    setText("redis", health(snap.health.redis));
    fill("failures", snap.failures.map(function (f) {
      return row([clockTime(f.time), f.key || "—", f.route, f.model || "—", String(f.status), f.code]);
    }));
  }

  function tick() {
    const now = Date.now() / 1000;
    document.querySelectorAll(".countdown").forEach(function (node) {
      node.textContent = countdown(Number(node.dataset.until) - now);
    });
  }

  const events = new EventSource("/status/events");
  events.addEventListener("snapshot", function (event) { render(JSON.parse(event.data)); });
  setInterval(tick, 1000);
})();
