// The operators' dashboard: polls the gateway's API with the operator's bearer token.
// Data goes into the DOM as text only (textContent), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "hpcfed.dashboard.token";
  const POWER_SECONDS = 10;
  const JOBS_LIMIT = 20;
  const STATES = ["up", "degraded", "down", "unknown"];

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ token and settings

  /** Reads `#token=...&refresh=...`; the token moves to sessionStorage and out of the URL. */
  function readFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    }
    const refresh = Number(params.get("refresh"));
    return { refreshSeconds: refresh > 0 ? refresh : 2 };
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function askForToken(reason) {
    $("token-form").hidden = false;
    $("forget-token").hidden = true;
    if (reason) $("token-input").placeholder = reason;
  }

  // ------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    let response;
    try {
      response = await fetch(path, { headers, cache: "no-store" });
    } catch (exc) {
      throw new ApiError(0, "the gateway does not answer: " + exc.message);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (exc) {
      body = null;
    }
    if (!response.ok) {
      const error = body && body.error ? body.error : {};
      throw new ApiError(response.status, `${response.status} ${error.code || response.statusText}: ${error.message || "no details"}`);
    }
    return body;
  }

  // One line per failing source; cleared when that source answers again.
  const errors = new Map();

  function report(source, exc) {
    if (exc === null) {
      errors.delete(source);
    } else {
      errors.set(source, `${source}: ${exc.message}`);
      if (exc.status === 401) askForToken("token refused; paste a new one");
    }
    const box = $("errors");
    box.replaceChildren(
      ...[...errors.entries()].map(([key, text]) => {
        const div = el("div", "error", text);
        div.dataset.source = key;
        return div;
      }),
    );
  }

  // ------------------------------------------------------------ rendering helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function stateOf(value) {
    return STATES.includes(value) ? value : "unknown";
  }

  function when(iso) {
    if (!iso) return "—";
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return String(iso);
    const seconds = Math.max(0, (Date.now() - at.getTime()) / 1000);
    const ago =
      seconds < 90 ? `${Math.round(seconds)} s` : seconds < 5400 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds / 3600)} h`;
    return `${at.toLocaleString()} (${ago} ago)`;
  }

  const num = (value, digits = 1) => (typeof value === "number" ? value.toFixed(digits) : "—");
  const pct = (value) => (typeof value === "number" ? (value * 100).toFixed(1) + " %" : "—");

  function setField(card, name, text) {
    card.querySelector(`[data-field="${name}"]`).textContent = text;
  }

  function setState(node, state) {
    for (const s of STATES) node.classList.remove("state-" + s);
    node.classList.add("state-" + state);
    node.querySelector(".badge").textContent = state;
  }

  // ------------------------------------------------------------ centers

  const FIELDS = [
    ["since", "since"],
    ["ssh", "SSH p50"],
    ["jobs", "queued / running"],
    ["error-rate", "error rate"],
    ["cores", "cores idle / total"],
    ["gpus", "GPUs allocated / total"],
    ["live", "live status"],
  ];

  function centerCard(id) {
    let card = document.querySelector(`.center[data-center="${CSS.escape(id)}"]`);
    if (card) return card;
    card = el("article", "center state-unknown");
    card.dataset.center = id;
    const title = el("h3");
    title.append(el("span", "name", id), el("span", "badge", "unknown"));
    const meta = el("div", "muted meta");
    meta.dataset.field = "meta";
    const list = el("dl");
    for (const [name, label] of FIELDS) {
      const value = el("dd", null, "—");
      value.dataset.field = name;
      list.append(el("dt", null, label), value);
    }
    const recent = el("ul", "recent-errors");
    card.append(title, meta, list, recent);
    $("centers").append(card);
    return card;
  }

  function renderCenter(center) {
    const card = centerCard(center.id);
    setState(card, stateOf(center.state));
    card.querySelector(".name").textContent = center.name ? `${center.name} (${center.id})` : center.id;
    setField(card, "meta", [center.type, center.region].filter(Boolean).join(" · "));
    if (!("state" in center)) return; // from /v1/centers: no health figures
    const latency = center.ssh_latency_ms || {};
    const jobs = center.jobs || {};
    setField(card, "since", when(center.since));
    setField(card, "ssh", latency.p50 === undefined || latency.p50 === null ? "—" : `${num(latency.p50)} ms`);
    setField(card, "jobs", `${jobs.queued ?? "—"} / ${jobs.running ?? "—"}`);
    setField(card, "error-rate", pct(center.error_rate));
    const recent = card.querySelector(".recent-errors");
    recent.replaceChildren(
      ...(center.recent_errors || []).slice(0, 5).map((e) => el("li", null, `${when(e.at)} ${e.kind}: ${e.error}`)),
    );
  }

  function renderPower(id, doc) {
    const card = centerCard(id);
    const live = doc.live || {};
    const cores = live.cores || {};
    const gpus = live.gpus || [];
    const sum = (key) => gpus.reduce((total, g) => total + (g[key] || 0), 0);
    setField(card, "cores", `${cores.idle ?? "—"} / ${cores.total ?? "—"}`);
    setField(card, "gpus", gpus.length ? `${sum("allocated")} / ${sum("total")}` : "none");
    const age = typeof live.age_seconds === "number" ? ` (${Math.round(live.age_seconds)} s old)` : "";
    setField(card, "live", `${live.status || "—"}${age}${live.error ? ": " + live.error : ""}`);
  }

  function renderFederation(health) {
    const box = $("federation");
    const state = stateOf(health.status);
    setState(box, state);
    box.dataset.federation = state;
    const store = health.store && health.store.ok === false ? "; store NOT ok" : "";
    $("federation-detail").textContent = `checked ${when(health.checked_at)}, probes every ${num(health.probe_interval, 0)} s${store}`;
  }

  // ------------------------------------------------------------ jobs

  function renderJobs(jobs) {
    const rows = jobs.map((job) => {
      const row = el("tr");
      row.dataset.job = job.id;
      row.append(
        el("td", "id", job.id),
        el("td", null, job.owner),
        el("td", null, job.center),
        el("td", "job-state", job.state),
        el("td", null, when(job.created_at)),
      );
      return row;
    });
    if (!rows.length) {
      const row = el("tr");
      const cell = el("td", "muted", "no jobs");
      cell.colSpan = 5;
      row.append(cell);
      rows.push(row);
    }
    $("jobs").querySelector("tbody").replaceChildren(...rows);
  }

  // ------------------------------------------------------------ polling

  let centerIds = [];

  /** The centers whose load is fetched; the first time they are known, it is fetched now. */
  function learnCenters(centers) {
    const first = centerIds.length === 0;
    centerIds = (centers || []).map((c) => c.id);
    if (first && centerIds.length) refreshPower();
  }

  async function refreshHealth() {
    try {
      const health = await api("/v1/health");
      report("health", null);
      renderFederation(health);
      for (const center of health.centers || []) renderCenter(center);
      learnCenters(health.centers);
    } catch (exc) {
      report("health", exc);
      // Without the health answer the centers are still listed, their state unknown.
      try {
        const listed = await api("/v1/centers");
        report("centers", null);
        for (const center of listed.centers || []) {
          renderCenter({ id: center.id, name: center.name, type: center.type, region: center.region });
        }
        learnCenters(listed.centers);
      } catch (inner) {
        report("centers", inner);
      }
    }
  }

  async function refreshJobs() {
    try {
      const answer = await api(`/v1/jobs?limit=${JOBS_LIMIT}`);
      report("jobs", null);
      renderJobs(answer.jobs || []);
    } catch (exc) {
      report("jobs", exc);
    }
  }

  async function refreshPower() {
    await Promise.all(
      centerIds.map(async (id) => {
        try {
          renderPower(id, await api(`/v1/centers/${encodeURIComponent(id)}/computing-power`));
          report(`computing power of ${id}`, null);
        } catch (exc) {
          report(`computing power of ${id}`, exc);
        }
      }),
    );
  }

  /** Runs `task` now and then `seconds` after each run ends, so slow answers never pile up. */
  function every(seconds, task, delaySeconds = 0) {
    const run = async () => {
      if (token()) await task();
      setTimeout(run, seconds * 1000);
    };
    setTimeout(run, delaySeconds * 1000);
  }

  function useNewToken() {
    $("token-form").hidden = true;
    $("forget-token").hidden = false;
    errors.clear();
    report("token", null);
    refreshHealth().then(refreshPower);
    refreshJobs();
  }

  function start() {
    const { refreshSeconds } = readFragment();
    $("footer").textContent = `health and jobs every ${refreshSeconds} s, load every ${POWER_SECONDS} s`;
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      useNewToken();
    });
    // A `#token=...` link opened in this tab again does not reload the page.
    window.addEventListener("hashchange", () => {
      const before = token();
      readFragment();
      if (token() !== before) useNewToken();
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken("paste a bearer token");
    });
    if (token()) {
      $("forget-token").hidden = false;
    } else {
      askForToken();
    }
    every(refreshSeconds, refreshHealth);
    every(refreshSeconds, refreshJobs);
    // The first load follows the first center list (learnCenters); then its own slower pace.
    every(POWER_SECONDS, refreshPower, POWER_SECONDS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
