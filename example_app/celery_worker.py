"""What ``celery -A example_app.celery_worker worker`` loads: the example app and its Celery app.

Start it with the same environment as the web processes (``REDIS_URL``,
``SECRET_KEY``, ``ASYNCSTATE_EXECUTOR=celery``).
"""

from __future__ import annotations

from example_app import create_app

flask_app = create_app()
#: Found by ``celery -A example_app.celery_worker``: Celery looks for ``app``, then
#: ``celery``, then any Celery app in the module (this is the only one).
celery_app = flask_app.extensions["asyncstate"].executor.celery
