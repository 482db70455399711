"""``gunicorn 'real_app.wsgi:app'``: the app, configured from the environment."""

from . import create_app

app = create_app()
