/*!
 * flask-asyncstate: the progress widget, an ES module with no dependencies. BSD-3-Clause.
 *
 *   <asyncstate-progress token="..." prefix="/asyncstate"></asyncstate-progress>
 *   <script type="module" src="/asyncstate/asyncstate.mjs"></script>
 *
 * The core, Tracker, follows one job (its event stream or polls, back-off, Retry-After,
 * cancel, "Try again") and fires events on itself. Widget is a Tracker drawn on the widget's
 * markup; the add-ons (page title, notification, result slot) listen to a Widget's events;
 * <asyncstate-progress> is a Widget on itself. Served by <prefix>/asyncstate.mjs, which puts
 * the job statuses and default labels in front (and by <prefix>/asyncstate.js as a classic
 * script, window.asyncstate, followed by the jQuery plugin). Types: asyncstate.d.ts.
 */

// ------------------------------------------------------------------ the core

const NAME = 'asyncstate';

function fromServer(key, fallback) {
  const value = globalThis[key];
  if (value && typeof value === 'object') return value;
  console.error(`flask-asyncstate: load the widget's script from its route, which sets ${key}`);
  return fallback;
}

/** The job statuses, from the server's JobStatus: {all: [...], final: [...]}. */
const statuses = fromServer('asyncstateStatuses', { all: [], final: [] });
/** The server's default labels (templating.DEFAULT_LABELS). */
const labels = fromServer('asyncstateLabels', { progress: 'Progress', cancel: 'Cancel' });
const FINAL = new Set(statuses.final);

/** Every widget's options unless given others: change them here for the whole page. */
const defaults = {
  token: null,
  prefix: '/asyncstate', // a path on this site: anything else gets the widget refused
  interval: 1000, // ms between polls
  maxInterval: 30000, // cap of the exponential back-off
  maxRetryAfter: 60000, // cap of a server's Retry-After (ms); at least 1000 is waited
  cancelRetries: 5, // retries of a cancel that failed transiently (503, 429, network)
  timeout: 20000, // ms before a request counts as failed
  mode: 'poll', // "poll", or "auto": the event stream, falling back to polling
  tryAgain: true, // "Try again" once a job ended failed, cancelled or lost
  csrfToken: null, // a string, or a function; default: <meta name="csrf-token">
  csrfHeader: 'X-CSRFToken',
  label: null, // the bar's aria-label (default: the progress label)
  labels: {}, // labels for every widget of the page, over the server's
  pageTitle: true, // the progress in the page title while the tab is hidden
  notify: false, // a notification at the end, if the user allowed them
  result: false, // the job has a result slot to fetch when it succeeds
  steps: null // the names of the job's stages, to list the ones to come
};

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const isDoc = (body) => !!body && typeof body === 'object' && typeof body.status === 'string';
// An option that may come from an attribute: "false", "0", "no" and "off" are false.
const flag = (v, dflt) => (v == null ? dflt : !/^\s*(false|0|no|off)\s*$/i.test(String(v)));
// Network error, timeout, 408, 429, 5xx, or a 2xx that is no JSON: try again later.
const transient = (s) => s === 0 || s === 408 || s === 429 || s >= 500 || (s >= 200 && s < 300);

function positiveInt(v) {
  const n = typeof v === 'number' ? v : parseInt(v, 10);
  return isNum(n) && n > 0 ? Math.floor(n) : null;
}

function parse(json) {
  try {
    return JSON.parse(json);
  } catch {
    return undefined;
  }
}

// The prefix as a path on this site ("/asyncstate"), or null. Markup a page lets through (a
// sanitized comment keeps data-* attributes) must never point the widget elsewhere: no URL,
// no "//host" or "/\host", no query or fragment, no control character (the URL parser drops
// a tab: "/<TAB>/host" is "//host"), and it resolves to this page's origin (CVE-2018-14042).
function checkedPrefix(raw = '') {
  const onSite = typeof raw === 'string' && (raw === '' || /^\/(?!\/)/.test(raw));
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  if (!onSite || /[\\?#\u0000-\u001f\u007f]/.test(raw)) return null;
  const path = raw.replace(/\/+$/, '');
  try {
    const url = new URL(path + '/', location.href);
    const own = location.origin !== 'null' && url.origin === location.origin;
    return own && !url.search && !url.hash ? path : null;
  } catch {
    return null;
  }
}

function retryAfterMs(header) {
  const seconds = parseInt(header, 10);
  if (isNum(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(header);
  return isNum(date) ? Math.max(0, date - Date.now()) : null;
}

/** Follows one job by its token; fires transport, progress, done, error, change, destroy. */
class Tracker extends EventTarget {
  constructor(token, options = {}) {
    super();
    const o = (this.options = { ...defaults, ...options });
    const prefix = o.prefix;
    this.token = token == null ? '' : String(token);
    this.prefix = o.prefix = checkedPrefix(prefix ?? '');
    this.refused = this.prefix === null; // then it does nothing at all
    if (this.refused) {
      console.warn(
        `flask-asyncstate: widget refused: its prefix ${JSON.stringify(prefix)} is not a path ` +
          `on this site (one starting with "/", on ${location.origin}); it makes no request`
      );
    }
    o.interval = positiveInt(o.interval) || defaults.interval;
    o.maxInterval = Math.max(positiveInt(o.maxInterval) || 30000, o.interval);
    o.maxRetryAfter = Math.max(positiveInt(o.maxRetryAfter) || 60000, 1000);
    o.cancelRetries = o.cancelRetries === 0 ? 0 : positiveInt(o.cancelRetries) || 5;
    o.mode = String(o.mode || 'poll').toLowerCase();
    o.tryAgain = flag(o.tryAgain, true);
    // The state (asyncstate.d.ts says what each field holds).
    this.doc = this.docAt = this.status = this.halt = this.transport = null;
    this.retryIn = this.cancelError = this.retryError = null;
    this.finished = this.destroyed = this.refused;
    this.sseRefused = this.reconnecting = this.sawUnfinished = false;
    this.cancelPending = this.cancelRequested = this.retryPending = false;
    this.failures = 0;
    this._timers = {};
    this._requests = {};
  }

  url(kind) {
    return `${location.origin}${this.prefix}/${kind}/${encodeURIComponent(this.token)}`;
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  later(name, ms, fn) {
    this.clear(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  clear(name) {
    clearTimeout(this._timers[name]);
    delete this._timers[name];
  }

  // The CSRF token of a POST: the csrfToken option (a function is called), else the page's.
  csrfToken() {
    const given = this.options.csrfToken;
    const token = typeof given === 'function' ? given.call(this.element) : given;
    const meta = document.querySelector('meta[name="csrf-token"]');
    return token ? String(token) : meta && meta.getAttribute('content');
  }

  // One request to <prefix>/<kind>/<token>: {status, ok, body, error (the server's), ...}, or
  // null when it was aborted (destroy, a final status). Status 0: network error or timeout.
  async request(kind, method = 'GET', key = kind) {
    const controller = (this._requests[key] = new AbortController());
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.options.timeout);
    const headers = { 'X-Requested-With': 'XMLHttpRequest' };
    const csrf = method === 'POST' && this.csrfToken();
    if (csrf) headers[this.options.csrfHeader] = csrf;
    try {
      const init = { method, headers, cache: 'no-store', signal: controller.signal };
      const response = await fetch(this.url(kind), init);
      const body = parse(await response.text());
      return {
        status: response.status,
        ok: response.ok && body !== undefined,
        body,
        error: body && typeof body.error === 'string' ? body.error : '',
        textStatus: body === undefined ? 'parsererror' : response.ok ? 'success' : 'error',
        statusText: response.statusText,
        retryAfter: retryAfterMs(response.headers.get('Retry-After'))
      };
    } catch {
      if (controller.signal.aborted && !timedOut) return null;
      return { status: 0, ok: false, error: '', textStatus: timedOut ? 'timeout' : 'error' };
    } finally {
      clearTimeout(timer);
      if (this._requests[key] === controller) delete this._requests[key];
    }
  }

  // What the error event says of a failed request.
  info(kind, answer) {
    const malformed = answer.status >= 200 && answer.status < 300 && 'malformed answer';
    const message = answer.error || malformed || answer.statusText || answer.textStatus;
    const { status, textStatus } = answer;
    return { kind, status, textStatus, message, transient: transient(status) };
  }

  // The wait after the attempt-th failure in a row: the server's Retry-After (1 s ..
  // maxRetryAfter), else interval * 2**attempt, at most maxInterval.
  delay(attempt, answer) {
    const o = this.options;
    const hinted = answer && answer.retryAfter;
    if (isNum(hinted)) return clamp(hinted, 1000, o.maxRetryAfter);
    return Math.min(o.interval * 2 ** attempt, o.maxInterval);
  }

  // -------------------------------------------------------------- transport

  start() {
    if (this.refused) return;
    if (this.token) return this._follow(0);
    this._halt('error', { kind: 'config', status: 0, message: 'no job token given' }, 'noToken');
  }

  // Its event stream when the mode asks for one and it opens, else polls after `delay` ms.
  _follow(delay) {
    const { mode } = this.options;
    const sse = (mode === 'auto' || mode === 'sse') && !this.sseRefused;
    if (!(sse && typeof EventSource === 'function' && this._openStream())) this._usePolling(delay);
  }

  _setTransport(name) {
    if (this.transport === name) return;
    this.transport = name;
    this.emit('transport', name);
  }

  _usePolling(delay) {
    this._setTransport('poll');
    this._schedule(delay);
  }

  _schedule(delay) {
    this.clear('poll');
    if (!this.destroyed && !this.finished && this.transport === 'poll') {
      this.later('poll', delay, () => this.poll());
    }
  }

  /** Poll now, instead of waiting for the timer (while polling). */
  refresh() {
    if (!this.destroyed && !this.finished && this.transport === 'poll') {
      this.clear('poll');
      this.poll();
    }
  }

  async poll() {
    if (this.destroyed || this.finished || this._requests.progress) return;
    const answer = await this.request('progress');
    if (!answer) return;
    if (!answer.ok || !isDoc(answer.body)) return this._failed(answer);
    this.failures = 0;
    this._handleDoc(answer.body);
    this._schedule(this.options.interval);
  }

  _failed(answer) {
    const info = this.info('progress', answer);
    if (answer.status === 404) return this._halt('notfound', info);
    if (answer.status === 403) return this._halt('forbidden', info);
    if (!info.transient) {
      const detail = answer.error ? `: ${answer.error}` : ` (HTTP ${answer.status})`;
      return this._halt('error', info, 'error', detail);
    }
    // 503 and 429 (the job store is away, the server is busy) show "Reconnecting"; the other
    // transient failures "retrying in N s". The bar stays where it was.
    this.failures += 1;
    const delay = this.delay(this.failures, answer);
    this.reconnecting = answer.status === 503 || answer.status === 429;
    this.retryIn = this.reconnecting ? null : delay;
    this.emit('change');
    this._schedule(delay);
    this.emit('error', { ...info, attempt: this.failures, retryIn: delay });
  }

  // One EventSource. It fails before it ever opened (a 429 for too many streams, a 503, a
  // network error: EventSource cannot tell them apart): poll, and never open another, so no
  // reconnect loop against a busy server. The server's "reconnect" event (sse_max_age): a new
  // stream. It drops or ends before a final status: poll.
  _openStream() {
    let source;
    try {
      source = new EventSource(this.url('events'));
    } catch {
      return false;
    }
    let opened = false;
    this._source = source;
    this._setTransport('sse');
    const on = (type, fn) =>
      source.addEventListener(type, (event) => this._source === source && fn(event));
    on('open', () => (opened = true));
    on('message', (event) => {
      opened = true;
      const doc = parse(event.data);
      if (!isDoc(doc)) return this._fallBack(); // {"error": ...}: a poll finds out what it is
      this.failures = 0;
      this._handleDoc(doc);
    });
    on('unavailable', (event) => {
      opened = true;
      this._unavailable(parse(event.data));
    });
    on('reconnect', () => {
      this._closeStream();
      if (!this.finished && !this.destroyed && !this._openStream()) this._fallBack();
    });
    on('end', () => this._fallBack());
    on('error', () => {
      this.sseRefused = this.sseRefused || !opened;
      this._fallBack();
    });
    return true;
  }

  // The stream is open, but the server cannot read the job store; it keeps trying and sends
  // the document when it can: "Reconnecting" until then (or for a while, if nothing changed).
  _unavailable(body) {
    if (this.finished || this.destroyed) return;
    this.reconnecting = true;
    this.emit('change');
    this.later('unavailable', Math.max(5000, 3 * this.options.interval), () => {
      if (this.finished || this.destroyed || this.transport !== 'sse') return;
      this.reconnecting = false;
      this.emit('change');
    });
    const error =
      (body && typeof body.error === 'string' && body.error) || 'the job store is unavailable';
    const info = this.info('progress', { status: 503, textStatus: 'unavailable', error });
    this.emit('error', { ...info, attempt: 1, retryIn: null });
  }

  _closeStream() {
    if (this._source) this._source.close();
    this._source = null;
    this.clear('unavailable');
  }

  _fallBack() {
    this._closeStream();
    if (!this.finished && !this.destroyed) this._usePolling(0);
  }

  _stopTransport() {
    this.clear('poll');
    this._closeStream();
    if (this._requests.progress) this._requests.progress.abort();
  }

  // A final error (404, 403, another refusal): stop, and say so.
  _halt(modifier, info, label, detail = '') {
    this.halt = { modifier, label, detail };
    this.status = modifier;
    this.finished = true;
    this.reconnecting = this.cancelPending = false;
    this.retryIn = this.cancelError = null;
    this._stopTransport();
    this.clear('cancel');
    this.emit('change');
    this.emit('error', { ...info, transient: false });
  }

  // -------------------------------------------------------------- documents

  _handleDoc(doc) {
    const last = this.doc;
    if (this.destroyed || this.finished) return;
    // an answer older than the one shown (a cancel's answer and a poll can cross): ignored
    const at = isNum(doc.updated_at) ? doc.updated_at : null;
    if (last && at !== null && isNum(last.updated_at) && at < last.updated_at) return;
    const isFinal = FINAL.has(doc.status);
    // the same moment again (nothing written since): elapsed counts on from its first arrival
    const same = last && at === last.updated_at && doc.started_at === last.started_at;
    if (!same || this.docAt === null) this.docAt = performance.now();
    this.doc = doc;
    this.status = doc.status;
    this.reconnecting = false;
    this.retryIn = this.retryError = null;
    this.cancelRequested = this.cancelRequested || !!doc.cancel_requested;
    this.clear('unavailable');
    if (isFinal || this.cancelRequested) this._stopCancelRetries(); // the server has it
    if (isFinal) {
      this.finished = true;
      this.cancelError = null;
      this._stopTransport();
    }
    this.emit('change');
    this.emit('progress', doc);
    if (isFinal && !this._doneFired) {
      this._doneFired = true;
      this.emit('done', doc);
    }
    this.sawUnfinished = this.sawUnfinished || !isFinal;
  }

  // -------------------------------------------------------------- cancel

  cancel() {
    const busy = this.cancelPending || this.cancelRequested;
    if (this.destroyed || this.finished || busy || !this.token) return;
    this.cancelPending = true;
    this.cancelError = null;
    this._cancelAttempt = 0;
    this.emit('change');
    this._sendCancel();
  }

  // One POST /cancel. A transient failure is sent again after Retry-After (or the back-off),
  // cancelRetries times at most, the button busy meanwhile. The job shows as cancelling only
  // once a document from the server says so.
  async _sendCancel() {
    if (this.destroyed || this.finished || this.cancelRequested) {
      this.cancelPending = false;
      this.cancelError = null;
      return;
    }
    const attempt = (this._cancelAttempt += 1);
    const answer = await this.request('cancel', 'POST');
    if (!answer) return;
    const info = this.info('cancel', answer);
    if (answer.status === 404) return this._halt('notfound', info);
    const again = attempt <= this.options.cancelRetries && !this.finished && !this.cancelRequested;
    if (!answer.ok && info.transient) Object.assign(info, { attempt, retryIn: null });
    if (!answer.ok && info.transient && again) {
      info.retryIn = this.delay(attempt, answer);
      this.cancelError = { retrying: true };
      this.later('cancel', info.retryIn, () => this._sendCancel());
    } else {
      // done, or not to be sent again (403, 400...) or out of retries: the button works again
      this.cancelPending = false;
      this.cancelError = answer.ok ? null : { message: answer.error };
    }
    if (answer.ok && isDoc(answer.body)) this._handleDoc(answer.body);
    this.emit('change');
    if (!answer.ok) this.emit('error', info);
  }

  // Drop a cancel waiting to be sent again (not one in flight: its answer is still useful).
  _stopCancelRetries() {
    if (!this._timers.cancel) return;
    this.clear('cancel');
    this.cancelPending = false;
    this.cancelError = null;
  }

  // -------------------------------------------------------------- try again

  /** Whether "Try again" is offered: the job ended failed, cancelled or lost. */
  retryOffered() {
    const { doc } = this;
    const ended = doc && FINAL.has(doc.status) && doc.status !== 'succeeded';
    return !!(this.options.tryAgain && ended && this.finished && !this.halt && !this.destroyed);
  }

  // POST /retry/<token>. Accepted (the job queued again, same token): follow it as at a start.
  // Refused: retryError says why, and it can be asked again; never sent again by itself.
  async retry() {
    if (this.retryPending || !this.retryOffered()) return;
    this.retryPending = true;
    this.retryError = null;
    this.emit('change');
    const answer = await this.request('retry', 'POST');
    if (!answer) return;
    this.retryPending = false;
    if (answer.ok && isDoc(answer.body)) return this._reopen(answer.body);
    const info = this.info('retry', answer);
    if (answer.status === 404) return this._halt('notfound', info); // expired, or not ours
    this.retryError = { message: answer.error };
    this.emit('change');
    this.emit('error', info);
    if (answer.status === 409) this._recheck(); // unfinished: run again from another tab?
  }

  // One look at the job after a 409: if it runs again (from another tab, say), follow it.
  async _recheck() {
    const answer = await this.request('progress', 'GET', 'recheck');
    const doc = answer && answer.ok && answer.body;
    const again = isDoc(doc) && !FINAL.has(doc.status);
    if (again && this.finished && !this.retryPending) this._reopen(doc);
  }

  // The job runs again under its token: forget how its last run ended, follow it anew.
  _reopen(doc) {
    if (this.destroyed) return;
    this.finished = this.sawUnfinished = this._doneFired = false;
    this.cancelPending = this.cancelRequested = false;
    this.halt = this.cancelError = null;
    this.failures = 0;
    this._handleDoc(doc);
    if (!this.finished) this._follow(this.options.interval);
  }

  /** Stop following the job (the markup stays). */
  destroy() {
    if (this.destroyed) return;
    this.destroyed = true;
    Object.keys(this._timers).forEach((name) => this.clear(name));
    this._closeStream();
    Object.values(this._requests).forEach((controller) => controller.abort());
    this.emit('destroy');
  }
}

// ------------------------------------------------------------------ the widget

const SEP = ' \u00b7 ';
const MODIFIERS = new Set(
  [
    ...statuses.all,
    ...['notfound', 'forbidden', 'error', 'retrying', 'reconnecting', 'indeterminate'],
    ...['cancelling', 'retry-scheduled', 'resumed']
  ].map((m) => `${NAME}--${m}`)
);
const HALT_LABELS = { notfound: 'notFound', forbidden: 'forbidden', error: 'error' };
// A final document's reason that replaces its status text, whatever the status.
const REASON_LABELS = new Map([
  ['shutdown', 'reasonShutdown'],
  ['timeout', 'reasonTimeout']
]);

const join = (text, more) => (text ? `${text} \u2014 ${more}` : more);
const messageOf = (doc) => (doc && doc.message != null ? String(doc.message) : '');

function format(template, values) {
  return String(template).replace(/\{(\w+)\}/g, (all, key) =>
    Object.hasOwn(values, key) ? String(values[key]) : all
  );
}

// Only when the text changes, so that live regions do not announce it again.
function setText(node, text) {
  if (node && node.textContent !== text) node.textContent = text;
}

// The string values of labels objects (a string is JSON that did not parse: reported).
function strings(...layers) {
  const out = {};
  for (const layer of layers.flat(Infinity)) {
    if (typeof layer === 'string') console.error(`flask-asyncstate: labels not JSON: ${layer}`);
    else if (layer && typeof layer === 'object') {
      for (const [key, value] of Object.entries(layer))
        if (typeof value === 'string') out[key] = value;
    }
  }
  return out;
}

function percentOf(doc) {
  if (isNum(doc.percent)) return doc.percent;
  // percent: null means "total unknown"; only derive it when the key is absent
  const derive = doc.percent === undefined && isNum(doc.total) && doc.total > 0;
  return derive && isNum(doc.current) ? (doc.current * 100) / doc.total : null;
}

// A job queued to be retried after a failed run: due after its back-off, later than the
// document's own time, with the failure in `error` (a resume may be stored with the time of
// its last progress, earlier than its retry_at: `resumed` with no error tells it apart).
function retryScheduled(doc) {
  const later = isNum(doc.retry_at) && isNum(doc.updated_at) && doc.retry_at > doc.updated_at;
  return doc.status === 'queued' && later && (doc.resumed !== true || !!doc.error);
}

function errorDetail(err) {
  if (!err || typeof err === 'string') return err || '';
  return [err.type, err.message].filter(Boolean).map(String).join(': ');
}

// The reason of a document when it is a word fit for a class name, else ''.
function reasonOf(doc) {
  const reason = doc && doc.reason;
  return typeof reason === 'string' && /^[a-z][a-z0-9_-]{0,31}$/.test(reason) ? reason : '';
}

// A parent's non-zero counts shown after its totals, and their labels ({count}).
const CHILD_LABELS = [
  ['failed', 'childrenFailed'],
  ['cancelled', 'childrenCancelled'],
  ['lost', 'childrenLost']
];
// A step's state -> the label of its visually hidden status word.
const STAGE_LABELS = {
  done: 'stageDone',
  current: 'stageCurrent',
  failed: 'stageFailed',
  cancelled: 'stageCancelled',
  todo: 'stageToCome'
};
const STAGE_STATES = { done: 'done', running: 'current', failed: 'failed', cancelled: 'cancelled' };

// The `steps` option: a list of names (or its JSON), else null.
function stepNames(value) {
  const list = typeof value === 'string' ? parse(value) : value;
  if (typeof value === 'string' && !Array.isArray(list)) {
    console.error(`flask-asyncstate: steps not a JSON list: ${value}`);
  }
  return Array.isArray(list) ? list.filter((n) => typeof n === 'string' && n) : null;
}

// The steps to list: the document's stages in order, then the named steps it has not begun
// (to come). [{name, state}], state one of STAGE_LABELS' keys.
function stepsOf(doc, names) {
  const begun = Array.isArray(doc.stages)
    ? doc.stages.filter((s) => s && typeof s === 'object')
    : [];
  const steps = begun.map((s) => ({
    name: String(s.name ?? ''),
    state: STAGE_STATES[s.status] || 'todo'
  }));
  const seen = new Set(steps.map((s) => s.name));
  for (const name of names || []) if (!seen.has(name)) steps.push({ name, state: 'todo' });
  return steps;
}

// One <li> per item of `items` in `list`, kept and redrawn in place by draw(li, item).
function drawItems(list, items, draw) {
  while (list.children.length > items.length) list.lastElementChild.remove();
  items.forEach((entry, index) => {
    const item = list.children[index] || list.appendChild(document.createElement('li'));
    draw(item, entry);
  });
}

// Seconds as m:ss, or h:mm:ss from an hour on.
function clockText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  const pad = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

// The parts, in their order: [name, tag, attributes, made when missing if...]. An empty
// element gets all of them (widget.html's markup); an element with markup of its own keeps
// what it has, plus the time line, the result slot if `result` and the button if `tryAgain`.
const PARTS = [
  [
    'bar',
    'div',
    { role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0 }
  ],
  ['eta', 'p', {}, true],
  ['message', 'p', { 'aria-live': 'polite' }],
  ['result', 'div', { hidden: '' }, 'result'],
  ['status', 'p', { role: 'status' }],
  ['cancel', 'button', { type: 'button' }],
  ['retry', 'button', { type: 'button', hidden: '' }, 'tryAgain']
];

/** A Tracker drawn on an element: bar, status, message, time line, buttons. */
class Widget extends Tracker {
  constructor(element, options = {}) {
    super(options.token, options);
    this.element = element;
    if (this.refused) return; // no request, no markup
    const o = this.options;
    o.notify = flag(o.notify, false);
    o.pageTitle = flag(o.pageTitle, true);
    o.result = flag(o.result, false);
    o.steps = stepNames(o.steps);
    // Labels: the server's defaults < the page's (defaults.labels) < this widget's.
    const given = strings(defaults.labels, o.labels);
    this.labels = { ...labels, ...given };
    this.shown = null; // the percentage the bar shows
    element.classList.add(NAME);
    const empty = !element.children.length;
    let previous = null;
    this.parts = {};
    for (const [name, tag, attributes, when] of PARTS) {
      let node = element.querySelector(`.${NAME}-${name}`);
      if (!node && (when === true || (typeof when === 'string' ? o[when] : empty))) {
        node = document.createElement(tag);
        node.className = `${NAME}-${name}`;
        for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
        if (name === 'bar') node.innerHTML = `<div class="${NAME}-fill"></div>`;
        if (previous) previous.after(node);
        else element.prepend(node);
      }
      this.parts[name] = node;
      previous = node || previous;
    }
    const { bar, cancel, retry } = this.parts;
    if (!o.tryAgain) this.parts.retry = null;
    this.parts.fill = bar && bar.querySelector(`.${NAME}-fill`);
    // The markup's own texts stay, unless labels for them were given.
    if (bar && (Object.hasOwn(given, 'progress') || o.label || !bar.getAttribute('aria-label'))) {
      bar.setAttribute('aria-label', o.label || this.label('progress'));
    }
    const textOf = (node, key) => {
      const own = node ? node.textContent.trim() : '';
      return Object.hasOwn(given, key) || !own ? this.label(key) : own;
    };
    this.cancelText = textOf(cancel, 'cancel');
    this.retryText = textOf(retry, 'tryAgain');
    setText(cancel, this.cancelText);
    setText(this.parts.retry, this.retryText);
    const listening = new AbortController();
    const press = (node, fn) => {
      const click = (event) => {
        event.preventDefault();
        fn();
      };
      node?.addEventListener('click', click, { signal: listening.signal });
    };
    press(cancel, () => this.cancel());
    press(this.parts.retry, () => this.retry());
    this.addEventListener('change', () => this.render());
    this.addEventListener('destroy', () => {
      listening.abort();
      clearTimeout(this._etaTimer);
    });
    addOns.forEach((addOn) => addOn(this));
  }

  /** The label `key` (its name when there is none). */
  label(key) {
    const value = this.labels[key];
    return typeof value === 'string' ? value : String(key);
  }

  /** The short text of a final document: its reason's label, else its status's ("Done"). */
  finalLabel(doc) {
    return this.label(REASON_LABELS.get(reasonOf(doc)) || String(doc.status));
  }

  statusText(doc, isFinal) {
    const reason = REASON_LABELS.get(reasonOf(doc));
    if (isFinal && reason) return this.label(reason);
    const failure = errorDetail(doc.error);
    const withFailure = (key) => this.label(key) + (failure ? `: ${failure}` : '');
    if (doc.status === 'failed') return withFailure('failed');
    let text;
    if (!isFinal && this.cancelRequested) text = this.label('cancelling');
    else if (retryScheduled(doc)) text = withFailure('retryScheduled');
    else text = this.label(String(doc.status));
    return !isFinal && doc.resumed === true ? text + SEP + this.label('resumed') : text;
  }

  /** Draw the state: classes, bar, status and message lines, buttons, time line. */
  render() {
    const { doc, halt, parts, finished, cancelError, retryError } = this;
    let modifiers = [];
    let status = '';
    if (halt) {
      modifiers = ['error', halt.modifier];
      status = this.label(halt.label || HALT_LABELS[halt.modifier]) + halt.detail;
      parts.bar?.removeAttribute('aria-valuenow');
      parts.bar?.setAttribute('aria-valuetext', status);
    } else if (doc) {
      status = this.statusText(doc, finished);
      modifiers = this._drawBar(doc, status);
    }
    if (this.reconnecting) {
      modifiers.push('retrying', 'reconnecting');
      status = this.label('reconnecting');
    } else if (this.retryIn !== null) {
      modifiers.push('retrying');
      status = format(this.label('retrying'), { seconds: Math.ceil(this.retryIn / 1000) });
    }
    const wanted = new Set(modifiers.map((m) => `${NAME}--${m}`));
    for (const name of [...this.element.classList]) {
      const ours = MODIFIERS.has(name) || name.startsWith(`${NAME}--reason-`);
      if (ours && !wanted.has(name)) this.element.classList.remove(name);
    }
    this.element.classList.add(...wanted);
    if (cancelError && !finished) {
      const failed =
        this.label('cancelFailed') + (cancelError.message ? `: ${cancelError.message}` : '');
      status = join(status, cancelError.retrying ? this.label('cancelRetrying') : failed);
    }
    const refused = retryError && this.label('tryAgainFailed');
    const refusal = refused && refused + (retryError.message ? `: ${retryError.message}` : '');
    if (parts.message) setText(parts.message, refusal || messageOf(doc));
    else if (refusal) status = join(status, refusal);
    setText(parts.status, status);
    this._drawButtons();
    this._drawEta();
    if (doc) this._drawStructure(doc);
  }

  _drawBar(doc, statusText) {
    const isFinal = FINAL.has(doc.status);
    const pct = percentOf(doc);
    const top = isFinal ? 100 : 99; // never 100 before it is done
    const shown =
      doc.status === 'succeeded' ? 100 : pct === null ? null : Math.floor(clamp(pct, 0, top));
    this.shown = shown;
    const message = messageOf(doc);
    const { bar, fill } = this.parts;
    if (bar) {
      if (shown === null) bar.removeAttribute('aria-valuenow');
      else bar.setAttribute('aria-valuenow', shown);
      const running =
        shown === null ? message || statusText : `${shown}%${message ? ` (${message})` : ''}`;
      bar.setAttribute('aria-valuetext', isFinal ? statusText : running);
      if (isFinal) bar.removeAttribute('aria-busy');
      else bar.setAttribute('aria-busy', 'true');
    }
    // Total unknown: running, the sliding segment (CSS); ended, a full bar if the job made
    // progress, else an empty one (a job stopped while queued did nothing: full reads "done").
    const made = isNum(doc.current) && doc.current > 0;
    if (fill)
      fill.style.width = shown !== null ? `${shown}%` : !isFinal ? '' : made ? '100%' : '0%';
    const reason = reasonOf(doc);
    return [
      statuses.all.includes(doc.status) && doc.status,
      shown === null && !isFinal && 'indeterminate',
      !isFinal && this.cancelRequested && 'cancelling',
      retryScheduled(doc) && 'retry-scheduled',
      !isFinal && doc.resumed === true && 'resumed',
      reason && `reason-${reason}`
    ].filter(Boolean);
  }

  _drawButtons() {
    const { cancel, retry } = this.parts;
    const busy = (node, on) =>
      on ? node.setAttribute('aria-busy', 'true') : node.removeAttribute('aria-busy');
    if (cancel) {
      const waiting = !this.finished && (this.cancelRequested || this.cancelPending);
      cancel.hidden = this.finished;
      cancel.disabled = this.finished || waiting;
      busy(cancel, waiting);
      setText(cancel, waiting && this.cancelRequested ? this.label('cancelling') : this.cancelText);
    }
    if (retry) {
      const offered = this.retryOffered();
      retry.hidden = !offered;
      retry.disabled = !offered || this.retryPending;
      busy(retry, offered && this.retryPending);
    }
  }

  // A parent's totals ("31 of 40 done, 1 failed"), its steps and its trail: parts made the
  // first time the document has them, then updated in place (no re-creation as it changes).
  _drawStructure(doc) {
    const counts = doc.children;
    let totals = '';
    if (counts && typeof counts === 'object' && isNum(counts.total) && counts.total > 0) {
      const n = (key) => (isNum(counts[key]) ? counts[key] : 0);
      const done = Math.max(0, n('total') - n('queued') - n('running'));
      totals = format(this.label('children'), { ...counts, done });
      for (const [key, label] of CHILD_LABELS) {
        if (n(key) > 0) totals += `, ${format(this.label(label), { count: n(key) })}`;
      }
    }
    const shownTotals = this._part('children', 'p', !!totals);
    setText(shownTotals, totals);

    const steps = stepsOf(doc, this.options.steps);
    const list = this._part('stages', 'ol', steps.length > 0);
    if (list) {
      list.setAttribute('aria-label', this.label('stages'));
      drawItems(list, steps, (item, step) => {
        if (!item.firstChild) {
          item.append(document.createElement('span'), ' ', document.createElement('span'));
          item.firstChild.className = `${NAME}-stage-name`;
          item.lastChild.className = `${NAME}-visually-hidden`;
        }
        item.className = `${NAME}-stage ${NAME}-stage--${step.state}`;
        if (step.state === 'current') item.setAttribute('aria-current', 'step');
        else item.removeAttribute('aria-current');
        setText(item.firstChild, step.name);
        setText(item.lastChild, this.label(STAGE_LABELS[step.state]));
      });
    }

    const lines = Array.isArray(doc.log) ? doc.log.filter((l) => l && typeof l === 'object') : [];
    const trail = this._part('trail', 'details', lines.length > 0);
    if (trail) {
      if (!trail.firstChild) {
        trail.append(document.createElement('summary'), document.createElement('ol'));
        trail.lastChild.className = `${NAME}-log`;
      }
      setText(trail.firstChild, this.label('showDetails'));
      drawItems(trail.lastChild, lines, (item, line) => {
        if (!item.firstChild) {
          item.append(document.createElement('time'), ' ', document.createElement('span'));
          item.lastChild.className = `${NAME}-log-text`;
        }
        const at = isNum(line.at) ? line.at : null;
        const start = isNum(doc.started_at) ? doc.started_at : at;
        const time = item.firstChild;
        if (at === null) time.removeAttribute('datetime');
        else time.setAttribute('datetime', new Date(at * 1000).toISOString());
        setText(time, at === null ? '' : clockText(at - start));
        setText(item.lastChild, line.text == null ? '' : String(line.text));
      });
    }
  }

  // The part `name` (.asyncstate-<name>), made after the message line the first time it is
  // `wanted`; hidden while not. Null while it was never wanted.
  _part(name, tag, wanted) {
    let node = this.parts[name] || this.element.querySelector(`.${NAME}-${name}`);
    if (!node && wanted) {
      node = document.createElement(tag);
      node.className = `${NAME}-${name}`;
      const order = ['bar', 'eta', 'message', 'children', 'stages', 'trail'];
      const earlier = order.slice(0, order.indexOf(name)).map((n) => this.parts[n]);
      const before = earlier.reverse().find(Boolean);
      if (before) before.after(node);
      else this.element.prepend(node);
    }
    this.parts[name] = node || null;
    if (node && node.hidden === wanted) node.hidden = !wanted;
    return node;
  }

  // "0:42 elapsed · about 30 s left": server time (the document's updated_at - started_at,
  // plus the time since it arrived while running), redrawn each second while running. A job
  // waiting for a retry: "Retrying in 8 s (attempt 2 of 4)" instead, counting down.
  _drawEta() {
    clearTimeout(this._etaTimer);
    const { doc } = this;
    const live = doc && !this.halt && !this.destroyed;
    const since = this.docAt === null ? 0 : Math.max(0, (performance.now() - this.docAt) / 1000);
    let text = '';
    let wait = 0;
    if (live && retryScheduled(doc)) {
      // at most what the server's times say (less the time since the document came), and
      // what this browser's clock says when it is right
      const byServer = doc.retry_at - doc.updated_at - since;
      const retryIn = Math.max(0, Math.min(byServer, doc.retry_at - Date.now() / 1000));
      const [attempt, max] = [doc.attempt, doc.max_attempts].map((n) => (isNum(n) ? n : '?'));
      const seconds = Math.max(1, Math.ceil(retryIn));
      text = format(this.label('retryingIn'), { seconds, attempt, max });
      // just after the count crosses its next second (once due: 1 s, until the run starts)
      wait = retryIn > 0 ? clamp(Math.floor((retryIn * 1000) % 1000) + 20, 50, 1000) : 1000;
    } else if (live && doc.status !== 'queued' && isNum(doc.started_at)) {
      const isFinal = FINAL.has(doc.status);
      const upTo = isNum(doc.updated_at) ? doc.updated_at : doc.started_at;
      let elapsed = Math.max(0, upTo - doc.started_at) + (isFinal ? 0 : since);
      if (!isFinal) {
        // a fresher document may say a little less than the estimate shown: no counting back
        const shown = this._elapsed;
        if (shown && shown.start === doc.started_at) elapsed = Math.max(elapsed, shown.value);
        this._elapsed = { start: doc.started_at, value: elapsed };
        wait = clamp(1020 - Math.floor((elapsed * 1000) % 1000), 50, 1000);
      }
      text = format(this.label('elapsed'), { time: clockText(elapsed) });
      if (!isFinal && doc.status === 'running' && isNum(doc.eta) && doc.eta >= 0) {
        const left = Math.max(0, doc.eta - since);
        text += SEP;
        text +=
          left < 60
            ? format(this.label('etaSeconds'), { seconds: Math.max(1, Math.ceil(left)) })
            : format(this.label('etaMinutes'), { minutes: Math.max(1, Math.round(left / 60)) });
      }
    }
    setText(this.parts.eta, text);
    if (wait) this._etaTimer = setTimeout(() => this._drawEta(), wait);
  }
}

// ------------------------------------------------------------------ add-ons

// The page title while the tab is hidden: one widget (the owner) shows itself in front of it,
// "42% · <title>", or its final label ("Done · <title>"); the page's own title comes back when
// the tab is seen, or the owner is destroyed. The owner keeps the title while it runs; a
// widget that ends takes it (until the tab is seen); any widget takes it from a final owner
// that was seen.
const title = { owner: null, saved: null, applied: null, unseenFinal: false, bound: false };

function titleText(w) {
  if (w.finished) return w.halt ? w.label(HALT_LABELS[w.halt.modifier]) : w.finalLabel(w.doc);
  if (!w.doc) return '';
  return w.shown !== null ? `${w.shown}%` : w.statusText(w.doc, false);
}

function restoreTitle() {
  if (title.saved !== null && document.title === title.applied) document.title = title.saved;
  title.saved = title.applied = null;
}

function applyTitle() {
  const { owner } = title;
  const text = owner && !owner.destroyed && document.hidden ? titleText(owner) : '';
  if (!text) return restoreTitle();
  // the first time, or the page changed its title since
  if (title.saved === null || document.title !== title.applied) title.saved = document.title;
  const wanted = title.saved ? text + SEP + title.saved : text;
  if (document.title !== wanted) document.title = wanted;
  title.applied = document.title; // as read back (the getter collapses white space)
}

function claimTitle(w, finishedNow) {
  if (!title.bound) {
    title.bound = true;
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) return applyTitle();
      title.unseenFinal = false;
      if (title.owner && title.owner.finished) title.owner = null; // seen
      restoreTitle();
    });
  }
  const { owner } = title;
  if (owner !== w) {
    const keeps = owner && !owner.destroyed && (!owner.finished || title.unseenFinal);
    if (keeps && !finishedNow) return;
    title.owner = w;
    title.unseenFinal = false;
  }
  if (finishedNow && document.hidden) title.unseenFinal = true;
  applyTitle();
}

function pageTitle(w) {
  if (!w.options.pageTitle) return;
  let finished = w.finished;
  w.addEventListener('change', () => {
    claimTitle(w, w.finished && !finished);
    finished = w.finished;
  });
  w.addEventListener('destroy', () => {
    if (title.owner !== w) return;
    title.owner = null;
    title.unseenFinal = false;
    restoreTitle();
  });
}

// A notification at the end, with `notify`, if the user allowed them already (asking needs a
// user's gesture: the page's job); not for a job that had ended before the widget saw it.
function notification(w) {
  if (!w.options.notify) return;
  w.addEventListener('done', ({ detail: doc }) => {
    const Notify = globalThis.Notification;
    if (!w.sawUnfinished || typeof Notify !== 'function' || Notify.permission !== 'granted') return;
    try {
      // shows itself: nothing to keep
      new Notify(w.finalLabel(doc), {
        body: messageOf(doc) || String(doc.label || doc.name || '')
      });
    } catch (e) {
      console.warn(`flask-asyncstate: could not show a notification: ${e}`); // Chrome on Android
    }
  });
}

// The result slot, with `result`: a job that succeeds while its slot is empty GETs
// <prefix>/result/<token> and shows the HTML of its {"html": ...}, then fires "result" (a 404:
// the slot stays hidden; a transient failure is tried again, 3 times in all). innerHTML: a
// <script> in it does not run; the HTML is the app's template's, escaped there.
function resultSlot(w) {
  const slot = w.parts.result;
  if (!w.options.result || !slot) return;
  const wanted = () => !w.destroyed && !slot.innerHTML.trim();
  const load = async (attempt) => {
    if (!wanted() || w._requests.result) return;
    const answer = await w.request('result');
    const html = answer && answer.ok && answer.body && answer.body.html;
    if (typeof html === 'string' && html.trim() && wanted()) {
      slot.innerHTML = html;
      slot.hidden = false;
      w.emit('result', html);
    }
    if (!answer || answer.ok || answer.status === 404) return;
    const info = { ...w.info('result', answer), attempt, retryIn: null };
    if (info.transient && attempt < 3) {
      info.retryIn = w.delay(attempt, answer);
      w.later('result', info.retryIn, () => load(attempt + 1));
    }
    w.emit('error', info);
  };
  w.addEventListener('done', ({ detail }) => detail.status === 'succeeded' && load(1));
}

/** What every Widget starts with: remove one to go without it, add your own (fn(widget)). */
const addOns = [pageTitle, notification, resultSlot];

// ------------------------------------------------------------------ <asyncstate-progress>

const ATTRIBUTES =
  'token prefix interval mode label labels notify result try-again page-title csrf-token steps'.split(
    ' '
  );
const EVENTS = ['transport', 'progress', 'done', 'error', 'result'];

/** <asyncstate-progress token="..."> a Widget on itself, its events as asyncstate:<name>. */
class ProgressElement extends (globalThis.HTMLElement || Object) {
  connectedCallback() {
    // After the module script that imported this one ran: the defaults it set apply.
    queueMicrotask(() => this.isConnected && !this.widget && this._start());
  }

  _start() {
    const options = {};
    for (const name of ATTRIBUTES) {
      const value = this.getAttribute(name); // try-again="false": the option tryAgain
      if (value !== null) options[name.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = value;
    }
    if (options.labels) options.labels = parse(options.labels) ?? options.labels;
    this.widget = new Widget(this, options);
    for (const name of EVENTS) {
      this.widget.addEventListener(name, ({ detail }) =>
        this.dispatchEvent(new CustomEvent(`${NAME}:${name}`, { bubbles: true, detail }))
      );
    }
    this.widget.start();
  }

  disconnectedCallback() {
    if (this.widget) this.widget.destroy();
    this.widget = null;
  }
}

if (globalThis.customElements && !customElements.get('asyncstate-progress')) {
  customElements.define('asyncstate-progress', ProgressElement);
}

export { Tracker, Widget, ProgressElement, addOns, defaults, labels, statuses };
