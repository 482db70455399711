"""English and French for the example: the app's own strings and the widget's labels.

Plain dicts, no Flask-Babel (which the extension also supports, see
``flask_asyncstate/templating.py``): the language is the one the visitor picked
with the switch in the page header (``POST /language``, kept in the session),
else the best match of the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, has_request_context, redirect, request, session, url_for

#: Language code -> its name in that language (what the switch shows).
LANGUAGES = {"en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"
#: Session key of the visitor's choice.
SESSION_KEY = "lang"

#: The widget in French: every key of ``flask_asyncstate.templating.DEFAULT_LABELS``, passed as
#: ``asyncstate_widget(token, labels=FRENCH)`` and ``asyncstate_jobs(labels=FRENCH)``.
#: ``{seconds}``, ``{minutes}``, ``{time}``, ``{attempt}`` and ``{max}`` are filled in by the
#: widget.
FRENCH: dict[str, str] = {
    "progress": "Progression",
    "cancel": "Annuler",
    "queued": "En attente",
    "running": "En cours",
    "succeeded": "Terminé",
    "failed": "Échec",
    "cancelled": "Annulé",
    "lost": "Perdu : le serveur qui exécutait cette tâche s’est arrêté",
    "cancelling": "Annulation\u2026",
    "cancelFailed": "Impossible d’annuler",
    "cancelRetrying": "Impossible d’annuler pour l’instant, nouvel essai\u2026",
    "notFound": "Introuvable",
    "forbidden": "Vous n’avez pas accès à cette tâche",
    "error": "Erreur",
    "retrying": "Problème de connexion, nouvel essai dans {seconds} s\u2026",
    "reconnecting": "Reconnexion\u2026",
    "noToken": "Aucun jeton de tâche",
    "elapsed": "{time} écoulées",
    "etaSeconds": "encore environ {seconds} s",
    "etaMinutes": "encore environ {minutes} min",
    "noJobs": "Aucune tâche pour l’instant",
    "reasonShutdown": "Arrêtée par un redémarrage du serveur",
    "reasonTimeout": "Arrêtée : elle a pris trop de temps",
    "retryScheduled": "Échec, nouvel essai prévu",
    "retryingIn": "Nouvel essai dans {seconds} s (tentative {attempt} sur {max})",
    "resumed": "Reprise après un redémarrage du serveur",
    "tryAgain": "Réessayer",
    "tryAgainFailed": "Impossible de réessayer",
    "quotaExceeded": (
        "Vous avez déjà {limit} tâches en cours. Attendez qu’une se termine, ou annulez-en"
        " une, puis réessayez."
    ),
    "busy": "Le serveur est occupé, réessayez dans un instant",
    "duplicate": "La même tâche est déjà en cours ; attendez qu’elle se termine",
    "tryAgainUnfinished": "Cette tâche est encore en cours",
    "tryAgainRefused": "Cette tâche ne peut pas être relancée",
    "children": "{done} sur {total} terminées",
    "childrenFailed": "{count} en échec",
    "childrenCancelled": "{count} annulées",
    "childrenLost": "{count} perdues",
    "stages": "Étapes",
    "stageDone": "(terminée)",
    "stageCurrent": "(étape en cours)",
    "stageFailed": "(en échec)",
    "stageCancelled": "(annulée)",
    "stageToCome": "(à venir)",
    "showDetails": "Afficher les détails",
}

#: The widget's labels per language ({} = the extension's English defaults).
WIDGET_LABELS: dict[str, dict[str, str]] = {"en": {}, "fr": FRENCH}

#: The app's own strings. ``{name}`` fields are filled in by :func:`text`.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Product import",
        "site": "flask-asyncstate example",
        "nav_import": "Import",
        "nav_jobs": "My jobs",
        "language": "Language",
        "signed_in": "Signed in as {name}",
        "sign_out": "Sign out",
        "sign_in": "Sign in",
        "intro": "Imports {count} generated products in the background. Leave the page and"
        " come back: the job keeps running, and any instance can show or cancel it.",
        "start": "Import products",
        "job_label": "Product import",
        "progress_heading": "Import progress",
        "clients": "The same widget with",
        "client_jquery": "jQuery",
        "client_htmx": "htmx",
        "client_module": "no library (the plain module)",
        "htmx_missing": "htmx is not installed, so this widget stays as it is: run npm ci at"
        " the root of the checkout (it installs htmx into node_modules), then reload the page.",
        "htmx_labels": "",
        "progress_label": "Product import progress",
        "progress_message": "{current:,} of {total:,} products",
        "jobs_heading": "My jobs",
        "jobs_intro_user": "The jobs of {name}, from any browser they signed in on.",
        "jobs_intro_anonymous": "The jobs of this browser session. Sign in to see your jobs"
        " from any browser.",
        "already_running": "An import is already running: here it is",
        "quota": "Too many unfinished jobs: wait for one to end, or cancel one.",
        "login_heading": "Sign in",
        "login_name": "Name",
        "login_hint": "Any name signs in: this demo has no passwords, so whoever types a name"
        " sees that name's jobs. A real app checks a password or an identity provider here.",
        "login_submit": "Sign in",
        "name_empty": "Enter a name.",
        "name_too_long": "A name has at most {max} characters.",
        "signed_in_flash": "Signed in as {name}.",
        "signed_out_flash": "Signed out. Your jobs keep running: sign in again to see them.",
    },
    "fr": {
        "title": "Importation de produits",
        "site": "exemple flask-asyncstate",
        "nav_import": "Importer",
        "nav_jobs": "Mes tâches",
        "language": "Langue",
        "signed_in": "Connecté en tant que {name}",
        "sign_out": "Se déconnecter",
        "sign_in": "Se connecter",
        "intro": "Importe {count} produits générés en arrière-plan. Quittez la page et revenez :"
        " la tâche continue, et n’importe quelle instance peut l’afficher ou l’annuler.",
        "start": "Importer les produits",
        "job_label": "Importation de produits",
        "progress_heading": "Progression de l’importation",
        "clients": "Le même widget avec",
        "client_jquery": "jQuery",
        "client_htmx": "htmx",
        "client_module": "aucune bibliothèque (le module seul)",
        "htmx_missing": "htmx n’est pas installé, ce widget ne bouge donc pas : lancez npm ci à"
        " la racine du dépôt (il installe htmx dans node_modules), puis rechargez la page.",
        "htmx_labels": "Le widget htmx est rendu par le serveur avec ses propres textes"
        " (traduits par Flask-Babel, que cet exemple n’utilise pas) : ils restent en anglais.",
        "progress_label": "Progression de l’importation des produits",
        # str.format has no French thousands separator: the numbers go without one
        "progress_message": "{current} sur {total} produits",
        "jobs_heading": "Mes tâches",
        "jobs_intro_user": "Les tâches de {name}, depuis tout navigateur où ce nom s’est connecté.",
        "jobs_intro_anonymous": "Les tâches de cette session de navigateur. Connectez-vous pour"
        " retrouver vos tâches depuis n’importe quel navigateur.",
        "already_running": "Une importation est déjà en cours : la voici",
        "quota": "Trop de tâches en cours : attendez qu’une se termine, ou annulez-en une.",
        "login_heading": "Connexion",
        "login_name": "Nom",
        "login_hint": "N’importe quel nom connecte : cette démo n’a pas de mot de passe, donc"
        " qui tape un nom voit les tâches de ce nom. Une vraie application vérifie ici un mot"
        " de passe ou un fournisseur d’identité.",
        "login_submit": "Se connecter",
        "name_empty": "Saisissez un nom.",
        "name_too_long": "Un nom compte au plus {max} caractères.",
        "signed_in_flash": "Connecté en tant que {name}.",
        "signed_out_flash": "Déconnecté. Vos tâches continuent : reconnectez-vous pour les voir.",
    },
}


def current_language() -> str:
    """The visitor's language: their choice in the session, else their browser's, else English."""
    chosen = session.get(SESSION_KEY)
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(list(LANGUAGES)) or DEFAULT_LANGUAGE


def text(key: str, lang: str | None = None, **values: Any) -> str:
    """The app's string ``key`` in ``lang`` (default: the visitor's), ``{fields}`` filled in."""
    found = TEXTS[lang or current_language()][key]
    return found.format(**values) if values else found


class LazyText:
    """The app's string ``key``, looked up each time it is turned into a ``str``: in the
    language of the request at that moment (English outside a request).

    What Flask-Babel's ``lazy_gettext`` is to a Babel app: ``@asyncstate.job(label=...)``
    is evaluated at import, when there is no visitor yet; the extension turns the label into
    a string at ``start()``, in the request of whoever starts the job, and keeps that.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def __str__(self) -> str:
        return text(self.key, None if has_request_context() else DEFAULT_LANGUAGE)

    def __repr__(self) -> str:
        return f"LazyText({self.key!r})"


def lazy_text(key: str) -> LazyText:
    """:class:`LazyText` of ``key`` (checked now: a typo fails at import, not at a start)."""
    if any(key not in texts for texts in TEXTS.values()):
        raise KeyError(key)
    return LazyText(key)


def number(value: int, lang: str | None = None) -> str:
    """``5,000`` in English, ``5 000`` (narrow no-break space) in French."""
    shown = f"{value:,}"
    return shown.replace(",", "\u202f") if (lang or current_language()) == "fr" else shown


def widget_labels() -> dict[str, str]:
    """``labels=`` for ``asyncstate_widget`` / ``asyncstate_jobs`` in the visitor's language."""
    return WIDGET_LABELS[current_language()]


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site, else ``default``: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\\\r\n\t"):
        return default
    return target


def init_app(app: Flask) -> None:
    """The language switch (``POST /language``, CSRF-checked) and the template helpers."""

    @app.context_processor
    def language_helpers() -> dict[str, Any]:
        return {
            "lang": current_language(),
            "languages": LANGUAGES,
            "t": text,
            "number": number,
            "widget_labels": widget_labels(),
        }

    @app.post("/language")
    def set_language() -> Response:
        """Keep the chosen language in the session and go back to the page it was chosen on."""
        chosen = request.form.get("lang")
        if chosen in LANGUAGES:
            session[SESSION_KEY] = chosen
        return redirect(safe_next(request.form.get("next"), url_for("index")))  # type: ignore[return-value]
