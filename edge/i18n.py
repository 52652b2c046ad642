"""The technician's languages: English and Simplified Chinese (zh-CN).

Messages are gettext catalogs (`edge/locale/<lang>/LC_MESSAGES/gridedge.po`), kept and
compiled with Babel (`pybabel extract`/`compile`, run by scripts/setup and
scripts/package); at run time the standard library's gettext reads the compiled `.mo`.
Key paths, codes and ids are never translated: a technician reads them to support.
"""

from __future__ import annotations

import functools
import gettext
import os
from pathlib import Path

from floor.errors import ConfigError, Problem

LOCALEDIR = Path(__file__).parent / "locale"
DOMAIN = "gridedge"
LANGS = ("en", "zh_CN")


@functools.cache
def catalog(lang: str) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALEDIR, languages=[lang], fallback=True)


def normalise(tag: str | None) -> str:
    """A language tag or locale name (zh-CN, zh_CN.UTF-8, zh-Hans, en-GB) to one of LANGS."""
    return "zh_CN" if tag and tag.strip().lower().startswith("zh") else "en"


def from_env() -> str:
    """The language of the environment (LANGUAGE, LC_ALL, LC_MESSAGES, LANG: gettext's order)."""
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        if value := os.environ.get(var):
            return normalise(value.split(":")[0])
    return "en"


def from_accept_language(header: str | None) -> str:
    """The browser's first choice among ours (Accept-Language, weights honoured)."""
    best, best_q = "en", -1.0
    for item in (header or "").split(","):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and q > best_q and (tag.lower().startswith(("zh", "en")) or tag == "*"):
            best, best_q = normalise(tag), q
    return best


def translator(lang: str) -> gettext.NullTranslations:
    return catalog(lang if lang in LANGS else "en")


def problem_text(problem: Problem, lang: str | None = None) -> str:
    """A problem in the technician's language: its template from the catalog, filled with
    its values; a value that is itself a Problem (`Problem(N_("an integer"))`) is translated
    too, any other value (paths, keys, what a technician wrote) stays as it is."""
    lang = lang or from_env()
    if lang == "en":
        return str(problem)
    _ = translator(lang).gettext
    if not problem.values:
        return _(problem.template)
    values = {k: problem_text(v, lang) if isinstance(v, Problem) else v for k, v in problem.values.items()}
    return _(problem.template).format(**values)


def localised(exc: Exception, lang: str | None = None) -> str:
    """An error for the technician, in their language: a config mistake's framing (where,
    which key) and its message; key paths and values as they are."""
    lang = lang or from_env()
    if lang == "en" or not isinstance(exc, ConfigError):
        return str(exc)
    _ = translator(lang).gettext
    message = problem_text(exc.problem, lang)
    if exc.line is not None:
        where = (
            _("{file} line {line}").format(file=exc.file, line=exc.line)
            if exc.file
            else _("line {line}").format(line=exc.line)
        )
    else:
        where = exc.file
    text = _("{key}: {message}").format(key=exc.path, message=message) if exc.path else message
    return f"{where}: {text}" if where else text
