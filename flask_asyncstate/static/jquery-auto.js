/*!
 * flask-asyncstate: load jQuery only when the page has none (asyncstate_assets(jquery="auto")).
 * An external script rather than an inline one, so a page with a strict Content Security
 * Policy ('self') needs no nonce for it. Its tag names what to load:
 *   <script src="<prefix>/jquery-auto.js" data-src="<prefix>/jquery.js"></script>
 */
(function (w, d) {
  'use strict';
  if (w.jQuery) { return; }
  var me = d.currentScript;
  var src = me && me.getAttribute('data-src');
  if (!src) { return; }
  var nonce = me.nonce || me.getAttribute('nonce') || '';
  if (d.readyState === 'loading') {  // parsing: a parser-inserted script runs before the next
    var esc = function (v) {
      return String(v).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
    };
    d.write('<script src="' + esc(src) + '"' + (nonce ? ' nonce="' + esc(nonce) + '"' : '') +
            '><\/script>');
  } else {
    var s = d.createElement('script');
    s.src = src;
    if (nonce) { s.nonce = nonce; }
    (d.head || d.documentElement).appendChild(s);
  }
}(window, document));
