"""The extension objects: made once, bound to each app by ``create_app``."""

from flask_login import LoginManager, login_required
from flask_session import Session
from flask_wtf.csrf import CSRFProtect

from flask_asyncstate import AsyncState

asyncstate = AsyncState()
asyncstate.guard(login_required)  # /asyncstate/...: signed-in users only
csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
server_session = Session()
