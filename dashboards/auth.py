"""Who may see the dashboard.

* ``RISKGATE_DASHBOARD_PASSWORD`` set: every page shows only a password form
  until the password is entered (compared in constant time); the session
  then stays signed in until it ends or "Sign out" is pressed. The password
  must be as long as the service's API key (:func:`check_password`), or the
  pages show nothing.
* Streamlit's own OIDC login configured (an ``[auth]`` section in
  ``.streamlit/secrets.toml``): ``st.login`` first.
* Neither: allowed only when the server listens on a loopback address.
  ``riskgate dashboard`` refuses to start otherwise; this check repeats it
  in the page, for an app started some other way (``streamlit run`` without
  ``--server.address`` listens on every interface).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
import tomllib
from pathlib import Path

import streamlit as st

from ingest.errors import ConfigurationError

PASSWORD_ENV = "RISKGATE_DASHBOARD_PASSWORD"
#: as ``service.app.MIN_API_KEY_CHARS`` and ``risk.notify.MIN_SECRET_CHARS``: characters, blanks not counted
MIN_PASSWORD_CHARS = 16
_SESSION_KEY = "_rg_authenticated"
_FAILED_DELAY_S = 1.0


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (an empty host means every interface: no)."""
    if not host:
        return False
    if host.strip("[]").lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secrets_files(cwd: Path | None = None) -> list[Path]:
    """Where Streamlit reads secrets from: ``~/.streamlit/secrets.toml`` and ``./.streamlit/secrets.toml``."""
    return [Path.home() / ".streamlit" / "secrets.toml", (cwd or Path.cwd()) / ".streamlit" / "secrets.toml"]


def _oidc_section_ok(auth) -> bool:
    """An ``[auth]`` section that Streamlit's OIDC login can work with: a redirect URI and a cookie secret."""
    return bool(auth) and hasattr(auth, "get") and bool(auth.get("redirect_uri")) and bool(auth.get("cookie_secret"))


def oidc_configured_in_files(paths: list[Path] | None = None) -> bool:
    """Whether a secrets file configures Streamlit's OIDC login (``[auth]`` with a redirect URI and cookie secret)."""
    for p in paths if paths is not None else secrets_files():
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if _oidc_section_ok(data.get("auth")):
            return True
    return False


def _oidc_configured() -> bool:
    try:
        auth = st.secrets.get("auth")
    except Exception:  # no secrets file at all: Streamlit raises its own error type
        return False
    return _oidc_section_ok(auth)


def check_password(password: str) -> str:
    """``password`` (``RISKGATE_DASHBOARD_PASSWORD``'s value), or a ConfigurationError saying what it must be: at
    least 16 characters besides blanks, and no blank at either end (the rules of the service's API key)."""
    if sum(not c.isspace() for c in password) < MIN_PASSWORD_CHARS:  # blanks do not count (16 spaces were one)
        raise ConfigurationError(f"{PASSWORD_ENV} is shorter than {MIN_PASSWORD_CHARS} characters (not counting "
                                 "blanks); use a long passphrase")
    if password != password.strip():  # invisible where it is set, easily lost where it is typed or pasted
        raise ConfigurationError(f"{PASSWORD_ENV} begins or ends with blanks, which are easily lost when it is "
                                 "typed or pasted; remove them")
    return password


def password_ok(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _check_password() -> None:
    expected = os.environ.get(PASSWORD_ENV, "")
    given = st.session_state.get("_rg_password", "")
    if given and password_ok(given, expected):
        st.session_state[_SESSION_KEY] = True
        st.session_state.pop("_rg_login_failed", None)
    else:
        time.sleep(_FAILED_DELAY_S)
        st.session_state["_rg_login_failed"] = True
    st.session_state["_rg_password"] = ""


def _sign_out() -> None:
    st.session_state.pop(_SESSION_KEY, None)


def require_login() -> None:
    """Stop the script run unless this visitor may see the store's data."""
    if os.environ.get(PASSWORD_ENV):
        try:
            check_password(os.environ[PASSWORD_ENV])
        except ConfigurationError as exc:  # (`riskgate dashboard` refuses it: an app started some other way)
            st.error(f"This dashboard shows nothing: {exc}.")
            st.stop()
        if st.session_state.get(_SESSION_KEY):
            st.sidebar.button("Sign out", on_click=_sign_out, key="_rg_sign_out")
            return
        st.title("riskgate")
        with st.form("_rg_login"):
            st.text_input("Password", type="password", key="_rg_password")
            st.form_submit_button("Sign in", on_click=_check_password)
        if st.session_state.get("_rg_login_failed"):
            st.warning("Wrong password.")
        st.stop()
    if _oidc_configured():
        if st.user.is_logged_in:
            st.sidebar.button("Log out", on_click=st.logout, key="_rg_log_out")
            return
        st.title("riskgate")
        st.button("Log in", on_click=st.login, key="_rg_log_in")
        st.stop()
    address = st.get_option("server.address")
    if not is_loopback(address):
        st.error(
            f"This dashboard listens on {address or 'every interface'} without authentication and shows nothing. "
            f"Set {PASSWORD_ENV} (or configure Streamlit's [auth] login), or listen on 127.0.0.1."
        )
        st.stop()
    if not is_loopback(request_host(st.context.headers.get("Host"))):
        # a web page can rebind its own domain to 127.0.0.1 (DNS rebinding): the browser then sends that page's
        # name as Host, and the page could read the store and press the buttons; a loopback name it cannot send
        st.error(
            "Without authentication this dashboard answers only to a loopback address in the browser "
            "(http://127.0.0.1:PORT, http://localhost:PORT, http://[::1]:PORT) and shows nothing here. "
            f"Open it by such an address, or set {PASSWORD_ENV}."
        )
        st.stop()


def request_host(host: str | None) -> str | None:
    """The host of an HTTP ``Host`` header (``127.0.0.1:8501`` -> ``127.0.0.1``, ``[::1]:8501`` -> ``::1``); None
    for no header at all (no HTTP request: Streamlit's AppTest), which is taken as loopback."""
    if host is None:
        return "127.0.0.1"
    host = host.strip()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
