"""Placeholder example app; replaced by the product-import demo with the web layer."""

from flask import Flask

from flask_asyncstate.state import StateAPI
from flask_asyncstate.stores import MemoryStore


def create_app() -> Flask:
    app = Flask(__name__)
    state = StateAPI(MemoryStore())

    @app.get("/")
    def index() -> dict:
        state.create({"visits": 0}, name="demo")
        state.update(dict, lambda d: d.update(visits=d["visits"] + 1), name="demo")
        return state.get(dict, name="demo") or {}

    return app
