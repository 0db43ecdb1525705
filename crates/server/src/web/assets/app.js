// pipewright's one script: the run dialog's live plan (the server renders it; this only asks), regex checks
// of runtime inputs before submitting (the server checks again), "go to line" for YAML problems, and the
// execution page's live statuses and logs from the server-sent event stream. Pages work without it, except
// for live updates.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function badge(status) {
  const s = document.createElement("span");
  s.className = `badge st-${status}`;
  s.textContent = status;
  return s;
}

// ---- Run dialog ------------------------------------------------------------------------------------------
function checkRegex(input) {
  const re = input.dataset.regex;
  if (!re) return;
  let ok = true;
  try {
    ok = input.value === "" || new RegExp(re).test(input.value);
  } catch {
    ok = true; // A pattern the browser cannot read is left to the server.
  }
  input.setCustomValidity(ok ? "" : `Must match ${re}`);
}

function runDialog(form) {
  const list = form.querySelector("#stage-list");
  const dynamic = form.querySelector("#dynamic");
  let timer = 0;
  let seq = 0;
  const syncScope = () => {
    const stages = form.querySelector('input[name="scope"][value="stages"]');
    if (list) list.hidden = !(stages && stages.checked && !stages.disabled);
  };
  const refresh = async () => {
    const mine = ++seq;
    const body = new URLSearchParams(new FormData(form));
    const sent = body.toString();
    const active = document.activeElement;
    const focusName = active && form.contains(active) ? [active.name, active.value, active.id] : null;
    dynamic.setAttribute("aria-busy", "true");
    try {
      const resp = await fetch(form.dataset.planUrl, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf },
        body,
        credentials: "same-origin",
      });
      const text = await resp.text();
      // A newer change is on its way, or the form changed meanwhile (its refresh is scheduled): this answer
      // is stale and must not overwrite what the user typed since.
      if (mine !== seq || new URLSearchParams(new FormData(form)).toString() !== sent) return;
      if (resp.ok) {
        dynamic.innerHTML = text;
      } else {
        const doc = new DOMParser().parseFromString(text, "text/html");
        const msg = doc.querySelector(".error")?.textContent ?? `The plan could not be made (${resp.status}).`;
        const plan = dynamic.querySelector("#plan") ?? dynamic;
        plan.innerHTML = "";
        const p = document.createElement("p");
        p.className = "error";
        p.setAttribute("role", "alert");
        p.textContent = msg;
        plan.append(p);
      }
      dynamic.querySelectorAll("input[data-regex]").forEach(checkRegex);
      if (focusName && !form.contains(active)) {
        const [name, value, id] = focusName;
        const again = (id && document.getElementById(id)) ||
          [...form.elements].find((e) => e.name === name && (e.type !== "radio" || e.value === value));
        again?.focus();
      }
    } finally {
      dynamic.removeAttribute("aria-busy");
    }
  };
  const schedule = (delay) => {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay);
  };
  form.addEventListener("change", (ev) => {
    if (ev.target.name === "scope") syncScope();
    schedule(0);
  });
  form.addEventListener("input", (ev) => {
    if (ev.target.dataset.regex !== undefined) checkRegex(ev.target);
    if (ev.target.type === "text") schedule(400);
  });
  form.addEventListener("submit", (ev) => {
    form.querySelectorAll("input[data-regex]").forEach(checkRegex);
    form.querySelectorAll("input, select").forEach((i) => i.setAttribute("data-touched", ""));
    if (!form.checkValidity()) {
      ev.preventDefault();
      form.reportValidity();
    }
  });
  syncScope();
  form.querySelectorAll("input[data-regex]").forEach(checkRegex);
}

// ---- YAML problems: go to the line -----------------------------------------------------------------------
function yamlProblems() {
  const area = document.getElementById("yaml");
  if (!area) return;
  document.querySelectorAll("a[data-line]").forEach((a) => {
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      const line = Number(a.dataset.line);
      const lines = area.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
      const end = start + (lines[line - 1] ?? "").length;
      area.focus();
      area.setSelectionRange(start, end);
      const lineHeight = parseFloat(getComputedStyle(area).lineHeight) || 18;
      area.scrollTop = Math.max(0, (line - 3) * lineHeight);
    });
  });
}

// ---- Execution view: live ---------------------------------------------------------------------------------
function liveBlock(nodeId, title) {
  let pre = document.querySelector(`pre[data-log-node="${CSS.escape(nodeId)}"]`);
  if (pre) return pre;
  const box = document.getElementById("live-nodes");
  const d = document.createElement("details");
  d.className = "log";
  d.open = true;
  d.dataset.node = nodeId;
  const s = document.createElement("summary");
  s.textContent = `Log of ${title}`;
  pre = document.createElement("pre");
  pre.dataset.logNode = nodeId;
  pre.tabIndex = 0;
  d.append(s, pre);
  box?.append(d);
  return pre;
}

function setNodeStatus(node) {
  // A node now waiting for a person: the page is drawn again with its Approve / Reject, intervention or inputs form.
  if ((node.status === "ApprovalWaiting" || node.status === "InterventionWaiting" || node.status === "InputWaiting") &&
    !document.querySelector(`section.waiting[data-node="${CSS.escape(node.id)}"]`)) {
    window.location.reload();
    return;
  }
  document.querySelectorAll(`[data-node="${CSS.escape(node.id)}"] > .node-status, [data-node="${CSS.escape(node.id)}"] > .step-head > .node-status, [data-node="${CSS.escape(node.id)}"] > h3 > .node-status`)
    .forEach((el) => el.replaceChildren(badge(node.status)));
  if (node.kind === "stage") {
    const g = document.querySelector(`g.stage[data-stage="${CSS.escape(node.identifier)}"]`);
    if (g) {
      g.setAttribute("class", `stage st-${node.status}`);
      const t = g.querySelector(".status-text");
      if (t) t.textContent = node.status;
      else {
        const sub = g.querySelector("text.sub");
        if (sub) sub.textContent = node.status;
      }
    }
  }
  if (!document.querySelector(`[data-node="${CSS.escape(node.id)}"]`) && node.kind === "step") {
    const pre = liveBlock(node.id, node.path);
    const summary = pre.parentElement.querySelector("summary");
    summary.replaceChildren(`Log of ${node.path} `, badge(node.status));
  } else if (node.kind === "step") {
    const d = document.querySelector(`details[data-node="${CSS.escape(node.id)}"] summary`);
    d?.replaceChildren(`Log of ${node.path} `, badge(node.status));
  }
}

function live(root) {
  if (root.dataset.final === "true" || !window.EventSource) return;
  const id = root.dataset.execution;
  const url = `/executions/${encodeURIComponent(id)}/events?after=${encodeURIComponent(root.dataset.resume || "0:0")}`;
  const es = new EventSource(url);
  es.addEventListener("node", (ev) => setNodeStatus(JSON.parse(ev.data).node));
  es.addEventListener("execution", (ev) => {
    const d = JSON.parse(ev.data);
    document.getElementById("exec-status")?.replaceChildren(badge(d.to));
    // The run now asks for runtime inputs: the page is drawn again with the form (once per ask).
    if (d.to === "InputWaiting" && !document.querySelector("section.asked")) window.location.reload();
  });
  es.addEventListener("log", (ev) => {
    const d = JSON.parse(ev.data);
    const pre = liveBlock(d.node_id, d.path);
    const details = pre.closest("details");
    if (details) details.open = true;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    for (const l of d.lines) {
      const span = document.createElement("span");
      span.className = l.stream === "stderr" ? "line err" : "line";
      span.textContent = `${l.text}\n`;
      pre.append(span);
    }
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  es.addEventListener("end", () => {
    es.close();
    // The final state, with outputs and actions, is rendered by the server.
    window.location.reload();
  });
  es.addEventListener("shutdown", () => es.close());
}

const form = document.getElementById("run-form");
if (form) runDialog(form);
yamlProblems();
const exec = document.getElementById("execution");
if (exec) live(exec);
