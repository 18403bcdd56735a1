"""risk/notify.py: templates, feedback tokens, delivery through a real SMTP server on loopback, records."""

from __future__ import annotations

import asyncio
import email
import shutil
import socket
import ssl
import subprocess
import time
from datetime import datetime, timedelta, timezone
from email.policy import default as default_policy
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from pathlib import Path
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from ingest.errors import ConfigurationError
from risk import notify as nt
from risk.notify import FeedbackTokenError, NotifyError, render
from risk.store import connect

SECRET = "test-feedback-secret-0123456789"
BASE = "https://risk.example.test"
NOW = datetime(2024, 7, 17, 17, 25, 55, tzinfo=timezone.utc)

ALL = " | ".join("{" + p + "}" for p in nt.PLACEHOLDERS)
TEMPLATE = {
    "Subject": "Sign-in for {username} from {city}",
    "HtmlBody": "<p>Hi {username}, {ip-address} {city} {country} {login-time} {device-name} {event-id}</p>"
    '<a href="{one-click-link-valid}">me</a> <a href="{one-click-link-invalid}">not me</a> '
    "token {feedback-token} and {unknown-thing}",
    "TextBody": "Hi {username}: " + ALL + " {unknown-thing}",
}
CONFIG = {"From": "Security <security@example.com>", "ReplyTo": "help@example.com",
          "SourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com"}
EVENT = {
    "event_id": "ev-0001",
    "username": "alice",
    "client_ip": "192.0.2.1",
    "city": "Seattle",
    "country_name": "United States",
    "creation_date": NOW,
    "device_name": "Chrome 126, Windows 10",
}


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    for name in (nt.SMTP_HOST_ENV, nt.SMTP_PORT_ENV, nt.SMTP_STARTTLS_ENV, nt.SMTP_SSL_ENV, nt.SMTP_USER_ENV,
                 nt.SMTP_PASSWORD_ENV, nt.SMTP_TIMEOUT_ENV, nt.SMTP_CA_FILE_ENV, nt.NOTIFY_FROM_ENV,
                 nt.FEEDBACK_TTL_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, SECRET)
    monkeypatch.setenv(nt.PUBLIC_URL_ENV, BASE)
    monkeypatch.setenv(nt.OUTBOX_ENV, str(tmp_path / "outbox"))
    # a failed notification may be tried again at once (the waits between attempts have tests of their own)
    monkeypatch.setenv(nt.RETRY_AFTER_ENV, "0")


@pytest.fixture
def con(tmp_path):
    c = connect(tmp_path / "s.duckdb")
    c.execute("INSERT INTO users (username, user_status, email, pool_key) "
              "VALUES ('alice', 'CONFIRMED', 'alice@example.org', '')")
    c.execute("INSERT INTO users (username, user_status, pool_key) VALUES ('noemail', 'CONFIRMED', '')")
    yield c
    c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 2.0.0 OK"


class RefuseRecipient:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 mailbox unavailable"


class RefuseData:
    async def handle_DATA(self, server, session, envelope):
        return "554 5.7.1 message rejected"


@pytest.fixture
def smtp_server():
    started = []

    def start(handler, **kwargs):
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append(controller)
        return port

    yield start
    for c in started:
        c.stop()


def smtp(port, **kw) -> nt.SmtpTransport:
    return nt.SmtpTransport(nt.SmtpSettings(host="127.0.0.1", port=port, timeout=3, **kw))


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        self.hrefs += [v for k, v in attrs if k == "href"]


# -- rendering ------------------------------------------------------------------------------------------


def values(**over):
    v = nt.placeholder_values(EVENT, now=NOW)
    v.update(over)
    return v


def test_render_fills_every_placeholder():
    subject, html, text = render(TEMPLATE, values())
    assert subject == "Sign-in for alice from Seattle"
    assert text.startswith("Hi alice: alice | 192.0.2.1 | Seattle | United States | 2024-07-17 17:25:55 UTC | "
                           "Chrome 126, Windows 10 | https://risk.example.test/v1/feedback?token=")
    assert "{" + "unknown-thing}" in text and "{unknown-thing}" in html  # not Cognito's: left as is
    for p in nt.PLACEHOLDERS:
        assert "{" + p + "}" not in subject + html + text
    assert " | ev-0001 | " in text


def test_values_are_escaped_in_html_only_and_never_break_a_line():
    evil = '<script>alert("x")</script> & {city}\r\nBcc: evil@example.com'
    subject, html, text = render(TEMPLATE, values(username=evil))
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; {city}" in html
    assert '<script>alert("x")</script> & {city} Bcc: evil@example.com' in text  # raw in text, one line
    assert "\r" not in subject and "\n" not in subject
    assert subject == 'Sign-in for <script>alert("x")</script> & {city} Bcc: evil@example.com from Seattle'


def test_missing_values_render_as_unknown_and_templates_may_be_objects():
    template = SimpleNamespace(Subject="From {city}", HtmlBody="<b>{country}</b>", TextBody=None)
    subject, html, text = render(template, {"username": "bob"})
    assert (subject, html, text) == ("From unknown", "<b>unknown</b>", None)
    snake = SimpleNamespace(subject="Hi {username}", html_body=None, text_body="T {username}")
    assert render(snake, {"username": "bob"}) == ("Hi bob", None, "T bob")
    with pytest.raises(ConfigurationError, match="Subject is required"):
        render({"HtmlBody": "x"}, {})


# -- feedback tokens ------------------------------------------------------------------------------------


def test_token_round_trip_and_links():
    token = nt.make_token("ev-0001", "alice", now=NOW)
    claims = nt.verify_token(token, now=NOW + timedelta(days=6))
    assert (claims.event_id, claims.username, claims.expires_at) == ("ev-0001", "alice", NOW + timedelta(days=7))
    valid, invalid = nt.feedback_links(token)
    for link, value in ((valid, "valid"), (invalid, "invalid")):
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BASE + "/v1/feedback"
        assert parse_qs(parts.query) == {"token": [token], "value": [value]}


def test_tampered_expired_and_foreign_tokens_are_refused():
    token = nt.make_token("ev-0001", "alice", now=NOW, ttl=timedelta(hours=1))
    payload, sig = token.split(".")
    forged = nt._b64(b'{"e":"ev-0001","u":"mallory","x":9999999999}')
    for bad in (forged + "." + sig, payload + "." + sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB"),
                payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + sig):
        with pytest.raises(FeedbackTokenError, match="signature does not match"):
            nt.verify_token(bad, now=NOW)
    with pytest.raises(FeedbackTokenError, match="expired"):
        nt.verify_token(token, now=NOW + timedelta(hours=1))
    with pytest.raises(FeedbackTokenError, match="signature does not match"):
        nt.verify_token(token, now=NOW, secret="another-secret-of-enough-length")
    for junk in ("", "abc", "a.b.c", "é.é"):
        with pytest.raises(FeedbackTokenError, match="malformed|signature"):
            nt.verify_token(junk, now=NOW)


def test_no_links_without_a_secret_or_a_public_url(monkeypatch):
    monkeypatch.delenv(nt.FEEDBACK_SECRET_ENV)
    with pytest.raises(ConfigurationError, match="RISKGATE_FEEDBACK_SECRET is not set"):
        nt.make_token("ev", "alice")
    # at least 16 characters: not bytes (8 'é' are 16 bytes), not blanks
    for short in ("short", "é" * 8, " " * 20, "abc" + " " * 14):
        monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, short)
        with pytest.raises(ConfigurationError, match="RISKGATE_FEEDBACK_SECRET"):
            nt.make_token("ev", "alice")
    monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, "é" * 16)
    assert nt.verify_token(nt.make_token("ev", "alice")).event_id == "ev"
    monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, SECRET)
    monkeypatch.delenv(nt.PUBLIC_URL_ENV)
    with pytest.raises(ConfigurationError, match="RISKGATE_PUBLIC_URL is not set"):
        nt.feedback_links("t")
    with pytest.raises(ConfigurationError, match="http"):
        nt.feedback_links("t", "javascript:alert(1)")


def test_ttl_from_environment(monkeypatch):
    monkeypatch.setenv(nt.FEEDBACK_TTL_ENV, "60")
    claims = nt.verify_token(nt.make_token("ev", "alice", now=NOW), now=NOW)
    assert claims.expires_at == NOW + timedelta(seconds=60)
    monkeypatch.setenv(nt.FEEDBACK_TTL_ENV, "soon")
    with pytest.raises(ConfigurationError, match="RISKGATE_FEEDBACK_TTL"):
        nt.make_token("ev", "alice")
    # at most 365 days: a lifetime must leave the expiry a date (99999999999999 s was an OverflowError)
    monkeypatch.setenv(nt.FEEDBACK_TTL_ENV, "31536000")
    assert nt.verify_token(nt.make_token("ev", "alice", now=NOW), now=NOW).expires_at == NOW + timedelta(days=365)
    for bad in ("31536001", "99999999999999", "9" * 5000, "0", "-60", "1e3", "60.5"):
        monkeypatch.setenv(nt.FEEDBACK_TTL_ENV, bad)
        with pytest.raises(ConfigurationError) as exc:
            nt.make_token("ev", "alice")
        assert str(exc.value) == ("RISKGATE_FEEDBACK_TTL must be a whole number of seconds from 1 to 31536000 "
                                  f"(365 days), got {bad!r}")


# -- delivery through a real SMTP server on loopback -----------------------------------------------------------------


def arrived(recorder):
    assert len(recorder.envelopes) == 1
    env = recorder.envelopes[0]
    return env, email.message_from_bytes(env.content, policy=default_policy)


def test_message_arrives_over_smtp(con, smtp_server):
    handler = Recorder()
    port = smtp_server(handler)
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG, transport=smtp(port))
    assert (rec.status, rec.reason, rec.transport, rec.recipient) == ("sent", None, "smtp", "alice@example.org")
    env, msg = arrived(handler)
    assert env.mail_from == "security@example.com" and env.rcpt_tos == ["alice@example.org"]
    assert msg["Subject"] == "Sign-in for alice from Seattle"
    assert msg["From"] == "Security <security@example.com>"
    assert msg["To"] == "alice@example.org"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["Message-ID"] == rec.location
    assert msg["X-Riskgate-Event-Id"] == "ev-0001"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "Hi alice: alice | 192.0.2.1 | Seattle" in text
    links = Links()
    links.feed(html)
    assert len(links.hrefs) == 2
    for href, value in zip(links.hrefs, ("valid", "invalid")):
        query = parse_qs(urlsplit(href).query)
        assert query["value"] == [value]
        claims = nt.verify_token(query["token"][0])
        assert (claims.event_id, claims.username) == ("ev-0001", "alice")
    assert nt.notifications_for_event(con, "ev-0001") == [rec]
    assert nt.already_notified(con, "ev-0001")  # whatever template comes next: one email per sign-in
    assert not nt.already_notified(con, "ev-0002")


def test_header_injection_through_the_username_goes_nowhere(con, smtp_server):
    handler = Recorder()
    port = smtp_server(handler)
    evil = {**EVENT, "username": "mallory\r\nBcc: evil@example.com", "event_id": "ev-evil"}
    rec = nt.notify(con, evil, "NoActionEmail", TEMPLATE, CONFIG, recipient="mallory@example.org",
                    transport=smtp(port))
    assert rec.status == "sent", rec.reason
    env, msg = arrived(handler)
    assert env.rcpt_tos == ["mallory@example.org"]
    assert msg["Bcc"] is None and b"\nBcc:" not in env.content
    assert msg["Subject"] == "Sign-in for mallory Bcc: evil@example.com from Seattle"
    html = msg.get_body(("html",)).get_content()
    assert "Hi mallory Bcc: evil@example.com," in html


def test_bad_addresses_are_refused_not_sent(con, smtp_server):
    handler = Recorder()
    port = smtp_server(handler)
    rec = nt.notify(con, EVENT, "MfaEmail", TEMPLATE, CONFIG, recipient="a@example.org, b@example.org",
                    transport=smtp(port))
    assert rec.status == "failed" and "is not one email address" in rec.reason
    rec = nt.notify(con, EVENT, "MfaEmail", TEMPLATE, {**CONFIG, "From": "x@example.com\r\nBcc: e@example.com"},
                    transport=smtp(port))
    assert rec.status == "failed" and "From" in rec.reason and "line break" in rec.reason
    assert handler.envelopes == []


def test_an_internationalised_address_travels_with_smtputf8_and_its_domain_in_ascii(con, smtp_server):
    handler = Recorder()
    port = smtp_server(handler, enable_SMTPUTF8=True)
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG, recipient="José <jösé@exämple.com>",
                    transport=smtp(port))
    assert rec.status == "sent", rec.reason
    env, _msg = arrived(handler)
    assert env.rcpt_tos == ["jösé@xn--exmple-cua.com"] and "SMTPUTF8" in env.mail_options
    assert "\r\nTo: José <jösé@xn--exmple-cua.com>\r\n".encode() in env.content  # UTF-8, no encoded words


def test_a_non_ascii_local_part_needs_a_server_offering_smtputf8_an_idn_domain_does_not(con, smtp_server):
    handler = Recorder()
    port = smtp_server(handler, enable_SMTPUTF8=False)  # aiosmtpd offers it unless told not to
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG, recipient="jösé@example.com", transport=smtp(port))
    assert rec.status == "failed" and "does not offer SMTPUTF8" in rec.reason and handler.envelopes == []
    rec = nt.notify(con, {**EVENT, "event_id": "ev-idn"}, "BlockEmail", TEMPLATE, CONFIG,
                    recipient="ops@exämple.com", transport=smtp(port))
    assert rec.status == "sent", rec.reason
    env, _msg = arrived(handler)
    assert env.rcpt_tos == ["ops@xn--exmple-cua.com"] and "SMTPUTF8" not in env.mail_options


def test_the_outbox_writes_an_internationalised_address_as_utf8(con, tmp_path):
    rec = nt.notify(con, EVENT, "MfaEmail", TEMPLATE, CONFIG, recipient="jösé@example.com")
    assert rec.status == "outbox", rec.reason
    raw = Path(rec.location).read_bytes()
    assert "\r\nTo: jösé@example.com\r\n".encode() in raw


@pytest.mark.parametrize("handler, expected", [(RefuseRecipient(), "refused the recipient: 550 5.1.1 mailbox unavailable"),
                                                (RefuseData(), "refused: 554 5.7.1 message rejected")])
def test_a_refusing_server_gives_a_recorded_failure(con, smtp_server, handler, expected):
    port = smtp_server(handler)
    start = time.monotonic()
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG, transport=smtp(port))
    assert time.monotonic() - start < 5
    assert rec.status == "failed" and expected in rec.reason
    stored = nt.notifications_for_event(con, "ev-0001")
    assert [(r.status, r.reason) for r in stored] == [("failed", rec.reason)]


class _OddQuit(SMTP):
    """An SMTP server that takes the message (250 to DATA) and then answers QUIT otherwise than 221: with
    ``500 5.5.1 not now`` (``quit="500"``), by closing the connection without a word (``"drop"``), or not at all
    (``"hang"``)."""

    quit = "500"

    async def smtp_QUIT(self, arg):
        if self.quit == "hang":
            await asyncio.sleep(30)
        if self.quit == "500":
            await self.push("500 5.5.1 not now")
        self._handler_coroutine.cancel()
        self.transport.close()


def odd_quit_server(handler, quit: str) -> Controller:
    """A started loopback controller of :class:`_OddQuit` (stop it when done); its port is ``.port``."""

    class OddController(Controller):
        def factory(self):
            server = _OddQuit(self.handler, **self.SMTP_kwargs)
            server.quit = quit
            return server

    controller = OddController(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller


@pytest.mark.parametrize("quit", ["500", "drop", "hang"])
def test_a_message_the_server_took_is_sent_whatever_it_answers_to_quit(con, quit):
    """A server that answered 250 to DATA has the message: a QUIT answered with 500 (or a connection closed or
    silent then) was a recorded failure, and every later run sent the email again (a user got 3 copies)."""
    handler = Recorder()
    controller = odd_quit_server(handler, quit)
    try:
        rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG,
                        transport=nt.SmtpTransport(nt.SmtpSettings(host="127.0.0.1", port=controller.port,
                                                                   timeout=1)))
    finally:
        controller.stop()
    assert (rec.status, rec.reason) == ("sent", None)
    _env, msg = arrived(handler)
    assert msg["Message-ID"] == rec.location
    assert [(r.status, r.reason) for r in nt.notifications_for_event(con, "ev-0001")] == [("sent", None)]


def test_a_server_that_is_down_gives_a_recorded_failure_quickly(con):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG, transport=smtp(port))
    assert time.monotonic() - start < 5
    assert rec.status == "failed"
    assert rec.reason.startswith(f"cannot connect to SMTP server 127.0.0.1:{port}:")


def test_no_email_address_for_user(con, smtp_server):
    handler = Recorder()
    port = smtp_server(handler)
    for user in ("noemail", "stranger"):
        rec = nt.notify(con, {**EVENT, "username": user}, "BlockEmail", TEMPLATE, CONFIG, transport=smtp(port))
        assert (rec.status, rec.reason, rec.recipient) == ("failed", "no email address for user", None)
    assert handler.envelopes == []


def test_missing_secret_fails_the_notification_not_the_caller(con, monkeypatch, tmp_path):
    monkeypatch.delenv(nt.FEEDBACK_SECRET_ENV)
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG)
    assert rec.status == "failed" and "RISKGATE_FEEDBACK_SECRET is not set" in rec.reason
    plain = {"Subject": "New sign-in", "TextBody": "Hello {username}, was this you? {ip-address}"}
    rec = nt.notify(con, EVENT, "NoActionEmail", plain, CONFIG)
    assert rec.status == "outbox"


def test_from_address_falls_back_to_environment(con, monkeypatch):
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, {"ReplyTo": None})
    assert rec.status == "failed" and "no From address" in rec.reason
    monkeypatch.setenv(nt.NOTIFY_FROM_ENV, "riskgate@example.net")
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, None)
    assert rec.status == "outbox"
    msg = email.message_from_bytes(open(rec.location, "rb").read(), policy=default_policy)
    assert msg["From"] == "riskgate@example.net" and msg["Reply-To"] is None


def test_template_taken_from_the_configuration_by_name(con):
    config = SimpleNamespace(From="security@example.com", ReplyTo=None, SourceArn="arn:aws:ses:x", BlockEmail=None,
                             NoActionEmail=None, MfaEmail=SimpleNamespace(Subject="MFA for {username}", HtmlBody=None,
                                                                          TextBody="Code asked from {ip-address}"))
    rec = nt.notify(con, EVENT, "MfaEmail", None, config)
    assert (rec.status, rec.subject) == ("outbox", "MFA for alice")
    rec = nt.notify(con, EVENT, "BlockEmail", None, config)
    assert rec.status == "failed" and rec.reason == "NotifyConfiguration has no BlockEmail template"


def test_unknown_template_name_is_a_recorded_failure(con):
    rec = nt.notify(con, EVENT, "WelcomeEmail", TEMPLATE, CONFIG)
    assert rec.status == "failed" and "'WelcomeEmail' is not one of BlockEmail" in rec.reason


# -- the outbox ---------------------------------------------------------------------------------------------------------


def test_outbox_when_no_smtp_server_is_configured(con, tmp_path):
    assert isinstance(nt.default_transport(), nt.OutboxTransport)
    rec = nt.notify(con, EVENT, "MfaEmail", TEMPLATE, CONFIG)
    assert (rec.status, rec.transport) == ("outbox", "outbox")
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert [str(f) for f in files] == [rec.location]
    assert files[0].name.endswith(f"-{rec.notification_id}.eml")
    msg = email.message_from_bytes(files[0].read_bytes(), policy=default_policy)
    assert msg["To"] == "alice@example.org" and msg["Subject"] == "Sign-in for alice from Seattle"
    assert "192.0.2.1" in msg.get_body(("plain",)).get_content()


def test_outbox_files_hold_a_token_and_are_readable_by_their_owner_only(con, tmp_path, monkeypatch):
    """An .eml holds a feedback token (replayable until it expires): it was written 0644 under the usual umask.
    Each is 0600; a folder riskgate creates is 0700, one that exists is left as it is."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        rec = nt.notify(con, EVENT, "MfaEmail", TEMPLATE, CONFIG)
        assert rec.status == "outbox", rec.reason
        assert stat.S_IMODE(os.stat(rec.location).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "outbox").st_mode) == 0o700
        assert nt.FEEDBACK_PATH + "?token=" in Path(rec.location).read_text()
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        monkeypatch.setenv(nt.OUTBOX_ENV, str(shared))
        rec = nt.notify(con, {**EVENT, "event_id": "ev-0002"}, "MfaEmail", TEMPLATE, CONFIG)
        assert stat.S_IMODE(os.stat(rec.location).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755
    finally:
        os.umask(old)


def test_unwritable_outbox_is_a_recorded_failure(con, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    monkeypatch.setenv(nt.OUTBOX_ENV, str(blocker / "outbox"))
    rec = nt.notify(con, EVENT, "MfaEmail", TEMPLATE, CONFIG)
    assert rec.status == "failed" and rec.reason.startswith("cannot write to outbox")


# -- SMTP settings from the environment; TLS and login -------------------------------------------------------------------


def test_smtp_settings_from_environment(monkeypatch):
    assert nt.SmtpSettings.from_env() is None
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "mail.example.com")
    monkeypatch.setenv(nt.SMTP_STARTTLS_ENV, "true")
    monkeypatch.setenv(nt.SMTP_USER_ENV, "relay")
    monkeypatch.setenv(nt.SMTP_PASSWORD_ENV, "hunter2-relay-password")
    s = nt.SmtpSettings.from_env()
    assert (s.host, s.effective_port, s.starttls, s.ssl, s.username) == ("mail.example.com", 587, True, False, "relay")
    assert "hunter2-relay-password" not in repr(s)
    assert isinstance(nt.default_transport(), nt.SmtpTransport)
    monkeypatch.setenv(nt.SMTP_SSL_ENV, "yes")
    with pytest.raises(ConfigurationError, match="not both"):
        nt.SmtpSettings.from_env()
    monkeypatch.setenv(nt.SMTP_SSL_ENV, "maybe")
    with pytest.raises(ConfigurationError, match="RISKGATE_SMTP_SSL must be true or false"):
        nt.SmtpSettings.from_env()
    monkeypatch.setenv(nt.SMTP_SSL_ENV, "0")
    for bad in ("99999", "²5", "٢٥"):  # "²5" is digits to str.isdigit, and int() refused it: a ValueError
        monkeypatch.setenv(nt.SMTP_PORT_ENV, bad)
        with pytest.raises(ConfigurationError, match="RISKGATE_SMTP_PORT must be a port number"):
            nt.SmtpSettings.from_env()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


class Accounts:
    def __init__(self):
        self.logins = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"relay", b"s3cret-relay")
        self.logins.append((auth_data.login, ok))
        return AuthResult(success=ok, handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_and_login_with_settings_from_environment(con, smtp_server, certificate, monkeypatch, mode):
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    handler, accounts = Recorder(), Accounts()
    if mode == "starttls":
        port = smtp_server(handler, tls_context=server_ctx, require_starttls=True, authenticator=accounts,
                           auth_required=True, auth_exclude_mechanism=["LOGIN"])
    else:
        port = smtp_server(handler, ssl_context=server_ctx, authenticator=accounts, auth_required=True,
                           auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(nt.SMTP_PORT_ENV, str(port))
    monkeypatch.setenv(nt.SMTP_STARTTLS_ENV if mode == "starttls" else nt.SMTP_SSL_ENV, "1")
    monkeypatch.setenv(nt.SMTP_USER_ENV, "relay")
    monkeypatch.setenv(nt.SMTP_PASSWORD_ENV, "s3cret-relay")
    monkeypatch.setenv(nt.SMTP_CA_FILE_ENV, str(cert))
    monkeypatch.setenv(nt.SMTP_TIMEOUT_ENV, "3")
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG)
    assert rec.status == "sent", rec.reason
    assert accounts.logins == [(b"relay", True)]
    arrived(handler)
    monkeypatch.setenv(nt.SMTP_PASSWORD_ENV, "wrong")
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG)
    assert rec.status == "failed" and "535" in rec.reason
    monkeypatch.delenv(nt.SMTP_CA_FILE_ENV)  # a self-signed server is not trusted by default
    rec = nt.notify(con, EVENT, "BlockEmail", TEMPLATE, CONFIG)
    assert rec.status == "failed" and "CERTIFICATE_VERIFY_FAILED" in rec.reason
    assert len(handler.envelopes) == 1


def test_single_address():
    assert nt.single_address("Name <a@example.com>", "From") == "Name <a@example.com>"
    for bad in ("", "not an address", "a@example.com, b@example.com", "a@example.com\nBcc: x@example.com"):
        with pytest.raises(NotifyError):
            nt.single_address(bad, "From")


def test_delivery_problems_name_what_every_email_of_the_configurations_in_effect_would_lack(tmp_path, monkeypatch):
    """`score --notify` refuses before scoring what would make every email fail (and use up its attempts)."""
    from risk import config as rc

    for name in ("RISKGATE_FEEDBACK_SECRET", "RISKGATE_PUBLIC_URL", "RISKGATE_NOTIFY_FROM", "RISKGATE_USER_POOL_ID"):
        monkeypatch.delenv(name, raising=False)
    con = connect(tmp_path / "s.duckdb")
    try:
        assert nt.delivery_problems(con) == []  # AUDIT (the default mode) never notifies
        rc.set_mode(con, "ENFORCED", "eu-west-1_Pool")
        problems = nt.delivery_problems(con)  # the defaults: From set, templates with links
        assert len(problems) == 2, problems
        assert "RISKGATE_FEEDBACK_SECRET is not set" in problems[0] and "pool eu-west-1_Pool" in problems[0]
        assert "RISKGATE_PUBLIC_URL is not set" in problems[1]
        with pytest.raises(ConfigurationError, match="RISKGATE_FEEDBACK_SECRET is not set.*; RISKGATE_PUBLIC_URL"):
            nt.check_settings(con)
        monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", SECRET)
        monkeypatch.setenv("RISKGATE_PUBLIC_URL", BASE)
        assert nt.delivery_problems(con) == []
        # a client of its own whose templates have no links and no From: a sender is needed, the links are not
        doc = {"AccountTakeoverRiskConfiguration": {
            "Actions": {"HighAction": {"Notify": True, "EventAction": "BLOCK"}},
            "NotifyConfiguration": {"SourceArn": "arn:aws:ses:us-east-1:000000000000:identity/example.com",
                                    **{t: {"Subject": "s", "TextBody": "{username}"} for t in nt.TEMPLATE_NAMES}}}}
        rc.set_configuration(con, rc.RiskConfiguration.model_validate(doc), user_pool_id="eu-west-1_Pool",
                             client_id="client1")
        monkeypatch.delenv("RISKGATE_FEEDBACK_SECRET")
        problems = nt.delivery_problems(con)
        assert problems[0].startswith("the configuration of pool eu-west-1_Pool client client1 notifies")
        assert "has no From and $RISKGATE_NOTIFY_FROM is not set" in problems[0]
        assert "client1" not in problems[1] and "RISKGATE_FEEDBACK_SECRET" in problems[1]
        monkeypatch.setenv("RISKGATE_NOTIFY_FROM", "not an address")
        assert nt.delivery_problems(con)[0].startswith("$RISKGATE_NOTIFY_FROM 'not an address' ")
        assert nt.delivery_problems(con)[0].endswith("(the sender of pool eu-west-1_Pool client client1)")
        monkeypatch.setenv("RISKGATE_NOTIFY_FROM", "security@example.com")
        monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", SECRET)
        assert nt.delivery_problems(con) == []
        rc.set_mode(con, "AUDIT", "eu-west-1_Pool")
        monkeypatch.setenv("RISKGATE_NOTIFY_FROM", "not an address")  # used by no configuration that notifies
        monkeypatch.delenv("RISKGATE_FEEDBACK_SECRET")
        assert nt.delivery_problems(con) == []
    finally:
        con.close()
