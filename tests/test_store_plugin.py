"""``ASYNCSTATE_STORE`` plugs in a store: an instance, a subclass, or an import string naming one."""

from __future__ import annotations

import pytest
from support.apps import define_jobs

from flask_asyncstate.stores import MemoryStore


class CountingStore(MemoryStore):
    """A third-party backend in miniature: counts the documents it was asked to write."""

    writes = 0

    def _write(self, key, text):
        CountingStore.writes += 1
        return super()._write(key, text)


@pytest.mark.parametrize("spec", ["test_store_plugin.CountingStore", CountingStore])
def test_store_by_import_string_or_class_gets_the_configured_options(make_app, spec) -> None:
    app, ext = make_app(ASYNCSTATE_STORE=spec, ASYNCSTATE_EXPIRES=123)
    store = ext.app_state(app).store
    assert type(store) is CountingStore
    assert store.expires == 123 and store.key_prefix == "test:"
    before = CountingStore.writes
    with app.app_context():
        assert define_jobs(ext)["count"].start(3).wait(10)["status"] == "succeeded"
    assert CountingStore.writes > before


def test_store_instance_is_used_as_given(make_app) -> None:
    mine = MemoryStore(key_prefix="mine:")
    app, ext = make_app(ASYNCSTATE_STORE=mine)
    assert ext.app_state(app).store is mine


@pytest.mark.parametrize("spec", ["builtins.dict", 42])
def test_anything_else_is_refused_saying_what_is_expected(make_app, spec) -> None:
    with pytest.raises(TypeError, match="ASYNCSTATE_STORE must be a Store instance"):
        make_app(ASYNCSTATE_STORE=spec)
