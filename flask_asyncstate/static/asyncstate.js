/*!
 * flask-asyncstate progress widget, a jQuery 3.x plugin.
 * BSD-3-Clause.
 *
 *   $(el).asyncstate({token: "...", prefix: "/asyncstate", interval: 1000, mode: "poll"});
 *   $(el).asyncstate('destroy');
 *
 * Options may also come from data attributes on the element:
 * data-asyncstate-token, -prefix, -interval, -mode (and -manual to opt out of
 * the automatic initialisation on document ready).
 *
 * Everything the server sends is written with .text() / attributes only.
 */
(function (window, document, $) {
  'use strict';

  if (!$ || !$.fn) {
    if (window.console && window.console.error) {
      window.console.error('asyncstate.js: jQuery must be loaded before this script.');
    }
    return;
  }

  var NAME = 'asyncstate';
  var VERSION = '0.1.0';
  var EXPANDO = '__asyncstate';   // instance kept on the element too (survives a second jQuery copy)
  var EVENT_NS = '.' + NAME;

  // The job statuses come from the server (JobStatus), put in front of this file by the
  // blueprint's /asyncstate.js route: no hand copy to drift from the Python side.
  var SERVER_STATUSES = window.asyncstateStatuses;
  if (!SERVER_STATUSES) {
    if (window.console) {
      window.console.error('flask-asyncstate: load asyncstate.js from the blueprint route ' +
                           '(<prefix>/asyncstate.js), which tells it the job statuses');
    }
    SERVER_STATUSES = { all: [], final: [] };
  }
  var STATUSES = SERVER_STATUSES.all;
  var FINAL = {};
  $.each(SERVER_STATUSES.final, function (_i, s) { FINAL[s] = true; });
  var MODIFIERS = STATUSES.concat(['notfound', 'forbidden', 'error', 'retrying', 'reconnecting',
                                   'indeterminate', 'cancelling']);
  var MODIFIER_CLASSES = $.map(MODIFIERS, function (m) { return NAME + '--' + m; }).join(' ');
  var METHODS = { destroy: true, cancel: true, refresh: true };

  // ---------------------------------------------------------------- helpers

  function isFiniteNumber(v) {
    return typeof v === 'number' && isFinite(v);
  }

  function clamp(v, lo, hi) {
    return v < lo ? lo : (v > hi ? hi : v);
  }

  function positiveInt(v) {
    var n = typeof v === 'number' ? v : parseInt(v, 10);
    return isFiniteNumber(n) && n > 0 ? Math.floor(n) : null;
  }

  function format(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (all, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : all;
    });
  }

  // Run user code without letting an exception stop the widget; still report it.
  function guarded(fn) {
    try {
      fn();
    } catch (e) {
      window.setTimeout(function () { throw e; }, 0);
    }
  }

  function setText($node, text) {
    // Only touch the node when the text changes, so live regions do not re-announce.
    if ($node.length && $node.text() !== text) {
      $node.text(text);
    }
  }

  function readDataOptions(el) {
    var out = {};
    var token = el.getAttribute('data-' + NAME + '-token');
    var prefix = el.getAttribute('data-' + NAME + '-prefix');
    var interval = positiveInt(el.getAttribute('data-' + NAME + '-interval'));
    var mode = el.getAttribute('data-' + NAME + '-mode');
    if (token) { out.token = token; }
    if (prefix !== null) { out.prefix = prefix; }
    if (interval) { out.interval = interval; }
    if (mode) { out.mode = mode; }
    return out;
  }

  function percentOf(doc) {
    if (isFiniteNumber(doc.percent)) {
      return doc.percent;
    }
    // ``percent: null`` means "total unknown"; only derive it when the key is absent.
    if (doc.percent === undefined && isFiniteNumber(doc.total) && doc.total > 0 &&
        isFiniteNumber(doc.current)) {
      return doc.current * 100 / doc.total;
    }
    return null;
  }

  function errorDetail(err) {
    if (!err) { return ''; }
    if (typeof err === 'string') { return err; }
    var type = err.type ? String(err.type) : '';
    var message = err.message ? String(err.message) : '';
    if (type && message) { return type + ': ' + message; }
    return type || message;
  }

  // Answers that mean "the server is there but cannot serve this right now" (job store
  // unavailable, circuit breaker open, job queue full, rate limit): shown as "Reconnecting".
  var UNAVAILABLE = { 429: true, 503: true };

  function retryAfterMs(jqXHR) {
    var header = jqXHR && jqXHR.getResponseHeader ? jqXHR.getResponseHeader('Retry-After') : null;
    if (!header) { return null; }
    var seconds = parseInt(header, 10);
    if (isFiniteNumber(seconds) && seconds >= 0) { return seconds * 1000; }
    var date = Date.parse(header);
    return isFiniteNumber(date) ? Math.max(0, date - new Date().getTime()) : null;
  }

  // ---------------------------------------------------------------- the instance

  function AsyncState(element, options) {
    var opts = $.extend(true, {}, $.fn[NAME].defaults, readDataOptions(element), options || {});
    opts.prefix = String(opts.prefix == null ? '' : opts.prefix).replace(/\/+$/, '');
    opts.interval = positiveInt(opts.interval) || $.fn[NAME].defaults.interval;
    opts.maxInterval = Math.max(positiveInt(opts.maxInterval) || 30000, opts.interval);
    opts.maxRetryAfter = Math.max(positiveInt(opts.maxRetryAfter) || 60000, 1000);
    opts.cancelRetries = opts.cancelRetries === 0 ? 0 :
      (positiveInt(opts.cancelRetries) || $.fn[NAME].defaults.cancelRetries);
    opts.mode = String(opts.mode || 'poll').toLowerCase();

    this.element = element;
    this.$el = $(element);
    this.options = opts;
    this.token = opts.token ? String(opts.token) : '';
    this.transport = null;       // "sse" or "poll" once started
    this.doc = null;             // last progress document
    this.status = null;          // last status ("queued", ..., or "notfound"/"forbidden"/"error")
    this.finished = false;       // a final status (or a final error) was reached
    this.destroyed = false;
    this.failures = 0;           // consecutive transient failures
    this.nextDelay = null;       // delay (ms) of the poll currently scheduled
    this.cancelPending = false;  // a cancel request is in flight
    this.cancelRequested = false;
    this.source = null;          // the EventSource, while one is open
    this.sseRefused = false;     // a stream failed before it opened: this widget polls from now on
    this.reconnecting = false;   // the server answered 503/429 (or sent "unavailable"): showing "Reconnecting"
    this.xhr = null;             // the progress request in flight

    this._timer = null;
    this._cancelXhr = null;
    this._cancelTimer = null;
    this._cancelAttempt = 0;
    this._unavailableTimer = null;
    this._doneFired = false;
    this._cancelError = '';
    this._statusOverride = '';

    this._build();
  }

  AsyncState.prototype = {
    constructor: AsyncState,
    version: VERSION,

    url: function (kind) {
      return this.options.prefix + '/' + kind + '/' + encodeURIComponent(this.token);
    },

    // -------------------------------------------------------------- markup

    _build: function () {
      var $el = this.$el;
      var self = this;
      $el.addClass(NAME);
      if (!$el.children().length) {
        // An empty element: create the default markup (same as the Jinja macro).
        $('<div>', {
          'class': NAME + '-bar', role: 'progressbar', 'aria-label': this.options.label,
          'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0
        }).append($('<div>', { 'class': NAME + '-fill' })).appendTo($el);
        $('<p>', { 'class': NAME + '-message', 'aria-live': 'polite' }).appendTo($el);
        $('<p>', { 'class': NAME + '-status', role: 'status' }).appendTo($el);
        $('<button>', { type: 'button', 'class': NAME + '-cancel' })
          .text(this.options.texts.cancel).appendTo($el);
      }
      this.$bar = $el.find('.' + NAME + '-bar').first();
      this.$fill = this.$bar.find('.' + NAME + '-fill').first();
      this.$message = $el.find('.' + NAME + '-message').first();
      this.$statusLine = $el.find('.' + NAME + '-status').first();
      this.$cancel = $el.find('.' + NAME + '-cancel').first();
      this._cancelLabel = $.trim(this.$cancel.text()) || this.options.texts.cancel;
      this.$cancel.on('click' + EVENT_NS, function (event) {
        event.preventDefault();
        self.cancel();
      });
    },

    // -------------------------------------------------------------- lifecycle

    start: function () {
      if (!this.token) {
        this._halt('error', this.options.texts.noToken,
                   { kind: 'config', status: 0, message: 'no job token given', transient: false });
        return;
      }
      var mode = this.options.mode;
      if ((mode === 'auto' || mode === 'sse') && !this.sseRefused &&
          typeof window.EventSource === 'function' && this._openStream()) {
        return;
      }
      this._usePolling(0);
    },

    destroy: function () {
      if (this.destroyed) { return; }
      this.destroyed = true;
      this._stopTransport();
      this._clearCancelTimer();
      if (this._cancelXhr) {
        var cx = this._cancelXhr;
        this._cancelXhr = null;
        cx.abort();
      }
      this.$cancel.off(EVENT_NS);
      if ($.data(this.element, NAME) === this) { $.removeData(this.element, NAME); }
      if (this.element[EXPANDO] === this) { this.element[EXPANDO] = null; }
    },

    // Poll right now (when polling), instead of waiting for the timer.
    refresh: function () {
      if (this.destroyed || this.finished || this.transport !== 'poll') { return; }
      this._clearTimer();
      this.poll();
    },

    _clearTimer: function () {
      if (this._timer !== null) {
        window.clearTimeout(this._timer);
        this._timer = null;
      }
      this.nextDelay = null;
    },

    _stopTransport: function () {
      this._clearTimer();
      this._clearUnavailableTimer();
      this._closeStream();
      if (this.xhr) {
        var x = this.xhr;
        this.xhr = null;
        x.abort();
      }
    },

    // -------------------------------------------------------------- Server-Sent Events

    // One EventSource per widget. What happens when it goes wrong:
    //  - it fails before it ever opened (429 "too many streams", 503, 404, network error...):
    //    poll at once, and never try a stream again for this widget (EventSource cannot
    //    see the status code, so it must not retry blindly: no tight reconnect loop);
    //  - the server's "reconnect" event (the stream reached ASYNCSTATE_SSE_MAX_AGE): open a
    //    new stream; if that one fails before it opens, the rule above applies;
    //  - an open stream that drops or closes before a final status: poll.
    _openStream: function () {
      var self = this;
      var source;
      if (this.sseRefused) { return false; }
      try {
        source = new window.EventSource(this.url('events'));
      } catch (e) {
        return false;
      }
      var opened = false;
      this.source = source;
      this._setTransport('sse');
      source.addEventListener('open', function () {
        if (self.source !== source) { return; }
        opened = true;
      });
      source.addEventListener('message', function (event) {
        if (self.source !== source) { return; }
        opened = true;
        var doc;
        try {
          doc = JSON.parse(event.data);
        } catch (e) {
          self._fallBack();
          return;
        }
        if (!doc || typeof doc !== 'object' || typeof doc.status !== 'string') {
          // e.g. {"error": "..."}: let a plain request find out what is wrong.
          self._fallBack();
          return;
        }
        self.failures = 0;
        self._handleDoc(doc);
      });
      source.addEventListener('unavailable', function (event) {
        // The stream is open but the server cannot read the job store right now; it
        // keeps trying and sends the document again when it can.
        if (self.source !== source || self.finished || self.destroyed) { return; }
        opened = true;
        var message = '';
        try {
          var body = JSON.parse(event.data);
          if (body && typeof body.error === 'string') { message = body.error; }
        } catch (e) { /* keep the default message */ }
        self._showUnavailable();
        self._emit('error', 'onError', {
          kind: 'progress', status: 503, textStatus: 'unavailable',
          message: message || 'the job store is unavailable', transient: true,
          attempt: 1, retryIn: null
        });
      });
      source.addEventListener('reconnect', function () {
        // The server ends long streams on purpose (to free its thread): open a new one.
        if (self.source !== source) { return; }
        self._closeStream();
        if (!self.finished && !self.destroyed && !self._openStream()) { self._fallBack(); }
      });
      source.addEventListener('end', function () {
        if (self.source !== source) { return; }
        self._closeStream();
        if (!self.finished && !self.destroyed) { self._fallBack(); }
      });
      source.addEventListener('error', function () {
        // Fired on network errors, non-200 answers (a 429 when the server has too many
        // streams open, a 503...), and when the server closes the stream. EventSource
        // cannot tell which: continue by polling unless we are done, and if this stream
        // never opened, stay on polling.
        if (self.source !== source) { return; }
        if (!opened) { self.sseRefused = true; }
        self._closeStream();
        if (!self.finished && !self.destroyed) { self._fallBack(); }
      });
      return true;
    },

    _closeStream: function () {
      if (this.source) {
        var s = this.source;
        this.source = null;
        s.close();
      }
      this._clearUnavailableTimer();
    },

    _fallBack: function () {
      this._closeStream();
      if (this.finished || this.destroyed) { return; }
      this._usePolling(0);
    },

    // An "unavailable" event on a stream: show "Reconnecting" until the next document.
    // The server sends it on every failed read; should it go quiet without sending a
    // document (nothing changed meanwhile), the previous display comes back.
    _showUnavailable: function () {
      var self = this;
      this._setReconnecting(true);
      this._renderStatusLine();
      this._clearUnavailableTimer();
      this._unavailableTimer = window.setTimeout(function () {
        self._unavailableTimer = null;
        if (self.finished || self.destroyed || self.transport !== 'sse') { return; }
        self._setReconnecting(false);
        self._renderStatusLine();
      }, Math.max(5000, 3 * this.options.interval));
    },

    _clearUnavailableTimer: function () {
      if (this._unavailableTimer !== null) {
        window.clearTimeout(this._unavailableTimer);
        this._unavailableTimer = null;
      }
    },

    // The "Reconnecting" display: modifier classes and status text; the bar stays put.
    _setReconnecting: function (on) {
      this.reconnecting = !!on;
      if (on) {
        this.$el.addClass(NAME + '--retrying ' + NAME + '--reconnecting');
        this._statusOverride = this.options.texts.reconnecting;
      } else {
        this.$el.removeClass(NAME + '--retrying ' + NAME + '--reconnecting');
        this._statusOverride = '';
      }
    },

    // -------------------------------------------------------------- polling

    _setTransport: function (name) {
      if (this.transport !== name) {
        this.transport = name;
        var self = this;
        guarded(function () { self.$el.trigger(NAME + ':transport', [name]); });
      }
    },

    _usePolling: function (delay) {
      this._setTransport('poll');
      this._schedule(delay);
    },

    _schedule: function (delay) {
      this._clearTimer();
      if (this.destroyed || this.finished || this.transport !== 'poll') { return; }
      var self = this;
      this.nextDelay = delay;
      this._timer = window.setTimeout(function () {
        self._timer = null;
        self.nextDelay = null;
        self.poll();
      }, delay);
    },

    poll: function () {
      if (this.destroyed || this.finished || this.xhr) { return; }
      var self = this;
      var xhr = $.ajax({
        url: this.url('progress'),
        type: 'GET',
        dataType: 'json',
        cache: false,
        timeout: this.options.timeout,
        headers: { 'X-Requested-With': 'XMLHttpRequest' }
      });
      this.xhr = xhr;
      xhr.done(function (doc) {
        if (self.xhr !== xhr) { return; }
        self.xhr = null;
        if (!doc || typeof doc !== 'object' || typeof doc.status !== 'string') {
          self._transientError({ kind: 'progress', status: xhr.status, message: 'malformed answer' },
                               xhr);
          return;
        }
        self.failures = 0;
        self._handleDoc(doc);
        self._schedule(self.options.interval);
      }).fail(function (jqXHR, textStatus, errorThrown) {
        if (self.xhr !== xhr) { return; }   // aborted by destroy()/refresh
        self.xhr = null;
        self._requestFailed('progress', jqXHR, textStatus, errorThrown);
      });
    },

    _requestFailed: function (kind, jqXHR, textStatus, errorThrown) {
      var status = jqXHR.status || 0;
      var body = jqXHR.responseJSON;
      var serverMessage = body && typeof body.error === 'string' ? body.error : '';
      var info = {
        kind: kind,
        status: status,
        textStatus: textStatus,
        message: serverMessage || errorThrown || textStatus || 'request failed'
      };
      var texts = this.options.texts;

      if (status === 404) {
        this._halt('notfound', texts.notFound, info);
        return 'final';
      }
      var transient = status === 0 || status === 408 || status === 429 || status >= 500 ||
                      (status >= 200 && status < 300);   // 2xx that did not parse as JSON
      if (kind === 'cancel') {
        return transient ? 'transient' : 'other';
      }
      if (status === 403) {
        this._halt('forbidden', texts.forbidden, info);
        return 'final';
      }
      if (!transient) {
        this._halt('error', texts.error + (serverMessage ? ': ' + serverMessage : ' (HTTP ' + status + ')'),
                   info);
        return 'final';
      }
      this._transientError(info, jqXHR);
      return 'transient';
    },

    // How long to wait before retrying after the ``attempt``-th consecutive failure: what
    // the server's Retry-After asks (clamped to 1 s .. maxRetryAfter), or else
    // interval * 2**attempt, at most maxInterval.
    _retryDelay: function (attempt, jqXHR) {
      var o = this.options;
      var hinted = retryAfterMs(jqXHR);
      if (hinted !== null) {
        return clamp(hinted, 1000, o.maxRetryAfter);
      }
      return Math.min(o.interval * Math.pow(2, attempt), o.maxInterval);
    },

    // Network trouble, 408, 429, 5xx...: wait, then poll again; never a final state.
    // 503 and 429 (the server is up but its job store is unavailable, or it is overloaded)
    // show "Reconnecting"; the others the "retrying in N s" text. The bar stays put.
    _transientError: function (info, jqXHR) {
      var o = this.options;
      this.failures += 1;
      var delay = this._retryDelay(this.failures, jqXHR);
      info.transient = true;
      info.attempt = this.failures;
      info.retryIn = delay;
      if (UNAVAILABLE[info.status] === true) {
        this._setReconnecting(true);
      } else {
        this._setReconnecting(false);
        this.$el.addClass(NAME + '--retrying');
        this._statusOverride = format(o.texts.retrying, { seconds: Math.ceil(delay / 1000) });
      }
      this._renderStatusLine();
      this._schedule(delay);
      this._emit('error', 'onError', info);
    },

    // A final error (404, 403, ...): stop everything and say so.
    _halt: function (modifier, text, info) {
      this.finished = true;
      this.status = modifier;
      this._stopTransport();
      this._clearCancelTimer();
      this.cancelPending = false;
      this.reconnecting = false;
      info.transient = false;
      this.$el.removeClass(MODIFIER_CLASSES).addClass(NAME + '--error ' + NAME + '--' + modifier);
      this._statusOverride = '';
      this._cancelError = '';
      this._finalText = text;
      this._renderStatusLine();
      this._renderCancel();
      this.$bar.removeAttr('aria-valuenow').attr('aria-valuetext', text);
      this._emit('error', 'onError', info);
    },

    // -------------------------------------------------------------- documents

    _handleDoc: function (doc) {
      if (this.destroyed || this.finished) { return; }
      // Ignore an answer older than the one shown (a cancel answer and a poll can cross).
      if (this.doc && isFiniteNumber(this.doc.updated_at) && isFiniteNumber(doc.updated_at) &&
          doc.updated_at < this.doc.updated_at) {
        return;
      }
      var isFinal = FINAL[doc.status] === true;
      this.doc = doc;
      this.status = doc.status;
      if (doc.cancel_requested) { this.cancelRequested = true; }
      this._setReconnecting(false);
      this._clearUnavailableTimer();
      if (isFinal || this.cancelRequested) {
        // The server has the cancel (from this page or elsewhere): no more retries needed.
        this._stopCancelRetries();
      }
      if (isFinal) {
        this.finished = true;
        this._stopTransport();
      }
      this._render(doc, isFinal);
      this._emit('progress', 'onProgress', doc);
      if (isFinal && !this._doneFired) {
        this._doneFired = true;
        this._emit('done', 'onDone', doc);
      }
    },

    _statusText: function (doc, isFinal) {
      var t = this.options.texts;
      var status = doc.status;
      if (status === 'failed') {
        var detail = errorDetail(doc.error);
        return detail ? t.failed + ': ' + detail : t.failed;
      }
      if (!isFinal && this.cancelRequested) { return t.cancelling; }
      if (Object.prototype.hasOwnProperty.call(t, status) && typeof t[status] === 'string') {
        return t[status];
      }
      return String(status);
    },

    _render: function (doc, isFinal) {
      var status = doc.status;
      var pct = percentOf(doc);
      var shown = null;
      if (status === 'succeeded') {
        shown = 100;
      } else if (pct !== null) {
        shown = Math.floor(clamp(pct, 0, 100));
        if (!isFinal && shown > 99) { shown = 99; }   // never 100 before it is done
      }
      var message = doc.message == null ? '' : String(doc.message);
      var statusText = this._statusText(doc, isFinal);

      var classes = [];
      if ($.inArray(status, STATUSES) >= 0) { classes.push(NAME + '--' + status); }
      if (shown === null && !isFinal) { classes.push(NAME + '--indeterminate'); }
      if (!isFinal && this.cancelRequested) { classes.push(NAME + '--cancelling'); }
      this.$el.removeClass(MODIFIER_CLASSES).addClass(classes.join(' '));

      var valueText;
      if (isFinal) {
        valueText = statusText;
      } else if (shown !== null) {
        valueText = shown + '%' + (message ? ' (' + message + ')' : '');
      } else {
        valueText = message || statusText;
      }
      if (shown === null) {
        this.$bar.removeAttr('aria-valuenow');
        this.$fill.css('width', isFinal ? '100%' : '');
      } else {
        this.$bar.attr('aria-valuenow', shown);
        this.$fill.css('width', shown + '%');
      }
      this.$bar.attr('aria-valuetext', valueText);
      if (isFinal) { this.$bar.removeAttr('aria-busy'); } else { this.$bar.attr('aria-busy', 'true'); }

      setText(this.$message, message);
      this._finalText = null;
      this._baseText = statusText;
      if (isFinal) { this._cancelError = ''; }
      this._renderStatusLine();
      this._renderCancel();
    },

    _renderStatusLine: function () {
      var text = this._finalText || this._statusOverride || this._baseText || '';
      if (this._cancelError && !this.finished) {
        text = text ? text + ' \u2014 ' + this._cancelError : this._cancelError;
      }
      setText(this.$statusLine, text);
    },

    _renderCancel: function () {
      var $b = this.$cancel;
      if (!$b.length) { return; }
      if (this.finished) {
        $b.prop('disabled', true).attr('hidden', 'hidden');
        return;
      }
      $b.removeAttr('hidden');
      if (this.cancelRequested) {
        $b.prop('disabled', true).attr('aria-busy', 'true');
        setText($b, this.options.texts.cancelling);
      } else if (this.cancelPending) {
        $b.prop('disabled', true).attr('aria-busy', 'true');
        setText($b, this._cancelLabel);
      } else {
        $b.prop('disabled', false).removeAttr('aria-busy');
        setText($b, this._cancelLabel);
      }
    },

    // -------------------------------------------------------------- cancel

    _csrfToken: function () {
      var t = this.options.csrfToken;
      if (typeof t === 'function') { t = t.call(this.element); }
      if (t) { return String(t); }
      var meta = document.querySelector('meta[name="csrf-token"]');
      return meta ? meta.getAttribute('content') : null;
    },

    cancel: function () {
      if (this.destroyed || this.finished || this.cancelPending || this.cancelRequested ||
          !this.token) {
        return;
      }
      this.cancelPending = true;
      this._cancelAttempt = 0;
      this._cancelError = '';
      this._renderStatusLine();
      this._renderCancel();
      this._sendCancel();
    },

    // One POST /cancel. A transient failure (503 while the job store is unavailable, 429,
    // network error, 408, other 5xx) is retried after Retry-After (or the back-off), at
    // most ``cancelRetries`` times; the button stays busy meanwhile. The job only shows
    // as cancelling/cancelled once a document from the server says so.
    _sendCancel: function () {
      var self = this;
      this._cancelTimer = null;
      if (this.destroyed || this.finished || this.cancelRequested) {
        this.cancelPending = false;
        this._cancelError = '';
        return;
      }
      var headers = { 'X-Requested-With': 'XMLHttpRequest' };
      var csrf = this._csrfToken();
      if (csrf) { headers[this.options.csrfHeader] = csrf; }
      this._cancelAttempt += 1;

      var xhr = $.ajax({
        url: this.url('cancel'),
        type: 'POST',
        dataType: 'json',
        timeout: this.options.timeout,
        headers: headers
      });
      this._cancelXhr = xhr;
      xhr.done(function (doc) {
        if (self._cancelXhr !== xhr) { return; }
        self._cancelXhr = null;
        self.cancelPending = false;
        self._cancelError = '';
        if (doc && typeof doc === 'object' && typeof doc.status === 'string') {
          self._handleDoc(doc);
        }
        if (!self.finished) {
          self._renderStatusLine();
          self._renderCancel();
        }
      }).fail(function (jqXHR, textStatus, errorThrown) {
        if (self._cancelXhr !== xhr) { return; }
        self._cancelXhr = null;
        var outcome = self._requestFailed('cancel', jqXHR, textStatus, errorThrown);
        if (outcome === 'final') {
          self.cancelPending = false;
          return;
        }
        var texts = self.options.texts;
        var body = jqXHR.responseJSON;
        var serverMessage = body && typeof body.error === 'string' ? body.error : '';
        var info = {
          kind: 'cancel',
          status: jqXHR.status || 0,
          textStatus: textStatus,
          message: serverMessage || errorThrown || textStatus || 'request failed',
          transient: outcome === 'transient'
        };
        if (info.transient) {
          info.attempt = self._cancelAttempt;
          info.retryIn = null;
        }
        if (info.transient && self._cancelAttempt <= self.options.cancelRetries &&
            !self.destroyed && !self.finished && !self.cancelRequested) {
          var delay = self._retryDelay(self._cancelAttempt, jqXHR);
          info.retryIn = delay;
          self._cancelError = texts.cancelRetrying;
          self._cancelTimer = window.setTimeout(function () { self._sendCancel(); }, delay);
        } else {
          // Not retried (403, 400...), or out of retries: say so; the button works again.
          self.cancelPending = false;
          self._cancelError = texts.cancelFailed + (serverMessage ? ': ' + serverMessage : '');
        }
        self._renderStatusLine();
        self._renderCancel();
        self._emit('error', 'onError', info);
      });
    },

    _clearCancelTimer: function () {
      if (this._cancelTimer !== null) {
        window.clearTimeout(this._cancelTimer);
        this._cancelTimer = null;
      }
    },

    // Drop a scheduled cancel retry (not a request in flight: its answer is still useful).
    _stopCancelRetries: function () {
      if (this._cancelTimer !== null) {
        this._clearCancelTimer();
        this.cancelPending = false;
        this._cancelError = '';
      }
    },

    // -------------------------------------------------------------- callbacks + events

    _emit: function (name, callbackName, payload) {
      var self = this;
      var cb = this.options[callbackName];
      if (typeof cb === 'function') {
        guarded(function () { cb.call(self.element, payload, self); });
      }
      guarded(function () { self.$el.trigger(NAME + ':' + name, [payload]); });
    }
  };

  // ---------------------------------------------------------------- the plugin

  function instanceOf(el) {
    var inst = $.data(el, NAME);
    if (inst) { return inst; }
    inst = el[EXPANDO];
    if (inst && !inst.destroyed) {
      $.data(el, NAME, inst);   // created through another copy of jQuery
      return inst;
    }
    return null;
  }

  $.fn[NAME] = function (option) {
    var args = Array.prototype.slice.call(arguments, 1);

    if (typeof option === 'string') {
      if (option === 'instance') {
        return this.length ? instanceOf(this[0]) : null;
      }
      if (!METHODS[option]) {
        $.error('asyncstate: no method named "' + option + '"');
      }
      return this.each(function () {
        var inst = instanceOf(this);
        if (inst) { inst[option].apply(inst, args); }
      });
    }

    return this.each(function () {
      var existing = instanceOf(this);
      if (existing) {
        if (option === undefined) { return; }    // already running, nothing new asked for
        existing.destroy();
      }
      var inst = new AsyncState(this, option);
      $.data(this, NAME, inst);
      this[EXPANDO] = inst;
      inst.start();
    });
  };

  $.fn[NAME].Constructor = AsyncState;
  $.fn[NAME].version = VERSION;

  $.fn[NAME].defaults = {
    token: null,
    prefix: '/asyncstate',
    interval: 1000,          // ms between polls
    maxInterval: 30000,      // cap of the exponential back-off
    maxRetryAfter: 60000,    // cap of a server's Retry-After (ms); at least 1000 is waited
    cancelRetries: 5,        // retries of a cancel that failed transiently (503, 429, network)
    timeout: 20000,          // ms before a request counts as failed
    mode: 'poll',            // "poll" or "auto" (EventSource, falling back to polling)
    label: 'Progress',       // aria-label of a bar the plugin creates itself
    csrfToken: null,         // string or function; default: <meta name="csrf-token">
    csrfHeader: 'X-CSRFToken',
    onProgress: null,        // function (doc, instance), this = element
    onDone: null,            // function (doc, instance), once, on a final status
    onError: null,           // function (errorInfo, instance)
    texts: {
      cancel: 'Cancel',
      queued: 'Queued',
      running: 'Running',
      succeeded: 'Done',
      failed: 'Failed',
      cancelled: 'Cancelled',
      lost: 'Lost: the server running this job stopped',
      cancelling: 'Cancelling\u2026',
      cancelFailed: 'Could not cancel',
      cancelRetrying: 'Could not cancel right now, retrying\u2026',
      notFound: 'Not found',
      forbidden: 'Not allowed to see this job',
      error: 'Error',
      retrying: 'Connection problem, retrying in {seconds} s\u2026',
      reconnecting: 'Reconnecting\u2026',
      noToken: 'No job token'
    }
  };

  // Initialise every [data-asyncstate-token] inside ``context`` (default: the document).
  $.fn[NAME].autoInit = function (context) {
    $(context || document).find('[data-' + NAME + '-token]').addBack('[data-' + NAME + '-token]')
      .each(function () {
        var manual = this.getAttribute('data-' + NAME + '-manual');
        if (manual !== null && manual !== 'false') { return; }
        if (instanceOf(this)) { return; }
        $(this)[NAME]();
      });
  };

  $(function () {
    $.fn[NAME].autoInit(document);
  });
}(window, document, window.jQuery));
