/*!
 * flask-asyncstate operator's page (templates/asyncstate/admin.html). BSD-3-Clause.
 *
 * Reads its settings from <script type="application/json" id="asyncstate-admin-config">
 * ({prefix, csrfToken, statuses, labels, interval}), polls GET <prefix>/admin/jobs every
 * ``interval`` ms while the tab is visible, and keeps two tables up to date: one row per
 * job (tr.asyncstate-admin-job[data-job-id]) and one per instance
 * (tr.asyncstate-admin-instance[data-instance-id]). Cancel buttons POST
 * <prefix>/admin/cancel/<job id>; the "Run again" button of a job that ended failed,
 * cancelled or lost POSTs <prefix>/admin/retry/<job id>.
 *
 * The filter bar picks one status (kept in the address as #status=<status>): the list is
 * then asked for with ?status=<status>, so the server's cap on the number of jobs listed
 * applies to that status alone. The counts come from the answer's ``counts`` (status ->
 * number) when the server sends them, else from the last list of that status.
 *
 * The prefix must be a path on this site ("/asyncstate"): anything else (a URL, "//host")
 * and the page makes no request at all, with a console warning. Requests go to this page's
 * origin only, as JSON (never JSONP), and so does the CSRF token.
 *
 * Everything the server sends is written with .text() / attributes only; a job shows as its
 * ``label`` (else its ``name``).
 * window.asyncstateAdmin.refresh() polls at once (for scripts and tests).
 */
(function (window, document, $) {
  'use strict';

  if (!$ || !$.fn) {
    if (window.console) {
      window.console.error('asyncstate-admin.js: jQuery is missing');
    }
    return;
  }

  var NAME = 'asyncstate';
  var ADMIN = NAME + '-admin';
  var MAX_DELAY = 30000;
  var WORD = /^[a-z][a-z0-9_-]{0,31}$/;
  var REASON_LABELS = { shutdown: 'reasonShutdown', timeout: 'reasonTimeout' };
  // A parent's non-zero counts shown after its totals, and their labels ({count}).
  var CHILD_LABELS = {
    failed: 'childrenFailed',
    cancelled: 'childrenCancelled',
    lost: 'childrenLost'
  };

  // ---------------------------------------------------------------- helpers

  // This page's origin ("null" for an opaque one).
  function pageOrigin() {
    var loc = window.location;
    return loc.origin || loc.protocol + '//' + loc.host;
  }

  // The prefix as a path on this site (without trailing slashes), or null: "/..." but not
  // "//host" or "/\host", no query, fragment or control characters, and it resolves to
  // this page's origin (the same rule as the widget's, asyncstate.js).
  function checkedPrefix(value) {
    if (typeof value !== 'string') {
      return null;
    }
    if (value !== '' && (value.charAt(0) !== '/' || value.charAt(1) === '/')) {
      return null;
    }
    // eslint-disable-next-line no-control-regex -- refusing control characters is the point
    if (/[\\?#\u0000-\u001f\u007f]/.test(value)) {
      return null;
    }
    var path = value.replace(/\/+$/, '');
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
    return path;
  }

  function readConfig() {
    var node = document.getElementById(ADMIN + '-config');
    var config;
    try {
      config = node ? JSON.parse(node.textContent || 'null') : null;
    } catch (e) {
      config = null;
    }
    config = config && typeof config === 'object' ? config : {};
    var statuses = config.statuses && typeof config.statuses === 'object' ? config.statuses : {};
    var given = config.prefix == null ? '/asyncstate' : config.prefix;
    var prefix = checkedPrefix(given);
    if (prefix === null && window.console && window.console.warn) {
      var shown;
      try {
        shown = JSON.stringify(given);
      } catch (e) {
        shown = String(given);
      }
      window.console.warn(
        'asyncstate-admin.js: refused: the prefix ' +
          shown +
          ' is not a ' +
          'path on this site (one starting with "/", on ' +
          pageOrigin() +
          '); the page makes no request'
      );
    }
    return {
      prefix: prefix, // null: refused, the page does nothing
      origin: pageOrigin(),
      csrfToken: typeof config.csrfToken === 'string' && config.csrfToken ? config.csrfToken : null,
      all: $.isArray(statuses.all) ? statuses.all : [],
      final: $.isArray(statuses.final) ? statuses.final : [],
      labels: config.labels && typeof config.labels === 'object' ? config.labels : {},
      interval: Math.max(500, parseInt(config.interval, 10) || 2000)
    };
  }

  var CONFIG = readConfig();
  var FINAL = {};
  // What "Run again" runs again: a job that ended without succeeding (the server's rule).
  var RETRYABLE = {};
  $.each(CONFIG.final, function (_i, s) {
    FINAL[s] = true;
    if (s !== 'succeeded') {
      RETRYABLE[s] = true;
    }
  });

  function has(obj, key) {
    return Object.prototype.hasOwnProperty.call(obj, key);
  }

  function label(key) {
    var value = CONFIG.labels[key];
    return typeof value === 'string' ? value : String(key);
  }

  function format(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (all, key) {
      return has(values, key) ? String(values[key]) : all;
    });
  }

  function isNumber(v) {
    return typeof v === 'number' && isFinite(v);
  }

  function word(v) {
    return typeof v === 'string' && WORD.test(v) ? v : '';
  }

  function str(v) {
    return v == null ? '' : String(v);
  }

  // What a job is called on screen: its display label, else its name.
  function labelOf(job) {
    return str(job.label || job.name);
  }

  function orNone(v) {
    var s = str(v);
    return s === '' ? label('adminNone') : s;
  }

  function setText($node, text) {
    if ($node.text() !== text) {
      $node.text(text);
    }
  }

  // "42 s", "3 min", "5 h", "2 d" (floored).
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) {
      return format(label('adminSeconds'), { n: s });
    }
    if (s < 3600) {
      return format(label('adminMinutes'), { n: Math.floor(s / 60) });
    }
    if (s < 86400) {
      return format(label('adminHours'), { n: Math.floor(s / 3600) });
    }
    return format(label('adminDays'), { n: Math.floor(s / 86400) });
  }

  function since(now, then) {
    return isNumber(now) && isNumber(then) ? duration(now - then) : label('adminNone');
  }

  function ago(now, then) {
    return isNumber(now) && isNumber(then)
      ? format(label('adminAgo'), { age: duration(now - then) })
      : label('adminNone');
  }

  function statusName(status) {
    var s = str(status);
    var shortKey = 'adminStatus' + s.charAt(0).toUpperCase() + s.slice(1);
    if (typeof CONFIG.labels[shortKey] === 'string') {
      return CONFIG.labels[shortKey];
    }
    return typeof CONFIG.labels[s] === 'string' ? CONFIG.labels[s] : s;
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
    return type && message ? type + ': ' + message : type || message;
  }

  function percentOf(job) {
    if (isNumber(job.percent)) {
      return Math.max(0, Math.min(100, job.percent));
    }
    return null;
  }

  // The absolute URL of ``path`` under the checked prefix, on this page's origin only.
  function endpoint(path) {
    return CONFIG.origin + CONFIG.prefix + path;
  }

  function requestHeaders(post) {
    var headers = { 'X-Requested-With': 'XMLHttpRequest' };
    if (post && CONFIG.csrfToken) {
      headers['X-CSRFToken'] = CONFIG.csrfToken;
    }
    return headers;
  }

  function failureText(jqXHR, textStatus, errorThrown) {
    var body = jqXHR && jqXHR.responseJSON;
    if (body && typeof body.error === 'string' && body.error) {
      return body.error;
    }
    if (jqXHR && jqXHR.status) {
      return 'HTTP ' + jqXHR.status;
    }
    return errorThrown || textStatus || 'network error';
  }

  // ---------------------------------------------------------------- state

  var state = {
    jobs: [], // the last list, newest first
    counts: {}, // status ('' for all) -> number of jobs
    instances: [],
    now: null, // the server's clock at the last answer
    filter: '', // a status, or '' for all
    rows: {}, // job id -> {$tr, cells...}
    instanceRows: {}, // instance id -> {$tr, cells...}
    pending: {}, // job id -> true while its cancel or run-again request is in flight
    notes: {}, // job id -> a note shown in its row (a cancel or run again that failed)
    parents: {}, // child job id -> its parent's document, when the parent is listed too
    xhr: null,
    timer: null,
    failures: 0,
    loaded: false
  };

  var $root = $('#' + ADMIN);
  var $notice = $('#' + ADMIN + '-notice');
  var $filters = $('#' + ADMIN + '-filters');
  var $jobsBody = $('#' + ADMIN + '-jobs > tbody');
  var $jobsEmpty = $('#' + ADMIN + '-jobs-empty');
  var $instancesBody = $('#' + ADMIN + '-instances > tbody');
  var $instancesEmpty = $('#' + ADMIN + '-instances-empty');

  // ---------------------------------------------------------------- the filter bar

  function filterFromHash() {
    var found = /(?:^#|&)status=([^&]*)/.exec(window.location.hash || '');
    var value = found ? decodeURIComponent(found[1]) : '';
    return $.inArray(value, CONFIG.all) >= 0 ? value : '';
  }

  function setFilter(status, remember) {
    var changed = state.filter !== status;
    state.filter = status;
    $filters.find('.' + ADMIN + '-filter').each(function () {
      var on = (this.getAttribute('data-status') || '') === status;
      this.setAttribute('aria-pressed', on ? 'true' : 'false');
      $(this).toggleClass(ADMIN + '-filter--active', on);
    });
    if (remember && window.history && window.history.replaceState) {
      var url =
        window.location.pathname +
        window.location.search +
        (status ? '#status=' + encodeURIComponent(status) : '');
      window.history.replaceState(null, '', url);
    }
    renderJobs();
    if (changed && state.loaded) {
      abortRefresh();
      refresh(); // the list of that status, now
    }
  }

  // The counts of the filter buttons, from an answer to a list of ``filter``.
  function updateCounts(body, filter) {
    var given = body.counts;
    if (given && typeof given === 'object' && !$.isArray(given)) {
      var total = 0;
      state.counts = {};
      $.each(given, function (s, n) {
        if (isNumber(n)) {
          state.counts[s] = n;
          total += n;
        }
      });
      state.counts[''] = total;
      return;
    }
    if (filter === '') {
      state.counts = { '': state.jobs.length };
      $.each(state.jobs, function (_i, job) {
        var s = str(job.status);
        state.counts[s] = (state.counts[s] || 0) + 1;
      });
    } else {
      state.counts[filter] = state.jobs.length;
    }
  }

  function renderCounts() {
    $filters.find('.' + ADMIN + '-filter').each(function () {
      var s = this.getAttribute('data-status') || '';
      setText($(this).find('.' + ADMIN + '-count'), String(state.counts[s] || 0));
    });
  }

  // ---------------------------------------------------------------- job rows

  function cell(className) {
    return $('<td>', { 'class': ADMIN + '-' + className });
  }

  function makeJobRow(id) {
    var row = { $tr: $('<tr>', { 'class': ADMIN + '-job' }) };
    row.$tr.attr('data-job-id', id);
    row.$name = cell('name');
    row.$nameText = $('<span>', { 'class': ADMIN + '-name-text' }).appendTo(row.$name);
    row.$partOf = $('<span>', { 'class': ADMIN + '-visually-hidden' }).appendTo(row.$name);
    row.$status = cell('status');
    row.$statusName = $('<span>', { 'class': ADMIN + '-status-name' }).appendTo(row.$status);
    row.$reason = $('<span>', { 'class': ADMIN + '-reason' }).appendTo(row.$status);
    row.$owner = cell('owner');
    row.$instance = cell('instance');
    row.$age = cell('age');
    row.$progress = cell('progress');
    row.$widget = $('<div>', { 'class': NAME + ' ' + ADMIN + '-bar' }).appendTo(row.$progress);
    row.$bar = $('<div>', {
      'class': NAME + '-bar',
      role: 'progressbar',
      'aria-valuemin': 0,
      'aria-valuemax': 100
    }).appendTo(row.$widget);
    row.$fill = $('<div>', { 'class': NAME + '-fill' }).appendTo(row.$bar);
    row.$percent = $('<span>', { 'class': ADMIN + '-percent' }).appendTo(row.$progress);
    row.$children = $('<span>', { 'class': ADMIN + '-children' }).appendTo(row.$progress);
    row.$message = cell('message');
    row.$messageText = $('<span>', { 'class': ADMIN + '-message-text' }).appendTo(row.$message);
    row.$error = $('<span>', { 'class': ADMIN + '-error' }).appendTo(row.$message);
    row.$note = $('<span>', { 'class': ADMIN + '-note', role: 'status' }).appendTo(row.$message);
    row.$actions = cell('actions');
    row.$cancel = $('<button>', {
      type: 'button',
      'class': ADMIN + '-cancel ' + NAME + '-cancel'
    }).appendTo(row.$actions);
    row.$cancel.on('click', function (event) {
      event.preventDefault();
      cancelJob(id);
    });
    row.$retry = $('<button>', {
      type: 'button',
      'class': ADMIN + '-retry',
      hidden: 'hidden'
    }).appendTo(row.$actions);
    row.$retry.on('click', function (event) {
      event.preventDefault();
      runAgain(id);
    });
    row.$tr.append(
      row.$name,
      row.$status,
      row.$owner,
      row.$instance,
      row.$age,
      row.$progress,
      row.$message,
      row.$actions
    );
    return row;
  }

  // "31 of 40 done, 1 failed": a parent's children (the widget's labels), '' for others.
  function childrenText(counts) {
    if (!counts || typeof counts !== 'object' || !isNumber(counts.total) || counts.total <= 0) {
      return '';
    }
    function n(key) {
      return isNumber(counts[key]) ? counts[key] : 0;
    }
    var values = $.extend({}, counts, {
      done: Math.max(0, n('total') - n('queued') - n('running'))
    });
    var text = format(label('children'), values);
    $.each(CHILD_LABELS, function (key, name) {
      if (n(key) > 0) {
        text += ', ' + format(label(name), { count: n(key) });
      }
    });
    return text;
  }

  function renderJobRow(row, job) {
    var id = str(job.id);
    var status = str(job.status);
    var isFinal = FINAL[status] === true;
    var reason = word(job.reason);
    var cancelling = !isFinal && job.cancel_requested === true;
    var statusClass = word(status);

    var classes = [ADMIN + '-job'];
    if (statusClass) {
      classes.push(ADMIN + '-job--' + statusClass);
    }
    if (reason) {
      classes.push(ADMIN + '-job--reason-' + reason);
    }
    if (cancelling) {
      classes.push(ADMIN + '-job--cancelling');
    }
    var parent = state.parents[id]; // the parent's document, when it is listed above
    if (parent) {
      classes.push(ADMIN + '-job--child');
    }
    if (job.children && typeof job.children === 'object') {
      classes.push(ADMIN + '-job--parent');
    }
    if (row.$tr.attr('class') !== classes.join(' ')) {
      row.$tr.attr('class', classes.join(' '));
    }
    row.$tr.attr('data-status', status);
    row.$tr.prop('hidden', state.filter !== '' && state.filter !== status);

    setText(row.$nameText, labelOf(job));
    setText(row.$partOf, parent ? format(label('adminPartOf'), { name: labelOf(parent) }) : '');
    if (parent) {
      row.$tr.attr('data-parent-id', str(parent.id));
    } else {
      row.$tr.removeAttr('data-parent-id');
    }
    row.$status.attr(
      'class',
      ADMIN + '-status' + (statusClass ? ' ' + ADMIN + '-status--' + statusClass : '')
    );
    setText(row.$statusName, cancelling ? label('cancelling') : statusName(status));
    setText(
      row.$reason,
      isFinal && reason && has(REASON_LABELS, reason) ? label(REASON_LABELS[reason]) : ''
    );
    setText(row.$owner, orNone(job.owner));
    setText(row.$instance, orNone(job.instance));
    setText(row.$age, since(state.now, job.created_at));

    // The bar: the widget's own classes, so it looks (and animates) the same.
    var pct = percentOf(job);
    var shown = status === 'succeeded' ? 100 : pct === null ? null : Math.floor(pct);
    var widgetClasses = [NAME, ADMIN + '-bar'];
    if (statusClass) {
      widgetClasses.push(NAME + '--' + statusClass);
    }
    if (shown === null && !isFinal) {
      widgetClasses.push(NAME + '--indeterminate');
    }
    if (cancelling) {
      widgetClasses.push(NAME + '--cancelling');
    }
    row.$widget.attr('class', widgetClasses.join(' '));
    row.$bar.attr(
      'aria-label',
      format(label('adminProgress') + ': {name}', { name: labelOf(job) })
    );
    if (shown === null) {
      row.$bar.removeAttr('aria-valuenow');
      row.$fill.css('width', '');
      setText(row.$percent, '');
    } else {
      row.$bar.attr('aria-valuenow', shown);
      row.$fill.css('width', shown + '%');
      setText(row.$percent, shown + '%');
    }
    row.$bar.attr('aria-valuetext', shown === null ? statusName(status) : shown + '%');
    setText(row.$children, childrenText(job.children));

    setText(row.$messageText, str(job.message));
    setText(row.$error, status === 'failed' ? errorDetail(job.error) : '');
    setText(row.$note, state.notes[id] || '');

    if (isFinal) {
      row.$cancel.prop('disabled', true).attr('hidden', 'hidden');
    } else {
      var busy = cancelling || state.pending[id] === true;
      row.$cancel.removeAttr('hidden').prop('disabled', busy);
      if (busy) {
        row.$cancel.attr('aria-busy', 'true');
      } else {
        row.$cancel.removeAttr('aria-busy');
      }
      setText(row.$cancel, cancelling ? label('cancelling') : label('cancel'));
      row.$cancel.attr('aria-label', format(label('adminCancelJob'), { name: labelOf(job) }));
    }

    if (RETRYABLE[status] === true) {
      var asked = state.pending[id] === true;
      row.$retry.removeAttr('hidden').prop('disabled', asked);
      if (asked) {
        row.$retry.attr('aria-busy', 'true');
      } else {
        row.$retry.removeAttr('aria-busy');
      }
      setText(row.$retry, label('adminRunAgain'));
      row.$retry.attr('aria-label', format(label('adminRunAgainJob'), { name: labelOf(job) }));
    } else {
      // no text while hidden: the cell's text is the one button shown
      row.$retry.prop('disabled', true).attr('hidden', 'hidden').removeAttr('aria-busy');
      setText(row.$retry, '');
    }
  }

  // Keep the rows in the list's order, touching the DOM only where something moved (a
  // focused Cancel button keeps its focus).
  function placeRows($body, rows, ids) {
    var body = $body[0];
    $.each(ids, function (index, id) {
      var tr = rows[id].$tr[0];
      if (body.children[index] !== tr) {
        body.insertBefore(tr, body.children[index] || null);
      }
    });
  }

  // The list in the order shown: newest first, each listed parent followed by its listed
  // children (newest first) and theirs; a child whose parent is not listed stands on its own. Sets
  // state.parents (child id -> its parent's document).
  function grouped(jobs) {
    var byId = {};
    var kids = {};
    state.parents = {};
    $.each(jobs, function (_i, job) {
      var id = str(job.id);
      if (id && !has(byId, id)) {
        byId[id] = job;
      }
    });
    $.each(jobs, function (_i, job) {
      var parent = str(job.parent);
      if (parent && has(byId, parent) && parent !== str(job.id)) {
        state.parents[str(job.id)] = byId[parent];
        (kids[parent] = kids[parent] || []).push(job);
      }
    });
    var out = [];
    var seen = {};
    // A job, then its listed children and theirs (a child may spawn too), 10 levels at most.
    function emit(job, depth) {
      var id = str(job.id);
      if (has(seen, id)) {
        return;
      }
      seen[id] = true;
      out.push(job);
      if (depth < 10) {
        $.each(kids[id] || [], function (_j, kid) {
          emit(kid, depth + 1);
        });
      }
    }
    $.each(jobs, function (_i, job) {
      if (!has(state.parents, str(job.id))) {
        emit(job, 0);
      }
    });
    $.each(jobs, function (_i, job) {
      emit(job, 10); // deeper, or parents in a loop: each still listed once
    });
    return out;
  }

  function renderJobs() {
    var seen = {};
    var ids = [];
    var visible = 0;
    $.each(grouped(state.jobs), function (_i, job) {
      var id = str(job.id);
      if (!id || has(seen, id)) {
        return;
      }
      seen[id] = true;
      ids.push(id);
      var row = state.rows[id] || (state.rows[id] = makeJobRow(id));
      renderJobRow(row, job);
      if (!row.$tr.prop('hidden')) {
        visible += 1;
      }
    });
    $.each(state.rows, function (id, row) {
      if (!has(seen, id)) {
        row.$tr.remove();
        delete state.rows[id];
        delete state.notes[id];
      }
    });
    placeRows($jobsBody, state.rows, ids);
    renderCounts();
    var empty = '';
    if (state.loaded && !visible) {
      empty = state.filter || state.jobs.length ? label('adminNoMatch') : label('adminNoJobs');
    }
    setText($jobsEmpty, empty);
    $jobsEmpty.prop('hidden', !empty);
  }

  // ---------------------------------------------------------------- instance rows

  function makeInstanceRow(id) {
    var row = { $tr: $('<tr>', { 'class': ADMIN + '-instance' }) };
    row.$tr.attr('data-instance-id', id);
    $.each(['id', 'host', 'pid', 'role', 'engine', 'jobs', 'started', 'beat'], function (_i, name) {
      row['$' + name] = cell('instance-' + name).appendTo(row.$tr);
    });
    return row;
  }

  function renderInstances() {
    var seen = {};
    var ids = [];
    $.each(state.instances, function (_i, inst) {
      var id = str(inst.id);
      if (!id || has(seen, id)) {
        return;
      }
      seen[id] = true;
      ids.push(id);
      var row = state.instanceRows[id] || (state.instanceRows[id] = makeInstanceRow(id));
      var role = word(str(inst.role).replace(/\s+/g, '-'));
      row.$tr.attr('class', ADMIN + '-instance' + (role ? ' ' + ADMIN + '-instance--' + role : ''));
      setText(row.$id, id);
      setText(row.$host, orNone(inst.host));
      setText(row.$pid, orNone(inst.pid));
      setText(row.$role, orNone(inst.role));
      setText(row.$engine, orNone(inst.engine));
      var count = $.isArray(inst.jobs) ? inst.jobs.length : inst.jobs;
      setText(row.$jobs, orNone(count));
      setText(row.$started, ago(state.now, inst.started_at));
      setText(row.$beat, ago(state.now, inst.beat_at));
    });
    $.each(state.instanceRows, function (id, row) {
      if (!has(seen, id)) {
        row.$tr.remove();
        delete state.instanceRows[id];
      }
    });
    placeRows($instancesBody, state.instanceRows, ids);
    var empty = state.loaded && !ids.length;
    setText($instancesEmpty, empty ? label('adminNoInstances') : '');
    $instancesEmpty.prop('hidden', !empty);
  }

  // ---------------------------------------------------------------- polling

  function schedule(delay) {
    if (state.timer !== null) {
      window.clearTimeout(state.timer);
      state.timer = null;
    }
    if (document.hidden) {
      return; // visibilitychange polls again
    }
    state.timer = window.setTimeout(function () {
      state.timer = null;
      refresh();
    }, delay);
  }

  function abortRefresh() {
    if (state.xhr) {
      var x = state.xhr;
      state.xhr = null;
      x.abort();
    }
  }

  function refresh() {
    if (state.xhr || CONFIG.prefix === null) {
      return;
    }
    if (state.timer !== null) {
      window.clearTimeout(state.timer);
      state.timer = null;
    }
    var filter = state.filter;
    var xhr = $.ajax({
      url: endpoint('/admin/jobs') + (filter ? '?status=' + encodeURIComponent(filter) : ''),
      type: 'GET',
      dataType: 'json',
      jsonp: false, // JSON only: never a JSONP script, whatever the URL says
      crossDomain: false,
      cache: false,
      timeout: 15000,
      headers: requestHeaders(false)
    });
    state.xhr = xhr;
    xhr
      .done(function (body) {
        if (state.xhr !== xhr) {
          return;
        }
        state.xhr = null;
        if (!body || typeof body !== 'object' || !$.isArray(body.jobs)) {
          failed('malformed answer');
          return;
        }
        state.failures = 0;
        state.loaded = true;
        state.now = isNumber(body.now) ? body.now : null;
        state.jobs = $.grep(body.jobs, function (j) {
          return j && typeof j === 'object';
        });
        state.instances = $.grep($.isArray(body.instances) ? body.instances : [], function (i) {
          return i && typeof i === 'object';
        });
        updateCounts(body, filter);
        setText($notice, '');
        $root.removeClass(ADMIN + '--failing');
        renderJobs();
        renderInstances();
        $root.trigger(ADMIN + ':refresh', [body]);
        schedule(CONFIG.interval);
      })
      .fail(function (jqXHR, textStatus, errorThrown) {
        if (state.xhr !== xhr) {
          return; // aborted: another list was asked for
        }
        state.xhr = null;
        failed(failureText(jqXHR, textStatus, errorThrown));
      });
  }

  function failed(message) {
    state.failures += 1;
    $root.addClass(ADMIN + '--failing');
    setText($notice, format(label('adminRefreshFailed'), { error: message }));
    schedule(Math.min(CONFIG.interval * Math.pow(2, state.failures), MAX_DELAY));
  }

  // ---------------------------------------------------------------- cancel

  function jobById(id) {
    for (var i = 0; i < state.jobs.length; i += 1) {
      if (str(state.jobs[i].id) === id) {
        return state.jobs[i];
      }
    }
    return null;
  }

  function rerender(id) {
    var job = jobById(id);
    if (job && state.rows[id]) {
      renderJobRow(state.rows[id], job);
    }
  }

  // POST <prefix>/admin/<action>/<id> for one row: its buttons are busy meanwhile; the
  // answer's document updates the row, a failure leaves a note in it (``failedLabel`` and
  // the server's reason).
  function act(id, action, failedLabel, applied) {
    if (state.pending[id] || CONFIG.prefix === null) {
      return;
    }
    state.pending[id] = true;
    delete state.notes[id];
    rerender(id);
    $.ajax({
      url: endpoint('/admin/' + action + '/' + encodeURIComponent(id)),
      type: 'POST',
      dataType: 'json',
      jsonp: false,
      crossDomain: false,
      timeout: 15000,
      headers: requestHeaders(true)
    })
      .done(function (doc) {
        var job = jobById(id);
        if (job && doc && typeof doc === 'object' && typeof doc.status === 'string') {
          $.each(doc, function (key, value) {
            if (has(job, key) || key === 'status') {
              job[key] = value;
            }
          });
        }
        if (job) {
          applied(job);
        }
      })
      .fail(function (jqXHR, textStatus, errorThrown) {
        state.notes[id] = label(failedLabel) + ': ' + failureText(jqXHR, textStatus, errorThrown);
      })
      .always(function () {
        delete state.pending[id];
        rerender(id);
        schedule(300); // the store has the news soon: show it
      });
  }

  function cancelJob(id) {
    act(id, 'cancel', 'cancelFailed', function (job) {
      if (!FINAL[str(job.status)]) {
        job.cancel_requested = true;
      }
    });
  }

  // "Run again": the job, by id, queued again with its arguments (202), as its owner's
  // "Try again" does; 409 while it is unfinished, 429 over its owner's quota.
  function runAgain(id) {
    act(id, 'retry', 'adminRunAgainFailed', function () {});
  }

  // ---------------------------------------------------------------- start

  $filters.on('click', '.' + ADMIN + '-filter', function (event) {
    event.preventDefault();
    setFilter(this.getAttribute('data-status') || '', true);
  });

  document.addEventListener(
    'visibilitychange',
    function () {
      if (document.hidden) {
        if (state.timer !== null) {
          window.clearTimeout(state.timer);
          state.timer = null;
        }
      } else {
        refresh();
      }
    },
    false
  );

  window.asyncstateAdmin = { refresh: refresh, config: CONFIG, setFilter: setFilter };

  $(function () {
    if (CONFIG.prefix === null) {
      return; // refused: see readConfig
    }
    setFilter(filterFromHash(), false);
    if (!document.hidden) {
      refresh();
    }
  });
})(window, document, window.jQuery);
