"""The OpenAPI 3.1 description of the blueprint's routes, served at ``<prefix>/openapi.json``.

:func:`describe` builds it for one app from what the code itself uses, so that it cannot
drift from what the routes do:

- the paths and methods: every rule of the blueprint in the app's URL map, each
  described by :data:`OPERATIONS` (HEAD and OPTIONS are left out: HEAD answers as GET
  does, OPTIONS ``{"allow": [...]}`` on every route). A rule that :data:`OPERATIONS` does
  not describe still appears, as "not described", and the tests fail;
- the progress document: :data:`~flask_asyncstate.records.PUBLIC_FIELDS`, each typed by
  :data:`FIELDS`, with the statuses of :class:`~flask_asyncstate.JobStatus` and the
  reasons of :data:`~flask_asyncstate.records.REASONS`; the operator's rows from
  :data:`~flask_asyncstate.records.ADMIN_FIELDS`;
- the proofs: the session cookie of the app, the same-origin header (or ``Origin``)
  of every state-changing route, and Flask-WTF's CSRF header while ``CSRFProtect`` is
  on the app, named as its ``WTF_CSRF_HEADERS`` say;
- the server: the app's script root and ``ASYNCSTATE_URL_PREFIX``, so the paths are
  those of the blueprint and ``servers`` says where it is mounted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, has_request_context, request

from . import appstate, templating
from .records import ADMIN_FIELDS, CHILD_COUNTS, PUBLIC_FIELDS, REASONS
from .security import NOT_FOUND, csrf_header
from .status import JobStatus

#: The OpenAPI version of the description.
VERSION = "3.1.0"
#: The blueprint's name, the start of each of its endpoints.
BLUEPRINT = "asyncstate"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


#: The schema of each field of the progress document, by name (every name of
#: ``PUBLIC_FIELDS`` has one: a test says so).
FIELDS: dict[str, Schema] = {
    "id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "The job id."},
    "name": {"type": "string", "description": "The job's registered name."},
    "label": {
        "type": "string",
        "description": "What users see the job called (its ``label=``, else its name).",
    },
    "status": {
        "type": "string",
        "enum": [s.value for s in JobStatus],
        "description": "queued -> running -> succeeded, failed or cancelled; or lost.",
    },
    "current": {"type": "number", "description": "Units of work done."},
    "total": _nullable("number", description="Units of work in all; null while unknown."),
    "percent": _nullable(
        "number", minimum=0, maximum=100, description="current / total; null while unknown."
    ),
    "message": _nullable("string", description="The last progress message."),
    "result": {"description": "What the job returned, once it succeeded (any JSON); else null."},
    "error": {
        "type": ["object", "null"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        "required": ["type", "message"],
        "description": "Why a failed or lost job ended (never a traceback); else null.",
    },
    "cancel_requested": {"type": "boolean", "description": "A cancel was asked for."},
    "created_at": {"type": "number", "description": "Unix time the job was made."},
    "updated_at": {"type": "number", "description": "Unix time of the last write."},
    "started_at": _nullable("number", description="Unix time it started; null while queued."),
    "rate": _nullable("number", description="Units of current per second, smoothed."),
    "eta": _nullable("number", minimum=0, description="Seconds left, while it runs."),
    "reason": {
        "enum": [*REASONS, None],
        "description": "What ended the job; null while unfinished and when it succeeded.",
    },
    "attempt": {"type": "integer", "minimum": 1, "description": "This run's number (1-based)."},
    "max_attempts": {"type": "integer", "minimum": 1, "description": "Runs it may take."},
    "retry_at": _nullable("number", description="Unix time of the next run, while it waits."),
    "resumed": {"type": "boolean", "description": "This run resumed an interrupted one."},
    "children": {
        "type": ["object", "null"],
        "properties": {name: {"type": "integer", "minimum": 0} for name in CHILD_COUNTS},
        "description": "A parent job's counts of its children (job.spawn); else null.",
    },
    "stage": _nullable("string", description="The step the job is at (job.stage)."),
    "stages": {
        "type": ["array", "null"],
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "status": {"enum": ["running", "done", "failed", "cancelled"]},
                "started_at": {"type": "number"},
                "ended_at": {"type": ["number", "null"]},
            },
            "required": ["name", "status", "started_at", "ended_at"],
        },
        "maxItems": 50,
        "description": "Every step the job named, in order (job.stage); null if none.",
    },
    "log": {
        "type": ["array", "null"],
        "items": {
            "type": "object",
            "properties": {"at": {"type": "number"}, "text": {"type": "string", "maxLength": 500}},
            "required": ["at", "text"],
        },
        "maxItems": 20,
        "description": "The last lines of the job's trail (job.log); null if none.",
    },
}


def _json_text(schema: Schema) -> Schema:
    """A string holding a JSON document that fits ``schema`` (an event's data)."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _schemas() -> dict[str, Schema]:
    undescribed = {"description": "Not described yet."}
    admin_row = {f: FIELDS.get(f, undescribed) for f in ADMIN_FIELDS}
    admin_row["owner"] = _nullable("string", description="The owner's id, its first 8 characters.")
    admin_row["instance"] = _nullable("string", description="The instance that runs it.")
    admin_row["parent"] = _nullable(
        "string", description="The id of the job that spawned it (job.spawn); else null."
    )
    return {
        "ProgressDocument": {
            "type": "object",
            "properties": {f: FIELDS.get(f, undescribed) for f in PUBLIC_FIELDS},
            "required": list(PUBLIC_FIELDS),
        },
        "ListedJob": {
            "allOf": [
                _ref("ProgressDocument"),
                {
                    "type": "object",
                    "properties": {"token": {"type": "string"}},
                    "required": ["token"],
                },
            ]
        },
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
            "example": {"error": NOT_FOUND},
        },
        "Refusal": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "login_url": {"type": "string", "description": "Where to sign in, and back."},
            },
            "required": ["error"],
            "example": {"error": "login required", "login_url": "/login?next=%2F"},
        },
        "Event": {
            "description": (
                "One event of the stream, as an EventSource reads it (before OpenAPI 3.2's"
                " itemSchema, a text/event-stream schema describes each event)."
            ),
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "event": {"enum": ["message", "end"]},
                        "data": {
                            "type": "string",
                            "description": (
                                "The progress document as JSON (or, for a job that is gone,"
                                ' {"error": ...}); with format=html the htmx widget.'
                            ),
                        },
                    },
                    "required": ["event", "data"],
                },
                {
                    "type": "object",
                    "properties": {
                        "event": {"const": "unavailable"},
                        "data": _json_text(_ref("Error")),
                    },
                    "required": ["event", "data"],
                },
                {
                    "type": "object",
                    "properties": {
                        "event": {"const": "reconnect"},
                        "data": _json_text(
                            {
                                "type": "object",
                                "properties": {"reason": {"type": "string"}},
                                "required": ["reason"],
                            }
                        ),
                    },
                    "required": ["event", "data"],
                },
            ],
        },
        "Dismissed": {
            "type": "object",
            "properties": {"dismissed": {"const": True}},
            "required": ["dismissed"],
        },
        "ResultView": {
            "type": "object",
            "properties": {"html": {"type": "string", "description": "The slot's HTML."}},
            "required": ["html"],
        },
        "AdminRow": {"type": "object", "properties": admin_row, "required": list(admin_row)},
        "AdminJobs": {
            "type": "object",
            "properties": {
                "now": {"type": "number", "description": "The server's Unix time."},
                "counts": {
                    "type": "object",
                    "propertyNames": {"enum": [s.value for s in JobStatus]},
                    "additionalProperties": {"type": "integer", "minimum": 0},
                    "description": "Jobs of each status among the ones read.",
                },
                "counted": {"type": "integer", "minimum": 0},
                "window": _nullable("integer", description="The most jobs a poll reads."),
                "jobs": {"type": "array", "items": _ref("AdminRow")},
                "instances": {
                    "type": "array",
                    "items": {"type": "object", "description": "An instance's heartbeat."},
                },
            },
            "required": ["now", "counts", "counted", "window", "jobs", "instances"],
        },
    }


# -- the answers ------------------------------------------------------------------------


def _json(description: str, schema: Schema, *headers: str) -> Schema:
    answer: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return answer


def _error(description: str, *headers: str) -> Schema:
    return _json(description, _ref("Error"), *headers)


def _text(description: str, mimetype: str) -> Schema:
    return {
        "description": description,
        "content": {mimetype: {"schema": {"type": "string"}}},
    }


def _document_or_fragment(description: str) -> Schema:
    """The progress document, or with ``?format=html`` the htmx widget."""
    answer = _json(description, _ref("ProgressDocument"))
    answer["content"]["text/html"] = {"schema": {"type": "string"}}
    return answer


_NOT_FOUND = _error("The token shows no job of this owner (malformed, forged, expired, another's).")
_NO_PROOF = _error(
    "No same-origin proof (X-Requested-With, or a same-origin Origin), or Flask-WTF's"
    " CSRF token is missing or wrong."
)
_QUOTA = _error("The owner already has its most unfinished jobs (its quota).", "Retry-After")
_NOT_RETRYABLE = _error(
    "The job cannot run again: it is unfinished or succeeded, its arguments were not kept,"
    " or another job of its kind (unique) is unfinished."
)
_UNAVAILABLE = _error(
    "The job store or the session store is unavailable, or (a new run) this instance has"
    " too many jobs waiting: try again after Retry-After.",
    "Retry-After",
)
_UNCHANGED = {"description": "Not modified (If-None-Match)."}
_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["json", "html"], "default": "json"},
    "description": "html: answer the htmx widget (text/html) instead of JSON.",
}
_INTERVAL = {
    "name": "interval",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "default": templating.DEFAULT_INTERVAL},
    "description": (
        "Milliseconds between the htmx widget's polls (clamped to"
        f" {templating.MIN_INTERVAL}..{templating.MAX_INTERVAL})."
    ),
}
_DETAILS = {
    "name": "details",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["1"]},
    "description": "1: the htmx widget's trail (job.log) is open.",
}
_STEP = {
    "name": "step",
    "in": "query",
    "required": False,
    "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
    "style": "form",
    "explode": True,
    "description": "The names of the job's stages, in order: the htmx widget lists those"
    " not begun as to come.",
}
_LIVE = {
    "name": "live",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["sse"]},
    "description": "sse: the htmx widget in its container on the job's /events stream.",
}
_EVENTS = """\
``retry: 2000`` first; then the progress document as a ``message`` event at once and
whenever it changes; ``end`` with the final document (or ``{"error": ...}`` when the job
is gone), after which the stream closes; ``unavailable`` (``{"error": ...}``) while the
store is away; ``reconnect`` (``{"reason": ...}``) when the stream reached its age limit
and closes; a ``: ping`` comment every 15 s. With ``format=html`` the ``message`` and
``end`` events carry the htmx widget (one ``data:`` line per line of HTML) instead of
JSON, for htmx's SSE extension (``sse-swap="message"``, ``sse-close="end"``); and a
stream refused by the limits below is, with ``format=html``, a 200 stream of one
``message``, the widget polling by itself, then ``end`` (EventSource cannot read a 429:
the extension would open the stream again and again)."""

#: Each route of the blueprint: endpoint -> method -> its description. ``guard`` says
#: which guard runs first ("app": ``AsyncState.guard``, "admin": the admin guard, None:
#: none), ``proofs`` that the route changes state (same-origin proof and CSRF).
OPERATIONS: dict[str, dict[str, Schema]] = {
    "progress": {
        method: {
            "summary": "The job's progress document",
            "description": "Only reads (POST as GET), and restarts the job's expiry.",
            "tags": ["jobs"],
            "guard": "app",
            "responses": {
                "200": _json("The document.", _ref("ProgressDocument")),
                "404": _NOT_FOUND,
            },
        }
        for method in ("get", "post")
    },
    "cancel": {
        "post": {
            "summary": "Cancel the job",
            "description": (
                "202 with the document (cancel_requested: true), or unchanged for a job that"
                " already ended. format=html: the htmx widget instead."
            ),
            "tags": ["jobs"],
            "guard": "app",
            "proofs": True,
            "parameters": [_FORMAT, _INTERVAL, _DETAILS, _STEP],
            "responses": {
                "202": _document_or_fragment("The cancel is recorded."),
                "403": _NO_PROOF,
                "404": _NOT_FOUND,
            },
        }
    },
    "retry": {
        "post": {
            "summary": "Try again: run a failed, cancelled or lost job again",
            "description": (
                "Same token and arguments; 202 with the document (status queued, attempt + 1)."
                " format=html: the htmx widget instead (polling again)."
            ),
            "tags": ["jobs"],
            "guard": "app",
            "proofs": True,
            "parameters": [_FORMAT, _INTERVAL, _DETAILS, _STEP],
            "responses": {
                "202": _document_or_fragment("The job is queued again."),
                "403": _NO_PROOF,
                "404": _NOT_FOUND,
                "409": _NOT_RETRYABLE,
                "429": _QUOTA,
            },
        }
    },
    "events": {
        "get": {
            "summary": "Server-Sent Events: the document as it changes",
            "description": _EVENTS,
            "tags": ["jobs"],
            "guard": "app",
            "parameters": [_FORMAT, _INTERVAL, _DETAILS, _STEP],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": _ref("Event")}},
                },
                "404": _NOT_FOUND,
                "429": _error(
                    "Streams are off in this process (the default on a threaded server), or"
                    " too many are open: poll /progress instead (format=html: see above).",
                    "Retry-After",
                ),
            },
        }
    },
    "jobs": {
        "get": {
            "summary": "The owner's jobs, newest first",
            "description": "Unfinished ones and the newest finished ones, each with its token.",
            "tags": ["jobs"],
            "guard": "app",
            "responses": {"200": _json("The jobs.", {"type": "array", "items": _ref("ListedJob")})},
        }
    },
    "dismiss": {
        "delete": {
            "summary": "Forget a finished job",
            "tags": ["jobs"],
            "guard": "app",
            "proofs": True,
            "responses": {
                "200": _json("Dismissed.", _ref("Dismissed")),
                "403": _NO_PROOF,
                "404": _NOT_FOUND,
                "409": _error("The job has not ended; cancel it first."),
            },
        }
    },
    "result": {
        "get": {
            "summary": "The job's result view (its render_result), once it succeeded",
            "tags": ["jobs"],
            "guard": "app",
            "responses": {
                "200": _json("The view.", _ref("ResultView")),
                "404": _error("No job, or no result to show (yet)."),
            },
        }
    },
    "fragment": {
        "get": {
            "summary": "The widget for htmx, as an HTML fragment",
            "description": (
                "While the job is unfinished, 200 with a fragment that polls this URL"
                " (hx-get, hx-trigger, hx-swap=outerHTML). For a final job, 286 (htmx stops"
                " polling) with the final fragment, and its 'Try again' button for a failed,"
                " cancelled or lost one. For a token that shows no job of this owner, 286"
                " with a 'Not found' fragment: htmx swaps 2xx answers only, and that job will"
                " never show."
            ),
            "tags": ["htmx"],
            "guard": "app",
            "parameters": [_INTERVAL, _DETAILS, _STEP, _LIVE],
            "responses": {
                "200": _text("The unfinished job's widget, polling itself.", "text/html"),
                str(templating.STOP_POLLING): _text(
                    "The final widget, or 'Not found': htmx stops polling.", "text/html"
                ),
            },
        }
    },
    "openapi": {
        "get": {
            "summary": "This description",
            "tags": ["description"],
            "guard": None,
            "responses": {
                "200": _json("OpenAPI 3.1.", {"type": "object"}),
            },
        }
    },
    "script": {
        "get": {
            "summary": "The core as a classic script and the jQuery plugin (with the statuses"
            " and default labels)",
            "tags": ["assets"],
            "guard": None,
            "responses": {"200": _text("The script.", "text/javascript"), "304": _UNCHANGED},
        }
    },
    "module": {
        "get": {
            "summary": "The core as an ES module, with <asyncstate-progress> (with the statuses"
            " and default labels)",
            "tags": ["assets"],
            "guard": None,
            "responses": {"200": _text("The module.", "text/javascript"), "304": _UNCHANGED},
        }
    },
    "stylesheet": {
        "get": {
            "summary": "The widget's stylesheet",
            "tags": ["assets"],
            "guard": None,
            "responses": {"200": _text("The stylesheet.", "text/css"), "304": _UNCHANGED},
        }
    },
    "jquery_auto": {
        "get": {
            "summary": "The loader that adds jQuery only to a page that has none",
            "tags": ["assets"],
            "guard": None,
            "responses": {"200": _text("The script.", "text/javascript"), "304": _UNCHANGED},
        }
    },
    "admin_script": {
        "get": {
            "summary": "The operator's page's script",
            "tags": ["assets"],
            "guard": None,
            "responses": {"200": _text("The script.", "text/javascript"), "304": _UNCHANGED},
        }
    },
    "jquery": {
        "get": {
            "summary": "jQuery 3 (xstatic-jquery)",
            "tags": ["assets"],
            "guard": None,
            "responses": {"200": _text("The script.", "text/javascript"), "304": _UNCHANGED},
        }
    },
    "admin": {
        "get": {
            "summary": "The operator's page",
            "tags": ["admin"],
            "guard": "admin",
            "responses": {
                "200": _text("The page.", "text/html"),
                "302": {"description": "The admin guard's refusal, as it made it (a login page)."},
            },
        }
    },
    "admin_jobs": {
        "get": {
            "summary": "Every owner's newest jobs and the live instances",
            "tags": ["admin"],
            "guard": "admin",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": [s.value for s in JobStatus]},
                    "description": "Only the jobs of this status.",
                }
            ],
            "responses": {"200": _json("The jobs.", _ref("AdminJobs"))},
        }
    },
    "admin_cancel": {
        "post": {
            "summary": "Cancel any job",
            "tags": ["admin"],
            "guard": "admin",
            "proofs": True,
            "responses": {
                "202": _json("The cancel is recorded.", _ref("ProgressDocument")),
                "403": _NO_PROOF,
                "404": _error("No such job."),
            },
        }
    },
    "admin_retry": {
        "post": {
            "summary": "Run any failed, cancelled or lost job again (its owner's quota applies)",
            "tags": ["admin"],
            "guard": "admin",
            "proofs": True,
            "responses": {
                "202": _json("The job is queued again.", _ref("ProgressDocument")),
                "403": _NO_PROOF,
                "404": _error("No such job."),
                "409": _NOT_RETRYABLE,
                "429": _QUOTA,
            },
        }
    },
}

_ADMIN_NOTE = (
    " Exists only while an admin guard is set (AsyncState.admin_guard); without one, a JSON"
    " 404 for every method."
)
_HEADERS: dict[str, Schema] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Vary": {
        "description": "Cookie, on every answer under the prefix, whatever the token.",
        "schema": {"type": "string"},
    },
}
_PARAMETER = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
_PATH_PARAMETERS = {
    "token": "The job's token, as start() returned it (signed; only its owner's are shown).",
    "job_id": "The job id (32 hex digits).",
}


# -- the description --------------------------------------------------------------------


def describe(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the blueprint as ``app`` serves it (in a request, the
    server URL includes its script root)."""
    found = appstate.get(app)
    prefix = found.settings.url_prefix
    root = request.script_root if has_request_context() else ""
    csrf = csrf_header(app)
    checked = _csrf_methods(app) if csrf else set()
    paths: dict[str, dict[str, Schema]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        blueprint, _, endpoint = rule.endpoint.partition(".")
        if blueprint != BLUEPRINT:
            continue
        path = _PARAMETER.sub(r"{\1}", rule.rule.removeprefix(prefix)) or "/"
        described = OPERATIONS.get(endpoint, {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            spec = described.get(method.lower())
            paths.setdefault(path, {})[method.lower()] = _operation(
                endpoint, method.lower(), spec, rule.arguments, csrf if method in checked else None
            )
    return {
        "openapi": VERSION,
        "info": {
            "title": "flask-asyncstate",
            "version": _version(),
            "summary": "Long-running jobs of a Flask app: progress, cancel, try again, htmx.",
            "description": (
                "Every answer under the prefix carries Vary: Cookie and nosniff, every JSON"
                ' answer Cache-Control: no-store. Errors are {"error": message}. HEAD'
                ' answers wherever GET does; OPTIONS answers {"allow": [...]} on every'
                " route; any other method a 405 with Allow. A guard set with"
                " AsyncState.guard runs before every route but the assets and this"
                " description: its refusal is a 401 (with login_url) or its own status."
            ),
        },
        "servers": [{"url": root + prefix, "description": "ASYNCSTATE_URL_PREFIX"}],
        "tags": [
            {"name": "jobs", "description": "A job of the requesting owner, by its token."},
            {"name": "htmx", "description": "The widget rendered on the server, for htmx."},
            {"name": "admin", "description": "The operator's page." + _ADMIN_NOTE},
            {"name": "assets", "description": "The widget's scripts and stylesheet."},
            {"name": "description", "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "headers": _HEADERS,
            "securitySchemes": _security_schemes(app, csrf),
        },
    }


def _operation(
    endpoint: str,
    method: str,
    spec: Schema | None,
    arguments: Mapping[str, Any] | set[str],
    csrf: str | None,
) -> Schema:
    if spec is None:
        spec = {"summary": "Not described", "guard": "app", "responses": {}}
    spec = copy.deepcopy(spec)  # the table's answers are shared by several operations
    guard = spec.pop("guard")
    proofs = spec.pop("proofs", False)
    responses = dict(spec.pop("responses"))
    operation: Schema = {"operationId": f"{endpoint}_{method}", **spec}
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": _PATH_PARAMETERS.get(name, name),
        }
        for name in sorted(arguments)
    ]
    operation["parameters"] = parameters + list(spec.get("parameters", []))
    if csrf and not proofs:  # only reads, but Flask-WTF checks every request of its methods
        responses.setdefault(
            "403",
            _json(
                "The guard refused, or Flask-WTF's CSRF token is missing or wrong.",
                _ref("Refusal"),
            ),
        )
    if guard == "app":
        responses.setdefault("401", _json("The guard wants a signed-in user.", _ref("Refusal")))
        responses.setdefault("403", _json("The guard refused.", _ref("Refusal")))
    elif guard == "admin":
        operation["description"] = (spec.get("description", "") + _ADMIN_NOTE).strip()
        responses.setdefault("401", _json("The admin guard wants a sign-in.", _ref("Refusal")))
        responses.setdefault("403", _json("The admin guard refused.", _ref("Refusal")))
        responses.setdefault("404", _error("No admin guard is set, or no such job."))
    responses.setdefault("503", _UNAVAILABLE)
    for answer in responses.values():
        answer.setdefault("headers", {})
        answer["headers"] = {"Vary": {"$ref": "#/components/headers/Vary"}, **answer["headers"]}
    operation["responses"] = dict(sorted(responses.items()))
    if guard is not None:
        operation["security"] = _requirements(proofs, csrf)
    else:
        operation["security"] = []
    return operation


def _csrf_methods(app: Flask) -> set[str]:
    """The methods whose requests Flask-WTF's ``CSRFProtect`` checks, read from the settings
    it reads (``WTF_CSRF_ENABLED``, ``WTF_CSRF_CHECK_DEFAULT``, ``WTF_CSRF_METHODS``)."""
    config = app.config
    if not config.get("WTF_CSRF_ENABLED", True) or not config.get("WTF_CSRF_CHECK_DEFAULT", True):
        return set()
    methods = config.get("WTF_CSRF_METHODS") or ("POST", "PUT", "PATCH", "DELETE")
    return {m.upper() for m in methods}


def _requirements(proofs: bool, csrf: str | None) -> list[dict[str, list[str]]]:
    """Who may call: the owner's session; for a state-changing route, with the same-origin
    header or a same-origin ``Origin``; and the CSRF token wherever Flask-WTF checks one
    (every request of its methods, the reading ``POST /progress`` too)."""
    extra: dict[str, list[str]] = {"csrf": []} if csrf else {}
    if not proofs:
        return [{"session": [], **extra}]
    return [
        {"session": [], "sameOrigin": [], **extra},
        {"session": [], "origin": [], **extra},
    ]


def _security_schemes(app: Flask, csrf: str | None) -> dict[str, Schema]:
    schemes: dict[str, Schema] = {
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": str(app.config.get("SESSION_COOKIE_NAME") or "session"),
            "description": (
                "The app's session: a job is shown only to the session (or the signed-in"
                " user, or the owner_loader's owner) that started it."
            ),
        },
        "sameOrigin": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Requested-With",
            "description": "Any value: a header a cross-site form cannot send.",
        },
        "origin": {
            "type": "apiKey",
            "in": "header",
            "name": "Origin",
            "description": "The app's own scheme and host (a browser sends it itself).",
        },
    }
    if csrf:
        schemes["csrf"] = {
            "type": "apiKey",
            "in": "header",
            "name": csrf,
            "description": "Flask-WTF's CSRF token (csrf_token()), checked by its CSRFProtect.",
        }
    return schemes


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flask-asyncstate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0"
