// ESLint flat config for the browser scripts in flask_asyncstate/static. `npm run lint`,
// or `bash .ci/lint-js` (what CI runs: eslint, then prettier --check).
'use strict';

const js = require('@eslint/js');
const globals = require('globals');

module.exports = [
  {
    files: ['flask_asyncstate/static/**/*.js', 'flask_asyncstate/static/**/*.mjs'],
    languageOptions: {
      // Classic <script>s (no modules, no bundler), written in ES5 on purpose: keep them so.
      ecmaVersion: 5,
      sourceType: 'script',
      // Only the browser's globals: jQuery is always reached through window.jQuery or a
      // parameter, never a bare `$`/`jQuery`, and that stays checked.
      globals: { ...globals.browser }
    },
    linterOptions: {
      reportUnusedDisableDirectives: 'error'
    },
    rules: {
      ...js.configs.recommended.rules,
      // ES5 has no optional catch binding (`catch {}` is ES2019): `catch (e)` must name it.
      'no-unused-vars': ['error', { caughtErrors: 'none' }]
    }
  },
  {
    // The widget's core, an ES module, and the jQuery plugin that <prefix>/asyncstate.js
    // serves after it as one classic script: modern browsers only (fetch, EventTarget,
    // custom elements), whatever the page.
    files: ['flask_asyncstate/static/asyncstate.mjs', 'flask_asyncstate/static/asyncstate.js'],
    languageOptions: { ecmaVersion: 2022 }
  },
  {
    files: ['flask_asyncstate/static/**/*.mjs'],
    languageOptions: { sourceType: 'module' }
  },
  {
    // This file itself (Node, CommonJS).
    files: ['eslint.config.js'],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'commonjs',
      globals: { ...globals.node }
    },
    rules: {
      ...js.configs.recommended.rules
    }
  }
];
