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

LOCALEDIR = Path(__file__).parent / "locale"
DOMAIN = "gridedge"
LANGS = ("en", "zh_CN")


def N_(message: str) -> str:
    """Mark a message for the catalogs; translated where it is shown."""
    return message


# The config's fixed messages (edge/base/config.py), for `localised`; a message built with
# values in it stays English, its framing (file, line, key) is translated.
CONFIG_MESSAGES = (
    N_("unknown key"),
    N_("is required"),
    N_("expected an array of tables ([[...]])"),
    N_("expected at least 3 [lat, lon] points"),
    N_("geofence ids must be unique"),
    N_("is required (a serial port, or url = tcp://host:port / udp://host:port)"),
    N_("is required when port is set: the platform's SMS number(s)"),
    N_("is required when tls_cert is set"),
    N_("tls_cert and tls_key go together"),
    N_("set either port (serial) or url (tcp/udp), not both"),
    N_("life-safety messages never expire"),
    N_("applies to udp:// listeners only (tcp:// is a server we connect to)"),
    N_("is empty: it would refuse every sender (leave it out to take any)"),
)


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


def localised(exc: Exception, lang: str | None = None) -> str:
    """An error for the technician, in their language: a config mistake's framing (where,
    which key) and its message when the catalog has it; key paths and values as they are."""
    from edge.base.errors import ConfigError

    lang = lang or from_env()
    if lang == "en" or not isinstance(exc, ConfigError):
        return str(exc)
    _ = translator(lang).gettext
    message = _(exc.message)
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
