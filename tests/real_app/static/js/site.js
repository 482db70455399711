/* Site behaviour: a finished export's download link is highlighted. */
(function ($) {
  'use strict';
  $(document).on('asyncstate:result', '.asyncstate', function () {
    $(this).find('a.download').highlight();
  });
}(window.jQuery));
