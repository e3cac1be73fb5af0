// sharelens page: one fetch() to /predict with explain:true (plus GET /models for the channel list),
// rendered without any library.
// Text from the API is always inserted with textContent, never as HTML.
"use strict";

const EXAMPLE = "转发抽奖！关注@小明 并转发本条微博，周五抽3位送蓝牙耳机 #抽奖# [微笑]";
const $ = (id) => document.getElementById(id);
let last = null; // {text, result}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pct(p) {
  return (100 * p).toFixed(1) + "%";
}

function setStatus(message, isError) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", Boolean(isError));
}

function apiHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = window.localStorage.getItem("sharelens-api-key");
  if (key) headers["X-API-Key"] = key;
  return headers;
}

// The channel list is the served model's (GET /models); "unknown" stays first and is not sent.
async function loadChannels() {
  try {
    const response = await fetch("/models", { headers: apiHeaders() });
    if (!response.ok) return;
    const data = await response.json();
    const select = $("ctx-channel");
    for (const channel of data.channels || []) {
      const option = el("option", null, channel);
      option.value = channel;
      select.append(option);
    }
  } catch (err) {
    // The page still works without the list: the channel just stays unknown.
  }
}

class InputError extends Error {}

// A number input's value, or null when empty; a half-typed number ("-", "1e") is an error, not unknown.
function numberValue(id, name) {
  const input = $(id);
  if (input.validity.badInput) throw new InputError(name + " 不是数字 is not a number");
  return input.value.trim() === "" ? null : Number(input.value);
}

// The `context` object from the filled fields; null when nothing is filled (then no key is sent).
// Range checks are left to the API, whose 422 detail the status line shows.
function readContext() {
  const context = {};
  const channel = $("ctx-channel").value;
  if (channel) context.channel = channel;
  for (const [id, field] of [["ctx-vip", "vip"], ["ctx-verified", "verified"]]) {
    const value = $(id).value;
    if (value) context[field] = value === "true";
  }
  const followers = numberValue("ctx-followers", "followers");
  if (followers !== null) context.followers = followers;
  if ($("ctx-posted-at").validity.badInput) throw new InputError("posted_at 不完整 is incomplete");
  const postedAt = $("ctx-posted-at").value; // "YYYY-MM-DDTHH:MM" in China time
  if (postedAt) context.posted_at = postedAt.slice(0, 16) + ":00+08:00";
  const posts = numberValue("ctx-history-posts", "history posts");
  const median = numberValue("ctx-history-median", "history median engagement");
  if (posts !== null && median !== null) context.author_history = { posts, median_engagement: median };
  return Object.keys(context).length ? context : null;
}

function clearContext() {
  for (const id of ["ctx-channel", "ctx-vip", "ctx-verified", "ctx-followers", "ctx-posted-at",
    "ctx-history-posts", "ctx-history-median"]) {
    $(id).value = "";
  }
}

function renderMotives(motive) {
  const box = $("motives");
  box.replaceChildren();
  for (const m of motive.probabilities) {
    const row = el("div", "bar" + (m.motive === motive.top ? " top" : ""));
    row.dataset.motive = m.motive;
    row.append(el("span", "zh", m.zh), el("span", "id", m.motive));
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.width = pct(m.probability);
    track.append(fill);
    row.append(track, el("span", "pct", pct(m.probability)));
    box.append(row);
  }
  $("top-motive").textContent = motive.top_zh + " " + motive.top;
}

function renderTier(tier) {
  const box = $("tier");
  box.replaceChildren();
  const strip = el("div", "strip");
  for (const t of tier.probabilities) {
    const seg = el("div", "seg " + t.tier + (t.tier === tier.top ? " top" : ""));
    seg.dataset.tier = t.tier;
    seg.append(el("span", "name", t.tier), el("span", "pct", pct(t.probability)));
    strip.append(seg);
  }
  box.append(el("div", "tier-top", "最可能 most likely: " + tier.top), strip);
}

function signed(score, digits) {
  return (score >= 0 ? "+" : "") + score.toFixed(digits);
}

// Which context fields the tier read, why others were not used, and what each one contributed
// (in the order the API gives: largest |score| first), coloured like the word highlights.
function renderContext(result) {
  const use = result.context || { used: [], unknown: [], notes: [] };
  $("context-used").textContent = use.used.length
    ? "背景已使用 Context used: " + use.used.join(", ")
    : "未使用背景 No context used";
  const notes = $("context-notes");
  notes.replaceChildren(...use.notes.map((n) => el("li", "note", n)));
  const scores = result.explanation ? result.explanation.tier.context || [] : [];
  const box = $("context-scores");
  box.replaceChildren();
  const max = Math.max(1e-9, ...scores.map((c) => Math.abs(c.score)));
  for (const c of scores) {
    const row = el("span", "w ctx " + (c.score >= 0 ? "pos" : "neg"), c.field + "=" + c.value + " " +
      signed(c.score, 2));
    row.dataset.field = c.field;
    const strength = Math.abs(c.score) / max;
    const rgb = c.score >= 0 ? "22, 163, 74" : "220, 38, 38";
    row.style.backgroundColor = "rgba(" + rgb + ", " + (0.12 + 0.6 * strength).toFixed(3) + ")";
    row.title = signed(c.score, 4);
    box.append(row);
  }
  $("context-box").hidden = scores.length === 0;
}

// The API counts offsets in Unicode code points; JavaScript strings count UTF-16 units, so an
// emoji before a word would shift every highlight by one. Map code point -> UTF-16 index.
function unitIndex(text) {
  const idx = [0];
  let units = 0;
  for (const ch of text) {
    units += ch.length;
    idx.push(units);
  }
  return idx;
}

// Re-render the original text with the explaining words marked; offsets index that text.
function renderHighlight(text, explanation, which) {
  const box = $("highlighted");
  box.replaceChildren();
  const target = explanation ? explanation[which] : null;
  const at = unitIndex(text);
  const words = target ? [...target.words].sort((a, b) => a.start - b.start) : [];
  const max = Math.max(1e-9, ...words.map((w) => Math.abs(w.score)));
  let pos = 0;
  for (const w of words) {
    const start = at[w.start];
    const end = at[w.end];
    if (start === undefined || end === undefined || start < pos) continue; // disjoint by construction
    box.append(document.createTextNode(text.slice(pos, start)));
    const mark = el("mark", "w " + (w.score >= 0 ? "pos" : "neg"), text.slice(start, end));
    const strength = Math.abs(w.score) / max;
    const rgb = w.score >= 0 ? "22, 163, 74" : "220, 38, 38";
    mark.style.backgroundColor = "rgba(" + rgb + ", " + (0.12 + 0.6 * strength).toFixed(3) + ")";
    mark.title = signed(w.score, 4);
    box.append(mark);
    pos = end;
  }
  box.append(document.createTextNode(text.slice(pos)));
  $("objective").textContent = target ? "(" + target.target + ": " + target.objective + ")" : "";
}

function render(data, text) {
  const result = data.results[0];
  last = { text, result };
  renderMotives(result.motive);
  renderTier(result.tier);
  renderContext(result);
  renderHighlight(text, result.explanation, $("explain-target").value);
  const note = $("truncated");
  note.hidden = !result.truncated;
  note.textContent = result.truncated
    ? "文本超出模型窗口：只读取了前 " + result.window_tokens + " 个 token（共 " + result.n_tokens +
      "）。 The text is longer than the model window; only the first " + result.window_tokens + " tokens were read."
    : "";
  $("model").textContent = "model " + data.model.name + " " + data.model.version +
    (result.calibrated ? " · calibrated" : " · uncalibrated probabilities");
  $("result").hidden = false;
}

async function predict() {
  const text = $("text").value;
  const body = { text, explain: true };
  try {
    const context = readContext();
    if (context) body.context = context;
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    setStatus("背景字段无效 Invalid context: " + err.message, true);
    return;
  }
  const button = $("predict");
  button.disabled = true;
  setStatus("预测中… predicting", false);
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: apiHeaders(),
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({ detail: "HTTP " + response.status }));
    if (!response.ok) {
      setStatus("错误 Error " + response.status + ": " + data.detail, true);
      return;
    }
    render(data, text);
    setStatus("", false);
  } catch (err) {
    setStatus("无法连接服务 Cannot reach the server: " + err, true);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict").addEventListener("click", predict);
  $("example").addEventListener("click", () => {
    $("text").value = EXAMPLE;
    $("text").focus();
  });
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predict();
  });
  $("explain-target").addEventListener("change", () => {
    if (last) renderHighlight(last.text, last.result.explanation, $("explain-target").value);
  });
  $("ctx-clear").addEventListener("click", clearContext);
  loadChannels();
});
