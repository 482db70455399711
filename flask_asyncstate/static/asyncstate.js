/*!
 * flask-asyncstate progress widget, a jQuery 3.x plugin.
 * BSD-3-Clause.
 *
 *   $(el).asyncstate({token: "...", prefix: "/asyncstate", interval: 1000, mode: "poll"});
 *   $(el).asyncstate('destroy');
 *
 * Options may also come from data attributes on the element:
 * data-asyncstate-token, -prefix, -interval, -mode, -notify ("true"), -page-title
 * ("false" to leave the page title alone), -labels (a JSON object of labels), -result
 * ("true": the job has a result view, see below), -try-again ("false": no Try again
 * button), and -manual to opt out of the automatic initialisation on document ready.
 *
 * The prefix (data-asyncstate-prefix or the ``prefix`` option) must be a path on this site,
 * "/asyncstate" say: a URL, "//host" or any other origin gets the widget refused, with a
 * console warning, and it does nothing (no request, no markup). Its requests go to this
 * page's origin only, as JSON (never JSONP), and so do its CSRF token and result view.
 *
 * Result view: a widget with data-asyncstate-result (or the ``result`` option) that reaches
 * "succeeded" with an empty .asyncstate-result slot GETs <prefix>/result/<token>, puts the
 * HTML of its {"html": "..."} answer in the slot and shows it (a 404: the slot stays
 * hidden), then fires "asyncstate:result" (html) and calls onResult(html, instance). A slot
 * the server filled already is left alone.
 *
 * Why a job ended: a final document's ``reason`` ("user", "shutdown", "timeout", "lost",
 * "error") becomes the modifier class asyncstate--reason-<reason>; "shutdown" and "timeout"
 * also replace the status text (labels reasonShutdown, reasonTimeout).
 *
 * Running again: a job queued until its ``retry_at`` (a retry after a failed run) says so
 * (label retryScheduled, class asyncstate--retry-scheduled) and counts the seconds down
 * in the .asyncstate-eta line (label retryingIn); a ``resumed`` one adds the label resumed
 * to its status (class asyncstate--resumed). A job that ended failed, cancelled or lost
 * shows the .asyncstate-retry button ("Try again"): it POSTs <prefix>/retry/<token> like a
 * cancel and the widget follows the same token again; a refusal (409, 429...) shows the
 * server's error in the .asyncstate-message line.
 *
 * jQuery may come after this script (the page's own copy at the end of <body>): the plugin
 * then registers itself on that jQuery once it is there, and never loads one itself.
 *
 * Labels (every text the widget shows): the defaults come from the server
 * (window.asyncstateLabels, put in front of this file by the /asyncstate.js route);
 * then $.fn.asyncstate.defaults.texts / .labels (overrides for every widget), then the
 * element's data-asyncstate-labels, then the `texts` and `labels` options. `{name}`
 * fields are filled in by the widget.
 *
 * Everything the server sends is written with .text() / attributes only, except the result
 * view's HTML (rendered and escaped by the app's own template on the server).
 */
(function (window, document) {
  'use strict';

  // Registers the plugin on ``$`` and starts the widgets on document ready. Called at once
  // when jQuery is already there, else when it arrives (see whenJQuery at the end).
  function install($) {
    var NAME = 'asyncstate';
    var VERSION = '0.1.0';
    // The instance is kept on the element too (survives a second jQuery copy).
    var EXPANDO = '__asyncstate';
    var EVENT_NS = '.' + NAME;

    // The job statuses come from the server (JobStatus), put in front of this file by the
    // blueprint's /asyncstate.js route: no hand copy to drift from the Python side.
    var SERVER_STATUSES = window.asyncstateStatuses;
    if (!SERVER_STATUSES) {
      if (window.console) {
        window.console.error(
          'flask-asyncstate: load asyncstate.js from the blueprint route ' +
            '(<prefix>/asyncstate.js), which tells it the job statuses'
        );
      }
      SERVER_STATUSES = { all: [], final: [] };
    }
    // The labels' defaults come the same way (flask_asyncstate/templating.py, DEFAULT_LABELS).
    var SERVER_LABELS = window.asyncstateLabels;
    if (!SERVER_LABELS || typeof SERVER_LABELS !== 'object') {
      if (window.console) {
        window.console.error(
          'flask-asyncstate: load asyncstate.js from the blueprint route ' +
            '(<prefix>/asyncstate.js), which tells it the default labels'
        );
      }
      // The others show as their key names.
      SERVER_LABELS = { progress: 'Progress', cancel: 'Cancel', error: 'Error' };
    }
    var STATUSES = SERVER_STATUSES.all;
    var FINAL = {};
    $.each(SERVER_STATUSES.final, function (_i, s) {
      FINAL[s] = true;
    });
    var MODIFIERS = STATUSES.concat([
      'notfound',
      'forbidden',
      'error',
      'retrying',
      'reconnecting',
      'indeterminate',
      'cancelling',
      'retry-scheduled',
      'resumed'
    ]);
    var MODIFIER_CLASSES = $.map(MODIFIERS, function (m) {
      return NAME + '--' + m;
    }).join(' ');
    var METHODS = { destroy: true, cancel: true, refresh: true, retry: true };
    // What "Try again" runs again: a job that ended without succeeding (the server's rule).
    var RETRYABLE = {};
    $.each(SERVER_STATUSES.final, function (_i, s) {
      if (s !== 'succeeded') {
        RETRYABLE[s] = true;
      }
    });

    // ---------------------------------------------------------------- helpers

    function isFiniteNumber(v) {
      return typeof v === 'number' && isFinite(v);
    }

    function clamp(v, lo, hi) {
      return v < lo ? lo : v > hi ? hi : v;
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
        window.setTimeout(function () {
          throw e;
        }, 0);
      }
    }

    function setText($node, text) {
      // Only touch the node when the text changes, so live regions do not re-announce.
      if ($node.length && $node.text() !== text) {
        $node.text(text);
      }
    }

    // A boolean data attribute: absent -> null; "false" (or "0", "no", "off") -> false; else true.
    function flagAttribute(el, name) {
      var value = el.getAttribute('data-' + NAME + '-' + name);
      if (value === null) {
        return null;
      }
      return !/^\s*(false|0|no|off)\s*$/i.test(value);
    }

    function readDataOptions(el) {
      var out = {};
      var token = el.getAttribute('data-' + NAME + '-token');
      var prefix = el.getAttribute('data-' + NAME + '-prefix');
      var interval = positiveInt(el.getAttribute('data-' + NAME + '-interval'));
      var mode = el.getAttribute('data-' + NAME + '-mode');
      var notify = flagAttribute(el, 'notify');
      var pageTitle = flagAttribute(el, 'page-title');
      var result = flagAttribute(el, 'result');
      var tryAgain = flagAttribute(el, 'try-again');
      if (token) {
        out.token = token;
      }
      if (prefix !== null) {
        out.prefix = prefix;
      }
      if (interval) {
        out.interval = interval;
      }
      if (mode) {
        out.mode = mode;
      }
      if (notify !== null) {
        out.notify = notify;
      }
      if (pageTitle !== null) {
        out.pageTitle = pageTitle;
      }
      if (result !== null) {
        out.result = result;
      }
      if (tryAgain !== null) {
        out.tryAgain = tryAgain;
      }
      return out;
    }

    // This page's origin ("null" for an opaque one).
    function pageOrigin() {
      var loc = window.location;
      return loc.origin || loc.protocol + '//' + loc.host;
    }

    // The prefix as a path on this site, or null. Only a same-origin path is accepted,
    // whether it came from a data attribute or an option: "/..." but not "//host" (nor
    // "/\host", which the URL parser reads the same), no query or fragment, no control
    // characters (the URL parser drops tabs and newlines: "/<TAB>/host" is "//host"), and
    // it must resolve to this page's origin. Markup a page lets through (a sanitized
    // comment keeps data-* attributes) must never point the widget elsewhere: a JSONP
    // script, a result view's HTML, the CSRF token of a cancel (cf. CVE-2018-14042).
    // Returns {path: the prefix without trailing slashes, origin: this page's origin}.
    function checkedPrefix(value) {
      var raw = value == null ? '' : value;
      if (typeof raw !== 'string') {
        return null;
      }
      if (raw !== '' && (raw.charAt(0) !== '/' || raw.charAt(1) === '/')) {
        return null;
      }
      // eslint-disable-next-line no-control-regex -- refusing control characters is the point
      if (/[\\?#\u0000-\u001f\u007f]/.test(raw)) {
        return null;
      }
      var path = raw.replace(/\/+$/, '');
      var origin = pageOrigin();
      if (!origin || origin === 'null') {
        return null;
      }
      if (typeof window.URL === 'function') {
        var resolved;
        try {
          resolved = new window.URL(path + '/', window.location.href);
        } catch (e) {
          return null;
        }
        if (resolved.origin !== origin || resolved.search || resolved.hash) {
          return null;
        }
      }
      return { path: path, origin: origin };
    }

    // A widget whose prefix is refused does nothing at all (no request, no markup): say so.
    function refuse(value) {
      if (window.console && window.console.warn) {
        var shown;
        try {
          shown = JSON.stringify(value);
        } catch (e) {
          shown = String(value);
        }
        window.console.warn(
          'flask-asyncstate: widget refused: its prefix ' +
            shown +
            ' is not a path on this site (one starting with "/", on ' +
            pageOrigin() +
            '); it makes no request'
        );
      }
    }

    // The string values of a labels object (anything else is ignored).
    function stringsOf(obj) {
      var out = {};
      if (obj && typeof obj === 'object') {
        $.each(obj, function (key, value) {
          if (typeof value === 'string') {
            out[key] = value;
          }
        });
      }
      return out;
    }

    // data-asyncstate-labels: a JSON object; a broken one is reported and ignored.
    function readDataLabels(el) {
      var raw = el.getAttribute('data-' + NAME + '-labels');
      if (!raw) {
        return {};
      }
      try {
        return stringsOf(JSON.parse(raw));
      } catch (e) {
        if (window.console) {
          window.console.error('flask-asyncstate: data-asyncstate-labels is not JSON: ' + e);
        }
        return {};
      }
    }

    // A monotonic clock (ms) for "time since this document arrived": no wall-clock jumps.
    function monotonicMs() {
      var perf = window.performance;
      return perf && typeof perf.now === 'function' ? perf.now() : new Date().getTime();
    }

    function twoDigits(n) {
      return (n < 10 ? '0' : '') + n;
    }

    // Seconds as m:ss, or h:mm:ss from an hour on.
    function clockText(seconds) {
      var s = Math.max(0, Math.floor(seconds));
      var h = Math.floor(s / 3600);
      var m = Math.floor((s % 3600) / 60);
      var rest = twoDigits(s % 60);
      return h > 0 ? h + ':' + twoDigits(m) + ':' + rest : m + ':' + rest;
    }

    function percentOf(doc) {
      if (isFiniteNumber(doc.percent)) {
        return doc.percent;
      }
      // ``percent: null`` means "total unknown"; only derive it when the key is absent.
      if (
        doc.percent === undefined &&
        isFiniteNumber(doc.total) &&
        doc.total > 0 &&
        isFiniteNumber(doc.current)
      ) {
        return (doc.current * 100) / doc.total;
      }
      return null;
    }

    // What the job is called on screen: its display label, else its name.
    function labelOf(doc) {
      var shown = doc.label || doc.name;
      return shown == null ? '' : String(shown);
    }

    // Whether the job did any of its work: a count above zero.
    function madeProgress(doc) {
      return isFiniteNumber(doc.current) && doc.current > 0;
    }

    // A job queued to be retried after a failed run: due after its back-off, later than the
    // document's own time, with the failure in ``error``. (A run asked for again is due at
    // once; so is a resume, which the server may store with the time of the last progress,
    // earlier than its retry_at: ``resumed`` with no error tells it apart.)
    function retryScheduled(doc) {
      return (
        doc.status === 'queued' &&
        isFiniteNumber(doc.retry_at) &&
        isFiniteNumber(doc.updated_at) &&
        doc.retry_at > doc.updated_at &&
        (doc.resumed !== true || !!doc.error)
      );
    }

    function errorDetail(err) {
      if (!err) {
        return '';
      }
      if (typeof err === 'string') {
        return err;
      }
      var type = err.type ? String(err.type) : '';
      var message = err.message ? String(err.message) : '';
      if (type && message) {
        return type + ': ' + message;
      }
      return type || message;
    }

    // Answers that mean "the server is there but cannot serve this right now" (job store
    // unavailable, circuit breaker open, job queue full, rate limit): shown as "Reconnecting".
    var UNAVAILABLE = { 429: true, 503: true };

    function retryAfterMs(jqXHR) {
      var header = jqXHR && jqXHR.getResponseHeader ? jqXHR.getResponseHeader('Retry-After') : null;
      if (!header) {
        return null;
      }
      var seconds = parseInt(header, 10);
      if (isFiniteNumber(seconds) && seconds >= 0) {
        return seconds * 1000;
      }
      var date = Date.parse(header);
      return isFiniteNumber(date) ? Math.max(0, date - new Date().getTime()) : null;
    }

    // ---------------------------------------------------------------- the page title

    // While the tab is hidden, one widget (the owner) shows itself in the page title,
    // "42% \u00b7 <title>", or its status once final ("Done \u00b7 <title>"); the page's own
    // title comes back when the tab is visible again or the owner is destroyed. The owner
    // keeps the title while it runs; a widget that reaches a final status takes it (and
    // keeps it until the tab was seen); any widget takes it from a final owner once seen.
    var TITLE_SEPARATOR = ' \u00b7 ';
    var pageTitle = {
      owner: null, // the widget shown in the title
      saved: null, // the page's own title, while ours is shown
      applied: null, // our title as document.title reads it back
      unseenFinal: false, // the owner ended while the tab was hidden
      bound: false
    };

    function restoreTitle() {
      if (pageTitle.saved === null) {
        return;
      }
      if (document.title === pageTitle.applied) {
        document.title = pageTitle.saved;
      }
      pageTitle.saved = null;
      pageTitle.applied = null;
    }

    function applyTitle() {
      var owner = pageTitle.owner;
      var text = owner && !owner.destroyed && document.hidden ? owner._titleText() : '';
      if (!text) {
        restoreTitle();
        return;
      }
      if (pageTitle.saved === null || document.title !== pageTitle.applied) {
        pageTitle.saved = document.title; // the first time, or the page changed its title since
      }
      var title = pageTitle.saved ? text + TITLE_SEPARATOR + pageTitle.saved : text;
      if (document.title !== title) {
        document.title = title;
      }
      pageTitle.applied = document.title; // as read back (the getter collapses white space)
    }

    function onVisibilityChange() {
      if (document.hidden) {
        applyTitle();
        return;
      }
      pageTitle.unseenFinal = false;
      if (pageTitle.owner && pageTitle.owner.finished) {
        pageTitle.owner = null; // seen
      }
      restoreTitle();
    }

    function claimTitle(widget, finishedNow) {
      if (!widget.options.pageTitle || widget.destroyed) {
        return;
      }
      if (!pageTitle.bound) {
        pageTitle.bound = true;
        document.addEventListener('visibilitychange', onVisibilityChange, false);
      }
      var owner = pageTitle.owner;
      if (owner !== widget) {
        if (
          owner &&
          !owner.destroyed &&
          !finishedNow &&
          (!owner.finished || pageTitle.unseenFinal)
        ) {
          return;
        }
        pageTitle.owner = widget;
        pageTitle.unseenFinal = false;
      }
      if (finishedNow && document.hidden) {
        pageTitle.unseenFinal = true;
      }
      applyTitle();
    }

    function releaseTitle(widget) {
      if (pageTitle.owner !== widget) {
        return;
      }
      pageTitle.owner = null;
      pageTitle.unseenFinal = false;
      restoreTitle();
    }

    // The label of each final error (_halt's modifier).
    var HALT_LABELS = { notfound: 'notFound', forbidden: 'forbidden', error: 'error' };

    // A final document's ``reason`` that replaces its status text (any status).
    var REASON_LABELS = { shutdown: 'reasonShutdown', timeout: 'reasonTimeout' };
    var REASON_CLASS = new RegExp('(^|\\s)' + NAME + '--reason-\\S+', 'g');

    // The reason of ``doc`` when it is a word fit for a class name, else ''.
    function reasonOf(doc) {
      var reason = doc && doc.reason;
      return typeof reason === 'string' && /^[a-z][a-z0-9_-]{0,31}$/.test(reason) ? reason : '';
    }

    // Drop every modifier class this widget sets (the reason ones are open-ended).
    function clearModifiers($el) {
      $el.removeClass(MODIFIER_CLASSES);
      var cls = $el.attr('class') || '';
      var kept = $.trim(cls.replace(REASON_CLASS, ' ').replace(/\s+/g, ' '));
      if (kept !== cls) {
        $el.attr('class', kept);
      }
    }

    // Result requests retried after a transient failure (network, 5xx, 429), in all.
    var RESULT_ATTEMPTS = 3;

    // ---------------------------------------------------------------- the instance

    function AsyncState(element, options) {
      var opts = $.extend(true, {}, $.fn[NAME].defaults, readDataOptions(element), options || {});
      this.element = element;
      this.options = opts;
      var checked = checkedPrefix(opts.prefix);
      if (!checked) {
        // Not a path on this site: this widget does nothing (see checkedPrefix).
        this.refused = true;
        this.destroyed = true;
        this.finished = true;
        refuse(opts.prefix);
        return;
      }
      this.refused = false;
      this._origin = checked.origin;
      this._prefix = opts.prefix = checked.path;
      opts.interval = positiveInt(opts.interval) || $.fn[NAME].defaults.interval;
      opts.maxInterval = Math.max(positiveInt(opts.maxInterval) || 30000, opts.interval);
      opts.maxRetryAfter = Math.max(positiveInt(opts.maxRetryAfter) || 60000, 1000);
      opts.cancelRetries =
        opts.cancelRetries === 0
          ? 0
          : positiveInt(opts.cancelRetries) || $.fn[NAME].defaults.cancelRetries;
      opts.mode = String(opts.mode || 'poll').toLowerCase();
      opts.notify = opts.notify === true;
      opts.pageTitle = opts.pageTitle !== false;
      opts.result = opts.result === true;
      opts.tryAgain = opts.tryAgain !== false;
      // Labels: server defaults < defaults.texts < defaults.labels < data-asyncstate-labels <
      // the texts option < the labels option. ``texts`` and ``labels`` are the same object.
      var given = options || {};
      var defaults = $.fn[NAME].defaults;
      var overrides = $.extend(
        {},
        stringsOf(defaults.texts),
        stringsOf(defaults.labels),
        readDataLabels(element),
        stringsOf(given.texts),
        stringsOf(given.labels)
      );
      opts.texts = opts.labels = $.extend({}, stringsOf(SERVER_LABELS), overrides);

      this.$el = $(element);
      this.token = opts.token ? String(opts.token) : '';
      this.transport = null; // "sse" or "poll" once started
      this.doc = null; // last progress document
      this.status = null; // last status ("queued", ..., or "notfound"/"forbidden"/"error")
      this.finished = false; // a final status (or a final error) was reached
      this.destroyed = false;
      this.failures = 0; // consecutive transient failures
      this.nextDelay = null; // delay (ms) of the poll currently scheduled
      this.cancelPending = false; // a cancel request is in flight
      this.cancelRequested = false;
      this.source = null; // the EventSource, while one is open
      this.sseRefused = false; // a stream failed before it opened: this widget polls from now on
      // True when the server answered 503/429 (or sent "unavailable"): showing "Reconnecting".
      this.reconnecting = false;
      this.xhr = null; // the progress request in flight

      this._timer = null;
      this._cancelXhr = null;
      this._cancelTimer = null;
      this._cancelAttempt = 0;
      this._unavailableTimer = null;
      this._doneFired = false;
      this._cancelError = '';
      this._statusOverride = '';
      this._labelOverrides = overrides; // labels given for this widget (not the defaults)
      this._docAt = null; // monotonicMs() when this.doc arrived
      this._etaTimer = null;
      this._shown = null; // the percentage the bar shows (null: unknown)
      this._sawUnfinished = false; // a document before the final one was shown
      this._haltLabel = '';
      this._elapsedStart = null; // started_at of the elapsed time shown
      this._elapsedShown = 0;
      this._resultXhr = null;
      this._resultTimer = null;
      this.retryPending = false; // a "Try again" request is in flight
      this._retryXhr = null;
      this._retryError = ''; // why the last "Try again" was refused, in the message line

      this._build();
    }

    AsyncState.prototype = {
      constructor: AsyncState,
      version: VERSION,

      url: function (kind) {
        return this.options.prefix + '/' + kind + '/' + encodeURIComponent(this.token);
      },

      // The absolute URL every request of this widget goes to: this page's origin and the
      // checked prefix (so neither a <base> nor a later change of options.prefix moves it).
      _endpoint: function (kind) {
        return this._origin + this._prefix + '/' + kind + '/' + encodeURIComponent(this.token);
      },

      // The label ``key`` (its name when there is none: see the console error).
      _label: function (key) {
        var value = this.options.texts[key];
        return typeof value === 'string' ? value : String(key);
      },

      // -------------------------------------------------------------- markup

      _build: function () {
        var $el = this.$el;
        var self = this;
        $el.addClass(NAME);
        var given = this._labelOverrides;
        var has = Object.prototype.hasOwnProperty;
        if (!$el.children().length) {
          // An empty element: create the default markup (same as the Jinja macro).
          $('<div>', {
            'class': NAME + '-bar',
            role: 'progressbar',
            'aria-label': this.options.label || this._label('progress'),
            'aria-valuemin': 0,
            'aria-valuemax': 100,
            'aria-valuenow': 0
          })
            .append($('<div>', { 'class': NAME + '-fill' }))
            .appendTo($el);
          $('<p>', { 'class': NAME + '-message', 'aria-live': 'polite' }).appendTo($el);
          $('<p>', { 'class': NAME + '-status', role: 'status' }).appendTo($el);
          $('<button>', { type: 'button', 'class': NAME + '-cancel' })
            .text(this._label('cancel'))
            .appendTo($el);
        }
        this.$bar = $el.find('.' + NAME + '-bar').first();
        this.$fill = this.$bar.find('.' + NAME + '-fill').first();
        this.$message = $el.find('.' + NAME + '-message').first();
        this.$statusLine = $el.find('.' + NAME + '-status').first();
        this.$cancel = $el.find('.' + NAME + '-cancel').first();
        this.$retry = this.options.tryAgain ? $el.find('.' + NAME + '-retry').first() : $();
        this.$eta = $el.find('.' + NAME + '-eta').first();
        this.$result = $el.find('.' + NAME + '-result').first();
        if (!this.$result.length && this.options.result) {
          // The result view's slot, hidden until there is something in it.
          this.$result = $('<div>', { 'class': NAME + '-result', hidden: 'hidden' });
          if (this.$message.length) {
            this.$result.insertAfter(this.$message);
          } else {
            this.$result.appendTo($el);
          }
        }
        if (!this.$eta.length) {
          // Markup from before the elapsed/ETA line: add it under the bar.
          this.$eta = $('<p>', { 'class': NAME + '-eta' });
          if (this.$bar.length) {
            this.$eta.insertAfter(this.$bar);
          } else {
            this.$eta.appendTo($el);
          }
        }
        // The markup's own texts stay unless a label was given for this widget.
        if (this.$bar.length && (has.call(given, 'progress') || !this.$bar.attr('aria-label'))) {
          this.$bar.attr('aria-label', this._label('progress'));
        }
        this._cancelLabel = has.call(given, 'cancel')
          ? this._label('cancel')
          : $.trim(this.$cancel.text()) || this._label('cancel');
        setText(this.$cancel, this._cancelLabel);
        this.$cancel.on('click' + EVENT_NS, function (event) {
          event.preventDefault();
          self.cancel();
        });
        if (this.options.tryAgain && !this.$retry.length) {
          // Markup from before "Try again" (or none): add the button, hidden until needed.
          this.$retry = $('<button>', {
            type: 'button',
            'class': NAME + '-retry',
            hidden: 'hidden'
          });
          if (this.$cancel.length) {
            this.$retry.insertAfter(this.$cancel);
          } else {
            this.$retry.appendTo($el);
          }
        }
        this._retryLabel = has.call(given, 'tryAgain')
          ? this._label('tryAgain')
          : $.trim(this.$retry.text()) || this._label('tryAgain');
        setText(this.$retry, this._retryLabel);
        this.$retry.on('click' + EVENT_NS, function (event) {
          event.preventDefault();
          self.retry();
        });
      },

      // -------------------------------------------------------------- lifecycle

      start: function () {
        if (this.refused) {
          return;
        }
        if (!this.token) {
          this._halt('error', this._label('noToken'), {
            kind: 'config',
            status: 0,
            message: 'no job token given',
            transient: false
          });
          return;
        }
        this._follow(0);
      },

      // Follow the job: its event stream when the mode asks for one and it can open, else
      // polls, the first one after ``delay`` ms.
      _follow: function (delay) {
        var mode = this.options.mode;
        if (
          (mode === 'auto' || mode === 'sse') &&
          !this.sseRefused &&
          typeof window.EventSource === 'function' &&
          this._openStream()
        ) {
          return;
        }
        this._usePolling(delay);
      },

      destroy: function () {
        if (this.destroyed) {
          return;
        }
        this.destroyed = true;
        this._stopTransport();
        this._clearCancelTimer();
        this._stopEtaTimer();
        this._stopResult();
        releaseTitle(this);
        if (this._cancelXhr) {
          var cx = this._cancelXhr;
          this._cancelXhr = null;
          cx.abort();
        }
        if (this._retryXhr) {
          var rx = this._retryXhr;
          this._retryXhr = null;
          rx.abort();
        }
        this.$cancel.off(EVENT_NS);
        this.$retry.off(EVENT_NS);
        if ($.data(this.element, NAME) === this) {
          $.removeData(this.element, NAME);
        }
        if (this.element[EXPANDO] === this) {
          this.element[EXPANDO] = null;
        }
      },

      // Poll right now (when polling), instead of waiting for the timer.
      refresh: function () {
        if (this.destroyed || this.finished || this.transport !== 'poll') {
          return;
        }
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
      //  - the server's "reconnect" event (the stream reached sse_max_age): open a
      //    new stream; if that one fails before it opens, the rule above applies;
      //  - an open stream that drops or closes before a final status: poll.
      _openStream: function () {
        var self = this;
        var source;
        if (this.sseRefused) {
          return false;
        }
        try {
          source = new window.EventSource(this._endpoint('events'));
        } catch (e) {
          return false;
        }
        var opened = false;
        this.source = source;
        this._setTransport('sse');
        source.addEventListener('open', function () {
          if (self.source !== source) {
            return;
          }
          opened = true;
        });
        source.addEventListener('message', function (event) {
          if (self.source !== source) {
            return;
          }
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
          if (self.source !== source || self.finished || self.destroyed) {
            return;
          }
          opened = true;
          var message = '';
          try {
            var body = JSON.parse(event.data);
            if (body && typeof body.error === 'string') {
              message = body.error;
            }
          } catch (e) {
            /* keep the default message */
          }
          self._showUnavailable();
          self._emit('error', 'onError', {
            kind: 'progress',
            status: 503,
            textStatus: 'unavailable',
            message: message || 'the job store is unavailable',
            transient: true,
            attempt: 1,
            retryIn: null
          });
        });
        source.addEventListener('reconnect', function () {
          // The server ends long streams on purpose (to free its thread): open a new one.
          if (self.source !== source) {
            return;
          }
          self._closeStream();
          if (!self.finished && !self.destroyed && !self._openStream()) {
            self._fallBack();
          }
        });
        source.addEventListener('end', function () {
          if (self.source !== source) {
            return;
          }
          self._closeStream();
          if (!self.finished && !self.destroyed) {
            self._fallBack();
          }
        });
        source.addEventListener('error', function () {
          // Fired on network errors, non-200 answers (a 429 when the server has too many
          // streams open, a 503...), and when the server closes the stream. EventSource
          // cannot tell which: continue by polling unless we are done, and if this stream
          // never opened, stay on polling.
          if (self.source !== source) {
            return;
          }
          if (!opened) {
            self.sseRefused = true;
          }
          self._closeStream();
          if (!self.finished && !self.destroyed) {
            self._fallBack();
          }
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
        if (this.finished || this.destroyed) {
          return;
        }
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
        this._unavailableTimer = window.setTimeout(
          function () {
            self._unavailableTimer = null;
            if (self.finished || self.destroyed || self.transport !== 'sse') {
              return;
            }
            self._setReconnecting(false);
            self._renderStatusLine();
          },
          Math.max(5000, 3 * this.options.interval)
        );
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
          this._statusOverride = this._label('reconnecting');
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
          guarded(function () {
            self.$el.trigger(NAME + ':transport', [name]);
          });
        }
      },

      _usePolling: function (delay) {
        this._setTransport('poll');
        this._schedule(delay);
      },

      _schedule: function (delay) {
        this._clearTimer();
        if (this.destroyed || this.finished || this.transport !== 'poll') {
          return;
        }
        var self = this;
        this.nextDelay = delay;
        this._timer = window.setTimeout(function () {
          self._timer = null;
          self.nextDelay = null;
          self.poll();
        }, delay);
      },

      poll: function () {
        if (this.destroyed || this.finished || this.xhr) {
          return;
        }
        var self = this;
        var xhr = $.ajax({
          url: this._endpoint('progress'),
          type: 'GET',
          dataType: 'json',
          jsonp: false, // JSON only: never a JSONP script, whatever the URL says
          crossDomain: false,
          cache: false,
          timeout: this.options.timeout,
          headers: { 'X-Requested-With': 'XMLHttpRequest' }
        });
        this.xhr = xhr;
        xhr
          .done(function (doc) {
            if (self.xhr !== xhr) {
              return;
            }
            self.xhr = null;
            if (!doc || typeof doc !== 'object' || typeof doc.status !== 'string') {
              self._transientError(
                { kind: 'progress', status: xhr.status, message: 'malformed answer' },
                xhr
              );
              return;
            }
            self.failures = 0;
            self._handleDoc(doc);
            self._schedule(self.options.interval);
          })
          .fail(function (jqXHR, textStatus, errorThrown) {
            if (self.xhr !== xhr) {
              return; // aborted by destroy()/refresh
            }
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
        if (status === 404) {
          this._halt('notfound', this._label('notFound'), info);
          return 'final';
        }
        var transient =
          status === 0 ||
          status === 408 ||
          status === 429 ||
          status >= 500 ||
          (status >= 200 && status < 300); // 2xx that did not parse as JSON
        if (kind === 'cancel') {
          return transient ? 'transient' : 'other';
        }
        if (status === 403) {
          this._halt('forbidden', this._label('forbidden'), info);
          return 'final';
        }
        if (!transient) {
          this._halt(
            'error',
            this._label('error') +
              (serverMessage ? ': ' + serverMessage : ' (HTTP ' + status + ')'),
            info
          );
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
          this._statusOverride = format(this._label('retrying'), {
            seconds: Math.ceil(delay / 1000)
          });
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
        clearModifiers(this.$el);
        this.$el.addClass(NAME + '--error ' + NAME + '--' + modifier);
        this._statusOverride = '';
        this._cancelError = '';
        this._finalText = text;
        this._haltLabel = this._label(HALT_LABELS[modifier] || 'error');
        this._renderStatusLine();
        this._renderCancel();
        this._renderRetry();
        this._renderEta();
        this.$bar.removeAttr('aria-valuenow').attr('aria-valuetext', text);
        claimTitle(this, true);
        this._emit('error', 'onError', info);
      },

      // -------------------------------------------------------------- documents

      _handleDoc: function (doc) {
        if (this.destroyed || this.finished) {
          return;
        }
        // Ignore an answer older than the one shown (a cancel answer and a poll can cross).
        if (
          this.doc &&
          isFiniteNumber(this.doc.updated_at) &&
          isFiniteNumber(doc.updated_at) &&
          doc.updated_at < this.doc.updated_at
        ) {
          return;
        }
        var isFinal = FINAL[doc.status] === true;
        var sawUnfinished = this._sawUnfinished;
        if (!isFinal) {
          this._sawUnfinished = true;
        }
        // The same moment again (a poll while the job wrote nothing): elapsed keeps counting
        // from when that moment first arrived.
        var sameMoment =
          this.doc !== null &&
          this._docAt !== null &&
          isFiniteNumber(doc.updated_at) &&
          doc.updated_at === this.doc.updated_at &&
          doc.started_at === this.doc.started_at;
        this.doc = doc;
        if (!sameMoment) {
          this._docAt = monotonicMs();
        }
        this.status = doc.status;
        if (doc.cancel_requested) {
          this.cancelRequested = true;
        }
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
          if (sawUnfinished) {
            this._notify(doc); // not for a job that had ended already
          }
          this._emit('done', 'onDone', doc);
          if (doc.status === 'succeeded' && this._resultWanted()) {
            this._loadResult(1);
          }
        }
      },

      // A desktop notification of the end, when the app asked for it (``notify``) and the
      // user already allowed notifications: asking needs a user gesture, the app's job.
      _notify: function (doc) {
        var Notify = window.Notification;
        if (
          !this.options.notify ||
          typeof Notify !== 'function' ||
          Notify.permission !== 'granted'
        ) {
          return;
        }
        var message = doc.message == null ? '' : String(doc.message);
        var body = message || labelOf(doc);
        try {
          new Notify(this._finalLabel(doc), { body: body }); // shows itself: nothing to keep
        } catch (e) {
          // e.g. Chrome on Android: only a service worker may show one.
          if (window.console && window.console.warn) {
            window.console.warn('flask-asyncstate: could not show a notification: ' + e);
          }
        }
      },

      // The short text of a final document: its reason's label ("Stopped by a server
      // restart"), else its status's ("Done").
      _finalLabel: function (doc) {
        var reason = reasonOf(doc);
        if (reason && Object.prototype.hasOwnProperty.call(REASON_LABELS, reason)) {
          return this._label(REASON_LABELS[reason]);
        }
        return this._label(String(doc.status));
      },

      _statusText: function (doc, isFinal) {
        var status = doc.status;
        var reason = reasonOf(doc);
        if (isFinal && reason && Object.prototype.hasOwnProperty.call(REASON_LABELS, reason)) {
          return this._label(REASON_LABELS[reason]); // whatever the status says
        }
        if (status === 'failed') {
          var detail = errorDetail(doc.error);
          return detail ? this._label('failed') + ': ' + detail : this._label('failed');
        }
        var text;
        if (!isFinal && this.cancelRequested) {
          text = this._label('cancelling');
        } else if (retryScheduled(doc)) {
          var failure = errorDetail(doc.error);
          text = this._label('retryScheduled') + (failure ? ': ' + failure : '');
        } else {
          text = this._label(String(status));
        }
        if (!isFinal && doc.resumed === true) {
          text += TITLE_SEPARATOR + this._label('resumed');
        }
        return text;
      },

      _render: function (doc, isFinal) {
        var status = doc.status;
        var pct = percentOf(doc);
        var shown = null;
        if (status === 'succeeded') {
          shown = 100;
        } else if (pct !== null) {
          shown = Math.floor(clamp(pct, 0, 100));
          if (!isFinal && shown > 99) {
            shown = 99; // never 100 before it is done
          }
        }
        var message = doc.message == null ? '' : String(doc.message);
        var statusText = this._statusText(doc, isFinal);

        var classes = [];
        if ($.inArray(status, STATUSES) >= 0) {
          classes.push(NAME + '--' + status);
        }
        if (shown === null && !isFinal) {
          classes.push(NAME + '--indeterminate');
        }
        if (!isFinal && this.cancelRequested) {
          classes.push(NAME + '--cancelling');
        }
        if (retryScheduled(doc)) {
          classes.push(NAME + '--retry-scheduled');
        }
        if (!isFinal && doc.resumed === true) {
          classes.push(NAME + '--resumed');
        }
        if (reasonOf(doc)) {
          classes.push(NAME + '--reason-' + reasonOf(doc));
        }
        clearModifiers(this.$el);
        this.$el.addClass(classes.join(' '));

        var valueText;
        if (isFinal) {
          valueText = statusText;
        } else if (shown !== null) {
          valueText = shown + '%' + (message ? ' (' + message + ')' : '');
        } else {
          valueText = message || statusText;
        }
        if (shown === null) {
          // Total unknown. Running: the sliding segment (CSS). Ended: a full bar in the
          // final colour once the job made progress, else an empty one (a job cancelled,
          // failed or lost while still queued did nothing: a full grey bar reads "done").
          this.$bar.removeAttr('aria-valuenow');
          this.$fill.css('width', isFinal ? (madeProgress(doc) ? '100%' : '0%') : '');
        } else {
          this.$bar.attr('aria-valuenow', shown);
          this.$fill.css('width', shown + '%');
        }
        this.$bar.attr('aria-valuetext', valueText);
        if (isFinal) {
          this.$bar.removeAttr('aria-busy');
        } else {
          this.$bar.attr('aria-busy', 'true');
        }

        this._retryError = '';
        setText(this.$message, message);
        this._finalText = null;
        this._baseText = statusText;
        this._shown = shown;
        if (isFinal) {
          this._cancelError = '';
        }
        this._renderStatusLine();
        this._renderCancel();
        this._renderRetry();
        this._renderEta();
        claimTitle(this, isFinal);
      },

      // -------------------------------------------------------------- elapsed and ETA

      // "0:42 elapsed \u00b7 about 30 s left" under the bar. Elapsed is server time: what
      // the document says (updated_at - started_at) plus the time since it arrived while
      // running, so the browser's clock never matters. Redrawn every second while running.
      // A job waiting for a retry shows "Retrying in 8 s (attempt 2 of 4)" there instead,
      // redrawn as the seconds go down (this line is not a live region: no announcement a
      // second).
      _renderEta: function () {
        this._stopEtaTimer();
        var $eta = this.$eta;
        if (!$eta || !$eta.length) {
          return;
        }
        var doc = this.doc;
        var text = '';
        var ticking = false;
        var wait = 1000;
        var retryIn =
          doc && !this.destroyed && this.status === doc.status ? this._retryIn(doc) : null;
        if (retryIn !== null) {
          text = format(this._label('retryingIn'), {
            seconds: Math.max(1, Math.ceil(retryIn)),
            attempt: isFiniteNumber(doc.attempt) ? doc.attempt : '?',
            max: isFiniteNumber(doc.max_attempts) ? doc.max_attempts : '?'
          });
          ticking = true;
          // Just after the count crosses its next whole second (once due: until the run
          // starts, at the server's next look, it says 1 s).
          wait = retryIn > 0 ? clamp(Math.floor((retryIn * 1000) % 1000) + 20, 50, 1000) : 1000;
        } else if (
          doc &&
          !this.destroyed &&
          this.status === doc.status &&
          doc.status !== 'queued' &&
          isFiniteNumber(doc.started_at)
        ) {
          var isFinal = FINAL[doc.status] === true;
          var since =
            isFinal || this._docAt === null ? 0 : Math.max(0, (monotonicMs() - this._docAt) / 1000);
          var upTo = isFiniteNumber(doc.updated_at) ? doc.updated_at : doc.started_at;
          var elapsed = Math.max(0, upTo - doc.started_at) + since;
          if (!isFinal) {
            // A fresher document may say a little less than the estimate shown: never count back.
            if (this._elapsedStart === doc.started_at && elapsed < this._elapsedShown) {
              elapsed = this._elapsedShown;
            }
            this._elapsedStart = doc.started_at;
            this._elapsedShown = elapsed;
          }
          text = format(this._label('elapsed'), { time: clockText(elapsed) });
          if (!isFinal && doc.status === 'running' && isFiniteNumber(doc.eta) && doc.eta >= 0) {
            text += TITLE_SEPARATOR + this._etaText(Math.max(0, doc.eta - since));
          }
          ticking = !isFinal;
          // Just after the elapsed time crosses its next whole second.
          wait = clamp(1020 - Math.floor((elapsed * 1000) % 1000), 50, 1000);
        }
        setText($eta, text);
        if (ticking) {
          var self = this;
          this._etaTimer = window.setTimeout(function () {
            self._etaTimer = null;
            self._renderEta();
          }, wait);
        }
      },

      // Seconds until a job waiting for a retry runs again (null: it waits for none). The
      // server's times give at most retry_at - updated_at less the time since the document
      // arrived (it may be older than that: a page opened during the wait); the browser's
      // clock, when it is right, the exact count: the smaller of the two.
      _retryIn: function (doc) {
        if (!retryScheduled(doc)) {
          return null;
        }
        var since = this._docAt === null ? 0 : Math.max(0, (monotonicMs() - this._docAt) / 1000);
        var byServer = doc.retry_at - doc.updated_at - since;
        var byClock = doc.retry_at - new Date().getTime() / 1000;
        return Math.max(0, Math.min(byServer, byClock));
      },

      _etaText: function (seconds) {
        if (seconds < 60) {
          return format(this._label('etaSeconds'), { seconds: Math.max(1, Math.ceil(seconds)) });
        }
        return format(this._label('etaMinutes'), {
          minutes: Math.max(1, Math.round(seconds / 60))
        });
      },

      _stopEtaTimer: function () {
        if (this._etaTimer !== null) {
          window.clearTimeout(this._etaTimer);
          this._etaTimer = null;
        }
      },

      // What this widget puts in front of the page title while the tab is hidden.
      _titleText: function () {
        if (this.finished) {
          if (!this.doc || this.status !== this.doc.status) {
            return this._haltLabel;
          }
          return this._finalLabel(this.doc);
        }
        if (!this.doc) {
          return '';
        }
        if (this._shown !== null) {
          return this._shown + '%';
        }
        return this._statusText(this.doc, false);
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
        if (!$b.length) {
          return;
        }
        if (this.finished) {
          $b.prop('disabled', true).attr('hidden', 'hidden');
          return;
        }
        $b.removeAttr('hidden');
        if (this.cancelRequested) {
          $b.prop('disabled', true).attr('aria-busy', 'true');
          setText($b, this._label('cancelling'));
        } else if (this.cancelPending) {
          $b.prop('disabled', true).attr('aria-busy', 'true');
          setText($b, this._cancelLabel);
        } else {
          $b.prop('disabled', false).removeAttr('aria-busy');
          setText($b, this._cancelLabel);
        }
      },

      // -------------------------------------------------------------- the result view

      // A result slot to fill: the widget has a result view and nothing is shown yet
      // (a page rendered after the end has it from the server already).
      _resultWanted: function () {
        var slot = this.$result && this.$result[0];
        return !!(this.options.result && slot && !$.trim(slot.innerHTML));
      },

      // GET <prefix>/result/<token>: 200 {"html": "..."} fills the slot; 404 (no result
      // view for this job, or not any more) leaves it hidden; a transient failure is tried
      // again after the back-off, RESULT_ATTEMPTS times in all.
      _loadResult: function (attempt) {
        var self = this;
        this._resultTimer = null;
        if (this.destroyed || this._resultXhr || !this._resultWanted()) {
          return;
        }
        var xhr = $.ajax({
          url: this._endpoint('result'),
          type: 'GET',
          dataType: 'json',
          jsonp: false, // JSON only: never a JSONP script, whatever the URL says
          crossDomain: false,
          cache: false,
          timeout: this.options.timeout,
          headers: { 'X-Requested-With': 'XMLHttpRequest' }
        });
        this._resultXhr = xhr;
        xhr
          .done(function (body) {
            if (self._resultXhr !== xhr) {
              return;
            }
            self._resultXhr = null;
            if (
              body &&
              typeof body === 'object' &&
              typeof body.html === 'string' &&
              $.trim(body.html) &&
              self._resultWanted()
            ) {
              self._showResult(body.html);
            }
          })
          .fail(function (jqXHR, textStatus, errorThrown) {
            if (self._resultXhr !== xhr) {
              return; // aborted by destroy()
            }
            self._resultXhr = null;
            var status = jqXHR.status || 0;
            if (status === 404) {
              return; // nothing to show
            }
            var body = jqXHR.responseJSON;
            var info = {
              kind: 'result',
              status: status,
              textStatus: textStatus,
              message:
                (body && typeof body.error === 'string' ? body.error : '') ||
                errorThrown ||
                textStatus ||
                'request failed',
              transient:
                status === 0 ||
                status === 408 ||
                status === 429 ||
                status >= 500 ||
                (status >= 200 && status < 300),
              attempt: attempt,
              retryIn: null
            };
            if (info.transient && attempt < RESULT_ATTEMPTS && !self.destroyed) {
              info.retryIn = self._retryDelay(attempt, jqXHR);
              self._resultTimer = window.setTimeout(function () {
                self._loadResult(attempt + 1);
              }, info.retryIn);
            }
            self._emit('error', 'onError', info);
          });
      },

      _showResult: function (html) {
        // The one place the widget inserts HTML from the server: the job's result view,
        // rendered by the app's own template on the server and autoescaped there (never a
        // job's raw data). innerHTML, not jQuery's .html(): a <script> in it does not run.
        this.$result[0].innerHTML = html;
        this.$result.removeAttr('hidden');
        this._emit('result', 'onResult', html);
      },

      _stopResult: function () {
        if (this._resultTimer !== null) {
          window.clearTimeout(this._resultTimer);
          this._resultTimer = null;
        }
        if (this._resultXhr) {
          var rx = this._resultXhr;
          this._resultXhr = null;
          rx.abort();
        }
      },

      // -------------------------------------------------------------- cancel

      _csrfToken: function () {
        var t = this.options.csrfToken;
        if (typeof t === 'function') {
          t = t.call(this.element);
        }
        if (t) {
          return String(t);
        }
        // the server-rendered widget carries the page's token when Flask-WTF is on the app
        var own = this.element.getAttribute('data-' + NAME + '-csrf-token');
        if (own) {
          return own;
        }
        var meta = document.querySelector('meta[name="csrf-token"]');
        return meta ? meta.getAttribute('content') : null;
      },

      // The headers of a state-changing request (cancel, Try again): the same-origin proof
      // and the CSRF token, when there is one.
      _postHeaders: function () {
        var headers = { 'X-Requested-With': 'XMLHttpRequest' };
        var csrf = this._csrfToken();
        if (csrf) {
          headers[this.options.csrfHeader] = csrf;
        }
        return headers;
      },

      cancel: function () {
        if (
          this.destroyed ||
          this.finished ||
          this.cancelPending ||
          this.cancelRequested ||
          !this.token
        ) {
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
        this._cancelAttempt += 1;

        var xhr = $.ajax({
          url: this._endpoint('cancel'),
          type: 'POST',
          dataType: 'json',
          jsonp: false, // JSON only: never a JSONP script, whatever the URL says
          crossDomain: false,
          timeout: this.options.timeout,
          headers: this._postHeaders()
        });
        this._cancelXhr = xhr;
        xhr
          .done(function (doc) {
            if (self._cancelXhr !== xhr) {
              return;
            }
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
          })
          .fail(function (jqXHR, textStatus, errorThrown) {
            if (self._cancelXhr !== xhr) {
              return;
            }
            self._cancelXhr = null;
            var outcome = self._requestFailed('cancel', jqXHR, textStatus, errorThrown);
            if (outcome === 'final') {
              self.cancelPending = false;
              return;
            }
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
            if (
              info.transient &&
              self._cancelAttempt <= self.options.cancelRetries &&
              !self.destroyed &&
              !self.finished &&
              !self.cancelRequested
            ) {
              var delay = self._retryDelay(self._cancelAttempt, jqXHR);
              info.retryIn = delay;
              self._cancelError = self._label('cancelRetrying');
              self._cancelTimer = window.setTimeout(function () {
                self._sendCancel();
              }, delay);
            } else {
              // Not retried (403, 400...), or out of retries: say so; the button works again.
              self.cancelPending = false;
              self._cancelError =
                self._label('cancelFailed') + (serverMessage ? ': ' + serverMessage : '');
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

      // -------------------------------------------------------------- try again

      // Whether the button is offered: the job shown ended failed, cancelled or lost (not
      // a widget stopped by an error of its own: 404, 403...).
      _retryOffered: function () {
        var doc = this.doc;
        return !!(
          this.options.tryAgain &&
          this.finished &&
          !this.destroyed &&
          doc &&
          this.status === doc.status &&
          RETRYABLE[doc.status] === true
        );
      },

      _renderRetry: function () {
        var $b = this.$retry;
        if (!$b.length) {
          return;
        }
        if (!this._retryOffered()) {
          $b.prop('disabled', true).attr('hidden', 'hidden').removeAttr('aria-busy');
          return;
        }
        $b.removeAttr('hidden').prop('disabled', this.retryPending);
        if (this.retryPending) {
          $b.attr('aria-busy', 'true');
        } else {
          $b.removeAttr('aria-busy');
        }
      },

      // "Try again": POST /retry/<token>. Accepted (202, the job queued again, same token):
      // the widget follows it as a new start. Refused: the server's reason in the message
      // line, and the button can be pressed again; never sent again by itself (the user
      // asked once).
      retry: function () {
        if (this.retryPending || !this._retryOffered()) {
          return;
        }
        var self = this;
        this.retryPending = true;
        this._showRetryError('');
        this._renderRetry();
        var xhr = $.ajax({
          url: this._endpoint('retry'),
          type: 'POST',
          dataType: 'json',
          jsonp: false, // JSON only: never a JSONP script, whatever the URL says
          crossDomain: false,
          timeout: this.options.timeout,
          headers: this._postHeaders()
        });
        this._retryXhr = xhr;
        xhr
          .done(function (doc) {
            if (self._retryXhr !== xhr) {
              return;
            }
            self._retryXhr = null;
            self.retryPending = false;
            if (doc && typeof doc === 'object' && typeof doc.status === 'string') {
              self._reopen(doc);
            } else {
              self._retryFailed(
                { kind: 'retry', status: xhr.status, message: 'malformed answer' },
                ''
              );
            }
          })
          .fail(function (jqXHR, textStatus, errorThrown) {
            if (self._retryXhr !== xhr) {
              return; // aborted by destroy()
            }
            self._retryXhr = null;
            self.retryPending = false;
            var status = jqXHR.status || 0;
            var body = jqXHR.responseJSON;
            var serverMessage = body && typeof body.error === 'string' ? body.error : '';
            var info = {
              kind: 'retry',
              status: status,
              textStatus: textStatus,
              message: serverMessage || errorThrown || textStatus || 'request failed'
            };
            if (status === 404) {
              self._halt('notfound', self._label('notFound'), info); // expired, or not ours
              return;
            }
            self._retryFailed(info, serverMessage);
            if (status === 409) {
              self._recheck(); // unfinished: run again from another tab, say
            }
          });
      },

      // A refused or failed "Try again": ``reason``, the server's words, in the message line.
      _retryFailed: function (info, reason) {
        var status = info.status || 0;
        info.transient = status === 0 || status === 408 || status === 429 || status >= 500;
        this._showRetryError(this._label('tryAgainFailed') + (reason ? ': ' + reason : ''));
        this._renderRetry();
        this._emit('error', 'onError', info);
      },

      // Why "Try again" was refused, in the message line ('' puts the job's message back);
      // a widget without one says it on its status line.
      _showRetryError: function (text) {
        this._retryError = text;
        var message = this.doc && this.doc.message != null ? String(this.doc.message) : '';
        if (this.$message.length) {
          setText(this.$message, text || message);
          return;
        }
        var base = this._finalText || this._baseText || '';
        setText(this.$statusLine, text ? (base ? base + ' \u2014 ' : '') + text : base);
      },

      // One look at the job after a 409: if it runs again (from another tab, another
      // device), follow it.
      _recheck: function () {
        var self = this;
        $.ajax({
          url: this._endpoint('progress'),
          type: 'GET',
          dataType: 'json',
          jsonp: false, // JSON only: never a JSONP script, whatever the URL says
          crossDomain: false,
          cache: false,
          timeout: this.options.timeout,
          headers: { 'X-Requested-With': 'XMLHttpRequest' }
        }).done(function (doc) {
          if (
            self.finished &&
            !self.destroyed &&
            !self.retryPending &&
            doc &&
            typeof doc === 'object' &&
            typeof doc.status === 'string' &&
            FINAL[doc.status] !== true
          ) {
            self._reopen(doc);
          }
        });
      },

      // The job runs again (same token): forget how its last run ended, show ``doc`` and
      // follow it as at a start (polls or its event stream; the end fires done again).
      _reopen: function (doc) {
        if (this.destroyed) {
          return;
        }
        this.finished = false;
        this._doneFired = false;
        this._sawUnfinished = false;
        this.cancelRequested = false;
        this.cancelPending = false;
        this._cancelError = '';
        this._finalText = null;
        this._haltLabel = '';
        this.failures = 0;
        this._handleDoc(doc);
        if (!this.finished) {
          this._follow(this.options.interval);
        }
      },

      // -------------------------------------------------------------- callbacks + events

      _emit: function (name, callbackName, payload) {
        var self = this;
        var cb = this.options[callbackName];
        if (typeof cb === 'function') {
          guarded(function () {
            cb.call(self.element, payload, self);
          });
        }
        guarded(function () {
          self.$el.trigger(NAME + ':' + name, [payload]);
        });
      }
    };

    // ---------------------------------------------------------------- the plugin

    function instanceOf(el) {
      var inst = $.data(el, NAME);
      if (inst) {
        return inst;
      }
      inst = el[EXPANDO];
      if (inst && !inst.destroyed) {
        $.data(el, NAME, inst); // created through another copy of jQuery
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
          if (inst) {
            inst[option].apply(inst, args);
          }
        });
      }

      return this.each(function () {
        var existing = instanceOf(this);
        if (existing) {
          if (option === undefined) {
            return; // already running, nothing new asked for
          }
          existing.destroy();
        }
        var inst = new AsyncState(this, option);
        if (inst.refused) {
          return; // its prefix is not a path on this site
        }
        $.data(this, NAME, inst);
        this[EXPANDO] = inst;
        inst.start();
      });
    };

    $.fn[NAME].Constructor = AsyncState;
    $.fn[NAME].labels = SERVER_LABELS; // the server's default labels (read only)
    $.fn[NAME].version = VERSION;

    $.fn[NAME].defaults = {
      token: null,
      prefix: '/asyncstate',
      interval: 1000, // ms between polls
      maxInterval: 30000, // cap of the exponential back-off
      maxRetryAfter: 60000, // cap of a server's Retry-After (ms); at least 1000 is waited
      cancelRetries: 5, // retries of a cancel that failed transiently (503, 429, network)
      timeout: 20000, // ms before a request counts as failed
      mode: 'poll', // "poll" or "auto" (EventSource, falling back to polling)
      label: null, // aria-label of a bar the plugin creates (default: labels.progress)
      notify: false, // a desktop notification at the end (if the user allowed them)
      pageTitle: true, // show the progress in the page title while the tab is hidden
      tryAgain: true, // a "Try again" button once a job ended failed, cancelled or lost
      csrfToken: null, // string or function; default: <meta name="csrf-token">
      csrfHeader: 'X-CSRFToken',
      onProgress: null, // function (doc, instance), this = element
      onDone: null, // function (doc, instance), once, on a final status
      onError: null, // function (errorInfo, instance)
      onResult: null, // function (html, instance), once the result view is shown
      result: false, // the job has a result view (data-asyncstate-result)
      // Label overrides for every widget (``texts`` is the older name); the defaults come
      // from the server: $.fn.asyncstate.labels.
      texts: {},
      labels: {}
    };

    // Initialise every [data-asyncstate-token] inside ``context`` (default: the document).
    $.fn[NAME].autoInit = function (context) {
      $(context || document)
        .find('[data-' + NAME + '-token]')
        .addBack('[data-' + NAME + '-token]')
        .each(function () {
          var manual = this.getAttribute('data-' + NAME + '-manual');
          if (manual !== null && manual !== 'false') {
            return;
          }
          if (instanceOf(this)) {
            return;
          }
          $(this)[NAME]();
        });
    };

    $(function () {
      $.fn[NAME].autoInit(document);
    });
  } // install

  function jQueryNow() {
    var jq = window.jQuery;
    return jq && jq.fn && typeof jq.ajax === 'function' ? jq : null;
  }

  // jQuery loaded after this script (e.g. the page's own copy at the end of <body>): wait
  // for it, on DOMContentLoaded, on window load, and by polling every 50 ms until 10 s
  // after the page loaded, then install the plugin on whatever jQuery the page has. This
  // script never loads jQuery itself. A page script that calls .asyncstate() at once after
  // its late jQuery may run before that: call it from a ready handler, $(function () {...}).
  function whenJQuery(callback) {
    var done = false;
    var loadedAt = document.readyState === 'complete' ? new Date().getTime() : null;
    var timer = null;

    function stop() {
      done = true;
      document.removeEventListener('DOMContentLoaded', check, false);
      window.removeEventListener('load', onLoad, false);
      if (timer !== null) {
        window.clearInterval(timer);
      }
    }

    function check() {
      if (done) {
        return;
      }
      var jq = jQueryNow();
      if (jq) {
        stop();
        callback(jq);
        return;
      }
      if (loadedAt !== null && new Date().getTime() - loadedAt > 10000) {
        stop();
        if (window.console && window.console.error) {
          var slim = window.jQuery && window.jQuery.fn && typeof window.jQuery.ajax !== 'function';
          window.console.error(
            slim
              ? "flask-asyncstate: the page's jQuery has no $.ajax (the slim build?): the " +
                  'progress widgets did not start'
              : 'flask-asyncstate: jQuery never loaded, the progress widgets did not start ' +
                  '(asyncstate.js needs jQuery 3.x on the page)'
          );
        }
      }
    }

    function onLoad() {
      loadedAt = new Date().getTime();
      check();
    }

    document.addEventListener('DOMContentLoaded', check, false);
    window.addEventListener('load', onLoad, false);
    timer = window.setInterval(check, 50);
  }

  var present = jQueryNow();
  if (present) {
    install(present);
  } else {
    whenJQuery(install);
  }
})(window, document);
