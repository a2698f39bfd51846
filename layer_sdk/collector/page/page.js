// The Layer collector's page: plain JavaScript, no framework, no build step.
//
// It reads the collector's JSON API (/api/..., documented in collector/_page.py)
// and its event stream (/api/events) for live updates. Every text that came from
// a reporting application (prompts, answers, attributes, IDs, errors, paths) is
// put into the page as text (textContent, text nodes), never parsed as HTML: a
// prompt holding <script> shows as text and runs nothing. The collector's
// Content-Security-Policy allows no inline script and no eval.
//
// Load times are recorded with the User Timing API: "sessions-list" (from the
// request to the first frame after the list is drawn) and "session-open" (the
// same for one session's conversation); the browser tests and the benchmark
// read them with performance.getEntriesByName().
"use strict";

(() => {
  const PAGE = 100; // sessions asked at a time
  const KIND_LABELS = {
    completion_prompt: "prompt",
    completion_output: "answer",
    completion_tool_call: "tool call",
    completion_prompt_attachment: "attachment",
    embeddings: "embeddings",
    moderation: "moderation",
  };
  const DECISIONS = ["pass", "alert", "block", "skip", "no_data"];

  const $ = (id) => document.getElementById(id);

  // el("div", {class: "x"}, child, "text"): strings become text nodes, never HTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [name, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (name === "class") node.className = value;
        else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
        else node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  async function api(path, options) {
    const response = await fetch(path, {headers: {Accept: "application/json"}, ...options});
    let body = {};
    try {
      body = await response.json();
    } catch (error) {
      body = {};
    }
    if (!response.ok) throw new Error(body.error || `the collector answered ${response.status}`);
    return body;
  }

  // Measured from `mark` to the first frame after the work drawn since.
  function measureAfterPaint(name, mark) {
    requestAnimationFrame(() => setTimeout(() => performance.measure(name, mark), 0));
  }

  // -- times ---------------------------------------------------------------------

  const RFC3339 = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$/;

  function parseTime(text) {
    const m = typeof text === "string" ? RFC3339.exec(text) : null;
    if (!m) return null;
    const fraction = m[7] ? Number(`0.${m[7]}`) * 1000 : 0;
    return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) + fraction;
  }

  const two = (n) => String(n).padStart(2, "0");

  function clock(ms) {
    if (ms === null || Number.isNaN(ms)) return "—";
    const d = new Date(ms);
    const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
    return `${time}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  }

  function day(ms) {
    const d = new Date(ms);
    return d.toDateString() === new Date().toDateString() ? "" : `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
  }

  function when(ms) {
    if (ms === null || Number.isNaN(ms)) return "—";
    const date = day(ms);
    return date ? `${date} ${clock(ms)}` : clock(ms);
  }

  // A time as the list shows it: the clock, and the day below it unless it is today.
  function whenCell(ms) {
    if (ms === null || Number.isNaN(ms)) return el("td", {class: "time"}, "—");
    const date = day(ms);
    return el("td", {class: "time", title: new Date(ms).toISOString()}, clock(ms), date ? el("div", {class: "small"}, date) : null);
  }

  function duration(ms) {
    if (ms === null || Number.isNaN(ms) || ms < 0) return "";
    if (ms < 1) return "<1 ms";
    if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  const number = (n) => Number(n || 0).toLocaleString("en-US");

  function text(value) {
    if (typeof value === "string") return value;
    if (value === undefined || value === null) return "";
    return JSON.stringify(value);
  }

  function pretty(value) {
    if (typeof value === "string") {
      try {
        return JSON.stringify(JSON.parse(value), null, 2);
      } catch (error) {
        return value;
      }
    }
    return JSON.stringify(value, null, 2);
  }

  // -- state ---------------------------------------------------------------------

  const state = {
    filters: {application: "", q: "", failed: false},
    rows: new Map(), // session_id -> {row, summary}
    next: null,
    total: 0,
    listLoading: null, // the list request in flight
    pending: [], // summaries that arrived while the list was loading
    open: null, // the session shown: {id, count, timeline, context, decision}
    refusalsShown: false,
    refused: 0,
    loads: 0,
  };

  // -- totals --------------------------------------------------------------------

  let totalsTimer = null;

  function refreshTotalsSoon() {
    if (totalsTimer === null) totalsTimer = setTimeout(refreshTotals, 300);
  }

  async function refreshTotals() {
    totalsTimer = null;
    let totals;
    try {
      totals = await api("/api/totals");
    } catch (error) {
      return;
    }
    const kinds = Object.entries(totals.actions_by_kind || {})
      .map(([kind, n]) => `${KIND_LABELS[kind] || kind} ${number(n)}`)
      .join(" · ");
    const facts = [
      ["Sessions", number(totals.sessions)],
      ["Actions", number(totals.actions), kinds],
      ["Failed actions", number(totals.failed_actions)],
      ["Requests", number(totals.requests)],
      ["Refused", number(totals.refused)],
      ["Duplicates", number(totals.duplicates), "answered again from X-Request-Id"],
    ];
    $("totals").replaceChildren(
      ...facts.flatMap(([name, value, title]) => [
        el("dt", null, name),
        el("dd", {title: title || null}, value),
      ]),
    );
    state.refused = totals.refused;
    $("refused-count").textContent = totals.refused ? number(totals.refused) : "";
    const select = $("filter-application");
    const chosen = select.value;
    const names = Object.keys(totals.applications || {}).sort();
    select.replaceChildren(
      el("option", {value: ""}, "All applications"),
      ...names.map((name) => el("option", {value: name}, name)),
    );
    select.value = names.includes(chosen) ? chosen : "";
  }

  // -- the sessions list ---------------------------------------------------------

  function matches(summary) {
    const {application, q, failed} = state.filters;
    if (application && summary.application_id !== application) return false;
    if (failed && !summary.failed) return false;
    if (q) {
      const words = [summary.session_id, text(summary.application_id)];
      for (const [name, value] of Object.entries(summary.attributes || {})) {
        words.push(`${name}=${text(value)}`);
      }
      if (!words.join(" ").toLowerCase().includes(q.toLowerCase())) return false;
    }
    return true;
  }

  function countCell(summary) {
    return el(
      "td",
      {class: "num"},
      number(summary.actions),
      summary.failed ? el("span", {class: "badge failed"}, `${number(summary.failed)} failed`) : null,
    );
  }

  function sessionRow(summary) {
    const href = `#/sessions/${encodeURIComponent(summary.session_id)}`;
    const stored = summary.stored_at ? summary.stored_at * 1000 : parseTime(summary.start_time);
    const row = el(
      "tr",
      {class: summary.failed ? "failed" : null, "data-session": summary.session_id},
      whenCell(stored),
      el(
        "td",
        {class: "session-cell"},
        el("a", {href, class: "sid"}, summary.session_id),
        summary.preview ? el("div", {class: "preview"}, summary.preview) : null,
      ),
      el("td", {class: "app"}, text(summary.application_id)),
      el("td", null, text(summary.environment)),
      countCell(summary),
    );
    row.addEventListener("click", (event) => {
      if (!(event.target instanceof HTMLAnchorElement)) location.hash = href;
    });
    if (state.open && state.open.id === summary.session_id) row.classList.add("selected");
    state.rows.set(summary.session_id, {row, summary});
    return row;
  }

  function showCount() {
    const shown = state.rows.size;
    $("list-count").textContent =
      state.total === 0 ? "No sessions yet: point the SDK at this collector." : `${number(shown)} of ${number(state.total)} sessions`;
    $("more").hidden = state.next === null;
  }

  async function loadSessions(more) {
    const mark = `sessions-list:${++state.loads}`;
    performance.mark(mark);
    const params = new URLSearchParams({limit: String(PAGE)});
    if (more && state.next !== null) params.set("before", String(state.next));
    const {application, q, failed} = state.filters;
    if (application) params.set("application", application);
    if (q) params.set("q", q);
    if (failed) params.set("failed", "1");
    const request = api(`/api/sessions?${params}`);
    state.listLoading = request;
    let body;
    try {
      body = await request;
    } catch (error) {
      $("list-count").textContent = `Cannot read the sessions: ${error.message}`;
      return;
    }
    if (state.listLoading !== request) return; // a newer request replaced this one
    state.listLoading = null;
    const body_ = $("sessions").tBodies[0];
    if (!more) {
      body_.replaceChildren();
      state.rows.clear();
    }
    const rows = document.createDocumentFragment();
    for (const summary of body.sessions) {
      if (!state.rows.has(summary.session_id)) rows.append(sessionRow(summary));
    }
    body_.append(rows);
    state.next = body.next;
    state.total = body.total;
    const pending = state.pending;
    state.pending = [];
    for (const summary of pending) addSession(summary);
    showCount();
    measureAfterPaint("sessions-list", mark);
  }

  function addSession(summary) {
    if (state.listLoading) {
      state.pending.push(summary);
      return;
    }
    if (state.rows.has(summary.session_id) || !matches(summary)) return;
    $("sessions").tBodies[0].prepend(sessionRow(summary));
    state.total += 1;
    showCount();
  }

  function onAction(note) {
    const known = state.rows.get(note.session_id);
    if (known && !known.summary.preview && note.preview) {
      known.summary.preview = note.preview;
      known.row.querySelector(".session-cell").append(el("div", {class: "preview"}, note.preview));
    }
    if (known && note.actions > known.summary.actions) {
      known.summary.actions = note.actions;
      if (note.failed) {
        known.summary.failed += 1;
        known.row.classList.add("failed");
      }
      known.row.lastElementChild.replaceWith(countCell(known.summary));
    } else if (!known && note.failed && state.filters.failed) {
      reloadSoon();
    }
    if (state.open && state.open.id === note.session_id && note.actions > state.open.count) {
      refreshOpen();
    }
  }

  let reloadTimer = null;

  function reloadSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => loadSessions(false), 200);
  }

  // -- one session as a conversation ---------------------------------------------

  function copyButton(value) {
    const button = el("button", {type: "button", class: "copy", title: "Copy"}, "copy");
    button.addEventListener("click", async (event) => {
      event.stopPropagation();
      try {
        await navigator.clipboard.writeText(value);
        button.textContent = "copied";
      } catch (error) {
        button.textContent = "select it";
      }
      setTimeout(() => (button.textContent = "copy"), 1500);
    });
    return button;
  }

  function chips(attributes, leaveOut) {
    const entries = Object.entries(attributes || {}).filter(([name]) => !leaveOut.has(name));
    if (!entries.length) return null;
    return el(
      "ul",
      {class: "chips", "aria-label": "Attributes"},
      ...entries.map(([name, value]) => el("li", null, el("span", {class: "name"}, name), "=", text(value))),
    );
  }

  function decisionLabel(decision) {
    const policies = ((decision.context || {}).violated_policies || []).map((p) => text(p.name));
    return policies.length ? `${decision.decision} (${policies.join(", ")})` : decision.decision;
  }

  function firewallControl(sessionId, decision) {
    const current = el("output", {class: `decision decision-${decision.decision}`, "aria-label": "Firewall decision now"}, decisionLabel(decision));
    const select = el(
      "select",
      {"aria-label": "Firewall decision"},
      ...DECISIONS.map((value) => el("option", {value}, value)),
    );
    select.value = "block";
    const policy = el("input", {type: "text", value: "rehearsal", "aria-label": "Policy name", size: 12});
    const status = el("span", {class: "muted", role: "status"});
    const button = el("button", {type: "button"}, "Set decision");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const answer = await api(`/api/sessions/${encodeURIComponent(sessionId)}/firewall`, {
          method: "POST",
          headers: {"Content-Type": "application/json", Accept: "application/json"},
          body: JSON.stringify({decision: select.value, policy: policy.value || null}),
        });
        showDecision(answer);
        status.textContent = "the SDK sees it at its next look-up";
      } catch (error) {
        status.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
    if (state.open) state.open.decision = current;
    return el(
      "div",
      {class: "firewall"},
      el("span", null, "Firewall: "),
      current,
      el("span", {class: "rehearse"}, "rehearse ", select, " policy ", policy, " ", button, " ", status),
    );
  }

  function showDecision(decision) {
    if (!state.open || state.open.id !== decision.session_id || !state.open.decision) return;
    state.open.decision.textContent = decisionLabel(decision);
    state.open.decision.className = `decision decision-${decision.decision}`;
  }

  function sessionHead(summary, decision) {
    const counts = {actions: el("dd", null, number(summary.actions)), failed: el("dd", null, number(summary.failed))};
    state.open.counts = counts;
    state.open.failed = summary.failed;
    const facts = [
      ["Application", el("dd", null, text(summary.application_id))],
      ["Environment", el("dd", null, text(summary.environment) || "—")],
      ["Started", el("dd", null, summary.start_time ? when(parseTime(summary.start_time)) : when(summary.stored_at * 1000))],
      ["Actions", counts.actions],
      ["Failed", counts.failed],
    ];
    return el(
      "header",
      {class: "session-head"},
      el("h2", null, "Session ", el("code", {class: "sid"}, summary.session_id), " ", copyButton(summary.session_id)),
      el("dl", {class: "facts"}, ...facts.flatMap(([name, value]) => [el("dt", null, name), value])),
      chips(summary.attributes, new Set()),
      firewallControl(summary.session_id, decision),
    );
  }

  // A message's identity, to see which messages of a prompt were in the one before.
  const messageKey = (message) => JSON.stringify([message && message.role, message && message.content]);

  function turn(message, emptyText) {
    const role = message && typeof message.role === "string" ? message.role : "message";
    const content = message ? message.content : null;
    let body = typeof content === "string" ? content : content == null ? "" : pretty(content);
    const calls = message && Array.isArray(message.tool_calls) ? message.tool_calls : [];
    if (!body && calls.length) body = `(calls ${calls.map((c) => text((c.function || c).name)).join(", ")})`;
    return el(
      "div",
      {class: `turn role-${role.replace(/[^a-z_]/gi, "")}`},
      el("div", {class: "role"}, role),
      el("div", {class: "text"}, body || emptyText || "(no text)"),
    );
  }

  function messagesOf(action) {
    const data = action.data;
    return data && Array.isArray(data.messages) ? data.messages : null;
  }

  function promptBody(action, context) {
    const messages = messagesOf(action);
    if (!messages) return [el("pre", {class: "data"}, pretty(action.data))];
    let same = 0;
    while (same < messages.length && same < context.history.length && messageKey(messages[same]) === context.history[same]) {
      same += 1;
    }
    context.history = messages.map(messageKey);
    const parts = [];
    if (same > 0) {
      const earlier = el("details", {class: "earlier"}, el("summary", null, `${same} earlier message${same === 1 ? "" : "s"}, as before`));
      earlier.addEventListener("toggle", () => {
        if (earlier.open && earlier.childElementCount === 1) earlier.append(...messages.slice(0, same).map((message) => turn(message)));
      }, {once: false});
      parts.push(earlier);
    }
    parts.push(...messages.slice(same).map((message) => turn(message)));
    return parts;
  }

  function outputBody(action, context) {
    const messages = messagesOf(action);
    if (!messages) return action.data === undefined ? [] : [el("pre", {class: "data"}, pretty(action.data))];
    context.history.push(...messages.map(messageKey));
    const reason = (action.attributes || {}).finish_reason;
    const parts = messages.map((message) => turn(message, reason === "tool_calls" ? "(no text: it calls a tool)" : null));
    if (reason) parts.push(el("div", {class: "muted small"}, `finish: ${text(reason)}`));
    return parts;
  }

  function toolCallBody(action) {
    const data = action.data || {};
    const name = text(data.name || data.type || "tool");
    const args = data.arguments === undefined ? data.input : data.arguments;
    return [
      el(
        "div",
        {class: "tool-call"},
        el("span", {class: "tool-name"}, name),
        data.id ? el("span", {class: "muted small"}, ` ${text(data.id)}`) : null,
        args === undefined ? null : el("pre", {class: "arguments"}, pretty(args)),
      ),
    ];
  }

  function attachmentBody(action) {
    const data = action.data || {};
    let name = data.filename || data.name || data.file_id || data.url || data.image_url || data.file_url || "";
    name = text(name);
    if (name.length > 120) name = `${name.slice(0, 117)}…`;
    const label = text(data.type || "attachment");
    const where = data.role !== undefined ? ` (${text(data.role)} message ${text(data.message_index)})` : "";
    return [el("div", {class: "attachment"}, el("strong", null, label), name ? ` ${name}` : "", where)];
  }

  function inputsSummary(action) {
    const data = action.data || {};
    const inputs = Array.isArray(data.input) ? data.input : data.input === undefined ? [] : [data.input];
    if (!inputs.length) return null;
    const first = text(inputs[0]);
    return el(
      "details",
      {class: "inputs"},
      el("summary", null, `${inputs.length} input${inputs.length === 1 ? "" : "s"}: ${first.length > 80 ? `${first.slice(0, 79)}…` : first}`),
      el("ol", null, ...inputs.map((input) => el("li", null, text(input)))),
    );
  }

  function embeddingsBody(action) {
    const attributes = action.attributes || {};
    const parts = [];
    const count = attributes["embeddings.count"];
    const dimensions = attributes["embeddings.dimensions"];
    if (count !== undefined) {
      parts.push(el("div", null, `${text(count)} vector${count === 1 ? "" : "s"}${dimensions !== undefined ? ` × ${text(dimensions)} dimensions` : ""}`));
    }
    parts.push(inputsSummary(action));
    return parts;
  }

  function moderationBody(action) {
    const flaggedCategories = [];
    for (const scanner of action.scanners || []) {
      const categories = scanner && scanner.data && scanner.data.categories;
      if (categories && typeof categories === "object") {
        for (const [name, on] of Object.entries(categories)) if (on === true) flaggedCategories.push(name);
      }
    }
    const flagged = (action.attributes || {}).flagged;
    const verdict = flagged === true ? `flagged${flaggedCategories.length ? `: ${flaggedCategories.join(", ")}` : ""}` : flagged === false ? "not flagged" : "";
    return [verdict ? el("div", {class: flagged ? "flagged" : "muted"}, verdict) : null, inputsSummary(action)];
  }

  function errorBox(error) {
    const code = error.code === undefined || error.code === null ? "" : ` ${text(error.code)}`;
    return el(
      "div",
      {class: "error", "aria-label": "Error"},
      el("strong", null, `Error${code}`),
      el("div", {class: "error-message"}, text(error.message)),
      error.details ? el("pre", {class: "details"}, pretty(error.details)) : null,
    );
  }

  function scannersBox(action) {
    const parts = [];
    for (const scanner of action.scanners || []) {
      if (!scanner || typeof scanner !== "object") continue;
      const name = text(scanner.name);
      const data = scanner.data || {};
      if (name === "usage") {
        const tokens = Object.entries(data).map(([key, n]) => `${key.replace(/_tokens$/, "").replace(/_/g, " ")} ${text(n)}`);
        parts.push(el("li", {class: "usage"}, el("span", {class: "name"}, "tokens"), ` ${tokens.join(" · ")}`));
      } else if (name !== "moderation" || action.kind !== "moderation") {
        const shown = JSON.stringify(data);
        parts.push(el("li", null, el("span", {class: "name"}, name), ` ${shown.length > 160 ? `${shown.slice(0, 159)}…` : shown}`));
      }
    }
    return parts.length ? el("ul", {class: "scanners", "aria-label": "Scanners"}, ...parts) : null;
  }

  function rawJson(action) {
    const pre = el("pre", {class: "raw"});
    const details = el("details", {class: "raw-json"}, el("summary", null, "raw JSON"), pre);
    details.addEventListener("toggle", () => {
      if (details.open && !pre.textContent) pre.textContent = JSON.stringify(action, null, 2);
    });
    return details;
  }

  const SHOWN_ATTRIBUTES = new Set(["model.id", "finish_reason", "flagged", "embeddings.count", "embeddings.dimensions"]);

  function actionItem(action, index, context) {
    const kind = text(action.kind);
    const attributes = action.attributes || {};
    const start = parseTime(action.start_time);
    const end = parseTime(action.end_time);
    const failed = action.error !== undefined && action.error !== null;
    let body;
    if (kind === "completion_prompt") body = promptBody(action, context);
    else if (kind === "completion_output") body = outputBody(action, context);
    else if (kind === "completion_tool_call") body = toolCallBody(action);
    else if (kind === "completion_prompt_attachment") body = attachmentBody(action);
    else if (kind === "embeddings") body = embeddingsBody(action);
    else if (kind === "moderation") body = moderationBody(action);
    else body = [el("pre", {class: "data"}, pretty(action.data))];
    const offset = context.first === null || start === null ? null : start - context.first;
    return el(
      "li",
      {class: `action kind-${kind.replace(/[^a-z_]/g, "")}${failed ? " failed" : ""}`, "data-index": index},
      el(
        "div",
        {class: "action-head"},
        el("span", {class: "kind"}, KIND_LABELS[kind] || kind),
        attributes["model.id"] !== undefined ? el("span", {class: "model"}, text(attributes["model.id"])) : null,
        el("time", {title: `${text(action.start_time)} → ${text(action.end_time)}`}, clock(start)),
        el("span", {class: "duration", title: "from start_time to end_time"}, duration(end - start)),
        offset !== null && offset > 0 ? el("span", {class: "muted small"}, `+${duration(offset)}`) : null,
        el("span", {class: "index muted small"}, `#${index + 1}`),
      ),
      el(
        "div",
        {class: "action-body"},
        ...body,
        failed ? errorBox(action.error) : null,
        scannersBox(action),
        chips(attributes, SHOWN_ATTRIBUTES),
        rawJson(action),
      ),
    );
  }

  function appendActions(actions, from) {
    const open = state.open;
    const items = document.createDocumentFragment();
    actions.forEach((action, i) => {
      if (open.context.first === null) open.context.first = parseTime(action.start_time);
      items.append(actionItem(action, from + i, open.context));
    });
    open.timeline.append(items);
    if (from > 0) {
      open.failed += actions.filter((action) => action.error !== undefined && action.error !== null).length;
    }
    open.count = from + actions.length;
    if (open.counts) {
      open.counts.actions.textContent = number(open.count);
      open.counts.failed.textContent = number(open.failed);
    }
  }

  async function openSession(sessionId) {
    const mark = `session-open:${++state.loads}`;
    performance.mark(mark);
    const view = $("session-view");
    for (const {row} of state.rows.values()) row.classList.remove("selected");
    const known = state.rows.get(sessionId);
    if (known) known.row.classList.add("selected");
    state.open = {
      id: sessionId,
      count: 0,
      failed: 0,
      counts: null,
      timeline: null,
      context: {history: [], first: null},
      decision: null,
      loading: false,
      again: false,
    };
    let body;
    try {
      body = await api(`/api/sessions/${encodeURIComponent(sessionId)}`);
    } catch (error) {
      view.replaceChildren(el("p", {class: "error-text"}, `Cannot show session ${sessionId}: ${error.message}`));
      return;
    }
    if (!state.open || state.open.id !== sessionId) return;
    const timeline = el("ol", {class: "timeline", "aria-label": "Conversation"});
    state.open.timeline = timeline;
    view.replaceChildren(sessionHead(body.session, body.firewall), timeline);
    appendActions(body.actions, body.from);
    if (!body.actions.length) timeline.append(el("li", {class: "muted"}, "No actions yet."));
    measureAfterPaint("session-open", mark);
  }

  // New actions of the session shown, read from the first one not shown; one read at a time.
  async function refreshOpen() {
    const open = state.open;
    if (!open || !open.timeline) return;
    if (open.loading) {
      open.again = true;
      return;
    }
    open.loading = true;
    try {
      const body = await api(`/api/sessions/${encodeURIComponent(open.id)}?from=${open.count}`);
      if (state.open === open) {
        const placeholder = open.timeline.querySelector("li.muted");
        if (placeholder && body.actions.length) placeholder.remove();
        appendActions(body.actions, body.from);
      }
    } catch (error) {
      // the next event tries again
    } finally {
      open.loading = false;
      if (open.again) {
        open.again = false;
        refreshOpen();
      }
    }
  }

  // -- refusals ------------------------------------------------------------------

  function refusalRow(refusal) {
    const body = refusal.body
      ? el("details", null, el("summary", null, `body (${number(refusal.body_bytes)} bytes)`), el("pre", {class: "raw"}, refusal.body))
      : null;
    return el(
      "tr",
      {class: `status-${Math.floor(refusal.status / 100)}xx`},
      whenCell(refusal.refused_at * 1000),
      el("td", null, el("span", {class: "badge failed"}, String(refusal.status))),
      el("td", {class: "request"}, el("code", null, `${refusal.method} ${refusal.path}`), body),
      el("td", {class: "why"}, refusal.message),
      el("td", null, refusal.field ? el("code", {class: "field"}, refusal.field) : ""),
    );
  }

  async function loadRefusals() {
    let body;
    try {
      body = await api("/api/refusals?limit=200");
    } catch (error) {
      return;
    }
    const rows = body.refusals.map(refusalRow);
    if (!rows.length) rows.push(el("tr", null, el("td", {colspan: 5, class: "muted"}, "Nothing refused so far.")));
    $("refusals").tBodies[0].replaceChildren(...rows);
    state.refusalsShown = true;
  }

  function onRefusal(refusal) {
    state.refused += 1;
    $("refused-count").textContent = number(state.refused);
    if (!state.refusalsShown) return;
    const tbody = $("refusals").tBodies[0];
    const placeholder = tbody.querySelector("td.muted");
    if (placeholder) placeholder.parentElement.remove();
    tbody.prepend(refusalRow(refusal));
  }

  // -- routing and the live stream -----------------------------------------------

  function route() {
    const hash = location.hash || "#/";
    const refusals = hash === "#/refusals";
    $("sessions-view").hidden = refusals;
    $("refusals-view").hidden = !refusals;
    $("tab-sessions").classList.toggle("current", !refusals);
    $("tab-refusals").classList.toggle("current", refusals);
    if (refusals) {
      loadRefusals();
      return;
    }
    const match = /^#\/sessions\/(.+)$/.exec(hash);
    if (!match) {
      state.open = null;
      return;
    }
    let sessionId;
    try {
      sessionId = decodeURIComponent(match[1]);
    } catch (error) {
      sessionId = match[1];
    }
    openSession(sessionId);
  }

  function reloadAll() {
    loadSessions(false);
    refreshTotals();
    if (state.open) openSession(state.open.id);
    if (state.refusalsShown) loadRefusals();
  }

  function listen() {
    const live = $("live");
    const source = new EventSource("/api/events");
    let opened = false;
    // The list is read once the stream is open: what was stored before is in the
    // answer, what is stored after comes by the stream (kept aside while the list loads).
    source.addEventListener("open", () => {
      live.textContent = "live";
      live.className = "live on";
      if (opened) {
        reloadAll();
      } else {
        loadSessions(false);
        refreshTotals();
      }
      opened = true;
    });
    source.addEventListener("error", () => {
      live.textContent = "reconnecting…";
      live.className = "live off";
      if (!opened && !state.rows.size) loadSessions(false); // show what there is, live or not
    });
    const on = (name, handle) =>
      source.addEventListener(name, (event) => {
        handle(JSON.parse(event.data));
        refreshTotalsSoon();
      });
    on("session", addSession);
    on("action", onAction);
    on("refusal", onRefusal);
    on("firewall", showDecision);
    on("clear", () => {
      state.open = null;
      $("session-view").replaceChildren(el("p", {class: "muted"}, "The collector was cleared."));
      reloadAll();
    });
  }

  function start() {
    const form = $("filters");
    form.addEventListener("submit", (event) => event.preventDefault());
    let typing = null;
    $("filter-text").addEventListener("input", (event) => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.filters.q = event.target.value.trim();
        loadSessions(false);
      }, 200);
    });
    $("filter-application").addEventListener("change", (event) => {
      state.filters.application = event.target.value;
      loadSessions(false);
    });
    $("filter-failed").addEventListener("change", (event) => {
      state.filters.failed = event.target.checked;
      loadSessions(false);
    });
    $("more").addEventListener("click", () => loadSessions(true));
    window.addEventListener("hashchange", route);
    listen();
    route();
  }

  start();
})();
