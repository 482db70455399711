"""Configuration: the keys declared once, the tuning keywords, the removed keys, the decorators."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask

from flask_asyncstate import AsyncState
from flask_asyncstate.config import DEFAULTS, KEYS, REMOVED, TUNING, Settings, Tuning, key_name


def _app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="config-test", **config)
    return app


def test_every_key_is_declared_once_with_a_default_a_check_and_a_doc() -> None:
    assert len(KEYS) == len(DEFAULTS) <= 18  # about 16: what an operator trades per deployment
    for field in KEYS + TUNING:
        assert callable(field.metadata["check"]), field.name
        assert field.metadata["doc"].strip(), field.name
    assert list(DEFAULTS) == [key_name(f.name) for f in KEYS]
    assert not set(DEFAULTS) & set(REMOVED)


def test_init_app_sets_the_defaults_and_reads_them_into_settings() -> None:
    app = _app(ASYNCSTATE_MAX_WORKERS=2)
    ext = AsyncState(app)
    try:
        settings = ext.app_state(app).settings
        assert {name: app.config[name] for name in DEFAULTS} == {
            **DEFAULTS,
            "ASYNCSTATE_MAX_WORKERS": 2,
        }
        assert settings.max_workers == 2 and settings.max_jobs_per_owner == 5
        assert settings.tuning == Tuning()
    finally:
        ext.shutdown(0)


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_a_removed_key_raises_naming_what_replaces_it(name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} was removed in 0.2: ") as raised:
        AsyncState(_app(**{name: None}))  # any value, even the old default
    assert REMOVED[name] in str(raised.value)


def test_eager_names_the_inline_executor() -> None:
    with pytest.raises(ValueError) as raised:
        AsyncState(_app(ASYNCSTATE_EAGER=True))
    assert str(raised.value) == (
        "ASYNCSTATE_EAGER was removed in 0.2: set ASYNCSTATE_EXECUTOR = 'inline'"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ASYNCSTATE_MAX_WORKERS": 0}, "ASYNCSTATE_MAX_WORKERS must be a positive number"),
        ({"ASYNCSTATE_EXPIRES": True}, "ASYNCSTATE_EXPIRES must be a positive number"),
        ({"ASYNCSTATE_REDIS_URL": 6379}, "ASYNCSTATE_REDIS_URL must be a redis-py URL"),
        ({"ASYNCSTATE_EXECUTOR": "eager"}, "ASYNCSTATE_EXECUTOR must be one of"),
        ({"ASYNCSTATE_REDIS_SENTINELS": ["nohost"]}, "ASYNCSTATE_REDIS_SENTINELS takes"),
        ({"ASYNCSTATE_REDIS_SENTINELS": []}, "ASYNCSTATE_REDIS_SENTINELS is empty"),
        ({"ASYNCSTATE_MAX_STREAMS": -1}, "ASYNCSTATE_MAX_STREAMS must be None"),
        ({"ASYNCSTATE_TOKEN_MAX_AGE": 0}, "ASYNCSTATE_TOKEN_MAX_AGE must be a positive"),
        ({"ASYNCSTATE_KEEP_FINISHED": 60}, "must be at least ASYNCSTATE_EXPIRES"),
    ],
)
def test_a_bad_value_raises_naming_the_key(config: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        AsyncState(_app(**config))


def test_tuning_keywords_of_the_object_and_of_init_app() -> None:
    ext = AsyncState(sse_max_age=1.0, max_streams_per_owner=2)
    one, two = _app(), _app()
    ext.init_app(one)
    ext.init_app(two, sse_max_age=3.0)  # init_app's keywords win, for that app only
    try:
        assert ext.app_state(one).settings.tuning.sse_max_age == 1.0
        assert ext.app_state(two).settings.tuning.sse_max_age == 3.0
        assert ext.app_state(two).settings.tuning.max_streams_per_owner == 2
        assert ext.app_state(two).streams.per_owner == 2
    finally:
        ext.shutdown(0)


def test_an_unknown_or_bad_tuning_keyword_raises_naming_it() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'sse_max_agee'"):
        AsyncState(sse_max_agee=1.0)
    with pytest.raises(TypeError, match=r"set app.config\['ASYNCSTATE_EXPIRES'\]"):
        AsyncState(_app(), expires=60)
    with pytest.raises(TypeError, match="max_streams_per_owner="):
        AsyncState().init_app(_app(), max_streams_per_session=2)
    with pytest.raises(ValueError, match="the tuning keyword sse_max_age must be a positive"):
        AsyncState(_app(), sse_max_age=0)
    assert [f.name for f in dataclasses.fields(Tuning)] == [f.name for f in TUNING]


def test_settings_check_their_values_however_made() -> None:
    with pytest.raises(ValueError, match="ASYNCSTATE_URL_PREFIX must be a path"):
        Settings(url_prefix="/")
    assert Settings(url_prefix="/jobs/").url_prefix == "/jobs"


@pytest.mark.parametrize("method", ["guard", "admin_guard", "owner_loader"])
def test_the_decorators_take_callables_only(method: str) -> None:
    ext = AsyncState()
    with pytest.raises(TypeError, match=rf"asyncstate.{method}\(\) takes a callable"):
        getattr(ext, method)("myapp.auth:check")

    def check() -> None:
        return None

    assert getattr(ext, method)(check) is check  # usable as a decorator


def test_admin_guard_after_init_app_turns_the_page_on() -> None:
    app = _app()
    ext = AsyncState(app)
    try:
        web = app.test_client()
        assert web.get("/asyncstate/admin/jobs").status_code == 404

        @ext.admin_guard
        def everybody() -> None:
            return None

        assert web.get("/asyncstate/admin/jobs").status_code == 200
    finally:
        ext.shutdown(0)
