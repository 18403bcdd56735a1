"""``riskgate dashboard``: the Streamlit dashboard over the store (``dashboards/app.py``).

Thin: checks that the password, if any, is long enough and that the address
is safe to listen on, makes sure the store
exists and is migrated (the pages open it read-only), and runs
``streamlit run`` (through ``dashboards.launch``) with the store in ``RISKGATE_DB``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.common import DbOption, app, console, fail, handle_errors


def streamlit_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line for the dashboard on ``host:port`` (through ``dashboards.launch``:
    Streamlit's own, with its look-up of the machine's public address off)."""
    import dashboards

    entry = Path(dashboards.__file__).resolve().parent / "app.py"
    return [
        sys.executable, "-m", "dashboards.launch", "run", str(entry),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
        # no banner: on 0.0.0.0 it looked up the machine's public address at http://checkip.amazonaws.com (an
        # "External URL") and its local one by a UDP socket towards 8.8.8.8; riskgate prints its own URL line
        "--logger.hideWelcomeMessage", "true",
    ]


@app.command()
@handle_errors
def dashboard(
    db: DbOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but a loopback address needs "
                                      "authentication: RISKGATE_DASHBOARD_PASSWORD (16 characters or more) or "
                                      "Streamlit's OIDC login.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8501,
) -> None:
    """Start the Streamlit dashboard (overview, events, user, tuning, configuration, jobs) on HOST:PORT."""
    from dashboards import auth
    from ingest.store import resolve_db_path
    from risk import store

    if os.environ.get(auth.PASSWORD_ENV):
        auth.check_password(os.environ[auth.PASSWORD_ENV])  # (a ConfigurationError: one line, exit code 2)
    if not auth.is_loopback(host) and not os.environ.get(auth.PASSWORD_ENV) and not auth.oidc_configured_in_files():
        raise fail(
            f"refusing to listen on {host} without authentication: set {auth.PASSWORD_ENV}, or configure "
            "Streamlit's OIDC login (an auth section with redirect_uri and cookie_secret in .streamlit/secrets.toml), "
            "or listen on 127.0.0.1",
            2,
        )
    path = os.path.abspath(resolve_db_path(db))
    store.connect(path).close()  # created and migrated once here: the pages only read (and write briefly)
    env = {**os.environ, "RISKGATE_DB": path}
    shown = f"[{host}]" if ":" in host else host
    console.print(f"riskgate dashboard on http://{shown}:{port}/ over {path} (Ctrl-C stops it)", highlight=False)
    code = run_forwarding_signals(streamlit_command(host, port), env)
    if code:
        raise typer.Exit(128 - code if code < 0 else code)  # (killed by a signal: the shell's 128 + its number)


def run_forwarding_signals(command: list[str], env: dict) -> int:
    """Run ``command`` until it ends, passing SIGTERM and SIGHUP sent to this process on to it (``kill``, systemd,
    a container's stop: Streamlit was left serving, re-parented to pid 1), and a Ctrl-C that reached this process
    alone (``kill -INT``) too; its exit code (negative: the signal that ended it)."""
    proc = subprocess.Popen(command, env=env)
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda signum, _frame: proc.send_signal(signum)) for s in forwarded}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        if proc.poll() is None:  # (a Ctrl-C at the terminal reached it too: the same signal again is harmless)
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except BaseException:  # it did not stop in time, or a second Ctrl-C: it is not left behind
            proc.kill()
            proc.wait()
        raise
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
