"""The HTTP service: inline decisions (``POST /v1/evaluate``) and Cognito's risk operations (``POST /``).

Only HTTP wiring lives here; the work is ``risk.inline`` (one event through
ingest's and batch scoring's own steps) and ``service.cognito`` (the JSON
protocol onto ``risk.config``, ``risk.auth_events`` and ``risk.feedback``),
run on the store thread of ``service.worker``.

Routes:

* ``GET /healthz`` -- liveness, queue figures and the store's unsent
  notifications; no key.
* ``GET /openapi.json``, ``GET /docs`` -- the OpenAPI schema; no key.
* ``POST /v1/evaluate`` -- the API key (``X-Api-Key: KEY`` or
  ``Authorization: Bearer KEY``); body: one riskgate JSON-lines event
  (``ContextData`` and all) plus, optionally, ``Password`` -- checked against
  breach data and forgotten, never stored, logged or echoed. Unknown fields
  are refused (422 naming them), as are malformed JSON and bodies over 1 MiB
  (413, before anything is parsed).
* ``POST /`` -- Cognito's JSON protocol (``service.cognito``), signed with
  SigV4 (access key id ``$RISKGATE_AWS_ACCESS_KEY_ID``, secret = the API key)
  or carrying ``X-Api-Key``.
* ``GET /v1/feedback?token=...&value=valid|invalid`` -- the one-click links of
  the notification emails: a page naming the sign-in, with one button that
  sends ``POST /v1/feedback`` (form fields ``token``, ``value``), which
  records the answer; the signed token is the authorisation. A GET records
  nothing: mail scanners and link previews fetch every link of an email.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from datetime import timezone
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ingest.errors import RiskgateError, StoreError
from service import cognito
from service.worker import DEFAULT_RETRY_EVERY_S, Notifier, Owed, StoreWorker

log = logging.getLogger("riskgate.service")

API_KEY_ENV = "RISKGATE_API_KEY"
MAX_BODY_BYTES = 1 << 20
DEFAULT_REQUEST_TIMEOUT_S = 30.0
MIN_API_KEY_CHARS = 16
#: how long ``/healthz`` waits for the store thread to count the store's unsent notifications (busy, or the store
#: handed over to another process: they are reported as null rather than making the probe wait)
HEALTHZ_STORE_WAIT_S = 0.25
#: ``/healthz`` (no key) reads the store's unsent notifications at most this often, and answers with the last
#: figures meanwhile: a flood of probes must not queue work for the store thread the sign-ins wait for
HEALTHZ_UNSENT_EVERY_S = 2.0


# -- the /v1/evaluate shapes -------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HttpHeader(_Strict):
    headerName: str
    headerValue: str


class ContextDataModel(_Strict):
    IpAddress: str = Field(description="The end user's IP address (not the proxy's).")
    ServerName: str
    ServerPath: str
    HttpHeaders: list[HttpHeader] = Field(description="The request's headers, in the order received.")
    EncodedData: str | None = Field(None, description="Device fingerprint blob from the client library.")


class ChallengeResponseModel(_Strict):
    ChallengeName: str
    ChallengeResponse: str


class EvaluateRequest(_Strict):
    """One sign-in event as the application server sees it (the riskgate JSON-lines record) and the password."""

    EventId: str | None = Field(None, description="1..50 characters of [\\w+-]; generated when absent. "
                                                  "Sending an EventId again returns the stored assessment.")
    UserPoolId: str | None = None
    ClientId: str | None = None
    Username: str
    UserSub: str | None = None
    EventType: str = Field(description="SignIn, SignUp, ForgotPassword, PasswordChange or ResendCode.")
    EventResponse: str = Field(description="Pass, Fail or InProgress (Success/Failure accepted).")
    CreationDate: str | int | float | None = Field(None, description="ISO 8601 or epoch s/ms; now when absent.")
    ChallengeResponses: list[ChallengeResponseModel] | None = None
    ContextData: ContextDataModel | None = None
    RoundTripTimeMs: int | float | None = None
    CompromisedCredentialsDetected: bool | None = None
    Password: SecretStr | None = Field(None, description="Checked against breach data, then forgotten: never "
                                                         "stored, logged or returned.")


class Reason(BaseModel):
    Code: str
    Value: float | None
    Contribution: float | None


class EvaluateResponse(BaseModel):
    EventId: str
    Score: float | None = Field(description="Calibrated account-takeover risk in [0, 1].")
    RiskLevel: str | None = Field(description="Low, Medium, High, or null (no risk).")
    RiskDecision: str | None = Field(description="NoRisk, AccountTakeover or Block.")
    Action: str = Field(description="What to do now: Allow, MfaChallenge or Block (always Allow unless ENFORCED).")
    Outcome: str = Field(description="The decision's outcome (in AUDIT: what would have happened).")
    ChallengeMfa: bool
    EventAction: str | None
    Mode: str
    Enforced: bool
    CompromisedCredentialsDetected: bool | None
    ResetRequired: bool | None
    Notification: str | None = Field(description="The template being sent (ENFORCED), else null.")
    Reasons: list[Reason] = Field(description="The signals that contributed most (events with a risk level).")
    DecisionReasons: list[str]
    ModelVersion: int | None
    ThresholdsVersion: int | None
    ConfigVersion: int | None
    Duplicate: bool = Field(description="The EventId was stored already: this is its stored assessment.")
    Features: dict[str, float | None] | None = Field(None, description="With ?features=true: the features.")


def _percentiles(timings: dict) -> dict:
    """{name: {p50, p99, max}} in milliseconds of the recorded durations."""
    out = {}
    for name, values in timings.items():
        v = sorted(values)
        if v:
            out[name] = {"n": len(v), "p50": round(v[len(v) // 2] * 1000, 2),
                         "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))] * 1000, 2), "max": round(v[-1] * 1000, 2)}
    return out


def _response(result, features: dict | None) -> dict:
    a = result.assessment
    enforced = bool(a["enforced"])
    outcome = a["outcome"]
    # what to do now: the enforced outcome, and in AUDIT or OFF the user's own MFA (the pool's, no risk action)
    action = "Block" if a["blocked"] else ("MfaChallenge" if a["mfa_challenge"] else "Allow")
    return {
        "EventId": a["event_id"],
        "Score": a["score"],
        "RiskLevel": a["risk_level"],
        "RiskDecision": a["risk_decision"],
        "Action": action,
        "Outcome": outcome,
        "ChallengeMfa": action == "MfaChallenge",
        "EventAction": a["event_action"],
        "Mode": a["mode"],
        "Enforced": enforced,
        "CompromisedCredentialsDetected": a["compromised_credentials_detected"],
        "ResetRequired": a["reset_required"],
        "Notification": a["notification"],
        "Reasons": [{"Code": r["code"], "Value": r["value"], "Contribution": r["contribution"]}
                    for r in (a["reasons"] or [])],
        "DecisionReasons": list(a["decision_reasons"] or []),
        "ModelVersion": a["model_version"],
        "ThresholdsVersion": a["thresholds_version"],
        "ConfigVersion": a["config_version"],
        "Duplicate": result.duplicate,
        **({"Features": features} if features is not None else {}),
    }


# -- pieces of the HTTP layer --------------------------------------------------------------------


def _error(status: int, message: str, **extra) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _validation_errors(exc: ValidationError) -> list[dict]:
    """Pydantic's errors without their ``input`` (which could hold the password)."""
    out = []
    for e in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        out.append({"loc": loc, "msg": e["msg"], "type": e["type"]})
    return out


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, before the app reads any of it.

    The body is read here (up to the limit) and replayed to the app, so a
    declared Content-Length over the limit is refused at once and a chunked
    body as soon as it passes the limit.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                return await self._refuse(scope, send, 400, "Content-Length is not a number")
            if too_big:
                return await self._refuse(scope, send, 413, f"request body over {self.limit} bytes")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # the client went away mid-request: nothing to answer
            body = msg.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await self._refuse(scope, send, 413, f"request body over {self.limit} bytes")
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, send, status: int, message: str) -> None:
        """Answer ``status`` with ``message``: in Cognito's error shape to a request of its protocol (``POST /``,
        the operation in ``X-Amz-Target``), so that the SDKs show the code and the message; else ``{"error": ...}``."""
        headers = [(b"connection", b"close")]
        if scope.get("path") == "/" or any(name.lower() == b"x-amz-target" for name, _ in scope.get("headers") or []):
            error = cognito.CognitoError("InvalidParameterException", message, status)
            body = json.dumps(error.body()).encode()
            headers += [(b"content-type", cognito.CONTENT_TYPE.encode()), (b"x-amzn-errortype", error.code.encode())]
        else:
            body = json.dumps({"error": message}).encode()
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _key_from(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


def _key_ok(presented: str | None, api_key: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode("utf-8"), api_key.encode("utf-8"))


def check_api_key(api_key: str | None) -> str:
    """The API key to require, or a StoreError-like RiskgateError saying how to set one."""
    if not api_key:
        raise RiskgateError(f"{API_KEY_ENV} is not set: every data route of the service requires an API key; set it "
                            "to a long random value, e.g. `export RISKGATE_API_KEY=$(python -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))')`")
    if sum(not c.isspace() for c in api_key) < MIN_API_KEY_CHARS:  # blanks do not count (16 spaces were a key)
        raise RiskgateError(f"{API_KEY_ENV} is shorter than {MIN_API_KEY_CHARS} characters (not counting blanks); "
                            "use a long random value")
    if api_key != api_key.strip():  # HTTP drops them from X-Api-Key: only a SigV4 signature could ever match
        raise RiskgateError(f"{API_KEY_ENV} begins or ends with blanks, which an X-Api-Key header cannot carry; "
                            "remove them")
    return api_key


# -- the application -------------------------------------------------------------------------------


def record_delivery(store, rec, claimant: str) -> None:
    """Complete ``claimant``'s pending row with the outcome ``rec`` (``risk.notify.complete``) and say it in the
    service's log: each failed attempt as a WARNING naming the template, the event, the attempt and the reason
    (never the recipient's address, which a reason may quote, nor anything of the message: no token or link), and
    an email sent after failed attempts as INFO. Runs on the store thread. A user without an email address in a
    store whose users loaded without a pool id belong to no pool is told why (``unpooled_users_problem``)."""
    from risk import notify as rn

    rn.complete(store, rec, claimant)
    failed = rn.failed_attempts(store, rec.event_id) if rec.event_id else int(rec.status == "failed")
    if rec.status == "failed":
        reason = rn.reason_for_log(rec)
        if rec.reason == rn.NO_ADDRESS:
            from risk.config import unpooled_users_problem

            problem = unpooled_users_problem(store)
            if problem:
                reason += f" ({problem})"
        then = "tried again later" if failed < rn.MAX_ATTEMPTS else "not tried again"
        log.warning("notification %s about event %s failed (attempt %d of %d; %s): %s", rec.template, rec.event_id,
                    failed, rn.MAX_ATTEMPTS, then, reason)
    elif failed:
        log.info("notification %s about event %s %s on attempt %d (after %d failed)", rec.template, rec.event_id,
                 "sent" if rec.status == "sent" else "written to the outbox", failed + 1, failed)


def create_app(db: str | None, api_key: str, *, aws_access_key_id: str | None = None,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S, enricher=None, checker=None,
               transport=None, min_hold: float | None = None, store_wait: float | None = None,
               notify_retry_every: float = DEFAULT_RETRY_EVERY_S) -> FastAPI:
    """The service over the store ``db``; the store is opened when the app starts (its lifespan), or before, by
    :func:`start` (``riskgate serve``). What is owed (``risk.notify.claim_owed``) is claimed and sent at start and
    then every ``notify_retry_every`` seconds."""
    import threading

    from ingest import lease
    from ingest.context import ProxyPolicy
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import store as risk_store
    from risk.credentials import CredentialChecker
    from risk import notify as rn
    from risk.inline import InlineScorer, deliver

    api_key = check_api_key(api_key)
    # the trusted proxies and the one forwarding header they write ($RISKGATE_TRUSTED_PROXIES,
    # $RISKGATE_CLIENT_IP_HEADER): a bad setting is refused here, before the store is opened
    proxies = ProxyPolicy.default() if enricher is None else None
    # $RISKGATE_FEEDBACK_TTL, $RISKGATE_NOTIFY_RETRY_AFTER: a bad value is refused here, not at each notification
    rn.check_settings()
    # the breach data ($RISKGATE_PWNED_PATH missing or not sorted by hash, $RISKGATE_PWNED_MIN_COUNT below 1) is
    # opened here, once, so that a bad setting is refused in one line before the service starts, as
    # `riskgate credentials check` refuses it (opened by the store thread, it was a traceback and exit code 3)
    checker = checker or CredentialChecker.from_env().open()
    # $RISKGATE_STORE_WAIT: a bad value is refused here, as every command refuses it, not by the store thread
    store_wait = lease.default_wait() if store_wait is None else store_wait
    access_key_id = aws_access_key_id or os.environ.get(cognito.ACCESS_KEY_ENV) or cognito.DEFAULT_ACCESS_KEY_ID
    state: dict[str, Any] = {}

    def open_store():
        # one DuckDB thread: the service's statements are small (a handful of rows), where a second thread
        # costs more than it brings (inserts of 50 events took twice as long) and takes the core the
        # Python threads answering requests need
        return risk_store.connect(db, wait=store_wait, settings=("SET threads = 1",))

    def make_scorer(store):
        # what would make every email of the configurations in effect fail (no sender, no secret for the feedback
        # links): said at start; not refused, as `score --notify` refuses it, since a configuration set while the
        # service runs can make it true or false
        for problem in rn.delivery_problems(store):
            log.warning("notifications will fail: %s", problem)
        # users loaded without a pool id in a store of several pools (an ingest of another pool's events made it
        # so): their email (and MFA, status) applies to nobody, so every email to them fails; `score` says it too
        from risk.config import unpooled_users_problem

        if problem := unpooled_users_problem(store):
            log.warning("%s", problem)
        return InlineScorer(store, enricher=enricher or Enricher(geo=GeoResolver.from_settings(None, None),
                                                                  proxies=proxies),
                            checker=checker)

    def notify_stop_wait() -> float:
        """How long a stop waits for the email being sent: the SMTP timeout and some (at least 10 s)."""
        try:
            settings = rn.SmtpSettings.from_env()
        except RiskgateError:
            settings = None
        return max(10.0, settings.timeout + 5.0) if settings is not None else 10.0

    def owed_notifications(store, worker: StoreWorker, claimant: str) -> list[Owed]:
        """Claim for ``claimant`` what is owed (``risk.notify.claim_owed``: left pending by a service that stopped
        or a run that was killed, or failed fewer than MAX_ATTEMPTS times), for the notifier to deliver; each is
        completed as ``claimant``'s."""
        from risk import score as rs

        rn.claim_owed(store, claimant)
        scorer = worker.scorer
        rows = rs.claimed_notifications(scorer.context, claimant)
        due = scorer.due([row[1:] for row in rows])  # one for each row, in order
        return [Owed(row[0], n, lambda store, rec: record_delivery(store, rec, claimant)) for row, n in zip(rows, due)]

    starting = threading.Lock()

    def start() -> None:
        """Start the store thread (the store opened, the scorer's state loaded) and the notifier, which has what is
        owed claimed before any request (the store thread takes jobs in order); a no-op while they run. A store
        held elsewhere past the wait is a StoreError, raised here."""
        with starting:
            if state.get("running"):
                return
            worker = StoreWorker(open_store, make_scorer, **({"min_hold": min_hold} if min_hold is not None else {}))
            # every notification this service makes due is a pending row claimed by it (the inline scorer's
            # writes: risk.score._write), completed by the notifier through the store thread
            claimant = rn.service_claimant()
            # What is owed is claimed at start (before any request) as the service's own, so that what an earlier
            # service of this process left pending under that name is sent too; later claims, while this service
            # has its own notifications queued under that name, claim under a name of their own (held while it
            # runs, so no claim takes from another) and deliver only what they claimed.
            later = rn.new_claimant("service-owed")
            claimants = iter((claimant,))

            def owed(store) -> list[Owed]:
                return owed_notifications(store, worker, next(claimants, later))

            notifier = Notifier(worker, lambda n: deliver(n, transport=transport),
                                lambda store, rec: record_delivery(store, rec, claimant), stop_wait=notify_stop_wait(),
                                owed=owed, retry_every=notify_retry_every)
            worker.on_due = notifier.submit
            rn.hold(claimant)
            rn.hold(later)
            try:
                worker.start()
            except BaseException:
                rn.release(claimant)
                rn.release(later)
                raise
            notifier.start()  # what is owed, before any request; not waited for
            state.update(worker=worker, notifier=notifier, claimants=(claimant, later), running=True)

    def stop() -> None:
        """Stop the notifier and the store thread; a no-op when they do not run. What is still queued stays
        pending in the store: the next run (or start) delivers it."""
        with starting:
            if not state.get("running"):
                return
            state["running"] = False
            try:
                state["notifier"].stop()
                state["worker"].stop()
            finally:
                for claimant in state["claimants"]:
                    rn.release(claimant)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # (at once when `riskgate serve` has started them already, before the server: service.app.start)
        await asyncio.get_running_loop().run_in_executor(None, start)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, stop)

    app = FastAPI(title="riskgate", version="0.1.0", lifespan=lifespan,
                  description="Inline account-takeover risk decisions and Cognito's risk operations.")
    app.state.riskgate = state
    app.state.riskgate_start, app.state.riskgate_stop = start, stop

    async def run(fut, what: str):
        """Await a store-thread job; (result, None) or (None, error response)."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), request_timeout), None
        except TimeoutError:
            fut.cancel()
            return None, _error(503, f"the store was busy (another process's turn) for {request_timeout:g} s while "
                                     f"{what}; try again", headers={"Retry-After": "1"})

    async def unsent_notifications(worker: StoreWorker | None) -> dict | None:
        """``risk.notify.unsent`` read on the store thread, at most every HEALTHZ_UNSENT_EVERY_S (the last figures
        meanwhile); None when it cannot say within HEALTHZ_STORE_WAIT_S."""
        if worker is None or not worker.alive:
            return None
        now = time.monotonic()
        last = state.get("unsent")
        if last is not None and now - last[0] < HEALTHZ_UNSENT_EVERY_S:
            return last[1]
        state["unsent"] = (now, last[1] if last is not None else None)  # probes meanwhile: no second read
        value = await _read_unsent(worker)
        state["unsent"] = (now, value)
        return value

    async def _read_unsent(worker: StoreWorker) -> dict | None:
        fut = worker.read(rn.unsent)
        answer = asyncio.wrap_future(fut)
        answer.add_done_callback(lambda f: f.cancelled() or f.exception())  # an error comes too late: not logged
        await asyncio.wait([answer], timeout=HEALTHZ_STORE_WAIT_S)
        if not answer.done():
            fut.cancel()  # not started yet: never run
            return None
        if answer.cancelled() or answer.exception() is not None:  # stopping; the store closed meanwhile
            return None
        return answer.result()

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness: the store thread's state and queue, and the store's unsent notifications (no API key)."""
        worker: StoreWorker | None = state.get("worker")
        notifier: Notifier | None = state.get("notifier")
        unsent = await unsent_notifications(worker)
        ok = worker is not None and worker.alive
        scorer = worker.scorer if worker is not None else None
        return {"status": "ok" if ok else "unavailable", "queued": worker.queued() if worker else 0,
                "handovers": worker.handovers if worker else 0,
                # queued in this service's memory, not yet being sent
                "notifications_pending": notifier.pending() if notifier else 0,
                # in the store: {"pending": rows not delivered yet (those queued here, the one being sent, those of
                # runs that are gone, which the next claim takes), "to_retry": failed ones the next claim sends
                # again}; null when the store thread could not say at once (busy, or the store handed over)
                "notifications_unsent": unsent,
                # how the answers were made: batches, events from the in-memory state, its loads, writes
                "batches": worker.batches if worker else 0,
                "events_from_memory": scorer.online_events if scorer is not None else 0,
                "state_loads": scorer.online.loads if scorer is not None else 0,
                "writes": worker.flushes if worker else 0,
                "write_errors": scorer.write_errors if scorer is not None else 0,
                "store_thread_ms": _percentiles({**worker.timings, "write": scorer.write_seconds})
                if scorer is not None else {}}

    @app.post("/v1/evaluate", tags=["inline"], response_model=EvaluateResponse,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/EvaluateRequest"}}}}},
              responses={401: {"description": "missing or wrong API key"}, 413: {"description": "body over 1 MiB"},
                         422: {"description": "malformed JSON, unknown or mistyped fields, or an event ingest would "
                                              "quarantine (every reason given)"},
                         503: {"description": "the store stayed busy; Retry-After given"}})
    async def evaluate(request: Request, features: bool = False):
        """Assess one sign-in event now: score, level, RiskDecision, the action to take, reasons."""
        from risk.inline import InlineRequest

        t0 = time.perf_counter()
        if not _key_ok(_key_from(request), api_key):
            return _error(401, "missing or wrong API key (send X-Api-Key or Authorization: Bearer)",
                          headers={"WWW-Authenticate": "Bearer"})
        body = await request.body()
        try:
            parsed = EvaluateRequest.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, "invalid event", detail=_validation_errors(exc))
        password = parsed.Password.get_secret_value() if parsed.Password is not None else None
        record = parsed.model_dump(exclude_none=True, exclude={"Password"})
        del parsed
        req = InlineRequest(record, password)
        req.want_features = features
        del password
        worker: StoreWorker = state["worker"]
        result, err = await run(worker.evaluate(req), "assessing the event")
        if err is not None:
            return err
        out = JSONResponse(_response(result, result.features if features else None))
        worker.timings["request"].append(time.perf_counter() - t0)
        return out

    @app.post("/", tags=["cognito"], include_in_schema=True,
              summary="Cognito JSON protocol (X-Amz-Target: AWSCognitoIdentityProviderService.<Operation>)")
    async def cognito_protocol(request: Request):
        """SetRiskConfiguration, DescribeRiskConfiguration, AdminListUserAuthEvents,
        AdminUpdateAuthEventFeedback, UpdateAuthEventFeedback."""
        body = await request.body()
        try:
            op = cognito.operation_for(request.headers.get("x-amz-target"))
            if op not in cognito.PUBLIC_OPERATIONS and not _key_ok(request.headers.get("x-api-key"), api_key):
                if request.headers.get("x-api-key") is not None and request.headers.get("authorization") is None:
                    raise cognito.CognitoError("UnrecognizedClientException",
                                               "the X-Api-Key is not this service's API key", 403)
                headers = {k.lower(): v for k, v in request.headers.items()}
                cognito.verify_sigv4(request.method, request.url.path, request.url.query, headers, body,
                                     access_key_id=access_key_id, secret=api_key)
            params = _cognito_params(body)
            if not isinstance(params, dict):
                raise cognito.CognitoError("SerializationException", "the body must be a JSON object")
            fn = cognito.OPERATIONS[op]

            def job(store):
                out = fn(store, params)
                if op in cognito.CHANGES_CONFIGURATION:
                    worker.scorer.refresh()
                return out

            worker: StoreWorker = state["worker"]
            result, err = await run(worker.call(job), op)
            if err is not None:
                return err
            return JSONResponse(result, media_type=cognito.CONTENT_TYPE)
        except cognito.CognitoError as exc:
            return _cognito_error(exc)
        except StoreError as exc:
            return _cognito_error(cognito.CognitoError("InternalErrorException", str(exc), 500))
        except RiskgateError as exc:
            return _cognito_error(cognito.CognitoError("InvalidParameterException", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a fault of ours: still in Cognito's shape, for the SDKs
            log.exception("%s failed", request.headers.get("x-amz-target") or "a Cognito request")
            return _cognito_error(cognito.CognitoError(
                "InternalErrorException", f"internal error ({type(exc).__name__}); the service's log has the details",
                500))

    @app.get("/v1/feedback", tags=["feedback"], response_class=HTMLResponse)
    async def one_click_feedback(token: str, value: str):
        """The one-click links of notification emails (``value`` valid: it was me; invalid: it was not): a page that
        names the sign-in and asks the user to confirm with one button (``POST /v1/feedback``). Nothing is recorded
        on a GET: mail scanners and link previews fetch every link of an email, and would answer for the user."""
        from risk.feedback import check_feedback_token

        try:
            checked, err = await run(state["worker"].call(lambda store: check_feedback_token(store, token, value)),
                                     "reading the feedback link")
        except RiskgateError as exc:  # a bad, expired or foreign token; a bad value; an unknown event
            return _feedback_page(f"<p>This link cannot be used: {_html(str(exc))}.</p>", 400)
        if err is not None:
            return err
        return _feedback_page(_confirm_form(checked, token))

    @app.post("/v1/feedback", tags=["feedback"], response_class=HTMLResponse)
    async def one_click_feedback_confirmed(request: Request):
        """The confirmation of a one-click link's page: a form body (``token``, ``value``) records the user's
        feedback (Provider ``User``), as ``UpdateAuthEventFeedback`` does."""
        from risk.feedback import feedback_from_token

        fields, problem = _form_fields(await request.body(), request.headers.get("content-type", ""))
        if problem:
            return _feedback_page(f"<p>This answer cannot be used: {_html(problem)}.</p>", 400)
        token, value = fields["token"], fields["value"]
        try:
            _, err = await run(state["worker"].call(lambda store: feedback_from_token(store, token, value)),
                               "recording feedback")
        except RiskgateError as exc:
            return _feedback_page(f"<p>This answer cannot be used: {_html(str(exc))}.</p>", 400)
        if err is not None:
            return err
        return _feedback_page("<p>Thank you: your answer was recorded.</p>")

    @app.exception_handler(RiskgateError)
    async def _riskgate_error(request: Request, exc: RiskgateError):
        from risk.inline import InlineEventError
        from risk.model.registry import NoModelError

        if isinstance(exc, InlineEventError):
            return _error(422, "invalid event", detail=[{"loc": "", "msg": str(exc), "type": "quarantined"}])
        if isinstance(exc, StoreError):  # the store is busy elsewhere or being taken back: try again
            return _error(503, str(exc), headers={"Retry-After": "1"})
        if isinstance(exc, NoModelError):
            return _error(503, str(exc))
        return _error(400, str(exc))

    _add_schemas(app)
    return app


def start(app: FastAPI) -> None:
    """Start ``app``'s store thread and notifier now, as its lifespan would first do (the lifespan then finds them
    running): the store opened and its state loaded before a server is started, so that a store another process
    holds past ``$RISKGATE_STORE_WAIT`` is a StoreError here (``riskgate serve``: one line and exit code 2), and
    the server's port accepts once they are ready."""
    app.state.riskgate_start()


def stop(app: FastAPI) -> None:
    """Stop what :func:`start` started (a no-op when it is not running: the lifespan's end stops it too)."""
    app.state.riskgate_stop()


def _cognito_params(body: bytes) -> Any:
    """The JSON of a Cognito request's body (``{}`` when empty); SerializationException when it is not JSON, or
    nests arrays and objects more than ``ingest.sources.base.MAX_JSON_DEPTH`` levels deep (Python's parser
    recurses: about 1,000 levels, 2 KB sent without a key, were a RecursionError, a 500 and a traceback logged)."""
    from ingest.sources.base import MAX_JSON_DEPTH, deeper_than, line_column

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cognito.CognitoError("SerializationException", f"the body is not JSON: {exc}") from None
    if not text.strip():
        return {}
    at = deeper_than(text)
    if at is not None:
        line, col = line_column(text, at)
        raise cognito.CognitoError(
            "SerializationException", f"the body nests arrays and objects more than {MAX_JSON_DEPTH:,} levels deep "
                                      f"(line {line} column {col})")
    try:
        params = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise cognito.CognitoError("SerializationException", f"the body is not JSON: {exc}") from None
    try:  # a lone surrogate ("\ud800") is valid JSON but no text: no store, log or answer could hold it
        json.dumps(params, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise cognito.CognitoError("SerializationException", "the body is not JSON text: a string holds a lone "
                                   "surrogate escape (\\ud800-\\udfff not part of a pair)") from None
    return params


def _cognito_error(exc: cognito.CognitoError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, media_type=cognito.CONTENT_TYPE,
                        headers={"x-amzn-ErrorType": exc.code})


def _html(text: str) -> str:
    import html

    return html.escape(text, quote=True)


#: Headers of the feedback pages: the token is in the page's address and form, so no referrer, no cache, no frame
#: (a framing page could trick the click) and no script or outside resource at all.
FEEDBACK_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}
#: what the confirmation button of each value says
FEEDBACK_CHOICES = {"Valid": "Yes, this was me", "Invalid": "No, this was not me"}


def _feedback_page(body: str, status: int = 200) -> HTMLResponse:
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Sign-in feedback</title></head>"
            f"<body style=\"font-family: sans-serif; max-width: 36em; margin: 2em auto\">{body}</body></html>")
    return HTMLResponse(page, status_code=status, headers=FEEDBACK_PAGE_HEADERS)


def _confirm_form(checked: dict, token: str) -> str:
    """The page of a one-click link: which sign-in, the answer the link gives, one button that sends it."""
    when = checked["creation_date"]
    where = checked["client_ip"]
    about = f"the sign-in of {_html(checked['username'])}"
    if when is not None:
        about += f" at {_html(when.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S'))} UTC"
    if where:
        about += f" from {_html(where)}"
    value = checked["feedback_value"]
    # "feedback", relative: the same route under whatever prefix the public address adds, without the query
    return (f"<p>You are answering about {about}.</p>"
            "<form method=\"post\" action=\"feedback\">"
            f"<input type=\"hidden\" name=\"token\" value=\"{_html(token)}\">"
            f"<input type=\"hidden\" name=\"value\" value=\"{_html(value)}\">"
            f"<button type=\"submit\">{_html(FEEDBACK_CHOICES[value])}</button></form>")


def _form_fields(body: bytes, content_type: str) -> tuple[dict[str, str], str | None]:
    """``token`` and ``value`` of a confirmation (an HTML form's urlencoded body); (fields, None) or ({}, problem)."""
    from urllib.parse import parse_qsl

    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}, "expected a form (application/x-www-form-urlencoded) with token and value"
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        return {}, f"the form could not be read ({exc})"
    fields: dict[str, str] = {}
    for name, val in pairs:
        if name in fields:
            return {}, f"the form gives {name} twice"
        fields[name] = val
    missing = [n for n in ("token", "value") if n not in fields]
    if missing:
        return {}, f"the form lacks {' and '.join(missing)}"
    return fields, None


def _add_schemas(app: FastAPI) -> None:
    """Put EvaluateRequest (read by hand, after the key check) into the OpenAPI components."""
    original = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        js = EvaluateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in js.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps["EvaluateRequest"] = js
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


#: the query parameter that carries a feedback link's token (``GET /v1/feedback?token=...``)
SECRET_QUERY_KEY = "token"


def redact_query(path: str) -> str:
    """``path`` (with its query string) without a feedback link's token: replayable until it expires, it must not
    reach the logs (``/v1/feedback?token=[redacted]&value=valid``). A parameter is the token when its name is
    ``token`` once decoded as the route decodes it (``urllib.parse.parse_qsl``, Starlette's: ``tok%65n`` is
    ``token`` too, and was logged in clear)."""
    head, sep, query = path.partition("?")
    if not sep:
        return path
    pieces = []
    for piece in query.split("&"):
        name, eq, _value = piece.partition("=")
        if eq and unquote(name.replace("+", " ")) == SECRET_QUERY_KEY:
            piece = f"{name}=[redacted]"
        pieces.append(piece)
    return f"{head}?{'&'.join(pieces)}"


class RedactedAccessLog(logging.Filter):
    """A filter for uvicorn's access log (``uvicorn.access``: client, method, path with query, version, status):
    the path is logged through :func:`redact_query`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def asgi(app: FastAPI, limit: int = MAX_BODY_BYTES):
    """The app behind the body limit (what uvicorn serves)."""
    return BodyLimit(app, limit)
