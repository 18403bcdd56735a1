"""``python -m dashboards.launch run dashboards/app.py ...``: Streamlit's own command line (``python -m
streamlit``), in a process where Streamlit never looks up the machine's public address.

Streamlit asks http://checkip.amazonaws.com for it (``streamlit.net_util.get_external_ip``) to print an
"External URL" at start (``riskgate dashboard`` turns that banner off) and, with no option to turn it off, to
compare with the Origin of every WebSocket whose Origin is not the host it was sent to: any web page the browser
has open can open one, and made the dashboard send that request (again at each try while it fails, the server
waiting for it). Here the public address is unknown, as when that request fails: such a WebSocket is let in only
from localhost, the local address, ``browser.serverAddress`` and ``server.corsAllowedOrigins``.
"""

from __future__ import annotations


def no_external_ip() -> None:
    """The machine's public address, as riskgate knows it: unknown (nothing is asked of the network)."""
    return None


def main() -> None:
    from streamlit import net_util
    from streamlit.web import cli

    net_util.get_external_ip = no_external_ip  # (looked up by its module at each call: bootstrap, server_util)
    cli.main(prog_name="streamlit")  # what `python -m streamlit` runs


if __name__ == "__main__":
    main()
