/* The site's own little jQuery plugin: $(el).highlight() marks an element for a moment. */
(function ($) {
  'use strict';
  $.fn.highlight = function () {
    return this.addClass('highlighted');
  };
}(window.jQuery));
