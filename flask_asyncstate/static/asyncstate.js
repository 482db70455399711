/*!
 * flask-asyncstate: the jQuery plugin, a thin adapter over the widget's core (asyncstate.mjs).
 * BSD-3-Clause.
 *
 *   $(el).asyncstate({token: '...', interval: 1000, onDone: function (doc, widget) {...}});
 *   $(el).asyncstate('cancel' | 'retry' | 'refresh' | 'destroy');
 *   $(el).asyncstate('instance');  // the core's Widget, or null
 *
 * <prefix>/asyncstate.js serves it as one classic script after the core (window.asyncstate).
 * jQuery must be loaded before it. Options: $.fn.asyncstate.defaults (the core's defaults),
 * then the element's data-asyncstate-* attributes, then the options given; onProgress, onDone,
 * onError and onResult are called with the element as `this`, and the events are triggered on
 * the element as jQuery events "asyncstate:<name>". On document ready every
 * [data-asyncstate-token] starts (data-asyncstate-manual keeps one out).
 */
(function ($, core) {
  'use strict';

  if (typeof $ !== 'function' || !$.fn) {
    throw new Error(
      'flask-asyncstate: asyncstate.js is a jQuery plugin: load jQuery before it ' +
        '(or use asyncstate.mjs, which needs none)'
    );
  }

  const NAME = 'asyncstate';
  const DEFAULTS = core.defaults; // one object with the core's: the page's defaults
  const METHODS = ['cancel', 'retry', 'refresh', 'destroy'];
  const CALLBACKS = {
    transport: null,
    progress: 'onProgress',
    done: 'onDone',
    error: 'onError',
    result: 'onResult'
  };

  // Run the page's code without letting its exception stop the widget; still report it.
  function guarded(fn) {
    try {
      fn();
    } catch (e) {
      setTimeout(() => {
        throw e;
      });
    }
  }

  // The element's data-asyncstate-* attributes as options: data-asyncstate-try-again, tryAgain.
  function dataOptions($el) {
    const out = {};
    $.each($el.data(), (key, value) => {
      const found = /^asyncstate([A-Z])(.*)$/.exec(key);
      if (found) out[found[1].toLowerCase() + found[2]] = value;
    });
    return out;
  }

  function start(element, option) {
    const $el = $(element);
    const data = dataOptions($el);
    const options = $.extend({}, DEFAULTS, data, option);
    // this widget's labels: the attribute's, then the options' (`texts` is the older name)
    options.labels = [data.labels, option && option.texts, option && option.labels];
    const widget = new core.Widget(element, options);
    if (widget.refused) return; // its prefix is not a path on this site
    $.each(CALLBACKS, (name, callback) =>
      widget.addEventListener(name, ({ detail }) => {
        if (typeof options[callback] === 'function') {
          guarded(() => options[callback].call(element, detail, widget));
        }
        guarded(() => $el.trigger(`${NAME}:${name}`, [detail]));
      })
    );
    widget.addEventListener('destroy', () => {
      if ($.data(element, NAME) === widget) $.removeData(element, NAME);
    });
    $.data(element, NAME, widget);
    widget.start();
  }

  function Plugin(option, ...args) {
    if (option === 'instance') return (this.length && $.data(this[0], NAME)) || null;
    if (typeof option === 'string' && !METHODS.includes(option)) {
      throw new Error(`asyncstate: no method named "${option}"`);
    }
    return this.each(function () {
      const widget = $.data(this, NAME);
      if (typeof option === 'string') {
        if (widget) widget[option](...args);
        return;
      }
      if (widget && option === undefined) return; // running already, nothing new asked
      if (widget) widget.destroy(); // started again with these options
      start(this, option);
    });
  }

  // Start every [data-asyncstate-token] inside `context` (the document) not started yet.
  function autoInit(context) {
    $(context || document)
      .find('[data-asyncstate-token]')
      .addBack('[data-asyncstate-token]')
      .each(function () {
        const manual = this.getAttribute('data-asyncstate-manual');
        if ((manual === null || manual === 'false') && !$.data(this, NAME)) start(this);
      });
  }

  $.fn[NAME] = Plugin;
  Plugin.Constructor = core.Widget;
  Plugin.defaults = DEFAULTS;
  Plugin.labels = core.labels; // the server's defaults (read only)
  Plugin.autoInit = autoInit;

  // data-api
  $(() => autoInit(document));
})(window.jQuery, window.asyncstate);
