// vlaloop operator page. Plain JS, no build step, no CDN: robot workstations are often offline.
// Every JSON/frame request carries the operator token (sessionStorage) as a Bearer header; images
// are therefore fetched with fetch() and shown through blob: URLs (an <img src> cannot send headers).
"use strict";

const TOKEN_KEY = "vlaloop.operatorToken";
// who this tab's operator is (X-Operator on every request): one operator holds a robot at a time;
// a tab with no name typed gets its own random one, so two tabs never drive the same robot
const OPERATOR_KEY = "vlaloop-operator";
const ROBOT_POLL_MS = 300;      // live state and frames: ~3 Hz
const LEARNING_POLL_MS = 2000;        // on the Learning tab
const LEARNING_IDLE_POLL_MS = 10000;  // elsewhere: only the learner chip in the top bar needs it
const EPISODE_POLL_MS = 3000;
const REPLAY_FPS = 8;
// Teleop: a command on every key change and every 50 ms while driving (the robot holds the arm when
// the latest command is older than its deadline, 0.5 s by default, so a closed tab stops the arm).
const TELEOP_SEND_MS = 50;
// key -> [axis, sign]; axes 0-2 translation x, y, z (robot base frame), 3-5 rotation about x, y, z
const TELEOP_KEYS = { w: [0, 1], s: [0, -1], a: [1, 1], d: [1, -1], r: [2, 1], f: [2, -1],
                      u: [3, 1], o: [3, -1], i: [4, 1], k: [4, -1], j: [5, 1], l: [5, -1] };
const STATE_NAMES = {
  running: "Running", teleop: "Operator driving", waiting_label: "Waiting for label", paused: "Paused",
  holding: "Holding (fault)", resetting: "Resetting", error: "Error", waiting_reset: "Waiting for scene reset",
};

const ui = {
  view: "live",
  robots: [],               // latest GET /v1/robots
  scene: new Map(),         // robot_id -> SceneView (GET /v1/scene): waiting for a reset, its tasks, the next task
  awaiting: new Map(),      // "robot/episode" -> AwaitingView (auto outcome)
  cards: new Map(),         // robot_id -> {el, imgs: Map(camera -> img), busy: Set(camera)}
  selectedRobot: null,
  learning: null,
  promotion: null,          // GET /v1/policy .promotion (+ refused)
  episodes: [],
  episodesSig: "",
  thumbs: new Map(),        // "robot/episode/step/cam" -> blob URL (stored frames never change)
  replay: null,             // {summary, steps, index, timer, urls: Map}
  loginOpen: false,
  // the robot this page drives (null: none), the keys held, the gripper command (null: keep as is),
  // the page's sequence numbers (start at the clock: a reloaded page never goes back), the POST round trip
  teleop: { robot: null, since: 0, keys: new Set(), gripper: null, seq: Date.now(), timer: null, busy: false,
            again: false, rttMs: null },
};

// ------------------------------------------------------------------ http

class AuthError extends Error {}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function operatorName() {
  let name = sessionStorage.getItem(OPERATOR_KEY);
  if (!name) {
    name = "operator-" + Math.random().toString(16).slice(2, 6);
    sessionStorage.setItem(OPERATOR_KEY, name);
  }
  return name;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  headers["X-Operator"] = operatorName();
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  let res;
  try {
    res = await fetch(path, { method: options.method || "GET", headers, body: options.body, cache: "no-store" });
  } catch (err) {
    setConnection(false, "offline");
    throw err;
  }
  if (res.status === 401 || res.status === 403) {
    setConnection(false, "sign-in needed");
    showLogin(token() ? "The token was not accepted." : "");
    throw new AuthError(res.status + "");
  }
  setConnection(true);
  if (!res.ok) {
    let detail = res.status + " " + res.statusText;
    try { const body = await res.json(); if (body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return res;
}

async function getJSON(path) { return (await api(path)).json(); }
async function postJSON(path, body) { return (await api(path, { method: "POST", json: body })).json(); }
async function getBlobURL(path) { return URL.createObjectURL(await (await api(path)).blob()); }

// ------------------------------------------------------------------ small DOM helpers

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}
const enc = encodeURIComponent;
const pct = (x) => (x === null || x === undefined ? "–" : Math.round(100 * x) + "%");
function fmtNum(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (Math.abs(x) >= 1000 || (Math.abs(x) < 1e-3 && x !== 0)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}
function fmtAge(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }

let toastTimer = null;
function toast(msg, bad = false) {
  const t = $("#toast");
  t.textContent = msg;
  t.classList.toggle("bad", bad);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 2600);
}

function setConnection(ok, text) {
  const c = $("#conn");
  c.classList.toggle("ok", ok);
  c.classList.toggle("down", !ok);
  $("#conn-text").textContent = ok ? "connected" : (text || "offline");
}

// ------------------------------------------------------------------ login

function showLogin(message) {
  ui.loginOpen = true;
  $("#login").hidden = false;
  const err = $("#login-error");
  err.textContent = message || "";
  err.hidden = !message;
  setTimeout(() => $("#token").focus(), 0);
}

async function submitLogin(ev) {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  const name = $("#operator-name").value.trim().replace(/[^A-Za-z0-9 ._@-]/g, "").slice(0, 64);
  if (/^[A-Za-z0-9]/.test(name)) sessionStorage.setItem(OPERATOR_KEY, name);
  try {
    await getJSON("/v1/robots");
  } catch (err) {
    if (!(err instanceof AuthError)) showLogin("Server not reachable: " + err.message);
    return;
  }
  ui.loginOpen = false;
  $("#login").hidden = true;
  $("#token").value = "";
  $("#logout").hidden = !token();
  refreshAll();
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#logout").hidden = true;
  showLogin("");
}

// ------------------------------------------------------------------ tabs

function showView(name) {
  ui.view = name;
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === name));
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === "view-" + name));
  if (name === "learning") { if (ui.learning) renderLearning(ui.learning); pollLearning(); }
  if (name === "episodes") pollEpisodes();
}

// ------------------------------------------------------------------ live view

function awaitingEpisode(robot) {
  return robot && robot.awaiting_label && robot.awaiting_label.length ? robot.awaiting_label[0] : null;
}

function buildCard(robotId) {
  const card = { imgs: new Map(), busy: new Set(), frames: 0 };
  const action = (label, cls, key, fn) =>
    el("button", { class: "btn " + cls, "data-action": label.toLowerCase().replace(/ /g, "-"),
                   onclick: (e) => { e.stopPropagation(); fn(); } }, label + " ", el("kbd", { text: key }));
  card.el = el("article", { class: "robot card", "data-robot": robotId, onclick: () => selectRobot(robotId) },
    el("div", { class: "robot-head" },
      el("h2", { text: robotId }),
      el("span", { class: "badge", "data-field": "state" }),
      el("span", { class: "version", "data-field": "version" })),
    el("div", { class: "robot-body" },
      el("div", { class: "frames" }),
      el("p", { class: "instruction", "data-field": "instruction" }),
      el("div", { class: "actions" },
        el("div", { class: "label-bar", hidden: "" },
          el("p", { "data-field": "awaiting" }),
          el("div", { class: "label-buttons" },
            action("Success", "btn-success", "S", () => labelAwaiting(robotId, "success")),
            action("Failure", "btn-failure", "F", () => labelAwaiting(robotId, "failure")),
            action("Discard", "btn-discard", "D", () => labelAwaiting(robotId, "discard")))),
        el("div", { class: "reset-bar", hidden: "" },
          el("p", { text: "Arm home — reset the scene, then press Ready." }),
          action("Ready", "btn-primary", "N", () => sceneReady(robotId))),
        el("div", { class: "task-row" },
          el("select", { class: "task-select", "data-field": "task-select", title: "the next episode's task",
                         onclick: (e) => e.stopPropagation() }),
          el("input", { class: "task-instruction", type: "text", placeholder: "or type an instruction",
                        maxlength: "512", onclick: (e) => e.stopPropagation() }),
          el("button", { class: "btn btn-secondary", "data-action": "set-task",
                         onclick: (e) => { e.stopPropagation(); setNextTask(robotId); } }, "Set next task"),
          el("span", { class: "task-note", "data-field": "task-note" })),
        el("div", { class: "controls" },
          action("End episode", "btn-secondary", "E", () => sendCommand(robotId, "end_episode")),
          action("Pause", "btn-warn", "P", () => togglePause(robotId))),
        el("div", { class: "teleop" },
          el("p", { class: "teleop-banner", "data-field": "teleop", hidden: "" }),
          el("div", { class: "teleop-row" },
            action("Take over", "btn-teleop", "T", () => toggleTeleop(robotId)),
            el("span", { class: "teleop-latency", "data-field": "latency" })),
          el("p", { class: "teleop-keys", hidden: "" }, "Drive: ", el("kbd", { text: "W" }), el("kbd", { text: "S" }),
            " x · ", el("kbd", { text: "A" }), el("kbd", { text: "D" }), " y · ", el("kbd", { text: "R" }),
            el("kbd", { text: "F" }), " z · ", el("kbd", { text: "U" }), el("kbd", { text: "O" }), " roll · ",
            el("kbd", { text: "I" }), el("kbd", { text: "K" }), " pitch · ", el("kbd", { text: "J" }),
            el("kbd", { text: "L" }), " yaw · ", el("kbd", { text: "G" }), " gripper"))),
      el("div", { class: "about" },
        el("dl", { class: "facts" },
          el("div", {}, el("dt", { text: "Step" }), el("dd", { "data-field": "step" })),
          el("div", {}, el("dt", { text: "Loop" }), el("dd", { "data-field": "hz" })),
          el("div", {}, el("dt", { text: "Task" }), el("dd", { "data-field": "task" })),
          el("div", {}, el("dt", { text: "Seen" }), el("dd", { "data-field": "seen" })),
          el("div", { class: "wide" }, el("dt", { text: "Episode" }), el("dd", { "data-field": "episode" }))),
        el("p", { class: "detail", "data-field": "detail" }))));
  return card;
}

function setField(root, name, text) {
  const node = root.querySelector(`[data-field="${name}"]`);
  if (node.textContent !== text) node.textContent = text;
  return node;
}

function renderRobots(robots) {
  const container = $("#robots");
  $("#no-robots").hidden = robots.length > 0;
  if (!ui.selectedRobot || !robots.some((r) => r.robot_id === ui.selectedRobot)) {
    ui.selectedRobot = robots.length ? robots[0].robot_id : null;
  }
  const seen = new Set();
  for (const r of robots) {
    seen.add(r.robot_id);
    let card = ui.cards.get(r.robot_id);
    if (!card) {
      card = buildCard(r.robot_id);
      ui.cards.set(r.robot_id, card);
      container.append(card.el);
    }
    updateCard(card, r);
  }
  for (const [id, card] of ui.cards) {
    if (!seen.has(id)) { card.el.remove(); ui.cards.delete(id); }
  }
}

function updateCard(card, r) {
  const root = card.el;
  const waiting = awaitingEpisode(r);
  root.classList.toggle("selected", r.robot_id === ui.selectedRobot);
  root.classList.toggle("awaiting", !!waiting);
  root.dataset.state = r.state;
  root.dataset.step = r.step === null ? "" : String(r.step);
  const badge = setField(root, "state", r.stale ? "stale · " + (STATE_NAMES[r.state] || r.state)
    : (r.paused && r.state !== "paused" ? "Pausing…" : (STATE_NAMES[r.state] || r.state)));
  badge.className = "badge state-" + r.state + (r.stale ? " stale" : "");
  const canary = ui.promotion && ui.promotion.canary ? ui.promotion.canary.version : null;
  setField(root, "version", r.policy_version === null || r.policy_version < 0 ? "policy –"
    : "policy v" + r.policy_version + (r.policy_version === canary ? " (canary)" : ""));
  setField(root, "instruction", r.instruction || "–");
  setField(root, "step", r.step === null ? "–" : String(r.step));
  const hz = r.loop_hz !== null ? r.loop_hz : r.act_hz;
  setField(root, "hz", hz === null || hz === undefined ? "–" : hz.toFixed(1) + " Hz");
  setField(root, "task", r.task || "–");
  setField(root, "episode", r.episode_id || "–");
  setField(root, "seen", r.seconds_since_seen === undefined ? "–" : fmtAge(r.seconds_since_seen));
  const detail = setField(root, "detail", r.detail || "");
  detail.hidden = !r.detail;
  detail.classList.toggle("fault", r.state === "holding" || r.state === "error");

  const bar = root.querySelector(".label-bar");
  bar.hidden = !waiting;
  if (waiting) {
    const info = ui.awaiting.get(r.robot_id + "/" + waiting);
    const hints = [];
    if (info && info.auto_outcome) hints.push(`success check: ${info.auto_outcome}`);
    if (info && info.reward_model_p !== null && info.reward_model_p !== undefined) {
      hints.push(`reward model: P(success) ${info.reward_model_p.toFixed(2)}`);
    }
    const hint = hints.length ? ` (${hints.join(" · ")})` : "";
    setField(root, "awaiting", `Episode over — your label?${hint}`);
    bar.dataset.episode = waiting;
  }
  updateTeleop(root, r);
  updateScene(root, r);
  const pause = root.querySelector('[data-action="pause"]');
  pause.firstChild.textContent = r.paused ? "Resume " : "Pause ";
  pause.classList.toggle("btn-warn", !r.paused);
  pause.classList.toggle("btn-primary", r.paused);

  // one <img> per camera that has a frame; cameras never disappear mid-run, so only add
  const frames = root.querySelector(".frames");
  for (const cam of r.cameras || []) {
    if (!card.imgs.has(cam)) {
      const img = el("img", { alt: `${r.robot_id} ${cam}`, "data-camera": cam });
      frames.append(el("figure", { class: "frame" }, img, el("figcaption", { text: cam })));
      card.imgs.set(cam, img);
    }
  }
}

async function refreshFrames(robotId) {
  const card = ui.cards.get(robotId);
  if (!card) return;
  for (const [cam, img] of card.imgs) {
    if (card.busy.has(cam)) continue;   // never queue requests behind a slow one
    card.busy.add(cam);
    getBlobURL(`/v1/robots/${enc(robotId)}/frames/${enc(cam)}.jpg`).then((url) => {
      const old = img.dataset.url;
      img.onload = () => {
        if (old) URL.revokeObjectURL(old);
        img.classList.toggle("lowres", img.naturalWidth < 240);
        card.frames += 1;
        card.el.dataset.frames = String(card.frames);
      };
      img.dataset.url = url;
      img.src = url;
    }).catch(() => { /* shown by the connection indicator */ })
      .finally(() => card.busy.delete(cam));
  }
}

function selectRobot(robotId) {
  ui.selectedRobot = robotId;
  for (const [id, card] of ui.cards) card.el.classList.toggle("selected", id === robotId);
}

function robotById(id) { return ui.robots.find((r) => r.robot_id === id); }

async function labelAwaiting(robotId, outcome) {
  const robot = robotById(robotId);
  const episode = awaitingEpisode(robot);
  if (!episode) { toast(`${robotId} has no episode waiting for a label`, true); return; }
  try {
    await postJSON(`/v1/robots/${enc(robotId)}/label`, { episode_id: episode, outcome });
    toast(`${robotId} · ${episode}: ${outcome}`);
    robot.awaiting_label = robot.awaiting_label.filter((e) => e !== episode);  // until the next poll
    renderRobots(ui.robots);
  } catch (err) {
    if (!(err instanceof AuthError)) toast("Label failed: " + err.message, true);
  }
}

async function sendCommand(robotId, command) {
  try {
    const view = await postJSON(`/v1/robots/${enc(robotId)}/command`, { command });
    const i = ui.robots.findIndex((r) => r.robot_id === robotId);
    if (i >= 0 && view && view.robot_id) { ui.robots[i] = view; renderRobots(ui.robots); }
    toast(`${robotId}: ${command.replace("_", " ")}`);
  } catch (err) {
    if (!(err instanceof AuthError)) toast(`${command} failed: ${err.message}`, true);
  }
}

function togglePause(robotId) {
  const robot = robotById(robotId);
  sendCommand(robotId, robot && robot.paused ? "resume" : "pause");
}

// Keys act on the selected robot; S/F/D fall back to any robot with an episode awaiting a label.
// While this page drives a robot, the driving keys are for driving (S, F, D label nothing then).
// ------------------------------------------------------------------ between episodes (server/scene.py)

function updateScene(root, r) {
  const view = ui.scene.get(r.robot_id);
  root.querySelector(".reset-bar").hidden = r.state !== "waiting_reset";
  root.classList.toggle("waiting-reset", r.state === "waiting_reset");
  const select = root.querySelector('[data-field="task-select"]');
  const names = view ? view.tasks.map((t) => t.name) : [];
  if (select.dataset.names !== names.join("\n")) {
    select.replaceChildren(el("option", { value: "", text: "task…" }),
      ...(view ? view.tasks : []).map((t) => el("option", { value: t.name, text: t.instruction ? `${t.name}: ${t.instruction}` : t.name })));
    select.dataset.names = names.join("\n");
  }
  let note = "";
  if (view && view.refused) note = view.refused;
  else if (view && (view.next_task || view.next_instruction)) {
    note = "next episode: " + [view.next_task, view.next_instruction].filter(Boolean).join(" — ");
  }
  const node = setField(root, "task-note", note);
  node.classList.toggle("fault", !!(view && view.refused));
}

async function sceneReady(robotId) {
  try {
    await postJSON(`/v1/robots/${encodeURIComponent(robotId)}/ready`, {});
    toast(`${robotId}: ready, the next episode starts`);
  } catch (e) { toast(e.message, true); }
}

async function setNextTask(robotId) {
  const root = ui.cards.get(robotId).el;
  const task = root.querySelector(".task-select").value;
  const instruction = root.querySelector(".task-instruction").value.trim();
  if (!task && !instruction) { toast("Pick a task or type an instruction", true); return; }
  const body = {};
  if (task) body.task = task;
  if (instruction) body.instruction = instruction;
  try {
    const view = await postJSON(`/v1/robots/${encodeURIComponent(robotId)}/next_task`, body);
    ui.scene.set(robotId, view);
    root.querySelector(".task-instruction").value = "";
    toast(`${robotId}: next episode's task set`);
  } catch (e) { toast(e.message, true); }
}

function onKey(ev) {
  if (ui.loginOpen || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (/^(INPUT|SELECT|TEXTAREA)$/.test(ev.target.tagName)) return;
  const key = ev.key.toLowerCase();
  if (key === "t" && ui.selectedRobot) { if (!ev.repeat) toggleTeleop(ui.selectedRobot); ev.preventDefault(); return; }
  if (ui.teleop.robot && (key in TELEOP_KEYS || key === "g")) {
    if (!ev.repeat) {
      if (key === "g") ui.teleop.gripper = ui.teleop.gripper === 0 ? 1 : 0;  // first press closes
      else ui.teleop.keys.add(key);
      sendTeleop();
    }
    ev.preventDefault();
    return;
  }
  const outcome = { s: "success", f: "failure", d: "discard" }[key];
  if (outcome) {
    let robot = robotById(ui.selectedRobot);
    if (!awaitingEpisode(robot)) robot = ui.robots.find((r) => awaitingEpisode(r));
    if (robot) labelAwaiting(robot.robot_id, outcome); else toast("No episode is waiting for a label", true);
    ev.preventDefault();
  } else if (key === "n") {
    let robot = robotById(ui.selectedRobot);
    if (!robot || robot.state !== "waiting_reset") robot = ui.robots.find((r) => r.state === "waiting_reset");
    if (robot) sceneReady(robot.robot_id); else toast("No robot is waiting for a scene reset", true);
    ev.preventDefault();
  } else if ((key === "e" || key === "p") && ui.selectedRobot) {
    if (key === "e") sendCommand(ui.selectedRobot, "end_episode"); else togglePause(ui.selectedRobot);
    ev.preventDefault();
  }
}

// ------------------------------------------------------------------ teleop (docs/teleop.md)

function teleopIntent() {
  const v = [0, 0, 0, 0, 0, 0];
  for (const key of ui.teleop.keys) { const [axis, sign] = TELEOP_KEYS[key]; v[axis] += sign; }
  return v.map((x) => Math.max(-1, Math.min(1, x)));
}

function onKeyUp(ev) {
  const key = ev.key.toLowerCase();
  if (ui.teleop.keys.delete(key)) sendTeleop();
}

// A key held while the window loses focus would never see its keyup: stop everything instead.
function releaseAllKeys() {
  if (ui.teleop.keys.size) { ui.teleop.keys.clear(); sendTeleop(); }
}

async function sendTeleop() {
  const t = ui.teleop;
  if (!t.robot) return;
  if (t.busy) { t.again = true; return; }   // one request at a time; the newest state goes next
  t.busy = true;
  const v = teleopIntent();
  const body = { seq: ++t.seq, t_sent: Date.now() / 1000, translation: v.slice(0, 3), rotation: v.slice(3),
                 gripper: t.gripper };
  const t0 = performance.now();
  try {
    await postJSON(`/v1/robots/${enc(t.robot)}/teleop`, body);
    const rtt = performance.now() - t0;
    t.rttMs = t.rttMs === null ? rtt : 0.8 * t.rttMs + 0.2 * rtt;
  } catch (err) {
    if (!(err instanceof AuthError)) { toast("Teleop: " + err.message, true); stopDriving(); }
  } finally {
    t.busy = false;
    if (t.again) { t.again = false; sendTeleop(); }
  }
}

function startDriving(robotId) {
  const t = ui.teleop;
  t.robot = robotId;
  t.since = Date.now();
  t.keys.clear();
  t.gripper = null;
  t.rttMs = null;
  clearInterval(t.timer);
  t.timer = setInterval(sendTeleop, TELEOP_SEND_MS);
  sendTeleop();
}

function stopDriving() {
  const t = ui.teleop;
  clearInterval(t.timer);
  t.timer = null;
  t.robot = null;
  t.keys.clear();
}

async function toggleTeleop(robotId) {
  const robot = robotById(robotId);
  const driving = ui.teleop.robot === robotId || (robot && robot.teleop);
  try {
    if (driving) {
      stopDriving();
      await postJSON(`/v1/robots/${enc(robotId)}/teleop/hand_back`, {});
      toast(`${robotId}: handed back to the policy`);
    } else {
      if (ui.teleop.robot) await toggleTeleop(ui.teleop.robot);   // one robot at a time
      const view = await postJSON(`/v1/robots/${enc(robotId)}/teleop/take_over`, {});
      selectRobot(robotId);
      startDriving(robotId);
      const i = ui.robots.findIndex((r) => r.robot_id === robotId);
      if (i >= 0 && view && view.robot_id) ui.robots[i] = view;
      toast(`${robotId}: you drive — W/S A/D R/F, G gripper, T hands back`);
    }
    renderRobots(ui.robots);
  } catch (err) {
    if (!(err instanceof AuthError)) toast(`Take over failed: ${err.message}`, true);
  }
}

function updateTeleop(root, r) {
  const t = ui.teleop;
  const mine = t.robot === r.robot_id;
  if (mine && !r.teleop && Date.now() - t.since > 2000) {   // (a poll answered before the take-over is not it)
    // the server handed it back by itself (the episode ended) or another page did
    stopDriving();
    toast(`${r.robot_id}: control back with the policy (episode over or handed back elsewhere)`);
  }
  const pageDrives = !!r.teleop;
  const deviceDrives = !pageDrives && r.state === "teleop";
  root.classList.toggle("driving", pageDrives || deviceDrives);
  root.dataset.teleop = pageDrives ? "page" : (deviceDrives ? "device" : "");
  const holder = pageDrives ? r.teleop.operator : null;
  const heldByOther = pageDrives && holder !== operatorName();
  const banner = setField(root, "teleop", pageDrives
    ? `OPERATOR DRIVING — ${heldByOther ? `${holder}, from another page` : `you (${holder}), from this page`}`
    : (deviceDrives ? `OPERATOR DRIVING — at the robot (${((r.detail || "").match(/\((\w+)\)/) || [, "device"])[1]})` : ""));
  banner.hidden = !(pageDrives || deviceDrives);
  root.querySelector(".teleop-keys").hidden = t.robot !== r.robot_id;
  const button = root.querySelector('[data-action="take-over"]');
  button.firstChild.textContent = pageDrives || mine ? "Hand back " : "Take over ";
  button.classList.toggle("active", pageDrives || mine);
  // the person at the robot has priority over the page (the robot asks its device first)
  // and one operator holds a robot at a time: another's take-over is refused until they hand back
  button.disabled = (deviceDrives && !mine) || heldByOther;
  button.title = deviceDrives && !mine ? "a device at the robot drives it; it has priority"
    : (heldByOther ? `${holder} holds this robot; it frees when they hand back or stop sending` : "");
  if (heldByOther) button.firstChild.textContent = `Held by ${holder} `;
  // page -> server (half this page's POST round trip) + server -> the arm told to move (the robot's report)
  const exec = r.teleop ? r.teleop.server_to_exec_ms : null;
  const latency = root.querySelector('[data-field="latency"]');
  if (mine && exec !== null && exec !== undefined && t.rttMs !== null) {
    const total = t.rttMs / 2 + exec;
    latency.textContent = `latency ${Math.round(total)} ms (page→server ${Math.round(t.rttMs / 2)} + server→arm ${Math.round(exec)})`;
    latency.dataset.ms = String(Math.round(total));
  } else {
    latency.textContent = mine ? "latency –" : "";
    latency.dataset.ms = "";
  }
}

let robotsBusy = false;
async function pollRobots() {
  if (robotsBusy || ui.loginOpen || document.hidden) return;  // a background tab costs the server nothing
  robotsBusy = true;
  try {
    const robots = await getJSON("/v1/robots");
    ui.scene = new Map((await getJSON("/v1/scene")).map((v) => [v.robot_id, v]));
    if (robots.some((r) => awaitingEpisode(r))) {
      const waiting = await getJSON("/v1/labels/awaiting");
      ui.awaiting = new Map(waiting.map((a) => [a.robot_id + "/" + a.episode_id, a]));
    }
    ui.robots = robots;
    renderRobots(robots);
    if (ui.view === "live") for (const r of robots) refreshFrames(r.robot_id);
  } catch (_) { /* connection indicator */ } finally { robotsBusy = false; }
}

// ------------------------------------------------------------------ episodes

function thumbKey(e) { return `${e.robot_id}/${e.episode_id}/${e.last_step}/${e.cameras[0]}`; }

function episodeFrameURL(robotId, episodeId, step, cam) {
  return `/v1/episodes/${enc(robotId)}/${enc(episodeId)}/frames/${step}/${enc(cam)}.jpg`;
}

function renderEpisodes(list) {
  const ul = $("#episode-list");
  ul.replaceChildren();
  for (const e of list) {
    const thumb = el("img", { class: "thumb", alt: "" });
    const selected = ui.replay && ui.replay.summary.robot_id === e.robot_id && ui.replay.summary.episode_id === e.episode_id;
    const pending = e.relabel_pending ? el("span", { class: "pending", text: "→ " + e.relabel_pending + " queued" }) : "";
    const li = el("li", { class: "episode" + (selected ? " selected" : ""), "data-episode": e.episode_id,
                          "data-robot": e.robot_id, onclick: () => openReplay(e) },
      thumb,
      el("div", { class: "ep-text" },
        el("div", { class: "title" }, el("span", { class: "ep-id", text: e.episode_id, title: e.episode_id }),
          el("span", { class: "outcome " + (e.outcome || ""), text: e.outcome || "–" }), pending),
        el("div", { class: "sub", text: e.instruction || "–" }),
        el("div", { class: "sub", text: [e.robot_id, e.source, e.policy_version === null ? null : "v" + e.policy_version,
          e.n_steps + " steps", e.label_source, fmtTime(e.finished)].filter(Boolean).join(" · ") })));
    ul.append(li);
    if (e.cameras.length && e.last_step !== null) loadThumb(e, thumb);
  }
}

async function loadThumb(e, img) {
  const key = thumbKey(e);
  let url = ui.thumbs.get(key);
  if (!url) {
    try { url = await getBlobURL(episodeFrameURL(e.robot_id, e.episode_id, e.last_step, e.cameras[0])); } catch (_) { return; }
    ui.thumbs.set(key, url);
    if (ui.thumbs.size > 400) {   // keep memory bounded on long runs
      const [oldKey, oldUrl] = ui.thumbs.entries().next().value;
      ui.thumbs.delete(oldKey);
      URL.revokeObjectURL(oldUrl);
    }
  }
  img.src = url;
}

let episodesBusy = false;
async function pollEpisodes() {
  if (episodesBusy || ui.loginOpen || document.hidden) return;
  episodesBusy = true;
  try {
    const source = $("#episode-filter").value;
    const data = await getJSON("/v1/episodes?limit=200" + (source ? "&source=" + enc(source) : ""));
    $("#episode-total").textContent = `(${data.total})`;
    const sig = JSON.stringify(data.episodes);
    if (sig !== ui.episodesSig) {    // re-render only on change: no flicker while browsing
      ui.episodesSig = sig;
      ui.episodes = data.episodes;
      renderEpisodes(data.episodes);
    }
  } catch (_) { /* connection indicator */ } finally { episodesBusy = false; }
}

function stopReplay() {
  if (!ui.replay) return;
  clearTimeout(ui.replay.timer);
  for (const url of ui.replay.urls.values()) URL.revokeObjectURL(url);
}

async function openReplay(summary) {
  stopReplay();
  const panel = $("#replay");
  let detail;
  try {
    detail = await getJSON(`/v1/episodes/${enc(summary.robot_id)}/${enc(summary.episode_id)}`);
  } catch (err) {
    if (!(err instanceof AuthError)) toast("Could not load the episode: " + err.message, true);
    return;
  }
  const s = detail.summary;
  ui.replay = { summary: s, steps: detail.steps, index: 0, timer: null, urls: new Map(), playing: false };
  document.querySelectorAll(".episode").forEach((li) =>
    li.classList.toggle("selected", li.dataset.robot === s.robot_id && li.dataset.episode === s.episode_id));

  const imgs = new Map(s.cameras.map((cam) => {
    const img = el("img", { alt: cam, "data-camera": cam });
    img.onload = () => img.classList.toggle("lowres", img.naturalWidth < 240);
    return [cam, img];
  }));
  const slider = el("input", { type: "range", min: "0", max: String(Math.max(0, detail.steps.length - 1)), value: "0",
                                "aria-label": "step", oninput: () => showReplayStep(Number(slider.value)) });
  const play = el("button", { class: "btn btn-primary btn-small", "data-action": "play", onclick: togglePlay, text: "▶ Play" });
  const relabel = (label, cls, outcome) => el("button", { class: "btn " + cls, "data-relabel": outcome,
    onclick: () => relabelEpisode(s, outcome) }, label);
  const fact = (dt, dd) => el("div", {}, el("dt", { text: dt }), el("dd", { text: dd }));
  panel.replaceChildren(el("div", { class: "replay-view" },
    el("h2", {}, `${s.robot_id} · ${s.episode_id}`, el("span", { class: "outcome " + (s.outcome || ""), text: s.outcome || "–" })),
    el("p", { class: "instruction", text: s.instruction || "–" }),
    el("div", { class: "replay-frames" }, ...[...imgs].map(([cam, img]) =>
      el("figure", { class: "frame" }, img, el("figcaption", { text: cam })))),
    el("div", { class: "replay-controls" }, play, slider, el("span", { class: "replay-step", "data-field": "replay-step" })),
    el("dl", { class: "replay-meta" },
      fact("Label source", s.label_source || "–"),
      fact("Policy", s.policy_version === null ? "–" : "v" + s.policy_version),
      fact("Source", [s.source, s.purpose].filter(Boolean).join(" / ")),
      fact("Steps", String(s.n_steps))),
    s.dry_run ? el("p", { class: "relabel", "data-field": "dry-run",
      text: "Dry run: the arm did not move. It cannot be labelled and is never trained on." }) :
    el("div", { class: "relabel" },
      el("p", { text: s.relabel_pending ? `Correction to "${s.relabel_pending}" queued for the learner.`
        : (s.relabeled ? "Label corrected by the operator. Correct it again:" : "Correct the label:") }),
      el("div", { class: "label-buttons" },
        relabel("Success", "btn-success", "success"), relabel("Failure", "btn-failure", "failure"),
        relabel("Discard", "btn-discard", "discard")))));
  ui.replay.imgs = imgs;
  ui.replay.slider = slider;
  ui.replay.play = play;
  showReplayStep(0);
}

async function showReplayStep(index) {
  const r = ui.replay;
  if (!r || !r.steps.length) return;
  r.index = index;
  r.slider.value = String(index);
  const step = r.steps[index].step;
  $("#replay [data-field=replay-step]").textContent = `step ${step} / ${r.steps[r.steps.length - 1].step}`;
  await Promise.all([...r.imgs].map(async ([cam, img]) => {
    const key = step + "/" + cam;
    let url = r.urls.get(key);
    if (!url) {
      try { url = await getBlobURL(episodeFrameURL(r.summary.robot_id, r.summary.episode_id, step, cam)); } catch (_) { return; }
      if (ui.replay !== r) { URL.revokeObjectURL(url); return; }
      r.urls.set(key, url);
    }
    img.src = url;
  }));
}

function togglePlay() {
  const r = ui.replay;
  if (!r) return;
  r.playing = !r.playing;
  r.play.textContent = r.playing ? "❚❚ Pause" : "▶ Play";
  if (r.playing && r.index >= r.steps.length - 1) r.index = -1;
  const advance = async () => {
    if (!r.playing || ui.replay !== r) return;
    if (r.index >= r.steps.length - 1) { r.playing = false; r.play.textContent = "▶ Play"; return; }
    await showReplayStep(r.index + 1);
    r.timer = setTimeout(advance, 1000 / REPLAY_FPS);
  };
  if (r.playing) advance();
}

async function relabelEpisode(s, outcome) {
  try {
    const q = await postJSON(`/v1/episodes/${enc(s.robot_id)}/${enc(s.episode_id)}/relabel`, { outcome });
    toast(`${s.episode_id}: correction to ${q.outcome} queued`);
    s.relabel_pending = q.outcome;
    ui.episodesSig = "";
    await pollEpisodes();
    const fresh = ui.episodes.find((e) => e.robot_id === s.robot_id && e.episode_id === s.episode_id);
    openReplay(fresh || s);
  } catch (err) {
    if (!(err instanceof AuthError)) toast("Relabel failed: " + err.message, true);
  }
}

// ------------------------------------------------------------------ learning

function renderLearnerChip(view) {
  const chip = $("#learner-chip");
  const st = view.status;
  if (!st || !st.phase) { chip.textContent = "learner: no status"; chip.className = "chip"; return; }
  if (st.waiting_for) {  // it cannot train yet (e.g. no demonstrations): say what it waits for
    chip.textContent = `learner: ${st.phase.toUpperCase()} waiting for ${st.waiting_for}`;
    chip.className = "chip phase-" + st.phase + " waiting";
    return;
  }
  const busy = st.phase !== "idle" && st.progress !== null && st.progress !== undefined;
  const progress = busy ? " " + pct(st.progress) : "";
  chip.textContent = `learner: ${st.phase.toUpperCase()}${progress}`;
  chip.className = "chip phase-" + st.phase;
}

function renderLearning(view) {
  const st = view.status || {};
  $("#phase").textContent = st.phase ? st.phase.toUpperCase() : "–";
  $("#phase-progress").style.width = Math.round(100 * (st.progress || 0)) + "%";
  const parts = [];
  if (st.iteration !== null && st.iteration !== undefined) parts.push("iteration " + st.iteration);
  if (st.round !== null && st.round !== undefined) parts.push("round " + st.round);
  if (st.waiting_for) parts.push("waiting for " + st.waiting_for);
  else if (st.phase !== "idle" && st.progress !== null && st.progress !== undefined) parts.push(pct(st.progress) + " done");
  if (st.detail) parts.push(st.detail);
  $("#phase-detail").textContent = view.status ? parts.join(" · ") || "–" : "the learner has not written status.json yet";
  const serving = view.serving_version;
  $("#policy-version").textContent = serving === null ? "–" : "v" + serving;
  const learnerV = st.policy_version === null || st.policy_version === undefined ? null : "v" + st.policy_version;
  $("#status-age").textContent = [serving === null ? "no policy loaded" : "serving now",
    learnerV ? "learner published " + learnerV : null,
    view.status_age_s === null ? null : "status " + fmtAge(view.status_age_s)].filter(Boolean).join(" · ");
  $("#window").textContent = view.window;
  const last = view.curve.length ? view.curve[view.curve.length - 1] : null;
  $("#recent-rate").textContent = last ? pct(last.moving_average) : "–";
  const c = view.outcome_counts;
  $("#outcome-counts").textContent = [`${c.success || 0} success`, `${c.failure || 0} failure`,
    `${c.aborted || 0} aborted`, `${view.expert_episodes} expert`].join(" · ");
  // the tile: loss-like entries first (the learner also reports counters in `losses`)
  const losses = Object.entries(st.losses || {});
  const lossLike = losses.filter(([k]) => /loss/i.test(k));
  const shown = (lossLike.length ? lossLike : losses).slice(0, 6);
  $("#losses tbody").replaceChildren(...(shown.length
    ? shown.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmtValue(v) })))
    : [el("tr", {}, el("td", { class: "muted none", text: "no losses reported yet" }))]));
  renderLearnerDetails(st);
  renderRewardModel(st.reward_model);
  drawEpisodeChart($("#chart-episodes"), view.curve, view.window, view.curve_total);
  drawVersionChart($("#chart-versions"), view.versions);
}

// The reward model (status.json "reward_model"): its fit, calibration and disagreement with the operator.
function renderRewardModel(rm) {
  const card = $("#reward-model");
  card.hidden = !rm;
  if (!rm) return;
  $("#rm-mode").textContent = `· mode ${rm.mode}` + (rm.auto_threshold ? ` · auto-label at max(p, 1−p) ≥ ${rm.auto_threshold}` : "");
  const d = rm.disagreement || {};
  $("#rm-disagreement").textContent = d.n ? pct(d.rate) : "–";
  $("#rm-disagreement").classList.toggle("bad", !!d.n && d.rate > 0.2);
  $("#rm-disagreement-sub").textContent = d.n
    ? `${d.disagreements} of ${d.n} episodes both labelled · last ${d.recent_n}: ${pct(d.recent_rate)} · ` +
      `${d.auto_labels} auto-labelled, ${d.auto_labels_corrected} corrected by the operator`
    : `no episode labelled by both yet · ${d.auto_labels || 0} auto-labelled`;
  $("#rm-state").textContent = rm.state || "–";
  $("#rm-fit-sub").textContent = rm.state === "fitted"
    ? `${rm.n_labels} operator labels (${rm.n_success} success) · CV accuracy ${pct(rm.cv_accuracy)} · ` +
      `would auto-label ${pct(rm.cv_auto_fraction)}, error ${rm.cv_auto_error === null ? "–" : pct(rm.cv_auto_error)}`
    : "";
  $("#rm-ece").textContent = rm.ece === null || rm.ece === undefined ? "–" : rm.ece.toFixed(3);
  const bins = (rm.calibration && rm.calibration.bins) || [];
  $("#rm-bins tbody").replaceChildren(...(bins.length
    ? [el("tr", {}, el("td", { class: "muted", text: "predicted" }), el("td", { class: "muted", text: "observed (n)" })),
       ...bins.map((b) => el("tr", { class: "rm-bin" }, el("td", { text: `${b.lo.toFixed(1)}–${b.hi.toFixed(1)}: ${b.mean_p.toFixed(2)}` }),
         el("td", { text: `${b.observed.toFixed(2)} (${b.n})` })))]
    : [el("tr", {}, el("td", { class: "muted none", text: "no fit yet" }))]));
}

function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return fmtNum(v);
  if (Array.isArray(v)) return v.length ? v.join(", ") : "–";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v) || "–";
}

// Everything else status.json says, as small key/value tables (the learner may add fields).
function renderLearnerDetails(st) {
  $("#learner-detail").textContent = st.detail ? "· " + st.detail : "";
  const sections = [];
  const table = (title, entries) => {
    if (!entries.length) return;
    sections.push(el("div", { class: "kv" }, el("h4", { text: title }),
      el("table", {}, el("tbody", {}, ...entries.map(([k, v]) =>
        el("tr", {}, el("td", { text: k }), el("td", { text: v })))))));
  };
  table("Losses and counters", Object.entries(st.losses || {}).map(([k, v]) => [k, fmtValue(v)]));
  const rates = (st.success_rate || {}).by_phase || {};
  table("Success by phase", Object.entries(rates).filter(([, r]) => r).map(([k, r]) => [k, `${pct(r.rate)} (n=${r.n})`]));
  table("Episodes per phase", Object.entries(st.episodes_per_phase || {}).map(([k, v]) => [k, fmtValue(v)]));
  const ingest = st.ingest || {};
  table("Ingest", ["steps", "episodes", "steps_per_s", "duplicates", "refused", "relabels", "inbox_applied", "robots", "last_refusal"]
    .filter((k) => k in ingest && ingest[k] !== "").map((k) => [k.replace(/_/g, " "), fmtValue(ingest[k])]));
  $("#learner-sections").replaceChildren(...(sections.length ? sections
    : [el("p", { class: "muted", text: "The learner has not reported anything else yet." })]));
}

// Canvas charts, drawn by hand (no chart library: the page must work offline).
function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px system-ui, sans-serif";
  return { ctx, w, h };
}

const CHART = { left: 46, right: 16, top: 30, bottom: 34, ink: "#18202b", muted: "#6b7686", grid: "#e6eaf0",
                ok: "#1f9d55", bad: "#d64545", line: "#2f6fed", eval: "#7c4ddb" };

function drawYAxis(ctx, w, h, y) {
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.strokeStyle = CHART.grid;
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(CHART.left, y(v)); ctx.lineTo(w - CHART.right, y(v)); ctx.stroke();
    ctx.fillStyle = CHART.muted;
    ctx.fillText(Math.round(v * 100) + "%", CHART.left - 8, y(v));
  }
}

function niceStep(n, maxTicks) {
  const raw = Math.max(1, n / maxTicks);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function emptyChart(ctx, w, h, text) {
  ctx.fillStyle = CHART.muted;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.font = "15px system-ui, sans-serif";
  ctx.fillText(text, w / 2, h / 2);
}

function drawEpisodeChart(canvas, curve, windowSize, total) {
  const { ctx, w, h } = setupCanvas(canvas);
  canvas.dataset.points = String(total);
  const plotW = w - CHART.left - CHART.right, plotH = h - CHART.top - CHART.bottom;
  const y = (v) => CHART.top + (1 - v) * plotH;
  drawYAxis(ctx, w, h, y);
  if (!curve.length) { emptyChart(ctx, w, h, "No labelled episodes yet"); return; }
  const n = curve[curve.length - 1].index;   // episodes on the axis (the curve may be thinned)
  const x = (i) => CHART.left + (n === 1 ? plotW / 2 : ((i - 1) / (n - 1)) * plotW);
  // policy version changes: dashed verticals labelled with the new version
  ctx.setLineDash([4, 4]);
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  let prev = null, lastLabelX = -Infinity;
  for (const p of curve) {
    if (p.policy_version !== null && p.policy_version !== prev) {
      if (prev !== null) {
        ctx.strokeStyle = "#c3cad6";
        ctx.beginPath(); ctx.moveTo(x(p.index), CHART.top); ctx.lineTo(x(p.index), CHART.top + plotH); ctx.stroke();
      }
      if (x(p.index) - lastLabelX > 30) {   // many versions: label only those with room
        ctx.fillStyle = CHART.muted;
        ctx.fillText("v" + p.policy_version, x(p.index) + 3, 4);
        lastLabelX = x(p.index);
      }
      prev = p.policy_version;
    }
  }
  ctx.setLineDash([]);
  // single episodes: green dots on top, red on the bottom
  const radius = curve.length > 150 ? 2 : 3.5;
  for (const p of curve) {
    ctx.fillStyle = p.success ? CHART.ok : CHART.bad;
    ctx.globalAlpha = 0.75;
    ctx.beginPath(); ctx.arc(x(p.index), y(p.success ? 1 : 0), radius, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  // moving average
  ctx.strokeStyle = CHART.line;
  ctx.lineWidth = 3;
  ctx.lineJoin = "round";
  ctx.beginPath();
  curve.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p.index), y(p.moving_average)));
  ctx.stroke();
  const last = curve[curve.length - 1];
  ctx.fillStyle = CHART.line;
  ctx.beginPath(); ctx.arc(x(last.index), y(last.moving_average), 5.5, 0, 2 * Math.PI); ctx.fill();
  // x axis: episode count
  ctx.fillStyle = CHART.muted;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const step = niceStep(n, 8);
  const ticks = [1];
  for (let i = step; i < n; i += step) if (i > 1 && x(n) - x(i) > 24) ticks.push(i);
  if (n > 1) ticks.push(n);
  for (const i of ticks) ctx.fillText(String(i), x(i), CHART.top + plotH + 8);
  ctx.textAlign = "right";
  ctx.fillText(`episodes (moving average over ${windowSize})`, w - CHART.right, h - 12);
}

function drawVersionChart(canvas, versions) {
  const { ctx, w, h } = setupCanvas(canvas);
  const shown = versions.slice(-24);
  canvas.dataset.points = String(versions.length);
  const plotW = w - CHART.left - CHART.right, plotH = h - CHART.top - CHART.bottom;
  const y = (v) => CHART.top + (1 - v) * plotH;
  drawYAxis(ctx, w, h, y);
  if (!shown.length) { emptyChart(ctx, w, h, "No policy version has labelled episodes yet"); return; }
  const slot = plotW / shown.length;
  const barW = Math.min(56, slot * 0.62);
  shown.forEach((v, i) => {
    const cx = CHART.left + slot * (i + 0.5);
    const grad = ctx.createLinearGradient(0, y(v.success_rate), 0, y(0));
    grad.addColorStop(0, "#2f6fed");
    grad.addColorStop(1, "#8fb1f7");
    ctx.fillStyle = grad;
    const top = y(v.success_rate);
    ctx.fillRect(cx - barW / 2, top, barW, y(0) - top);
    if (v.eval_success_rate !== null) {
      const ey = y(v.eval_success_rate);
      ctx.fillStyle = CHART.eval;
      ctx.beginPath(); ctx.moveTo(cx, ey - 7); ctx.lineTo(cx + 7, ey); ctx.lineTo(cx, ey + 7); ctx.lineTo(cx - 7, ey); ctx.fill();
    }
    ctx.textAlign = "center";
    const inside = top - 4 < CHART.top + 12;   // no room above a tall bar: write inside it
    ctx.fillStyle = inside ? "#fff" : CHART.ink;
    ctx.textBaseline = inside ? "top" : "bottom";
    ctx.fillText(pct(v.success_rate), cx, inside ? top + 5 : top - 4);
    ctx.fillStyle = CHART.muted;
    ctx.textBaseline = "top";
    ctx.fillText("v" + v.policy_version, cx, CHART.top + plotH + 6);
    ctx.fillText("n=" + v.episodes, cx, CHART.top + plotH + 19);
  });
}

// ------------------------------------------------------------------ promotion gate

function renderPromotion(info) {
  const p = info.promotion || {};
  const box = $("#promotion");
  box.dataset.enabled = String(!!p.enabled);
  box.dataset.pinned = String(p.pinned !== null && p.pinned !== undefined);
  box.dataset.canary = p.canary ? String(p.canary.version) : "";
  const parts = [p.enabled ? "gate on" : "gate off (every new version serves at once)",
    p.promoted ? "promoted v" + p.promoted : null, "serving v" + (info.version === null ? "–" : info.version),
    p.pinned ? "pinned v" + p.pinned + " (gating paused)" : null];
  $("#promotion-summary").textContent = "· " + parts.filter(Boolean).join(" · ");
  $("#unpin").hidden = !p.pinned;
  const c = p.canary;
  const tally = (t) => `${t.successes}/${t.successes + t.failures}`;
  $("#promotion-canary").textContent = c
    ? `Canary v${c.version} (${pct(p.config.canary_fraction)} of new episodes) vs v${c.control}: canary ${tally(c.canary)}, ` +
      `promoted ${tally(c.promoted)} successes` +
      (c.prob_not_worse === null ? "" : `, P(not worse by ${p.config.margin}) = ${c.prob_not_worse.toFixed(2)}`) + ` — ${c.state}`
    : (p.enabled ? "No canary running: the promoted version serves every robot." : "");
  const refused = Object.entries(info.refused || {}).sort((a, b) => Number(b[0]) - Number(a[0]));
  $("#promotion-refused").replaceChildren(...(refused.length
    ? refused.map(([v, why]) => el("tr", { "data-version": v }, el("td", { text: "v" + v }), el("td", { text: why })))
    : [el("tr", {}, el("td", { class: "muted", text: "none" }))]));
  const decisions = (p.decisions || []).slice().reverse();
  $("#promotion-decisions").replaceChildren(...(decisions.length
    ? decisions.map((d) => el("tr", {}, el("td", { class: d.action, text: `${d.action === "promote" ? "promoted" : "rolled back"} v${d.version}` }),
      el("td", { text: fmtTime(d.at) + " · " + d.reason })))
    : [el("tr", {}, el("td", { class: "muted", text: "none yet" }))]));
}

async function pollPromotion() {
  try {
    const info = await getJSON("/v1/policy");
    ui.promotion = Object.assign({}, info.promotion || {}, { refused: info.refused });
    if (ui.view === "learning") renderPromotion(info);
  } catch (_) { /* connection indicator */ }
}

async function pinVersion(ev) {
  ev.preventDefault();
  const version = parseInt($("#pin-version").value, 10);
  if (!(version >= 1)) { toast("Enter a version number to pin", true); return; }
  try {
    await postJSON("/v1/policy/pin", { version });
    toast(`v${version} pinned: served to every robot, gating paused`);
    pollPromotion();
  } catch (err) {
    if (!(err instanceof AuthError)) toast("Pin failed: " + err.message, true);
  }
}

async function unpinVersion() {
  try {
    await api("/v1/policy/pin", { method: "DELETE" });
    toast("Unpinned: gating resumes");
    pollPromotion();
  } catch (err) {
    if (!(err instanceof AuthError)) toast("Unpin failed: " + err.message, true);
  }
}

let learningBusy = false;
async function pollLearning() {
  if (learningBusy || ui.loginOpen || document.hidden) return;
  learningBusy = true;
  try {
    const view = await getJSON("/v1/learning");
    ui.learning = view;
    renderLearnerChip(view);
    if (ui.view === "learning") renderLearning(view);
    await pollPromotion();
  } catch (_) { /* connection indicator */ } finally { learningBusy = false; }
}

// ------------------------------------------------------------------ startup

function refreshAll() {
  pollRobots();
  pollLearning();
  if (ui.view === "episodes") pollEpisodes();
}

function every(ms, fn) { fn(); return setInterval(fn, ms); }

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showView(t.dataset.view)));
  $("#login-form").addEventListener("submit", submitLogin);
  $("#logout").addEventListener("click", logout);
  $("#pin-form").addEventListener("submit", pinVersion);
  $("#unpin").addEventListener("click", unpinVersion);
  $("#logout").hidden = !token();
  $("#episode-filter").addEventListener("change", () => { ui.episodesSig = ""; pollEpisodes(); });
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", onKeyUp);
  window.addEventListener("blur", releaseAllKeys);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshAll(); });
  window.addEventListener("resize", () => { if (ui.view === "learning" && ui.learning) renderLearning(ui.learning); });
  every(ROBOT_POLL_MS, pollRobots);
  let lastLearning = 0;
  every(LEARNING_POLL_MS / 2, () => {
    const wait = ui.view === "learning" ? LEARNING_POLL_MS : LEARNING_IDLE_POLL_MS;
    if (Date.now() - lastLearning >= wait) { lastLearning = Date.now(); pollLearning(); }
  });
  setInterval(() => { if (ui.view === "episodes") pollEpisodes(); }, EPISODE_POLL_MS);
});
