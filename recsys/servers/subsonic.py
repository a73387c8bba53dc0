"""A small client of the Subsonic API (Navidrome, Gonic, Airsonic, Ampache, Supysonic, LMS...): what recsys reads
and the few playlist calls it makes. Standard library only (urllib, JSON responses with ``f=json``).

**Credentials** live only in this object's memory: the password comes from the caller (the environment variable
or a 0600 file, :func:`read_password`), is sent with each request, and appears in no message, no exception text,
no stored path or key. :meth:`SubsonicClient.download_url` builds the one URL that carries it, for a decoder that
needs a URL, and nothing keeps that URL.

**Authentication**: token auth first (``t`` = md5(password + salt), ``s`` = salt, API 1.13.0+; Navidrome and most
servers prefer it), then, when the server answers error 10 (a parameter missing: it does not know tokens) or 41
(token authentication not supported), the password hex-encoded (``p=enc:HEX``), which every server accepts
(Supysonic only accepts this one). The working mode is kept for the client's life.

**Read-only but for playlists**: recsys never calls setRating, star, scrobble or ``stream`` (which counts a play on
most servers, every Range request included): audio comes from ``download``, which counts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError

API_VERSION = "1.12.0"  # what we ask for; servers answer with their own (Supysonic 0.7.9: 1.12.0)
CLIENT = "recsys"
PASSWORD_ENV = "RECSYS_SUBSONIC_PASSWORD"
PAGE = 500  # songs per search3 page
_TOKEN_REFUSED = (10, 41)  # a parameter missing (the server knows no t/s), token auth not supported


class SubsonicError(RecsysError):
    """The server refused or could not be reached: one line naming the server and what to do."""


def read_password(password_file: str | None, environ: dict[str, str] | None = None) -> str:
    """The password: ``RECSYS_SUBSONIC_PASSWORD``, else the first line of ``password_file``, which must be readable
    by its owner only (mode 0600 or 0400): a group- or world-readable password file is refused, as ssh does."""
    environ = os.environ if environ is None else environ
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV]
    if not password_file:
        raise SubsonicError(f"no Subsonic password: set the environment variable {PASSWORD_ENV}, or write it in a "
                            "file only you can read (chmod 600 FILE) and set subsonic.password_file to it")
    path = Path(password_file).expanduser()
    try:
        mode = path.stat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise SubsonicError(f"password file {path} can be read by others (mode {stat.S_IMODE(mode):o}): run "
                                f"chmod 600 {path}; recsys uses no password file others can read")
        if not stat.S_ISREG(mode):
            raise SubsonicError(f"password file {path} is not a regular file: point subsonic.password_file at one")
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SubsonicError(f"cannot read the password file {path} ({exc.strerror or type(exc).__name__}): check "
                            "subsonic.password_file") from None
    except UnicodeDecodeError:
        raise SubsonicError(f"password file {path} is not UTF-8 text: write the password on its first line") from None
    if not lines or not lines[0]:
        raise SubsonicError(f"password file {path} is empty: write the password on its first line")
    return lines[0]


def normalise_url(url: str) -> str:
    """The server's base URL as recsys keeps it: scheme, host, port and path, no credentials, no query, no trailing
    slash, no ``/rest`` (the API lives under it). A URL with a user or password in it is refused: they go
    elsewhere, so they are never remembered or printed."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubsonicError(f"--subsonic wants the server's address, like http://localhost:4533, not {_shown(url)!r}")
    if parts.username or parts.password:
        raise SubsonicError("--subsonic: give the user with --subsonic-user and the password in "
                            f"{PASSWORD_ENV} or subsonic.password_file, never inside the URL")
    path = parts.path.rstrip("/").removesuffix("/rest")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _shown(url: str) -> str:
    """A URL as it may be shown: without any user, password or query."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class SubsonicClient:
    """One user's session with one Subsonic server. ``url`` as :func:`normalise_url` gives it."""

    def __init__(self, url: str, user: str, password: str, timeout_s: float = 30.0) -> None:
        self.url = normalise_url(url)
        self.user = user
        self._password = password
        self.timeout_s = timeout_s
        self._token = True  # token auth until the server says it does not take it

    def __repr__(self) -> str:  # never the password
        return f"SubsonicClient({self.url!r}, user={self.user!r})"

    def _auth(self) -> list[tuple[str, str]]:
        common = [("u", self.user), ("v", API_VERSION), ("c", CLIENT), ("f", "json")]
        if self._token:
            salt = secrets.token_hex(8)
            return [*common, ("t", hashlib.md5((self._password + salt).encode()).hexdigest()), ("s", salt)]
        return [*common, ("p", "enc:" + self._password.encode().hex())]

    def _what_to_do(self) -> str:
        return (f"check that the Subsonic server at {self.url} runs and the address is right (--subsonic or "
                "subsonic.url)")

    def call(self, method: str, params: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """The ``subsonic-response`` of ``method``; a SubsonicError (one line, no credentials) when it failed."""
        try:
            return self._call(method, params)
        except SubsonicError as exc:
            if self._token and getattr(exc, "code", None) in _TOKEN_REFUSED:
                self._token = False
                return self._call(method, params)
            raise

    def _call(self, method: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        body = urllib.parse.urlencode([*self._auth(), *params]).encode()
        request = urllib.request.Request(f"{self.url}/rest/{method}.view", data=body, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise SubsonicError(f"the Subsonic server at {self.url} answered HTTP {exc.code} to {method}: "
                                f"{self._what_to_do()}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            reason = getattr(reason, "strerror", None) or type(reason).__name__
            raise SubsonicError(f"cannot reach the Subsonic server at {self.url} ({reason}): "
                                f"{self._what_to_do()}") from None
        except (ValueError, UnicodeDecodeError):
            raise SubsonicError(f"{self.url} did not answer {method} as a Subsonic server does (no JSON): "
                                "check the address (--subsonic)") from None
        answer = data.get("subsonic-response") if isinstance(data, dict) else None
        if not isinstance(answer, dict):
            raise SubsonicError(f"{self.url} did not answer {method} as a Subsonic server does: check the address "
                                "(--subsonic)")
        if answer.get("status") != "ok":
            error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
            code = error.get("code")
            message = str(error.get("message") or "no reason given").replace(self._password, "***")
            exc = SubsonicError(f"the Subsonic server at {self.url} refused {method} for user {self.user!r}: "
                                f"{message} (error {code}){_advice(code)}")
            exc.code = code  # type: ignore[attr-defined]
            raise exc
        return answer

    def ping(self) -> None:
        self.call("ping")

    def songs(self) -> Iterator[dict[str, Any]]:
        """Every song the server lists to this user: search3 with an empty query, page by page."""
        offset = 0
        while True:
            answer = self.call("search3", [("query", ""), ("songCount", str(PAGE)), ("songOffset", str(offset)),
                                           ("artistCount", "0"), ("albumCount", "0")])
            page = (answer.get("searchResult3") or {}).get("song") or []
            yield from (s for s in page if isinstance(s, dict) and not s.get("isVideo"))
            if len(page) < PAGE:
                return
            offset += len(page)

    def playlists(self) -> list[dict[str, Any]]:
        return list((self.call("getPlaylists").get("playlists") or {}).get("playlist") or [])

    def playlist(self, playlist_id: str) -> dict[str, Any]:
        return self.call("getPlaylist", [("id", playlist_id)]).get("playlist") or {}

    def create_playlist(self, name: str, song_ids: Sequence[str], replace_id: str | None = None) -> str | None:
        """A new playlist ``name`` with these songs, or (``replace_id``) that playlist's songs replaced; its id
        when the server says (API 1.14.0+), else None."""
        params = [("playlistId", replace_id)] if replace_id else [("name", name)]
        answer = self.call("createPlaylist", [*params, *(("songId", s) for s in song_ids)])
        made = answer.get("playlist")
        return str(made["id"]) if isinstance(made, dict) and made.get("id") is not None else replace_id

    def describe_playlist(self, playlist_id: str, comment: str) -> None:
        self.call("updatePlaylist", [("playlistId", playlist_id), ("comment", comment)])

    def download_url(self, song_id: str) -> str:
        """The URL of the song's original file, credentials included: for a decoder to open now, never kept."""
        return f"{self.url}/rest/download.view?" + urllib.parse.urlencode([*self._auth(), ("id", song_id)])


def _advice(code: object) -> str:
    return {
        40: ": check --subsonic-user (subsonic.user) and the password (RECSYS_SUBSONIC_PASSWORD or "
            "subsonic.password_file)",
        50: ": this user may not do that on the server; ask its admin",
        70: ": the server no longer has it; run the command again",
    }.get(code if isinstance(code, int) else -1, "")
