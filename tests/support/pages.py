"""What the in-process browser tests share: an app served from a thread on a free loopback
port, and a factory of Chromium pages that fail the test on a page error or a request that
leaves the app."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Self

from werkzeug.serving import make_server

#: Runs before the page's scripts: ``document.hidden`` under the test's control.
VISIBILITY = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, 'hidden', {
    configurable: true, get() { return hidden; },
  });
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true, get() { return hidden ? 'hidden' : 'visible'; },
  });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event('visibilitychange'));
    return document.title;
  };
})();
"""


class ThreadedServer:
    """``app`` (with its extension ``ext``) on a free loopback port, in a thread of this
    process; the extension is shut down with it."""

    def __init__(self, app: Any, ext: Any) -> None:
        self.app, self.ext = app, ext
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.thread.join(10)
        self.httpd.server_close()
        with self.app.app_context():
            self.ext.shutdown(timeout=2)


def page_factory(browser: Any, url: str) -> Iterator[Callable[..., Any]]:
    """For a fixture: ``make(*init_scripts, permissions=None)`` gives a page in a fresh
    context (its own session); ``page.requests`` lists its URLs, ``page.console_errors``
    its console errors. After the test: no page error, no request off ``url``."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def make(*init_scripts: str, permissions: list[str] | None = None) -> Any:
        context = browser.new_context()
        context.set_default_timeout(20000)
        if permissions:
            context.grant_permissions(permissions, origin=url)
        contexts.append(context)
        page = context.new_page()
        for script in init_scripts:
            page.add_init_script(script)
        page.errors, page.external, page.requests, page.console_errors = [], [], [], []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None,
        )

        def seen(req: Any) -> None:
            page.requests.append(req.url)
            if not req.url.startswith(url):
                page.external.append(req.url)

        page.on("request", seen)
        pages.append(page)
        return page

    yield make
    for page in pages:
        assert page.errors == [], page.errors
        assert page.external == [], page.external
    for context in contexts:
        context.close()
