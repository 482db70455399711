"""The extension objects, created once and bound to each app in ``create_app``."""

from __future__ import annotations

from flask_login import LoginManager, login_required
from flask_session import Session
from flask_wtf.csrf import CSRFProtect

from flask_asyncstate import AsyncState

asyncstate = AsyncState()
asyncstate.guard(login_required)  # every route of its blueprint: signed-in users only
csrf = CSRFProtect()
login_manager = LoginManager()
server_session = Session()
