/*!
 * flask-asyncstate: load jQuery only when the page has none (asyncstate_assets(jquery="auto")).
 * An external script rather than an inline one, so a page with a strict Content Security
 * Policy ('self') needs no nonce for it. Its tag names what to load:
 *   <script src="<prefix>/jquery-auto.js" data-src="<prefix>/jquery.js"></script>
 *
 * Its own tag is found through Document.prototype's currentScript getter, never the
 * document's own property: markup a page lets through (<img name="currentScript"
 * data-src="https://elsewhere/x.js"> in a comment) would replace that one (DOM clobbering)
 * and choose the script to load. Anything but a <script> element loads nothing.
 */
(function (w, d) {
  'use strict';
  if (w.jQuery) {
    return;
  }
  var me;
  var getter =
    w.Document &&
    Object.getOwnPropertyDescriptor &&
    Object.getOwnPropertyDescriptor(w.Document.prototype, 'currentScript');
  try {
    me = getter && getter.get ? getter.get.call(d) : d.currentScript;
  } catch (e) {
    me = null;
  }
  if (!me || !(typeof w.HTMLScriptElement === 'function' && me instanceof w.HTMLScriptElement)) {
    if (w.console && w.console.warn) {
      w.console.warn(
        'flask-asyncstate: jquery-auto.js could not find its own <script> tag: ' +
          'jQuery not loaded'
      );
    }
    return;
  }
  var src = me.getAttribute('data-src');
  if (!src) {
    return;
  }
  var nonce = me.nonce || me.getAttribute('nonce') || '';
  if (d.readyState === 'loading') {
    // parsing: a parser-inserted script runs before the next
    var esc = function (v) {
      return String(v).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
    };
    d.write(
      '<script src="' +
        esc(src) +
        '"' +
        (nonce ? ' nonce="' + esc(nonce) + '"' : '') +
        // eslint-disable-next-line no-useless-escape -- <\/ so no HTML parser ends a script here
        '><\/script>'
    );
  } else {
    var s = d.createElement('script');
    s.src = src;
    if (nonce) {
      s.nonce = nonce;
    }
    (d.head || d.documentElement).appendChild(s);
  }
})(window, document);
