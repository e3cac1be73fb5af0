// sharelens page, without any library: a prediction as you type (POST /predict, explain:false, debounced),
// the explanation on demand (explain:true), two drafts compared, a CSV scored in batches, the last drafts
// kept in localStorage, and the API key when the server asks for one (401, code E412).
// Text from the API or from a file is always inserted with textContent, never as HTML.
"use strict";

// ---- Label definitions and tier thresholds --------------------------------------------------------------
// Copied from the label spec, shared/spec/share-motives.md (share-motives/1): "The ten motives" table (id,
// 中文, "the sharer gets…", "typical cues") and the "Engagement tier" table. The API serves neither, so the
// page carries them; tests/serving/test_page_browser.py checks them against the spec file.
const MOTIVES = [
  { id: "incentive", zh: "利益驱动", gets: "a reward for sharing itself",
    cues: "转发抽奖, 关注+转发送, 集赞, 转发领红包, 转发领券, 评论区揪N位, 点赞过万就…" },
  { id: "practical_value", zh: "实用价值", gets: "to be useful to friends (altruism, being \"needed\")",
    cues: "攻略, 干货, 教程, 建议收藏, 小技巧, 清单, 政策/服务信息, 避坑, 好物推荐 with facts" },
  { id: "social_currency", zh: "社交谈资", gets: "something new, funny or surprising to talk about",
    cues: "热点事件, 明星八卦, 奇闻, 反转, 搞笑段子, meme, 剧情/综艺讨论" },
  { id: "opinion", zh: "观点表达", gets: "a voice in a debate; backing for their own view",
    cues: "凭什么, 难道, 我认为, 争议话题, 站队, 评理, 中医 vs 西医" },
  { id: "self_image", zh: "形象塑造", gets: "to look a certain way: taste, knowledge, values, lifestyle",
    cues: "艺术/设计/摄影/读书/旅行之美, 高情商, 情怀, 公益支持, 爱国致敬" },
  { id: "social_comparison", zh: "社交比较", gets: "to measure themselves against others",
    cues: "排行榜, 年度报告, 测试/测评, 你是第几, 晒成绩/账单, 你呢?" },
  { id: "belonging", zh: "圈层认同", gets: "to signal membership and find their own kind",
    cues: "超话, 打榜, 应援, 家人们, 只有…才懂, 同款, 粉丝/二次元/打工人/校友 in-group talk" },
  { id: "emotional_expression", zh: "情绪表达", gets: "to voice a feeling or be seen",
    cues: "心情, 感动, 破防, 心疼, 愤怒, 吐槽 of personal life, 晒日常, 打卡, 签到" },
  { id: "help_seeking", zh: "寻求帮助", gets: "help for someone with a concrete need",
    cues: "求助, 寻人, 求扩散, 急, 救救, 帮转, 失物, 求推荐" },
  { id: "public_warning", zh: "预警辟谣", gets: "to protect their group from a risk",
    cues: "警惕, 提醒, 注意, 预警, 辟谣, 谣言, 诈骗, 召回, 暴雨/地震, 健康风险" },
];
// E = reposts + comments + likes when the post was collected.
const TIERS = [
  { id: "low", zh: "低", range: "E < 100" },
  { id: "medium", zh: "中", range: "100 ≤ E < 1,000" },
  { id: "high", zh: "高", range: "1,000 ≤ E < 10,000" },
  { id: "viral", zh: "爆", range: "E ≥ 10,000" },
];
const MOTIVE = Object.fromEntries(MOTIVES.map((m) => [m.id, m]));
const TIER = Object.fromEntries(TIERS.map((t) => [t.id, t]));

const EXAMPLE = "转发抽奖！关注@小明 并转发本条微博，周五抽3位送蓝牙耳机 #抽奖# [微笑]";
const DEBOUNCE_MS = 400;
const BATCH = 64; // the server's default SHARELENS_MAX_BATCH: most posts in one /predict
const MAX_CSV_ROWS = 500;
const MAX_DRAFTS = 20;
const KEY_NAME = "sharelens-api-key";
const DRAFTS_NAME = "sharelens-drafts";
const CONTEXT_IDS = ["ctx-channel", "ctx-vip", "ctx-verified", "ctx-followers", "ctx-posted-at",
  "ctx-history-posts", "ctx-history-median"];

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pct(p) {
  return (100 * p).toFixed(1) + "%";
}

function signed(score, digits) {
  return (score >= 0 ? "+" : "") + score.toFixed(digits);
}

// A change of probability in signed percentage points: "+12.3 pp", "-0.4 pp", "0.0 pp".
function pp(delta) {
  const v = Math.round(1000 * delta) / 10;
  if (v === 0) return "0.0 pp";
  return (v > 0 ? "+" : "-") + Math.abs(v).toFixed(1) + " pp";
}

function motiveTitle(id) {
  const m = MOTIVE[id];
  if (!m) return id;
  return m.zh + " " + m.id + "\n转发者得到 The sharer gets: " + m.gets + "\n典型线索 Typical cues: " + m.cues;
}

function motiveLabel(id) {
  return (MOTIVE[id] ? MOTIVE[id].zh + " " : "") + id;
}

function tierLabel(id) {
  return (TIER[id] ? TIER[id].zh + " " : "") + id;
}

function setStatus(node, message, isError) {
  node.textContent = message;
  node.classList.toggle("error", Boolean(isError));
}

// ---- The API -----------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

class InputError extends Error {}

function storedKey() {
  return window.sessionStorage.getItem(KEY_NAME) || window.localStorage.getItem(KEY_NAME) || "";
}

function apiHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = storedKey();
  if (key) headers["X-API-Key"] = key;
  return headers;
}

// GET (body undefined) or POST JSON; the parsed answer, or an ApiError with the API's detail and code.
// A 401 opens the key box: the server was started with SHARELENS_API_KEY (code E412).
async function api(path, body, signal) {
  const init = { headers: apiHeaders(), signal };
  if (body !== undefined) {
    init.method = "POST";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ detail: "HTTP " + response.status }));
  if (!response.ok) {
    const err = new ApiError(response.status, data.code, data.detail || "HTTP " + response.status,
      Number(response.headers.get("Retry-After")));
    if (response.status === 401) askForKey();
    throw err;
  }
  return data;
}

function describe(err) {
  if (err instanceof ApiError) {
    return "错误 Error " + err.status + ": " + err.detail + (err.code ? " (" + err.code + ")" : "") +
      (err.status === 401 ? " · 请在上方输入 API 密钥 enter the API key above" : "");
  }
  return "无法连接服务 Cannot reach the server: " + err;
}

// ---- API key -----------------------------------------------------------------------------------------------

function askForKey() {
  const box = $("key-box");
  const wasHidden = box.hidden;
  box.hidden = false;
  $("key-message").textContent = storedKey()
    ? "服务器拒绝了这个密钥，请检查。 The server rejected this key; check it."
    : "此服务器需要 API 密钥（请求头 X-API-Key）。 This server requires an API key (sent as X-API-Key).";
  $("key-message").classList.add("error");
  if (wasHidden) $("api-key").focus();
}

function saveKey() {
  const key = $("api-key").value.trim();
  if (!key) {
    $("key-message").textContent = "请输入密钥 Enter a key.";
    return;
  }
  window.sessionStorage.setItem(KEY_NAME, key);
  if ($("key-remember").checked) window.localStorage.setItem(KEY_NAME, key);
  else window.localStorage.removeItem(KEY_NAME);
  $("api-key").value = "";
  $("key-message").textContent = "密钥已保存，随每个请求发送。 Key saved; it is sent with every request.";
  $("key-message").classList.remove("error");
  retryAll();
}

function forgetKey() {
  window.sessionStorage.removeItem(KEY_NAME);
  window.localStorage.removeItem(KEY_NAME);
  $("key-message").textContent = "密钥已删除。 Key forgotten.";
  $("key-message").classList.remove("error");
}

// After a key is given: everything that may have been refused, again.
function retryAll() {
  loadChannels();
  if ($("text").value.trim()) runSingle(false);
  if ($("cmp-a").value.trim() && $("cmp-b").value.trim()) runCompare();
  if (csv.rows && !csv.done) scoreCsv();
}

// ---- Context -----------------------------------------------------------------------------------------------

// The channel list is the served model's (GET /models); "unknown" stays first and is not sent.
let channelsLoaded = false;
async function loadChannels() {
  if (channelsLoaded) return;
  try {
    const data = await api("/models");
    const select = $("ctx-channel");
    for (const channel of data.channels || []) {
      const option = el("option", null, channel);
      option.value = channel;
      select.append(option);
    }
    channelsLoaded = true;
    if (pendingChannel !== null) select.value = pendingChannel;
    pendingChannel = null;
  } catch (err) {
    // The page still works without the list: the channel just stays unknown.
  }
}
let pendingChannel = null; // a restored draft's channel, set once the list is there

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

// The raw field values (for a draft), only the filled ones.
function contextForm() {
  const form = {};
  for (const id of CONTEXT_IDS) {
    if ($(id).value) form[id] = $(id).value;
  }
  return form;
}

function setContextForm(form) {
  pendingChannel = null; // an earlier draft's channel must not land on this one
  for (const id of CONTEXT_IDS) $(id).value = "";
  for (const [id, value] of Object.entries(form || {})) {
    if (!CONTEXT_IDS.includes(id)) continue;
    $(id).value = value;
    if (id === "ctx-channel" && $(id).value !== value) pendingChannel = value; // list not loaded yet
  }
  if (Object.keys(form || {}).length) $("context").open = true;
}

function contextChanged() {
  if (view === "single") {
    // a number field fires `input` as it is typed and `change` when it loses focus: one request is enough
    if (single.sentKey !== null && requestKey() === single.sentKey) return;
    scheduleSingle();
  } else if (view === "compare") scheduleCompare();
}

// What a plain prediction of the single view would send now (null when the context does not parse).
function requestKey() {
  try {
    return JSON.stringify([$("text").value, readContext()]);
  } catch (err) {
    if (err instanceof InputError) return null;
    throw err;
  }
}

// ---- Single post: predict as you type, explain on demand -------------------------------------------------

// seq numbers every request; only the newest one's answer is shown, so a slow answer to an older text
// never overwrites a newer one. An explanation still running when the text changes is aborted.
const single = { seq: 0, timer: null, abort: null, shown: null, sentKey: null };
let currentDraft = null; // id of the draft that the text box is editing

function scheduleSingle() {
  clearTimeout(single.timer);
  single.timer = setTimeout(() => runSingle(false), DEBOUNCE_MS);
}

async function runSingle(explain) {
  clearTimeout(single.timer);
  const text = $("text").value;
  const seq = ++single.seq;
  if (single.abort) single.abort.abort();
  single.abort = null;
  if (!text.trim()) {
    $("result").hidden = true;
    single.shown = null;
    setStatus($("status"), explain ? "请先输入正文 Type a post first" : "", explain);
    return;
  }
  const body = { text, explain };
  try {
    const context = readContext();
    if (context) body.context = context;
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    setStatus($("status"), "背景字段无效 Invalid context: " + err.message, true);
    return;
  }
  const form = contextForm();
  if (pendingChannel !== null && !form["ctx-channel"]) form["ctx-channel"] = pendingChannel; // keep it in the draft
  if (!explain) single.sentKey = JSON.stringify([text, body.context || null]);
  let signal;
  if (explain) {
    single.abort = new AbortController();
    signal = single.abort.signal;
    $("explain").disabled = true;
  }
  setStatus($("status"), explain ? "解释中… explaining" : "预测中… predicting", false);
  try {
    const data = await api("/predict", body, signal);
    if (seq !== single.seq) return; // a newer request was sent meanwhile: this answer is stale
    render(data, text);
    setStatus($("status"), "", false);
    saveDraft(text, form, data.results[0]);
  } catch (err) {
    if (seq !== single.seq || (err && err.name === "AbortError")) return;
    setStatus($("status"), describe(err), true);
  } finally {
    if (explain) $("explain").disabled = false;
    if (seq === single.seq) single.abort = null;
  }
}

function renderMotives(motive) {
  const box = $("motives");
  box.replaceChildren();
  for (const m of motive.probabilities) {
    const row = el("div", "bar" + (m.motive === motive.top ? " top" : ""));
    row.dataset.motive = m.motive;
    row.title = motiveTitle(m.motive);
    row.append(el("span", "zh", m.zh), el("span", "id", m.motive));
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.width = pct(m.probability);
    track.append(fill);
    row.append(track, el("span", "pct", pct(m.probability)));
    box.append(row);
  }
  $("top-motive").textContent = motive.top_zh + " " + motive.top;
  $("top-motive").title = motiveTitle(motive.top);
}

// The API's `tier.top` is the median of the distribution (the lowest tier whose cumulative probability
// reaches 0.5: the least expected distance to the true tier), which can differ from the most probable tier;
// the page names both for what they are.
function renderTier(tier) {
  const box = $("tier");
  box.replaceChildren();
  let likely = tier.probabilities[0];
  for (const t of tier.probabilities) if (t.probability > likely.probability) likely = t;
  const head = el("div", "tier-top");
  const decision = el("span", "tier-decision", "判定 decision: " + tierLabel(tier.top));
  decision.id = "tier-decision";
  decision.title = "分布的中位数：累计概率首先达到 50% 的层级，使与真实层级的期望距离最小。 The median of the " +
    "distribution: the lowest tier whose cumulative probability reaches 50%; it minimises the expected distance " +
    "to the true tier.";
  const most = el("span", "tier-likely", "最可能 most likely: " + tierLabel(likely.tier) + " " +
    pct(likely.probability));
  most.id = "tier-likely";
  head.append(decision, most);
  const strip = el("div", "strip");
  for (const t of tier.probabilities) {
    const cls = "seg " + t.tier + (t.tier === tier.top ? " decision" : "") + (t.tier === likely.tier ? " likely" : "");
    const seg = el("div", cls);
    seg.dataset.tier = t.tier;
    const top = el("div", "seg-top");
    top.append(el("span", "name", tierLabel(t.tier)), el("span", "pct", pct(t.probability)));
    seg.append(top, el("div", "range", TIER[t.tier] ? TIER[t.tier].range : ""));
    strip.append(seg);
  }
  const note = el("p", "hint", "判定 = 分布的中位数（累计概率首先达到 50% 的层级），可能不同于最可能的单一层级。 " +
    "The decision is the median of the distribution (the lowest tier whose cumulative probability reaches 50%), " +
    "which can differ from the single most likely tier. E = 转发 + 评论 + 点赞 reposts + comments + likes.");
  box.append(head, strip, note);
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
// Without an explanation the box stays empty and a hint says how to get one.
function renderHighlight(text, explanation, which) {
  const box = $("highlighted");
  box.replaceChildren();
  $("explain-hint").hidden = Boolean(explanation);
  const target = explanation ? explanation[which] : null;
  $("objective").textContent = target ? "(" + target.target + ": " + target.objective + ")" : "";
  if (!target) return;
  const at = unitIndex(text);
  const words = [...target.words].sort((a, b) => a.start - b.start);
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
}

function modelLine(data, result) {
  return "model " + data.model.name + " " + data.model.version +
    (result.calibrated ? " · calibrated" : " · uncalibrated probabilities");
}

function render(data, text) {
  const result = data.results[0];
  single.shown = { text, result };
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
  $("model").textContent = modelLine(data, result);
  $("result").hidden = false;
}

// ---- Drafts (localStorage) ---------------------------------------------------------------------------------

function loadDrafts() {
  try {
    const drafts = JSON.parse(window.localStorage.getItem(DRAFTS_NAME) || "[]");
    return Array.isArray(drafts) ? drafts.filter((d) => d && typeof d.text === "string" && d.id) : [];
  } catch (err) {
    return [];
  }
}

function storeDrafts(drafts) {
  try {
    window.localStorage.setItem(DRAFTS_NAME, JSON.stringify(drafts.slice(0, MAX_DRAFTS)));
  } catch (err) {
    // Storage full or disabled: the history is a convenience, the page goes on without it.
  }
}

// The draft being edited is updated in place (and moved to the top) as its prediction comes back; a new
// one starts after "New draft", the example, an emptied text box or a page load. The same text and
// context twice is kept once.
function saveDraft(text, form, result) {
  if (!currentDraft) currentDraft = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  const same = JSON.stringify([text, form]);
  const drafts = loadDrafts().filter((d) => d.id !== currentDraft && JSON.stringify([d.text, d.form || {}]) !== same);
  drafts.unshift({ id: currentDraft, text, form, at: new Date().toISOString(),
    motive: result.motive.top, tier: result.tier.top });
  storeDrafts(drafts);
  renderHistory();
}

// "11-30 22:15" in the browser's time zone (the year only when it is not this one).
function shortTime(iso) {
  const t = new Date(iso);
  if (isNaN(t)) return "";
  const two = (n) => String(n).padStart(2, "0");
  const day = two(t.getMonth() + 1) + "-" + two(t.getDate());
  return (t.getFullYear() === new Date().getFullYear() ? "" : t.getFullYear() + "-") + day + " " + two(t.getHours()) +
    ":" + two(t.getMinutes());
}

function renderHistory() {
  const list = $("history");
  const drafts = loadDrafts();
  list.replaceChildren();
  for (const d of drafts) {
    const item = el("li", "draft" + (d.id === currentDraft ? " current" : ""));
    item.dataset.id = d.id;
    const restore = el("button", "restore");
    restore.type = "button";
    restore.title = d.text;
    const meta = [MOTIVE[d.motive] ? MOTIVE[d.motive].zh + " " + d.motive : "", d.tier ? "判定 " + d.tier : "",
      shortTime(d.at)].filter(Boolean).join(" · ");
    restore.append(el("span", "draft-text", d.text.length > 80 ? d.text.slice(0, 80) + "…" : d.text),
      el("span", "draft-meta", meta));
    restore.addEventListener("click", () => restoreDraft(d.id));
    const toA = el("button", "secondary small to-a", "A");
    toA.type = "button";
    toA.title = "放入对比 A · Compare as draft A";
    toA.addEventListener("click", () => toCompare("cmp-a", d.text));
    const toB = el("button", "secondary small to-b", "B");
    toB.type = "button";
    toB.title = "放入对比 B · Compare as draft B";
    toB.addEventListener("click", () => toCompare("cmp-b", d.text));
    item.append(restore, toA, toB);
    list.append(item);
  }
  if (!drafts.length) list.append(el("li", "muted", "还没有草稿 No drafts yet"));
  $("history-clear").hidden = drafts.length === 0;
}

function restoreDraft(id) {
  const d = loadDrafts().find((x) => x.id === id);
  if (!d) return;
  showView("single");
  $("text").value = d.text;
  setContextForm(d.form);
  currentDraft = d.id;
  renderHistory();
  runSingle(false);
}

function toCompare(id, text) {
  showView("compare");
  $(id).value = text;
  runCompare();
}

// ---- Compare two drafts ------------------------------------------------------------------------------------

const cmp = { seq: 0, timer: null };

function scheduleCompare() {
  clearTimeout(cmp.timer);
  cmp.timer = setTimeout(runCompare, DEBOUNCE_MS);
}

async function runCompare() {
  clearTimeout(cmp.timer);
  const a = $("cmp-a").value;
  const b = $("cmp-b").value;
  const seq = ++cmp.seq;
  if (!a.trim() || !b.trim()) {
    $("cmp-result").hidden = true;
    setStatus($("cmp-status"), "请填写两版草稿 Fill in both drafts", false);
    return;
  }
  let context;
  try {
    context = readContext();
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    setStatus($("cmp-status"), "背景字段无效 Invalid context: " + err.message, true);
    return;
  }
  const body = context ? { posts: [{ text: a, context }, { text: b, context }] } : { texts: [a, b] };
  body.explain = false;
  setStatus($("cmp-status"), "预测中… predicting", false);
  try {
    const data = await api("/predict", body);
    if (seq !== cmp.seq) return;
    renderCompare(data);
    setStatus($("cmp-status"), "", false);
  } catch (err) {
    if (seq !== cmp.seq) return;
    setStatus($("cmp-status"), describe(err), true);
  }
}

function deltaCell(a, b) {
  const d = b - a;
  const cell = el("td", "delta " + (Math.round(1000 * d) === 0 ? "same" : d > 0 ? "up" : "down"));
  const bar = el("span", "dbar");
  const fill = el("span", "dfill");
  fill.style.width = Math.min(50, 50 * Math.abs(d)).toFixed(1) + "%";
  fill.style[d >= 0 ? "left" : "right"] = "50%";
  bar.append(fill);
  cell.append(el("span", "dval", pp(d)), bar);
  return cell;
}

function renderCompare(data) {
  const [ra, rb] = data.results;
  const pa = Object.fromEntries(ra.motive.probabilities.map((m) => [m.motive, m.probability]));
  const pb = Object.fromEntries(rb.motive.probabilities.map((m) => [m.motive, m.probability]));
  const body = $("cmp-motives").tBodies[0];
  body.replaceChildren();
  for (const m of MOTIVES) { // the spec's order: rows stay put while B is edited
    const tr = el("tr");
    tr.dataset.motive = m.id;
    tr.title = motiveTitle(m.id);
    if (m.id === ra.motive.top) tr.classList.add("top-a");
    if (m.id === rb.motive.top) tr.classList.add("top-b");
    tr.append(el("th", "name", motiveLabel(m.id)), el("td", "num a", pct(pa[m.id])), el("td", "num b", pct(pb[m.id])),
      deltaCell(pa[m.id], pb[m.id]));
    body.append(tr);
  }
  const ta = Object.fromEntries(ra.tier.probabilities.map((t) => [t.tier, t.probability]));
  const tb = Object.fromEntries(rb.tier.probabilities.map((t) => [t.tier, t.probability]));
  const tbody = $("cmp-tiers").tBodies[0];
  tbody.replaceChildren();
  for (const t of TIERS) {
    const tr = el("tr");
    tr.dataset.tier = t.id;
    const name = el("th", "name", tierLabel(t.id));
    name.append(el("span", "range", " " + t.range));
    tr.append(name, el("td", "num a", pct(ta[t.id])), el("td", "num b", pct(tb[t.id])), deltaCell(ta[t.id], tb[t.id]));
    tbody.append(tr);
  }
  const summary = $("cmp-summary");
  summary.replaceChildren();
  const motiveLine = el("p", "cmp-line");
  motiveLine.id = "cmp-motive-change";
  motiveLine.textContent = "最可能动机 Top motive: A " + motiveLabel(ra.motive.top) + " → B " + motiveLabel(rb.motive.top);
  const tierLine = el("p", "cmp-line");
  tierLine.id = "cmp-tier-change";
  tierLine.textContent = "层级判定 Tier decision (中位数 median): A " + tierLabel(ra.tier.top) + " → B " +
    tierLabel(rb.tier.top);
  summary.append(motiveLine, tierLine);
  $("cmp-model").textContent = modelLine(data, ra);
  $("cmp-result").hidden = false;
}

// ---- CSV batch ---------------------------------------------------------------------------------------------

class CsvError extends Error {}

// RFC 4180: fields separated by commas, rows by CRLF, LF or CR; a quoted field may hold commas, quotes
// (doubled) and line breaks. A leading UTF-8 BOM is dropped; blank lines are skipped.
function parseCsv(input) {
  const text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
  const rows = [];
  let row = [];
  let field = "";
  let started = false; // the current field has begun (so a quote is literal, not an opening one)
  let quoted = false;
  let line = 1;
  let quoteLine = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        if (c === "\n") line++;
        field += c;
      }
    } else if (c === '"' && !started) {
      quoted = true;
      started = true;
      quoteLine = line;
    } else if (c === ",") {
      row.push(field);
      field = "";
      started = false;
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      line++;
      row.push(field);
      if (!(row.length === 1 && row[0] === "" && !started)) rows.push(row);
      row = [];
      field = "";
      started = false;
    } else {
      field += c;
      started = true;
    }
  }
  if (quoted) throw new CsvError("第 " + quoteLine + " 行的引号没有闭合 A quoted field opened on line " + quoteLine +
    " is never closed");
  if (started || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

// A CSV file's text: UTF-8 (BOM or not), else GB18030, which Excel in China writes.
async function readFileText(file) {
  const buffer = await file.arrayBuffer();
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(buffer), encoding: "UTF-8" };
  } catch (err) {
    return { text: new TextDecoder("gb18030").decode(buffer), encoding: "GB18030" };
  }
}

const TEXT_COLUMNS = ["text", "content", "正文", "内容"];
const BOOL_TRUE = ["true", "1", "yes", "y", "t", "是"];
const BOOL_FALSE = ["false", "0", "no", "n", "f", "否"];

// Header -> index of the text column and of each context column (names as the context fields; the author
// history as one JSON column or as two, author_history_posts and author_history_median_engagement).
function csvColumns(header) {
  const names = header.map((h) => h.trim().toLowerCase());
  const find = (...candidates) => {
    for (const c of candidates) {
      const i = names.indexOf(c);
      if (i >= 0) return i;
    }
    return -1;
  };
  const cols = { text: find(...TEXT_COLUMNS) };
  for (const f of ["channel", "vip", "verified", "followers", "posted_at", "author_history"]) cols[f] = find(f);
  cols.history_posts = find("author_history_posts", "author_history.posts");
  cols.history_median = find("author_history_median_engagement", "author_history.median_engagement");
  return cols;
}

// One row's context, read from its cells like `sharelens score` reads a CSV; an empty cell is unknown.
function rowContext(cells, cols) {
  const cell = (i) => (i >= 0 && i < cells.length ? cells[i].trim() : "");
  const context = {};
  if (cell(cols.channel)) context.channel = cell(cols.channel);
  for (const f of ["vip", "verified"]) {
    const v = cell(cols[f]).toLowerCase();
    if (!v) continue;
    if (BOOL_TRUE.includes(v)) context[f] = true;
    else if (BOOL_FALSE.includes(v)) context[f] = false;
    else throw new InputError("context." + f + ": 不是真假值 not true/false (" + cell(cols[f]) + ")");
  }
  const number = (raw, name) => {
    const n = Number(raw);
    if (raw === "" || !Number.isFinite(n)) throw new InputError(name + ": 不是数字 not a number (" + raw + ")");
    return n;
  };
  if (cell(cols.followers)) context.followers = number(cell(cols.followers), "context.followers");
  if (cell(cols.posted_at)) context.posted_at = cell(cols.posted_at);
  if (cell(cols.author_history)) {
    try {
      context.author_history = JSON.parse(cell(cols.author_history));
    } catch (err) {
      throw new InputError("context.author_history: 不是 JSON not JSON like {\"posts\": 25, \"median_engagement\": 850}");
    }
  } else if (cell(cols.history_posts) || cell(cols.history_median)) {
    if (!cell(cols.history_posts) || !cell(cols.history_median)) {
      throw new InputError("context.author_history: 需要 posts 与 median_engagement 两项 needs both posts and " +
        "median_engagement");
    }
    context.author_history = { posts: number(cell(cols.history_posts), "context.author_history.posts"),
      median_engagement: number(cell(cols.history_median), "context.author_history.median_engagement") };
  }
  return Object.keys(context).length ? context : null;
}

// The loaded file: header, rows ({index, cells, text, post, error, result, version}), and how far scoring got.
const csv = { job: 0, running: 0, name: "", header: null, rows: null, done: false, sort: { key: "row", dir: 1 } };

async function loadCsv(file) {
  const job = ++csv.job;
  csv.rows = null;
  csv.done = false;
  $("csv-download").disabled = true;
  $("csv-table").hidden = true;
  const status = $("csv-status");
  let parsed;
  let encoding;
  try {
    const read = await readFileText(file);
    encoding = read.encoding;
    parsed = parseCsv(read.text);
  } catch (err) {
    setStatus(status, "无法读取 CSV Cannot read the CSV: " + err.message, true);
    return;
  }
  if (job !== csv.job) return;
  if (parsed.length < 2) {
    setStatus(status, "文件里没有数据行 The file has no data rows (the first line must be the column names).", true);
    return;
  }
  const header = parsed[0].map((h) => h.trim());
  const cols = csvColumns(header);
  if (cols.text < 0) {
    setStatus(status, "找不到正文列 No text column: name one of " + TEXT_COLUMNS.join(", ") + " (columns found: " +
      header.join(", ") + ").", true);
    return;
  }
  const data = parsed.slice(1);
  if (data.length > MAX_CSV_ROWS) {
    setStatus(status, "行数过多 Too many rows: " + data.length + " posts; at most " + MAX_CSV_ROWS +
      " per file. 请拆分文件，或用命令行 sharelens score 处理大文件。 Split the file, or score a large one with " +
      "`sharelens score`.", true);
    return;
  }
  csv.name = file.name;
  csv.header = header;
  csv.encoding = encoding;
  csv.rows = data.map((cells, index) => {
    const row = { index, cells, text: cells[cols.text] || "", post: null, error: "", result: null, version: "" };
    if (!row.text.trim()) {
      row.error = "空正文 empty text";
      return row;
    }
    try {
      const context = rowContext(cells, cols);
      row.post = context ? { text: row.text, context } : { text: row.text };
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      row.error = err.message;
    }
    return row;
  });
  csv.sort = { key: "row", dir: 1 };
  renderCsvTable();
  await scoreCsv();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// /predict, waiting out a 429 or 503 (overloaded, not ready) a few times as its Retry-After says.
async function predictPatiently(body) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api("/predict", body);
    } catch (err) {
      const busy = err instanceof ApiError && (err.status === 429 || err.status === 503);
      if (!busy || attempt >= 5) throw err;
      await sleep(1000 * Math.max(1, err.retryAfter || 1));
    }
  }
}

// Rows not yet scored, in requests of at most BATCH posts. A batch the API refuses as a whole (one post
// too long, one context value out of range) is retried post by post, so only the bad rows carry the error.
const refusesRow = (err) => err instanceof ApiError && (err.status === 413 || err.status === 422);

async function scoreRows(rows) {
  const data = await predictPatiently({ posts: rows.map((r) => r.post), explain: false });
  rows.forEach((r, i) => {
    r.result = data.results[i];
    r.version = data.model.version;
  });
}

async function scoreCsv() {
  if (csv.running === csv.job) return; // already at it (a key saved mid-run)
  const job = csv.job;
  csv.running = job;
  try {
    await scoreLoop(job);
  } finally {
    if (csv.running === job) csv.running = 0;
  }
}

async function scoreLoop(job) {
  const status = $("csv-status");
  const todo = csv.rows.filter((r) => r.post && !r.result && !r.error);
  const total = csv.rows.filter((r) => r.post).length;
  let scored = total - todo.length;
  const fail = (err) => {
    setStatus(status, describe(err) + " · 已评分 scored " + scored + " / " + total, true);
    renderCsvTable();
  };
  for (let start = 0; start < todo.length; start += BATCH) {
    const chunk = todo.slice(start, start + BATCH);
    setStatus(status, "评分中 Scoring… " + scored + " / " + total, false);
    try {
      await scoreRows(chunk);
    } catch (err) {
      if (job !== csv.job) return;
      if (!refusesRow(err)) return fail(err);
      for (const r of chunk) {
        try {
          await scoreRows([r]);
        } catch (one) {
          if (job !== csv.job) return;
          if (!refusesRow(one)) return fail(one);
          r.error = one.detail + (one.code ? " (" + one.code + ")" : "");
        }
      }
    }
    if (job !== csv.job) return;
    scored += chunk.length;
  }
  csv.done = true;
  const errors = csv.rows.filter((r) => r.error).length;
  setStatus(status, "完成 Done: " + csv.rows.filter((r) => r.result).length + " 行已评分 rows scored" +
    (errors ? "，" + errors + " 行有错误 with an error (see the Error column)" : "") +
    (csv.encoding !== "UTF-8" ? " · 编码 encoding " + csv.encoding : ""), false);
  $("csv-download").disabled = false;
  renderCsvTable();
}

const tierRank = (id) => TIERS.findIndex((t) => t.id === id);
const prob = (list, key, id) => {
  const found = list.find((x) => x[key] === id);
  return found ? found.probability : undefined;
};

// The table's columns: label, how to read a row, and whether the value is a number (sorted high first).
const CSV_COLUMNS = [
  { key: "row", label: "# 行", num: true, value: (r) => r.index + 1 },
  { key: "text", label: "正文 Text", value: (r) => r.text },
  { key: "motive", label: "动机 Top motive", value: (r) => (r.result ? motiveLabel(r.result.motive.top) : undefined) },
  { key: "p", label: "概率 P(top)", num: true, pct: true,
    value: (r) => (r.result ? r.result.motive.probabilities[0].probability : undefined) },
  { key: "tier", label: "层级判定 Tier decision", num: true, show: (r) => tierLabel(r.result.tier.top),
    value: (r) => (r.result ? tierRank(r.result.tier.top) : undefined) },
  ...TIERS.map((t) => ({ key: "tier_" + t.id, label: t.zh + " " + t.id, num: true, pct: true, title: t.range,
    value: (r) => (r.result ? prob(r.result.tier.probabilities, "tier", t.id) : undefined) })),
  { key: "error", label: "错误 Error", value: (r) => r.error || undefined },
];

function sortedRows() {
  const col = CSV_COLUMNS.find((c) => c.key === csv.sort.key) || CSV_COLUMNS[0];
  const dir = csv.sort.dir;
  return [...csv.rows].sort((x, y) => {
    const a = col.value(x);
    const b = col.value(y);
    if (a === undefined || b === undefined) { // blanks last, whichever the direction
      if (a === b) return x.index - y.index;
      return a === undefined ? 1 : -1;
    }
    const c = col.num ? a - b : String(a).localeCompare(String(b), "zh-CN");
    return c !== 0 ? dir * c : x.index - y.index;
  });
}

function renderCsvTable() {
  const table = $("csv-table");
  const headRow = table.tHead.rows[0];
  headRow.replaceChildren();
  for (const col of CSV_COLUMNS) {
    const th = el("th");
    th.scope = "col";
    th.dataset.key = col.key;
    if (col.title) th.title = col.title;
    const sorted = csv.sort.key === col.key;
    th.setAttribute("aria-sort", sorted ? (csv.sort.dir > 0 ? "ascending" : "descending") : "none");
    const button = el("button", "sort", col.label + (sorted ? (csv.sort.dir > 0 ? " ▲" : " ▼") : ""));
    button.type = "button";
    button.addEventListener("click", () => {
      // A new column sorts numbers high first and text A→Z; the same column again reverses.
      csv.sort = csv.sort.key === col.key ? { key: col.key, dir: -csv.sort.dir } : { key: col.key, dir: col.num && col.key !== "row" ? -1 : 1 };
      renderCsvTable();
    });
    th.append(button);
    headRow.append(th);
  }
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const r of sortedRows()) {
    const tr = el("tr");
    tr.dataset.row = String(r.index + 1);
    if (r.error) tr.classList.add("has-error");
    for (const col of CSV_COLUMNS) {
      const v = col.value(r);
      let shown = "";
      if (v !== undefined) shown = col.show ? col.show(r) : col.pct ? pct(v) : String(v);
      const td = el("td", col.key + (col.num ? " num" : ""), shown);
      if (col.key === "text") td.title = r.text;
      if (col.key === "motive" && r.result) td.title = motiveTitle(r.result.motive.top);
      tr.append(td);
    }
    body.append(tr);
  }
  table.hidden = false;
}

// A cell the file brought that a spreadsheet would run as a formula (=, +, -, @ first; Weibo posts often
// start with @) is written with a leading apostrophe, unless it is a plain number; the predictions are
// numbers and labels and never need it.
function safeCell(value) {
  const s = value === undefined || value === null ? "" : String(value);
  return /^[=+\-@\t\r]/.test(s) && !(s.trim() !== "" && Number.isFinite(Number(s))) ? "'" + s : s;
}

function csvCell(value) {
  const s = value === undefined || value === null ? "" : String(value);
  return /[",\r\n]/.test(s) || s !== s.trim() ? '"' + s.replace(/"/g, '""') + '"' : s;
}

// The file's own columns and rows, in its order, plus the predictions; a name the file already uses
// gets a pred_ prefix. UTF-8 with a BOM, so that Excel reads the Chinese.
function scoredCsv() {
  const extra = [...MOTIVES.map((m) => "motive_" + m.id), "top_motive", "top_motive_zh",
    ...TIERS.map((t) => "tier_" + t.id), "tier_decision", "model_version", "error"];
  const taken = new Set(csv.header);
  const names = extra.map((n) => (taken.has(n) ? "pred_" + n : n));
  const round = (p) => (p === undefined ? "" : String(Math.round(p * 1e6) / 1e6));
  const lines = [[...csv.header, ...names].map(csvCell).join(",")];
  for (const r of csv.rows) {
    const own = csv.header.map((_, i) => safeCell(r.cells[i] ?? ""));
    const res = r.result;
    const preds = res
      ? [...MOTIVES.map((m) => round(prob(res.motive.probabilities, "motive", m.id))), res.motive.top,
        res.motive.top_zh, ...TIERS.map((t) => round(prob(res.tier.probabilities, "tier", t.id))), res.tier.top,
        r.version, r.error]
      : [...MOTIVES.map(() => ""), "", "", ...TIERS.map(() => ""), "", "", r.error || "not scored"];
    lines.push([...own, ...preds].map(csvCell).join(","));
  }
  return "\ufeff" + lines.join("\r\n") + "\r\n";
}

function downloadCsv() {
  if (!csv.rows) return;
  const blob = new Blob([scoredCsv()], { type: "text/csv;charset=utf-8" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = (csv.name.replace(/\.csv$/i, "") || "posts") + "-scored.csv";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---- Views -------------------------------------------------------------------------------------------------

let view = "single";

function showView(name) {
  view = name;
  document.body.dataset.view = name; // the CSV table takes the whole width
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  for (const node of document.querySelectorAll(".view")) {
    node.hidden = !node.dataset.views.split(" ").includes(name);
  }
  // Compare starts from the current draft: A and B both hold it, and B is edited.
  if (name === "compare" && !$("cmp-a").value && !$("cmp-b").value && $("text").value.trim()) {
    $("cmp-a").value = $("text").value;
    $("cmp-b").value = $("text").value;
    runCompare();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("text").addEventListener("input", () => {
    if (!$("text").value.trim()) currentDraft = null; // emptied: what is typed next is a new draft
    scheduleSingle();
  });
  $("explain").addEventListener("click", () => runSingle(true));
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runSingle(true);
  });
  $("example").addEventListener("click", () => {
    currentDraft = null;
    $("text").value = EXAMPLE;
    $("text").focus();
    runSingle(false);
  });
  $("new-draft").addEventListener("click", () => {
    currentDraft = null;
    $("text").value = "";
    runSingle(false);
    renderHistory();
    $("text").focus();
  });
  $("explain-target").addEventListener("change", () => {
    if (single.shown) renderHighlight(single.shown.text, single.shown.result.explanation, $("explain-target").value);
  });
  for (const id of CONTEXT_IDS) {
    $(id).addEventListener("input", contextChanged);
    $(id).addEventListener("change", contextChanged);
  }
  $("ctx-clear").addEventListener("click", () => {
    setContextForm({});
    contextChanged();
  });
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("cmp-a").addEventListener("input", scheduleCompare);
  $("cmp-b").addEventListener("input", scheduleCompare);
  $("cmp-a-from-text").addEventListener("click", () => toCompare("cmp-a", $("text").value));
  $("cmp-b-from-text").addEventListener("click", () => toCompare("cmp-b", $("text").value));
  $("cmp-swap").addEventListener("click", () => {
    const a = $("cmp-a").value;
    $("cmp-a").value = $("cmp-b").value;
    $("cmp-b").value = a;
    runCompare();
  });
  $("csv-file").addEventListener("change", () => {
    const file = $("csv-file").files[0];
    if (file) loadCsv(file);
  });
  $("csv-download").addEventListener("click", downloadCsv);
  $("key-save").addEventListener("click", saveKey);
  $("api-key").addEventListener("keydown", (e) => {
    if (e.key === "Enter") saveKey();
  });
  $("key-forget").addEventListener("click", forgetKey);
  $("history-clear").addEventListener("click", () => {
    storeDrafts([]);
    renderHistory();
  });
  if (storedKey()) $("key-box").hidden = false; // so that a saved key can be changed or forgotten
  $("key-remember").checked = Boolean(window.localStorage.getItem(KEY_NAME));
  renderHistory();
  loadChannels();
});
