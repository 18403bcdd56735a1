"""The service's Cognito JSON protocol, with boto3 as the real client (SigV4 signed, on loopback)."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.service_support import API_KEY, Service, copy_store, trained_base

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    base = trained_base(tmp_path_factory)
    db = copy_store(base, tmp_path_factory.mktemp("cognito") / "c.duckdb")
    service = Service(db)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def pool(svc):
    from risk.config import known_pools

    return svc.worker.call(lambda con: known_pools(con)).result(30)[0]


def client(svc, key_id="riskgate", secret=API_KEY):
    return boto3.client("cognito-idp", endpoint_url=svc.url, region_name=REGION, aws_access_key_id=key_id,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def code(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


FULL = {
    "CompromisedCredentialsRiskConfiguration": {"EventFilter": ["SIGN_IN", "PASSWORD_CHANGE"],
                                                "Actions": {"EventAction": "BLOCK"}},
    "AccountTakeoverRiskConfiguration": {
        "NotifyConfiguration": {
            "From": "Security <security@example.com>", "ReplyTo": "help@example.com",
            "SourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.com",
            "BlockEmail": {"Subject": "Blocked", "HtmlBody": "<p>{username} blocked</p>", "TextBody": "{username} blocked"},
            "NoActionEmail": {"Subject": "Sign-in", "HtmlBody": "<p>{ip-address}</p>", "TextBody": "from {ip-address}"},
            "MfaEmail": {"Subject": "MFA", "HtmlBody": "<p>{city}</p>", "TextBody": "from {city}, {country}"},
        },
        "Actions": {"LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
                    "MediumAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"},
                    "HighAction": {"Notify": True, "EventAction": "BLOCK"}},
    },
    "RiskExceptionConfiguration": {"BlockedIPRangeList": ["198.51.100.0/24", "2001:db8::/32"],
                                   "SkippedIPRangeList": ["10.0.0.0/8"]},
}


def test_set_and_describe_round_trip_every_field(svc, pool):
    c = client(svc)
    out = c.set_risk_configuration(UserPoolId=pool, **FULL)["RiskConfiguration"]
    described = c.describe_risk_configuration(UserPoolId=pool)["RiskConfiguration"]
    for doc in (out, described):
        assert doc["UserPoolId"] == pool and "LastModifiedDate" in doc
        for section, value in FULL.items():
            assert doc[section] == value
    # a client's own configuration replaces the pool's for that client; without ClientId the pool's applies
    c.set_risk_configuration(UserPoolId=pool, ClientId="web1", RiskExceptionConfiguration={"SkippedIPRangeList": ["10.1.0.0/16"]})
    web = c.describe_risk_configuration(UserPoolId=pool, ClientId="web1")["RiskConfiguration"]
    assert web["ClientId"] == "web1" and web["RiskExceptionConfiguration"] == {"SkippedIPRangeList": ["10.1.0.0/16"]}
    assert "AccountTakeoverRiskConfiguration" not in web
    other = c.describe_risk_configuration(UserPoolId=pool, ClientId="app2")["RiskConfiguration"]
    assert other["AccountTakeoverRiskConfiguration"] == FULL["AccountTakeoverRiskConfiguration"]
    # only ids: the client inherits again; the pool goes back to the defaults
    c.set_risk_configuration(UserPoolId=pool, ClientId="web1")
    assert c.describe_risk_configuration(UserPoolId=pool, ClientId="web1")["RiskConfiguration"]["RiskExceptionConfiguration"] \
        == FULL["RiskExceptionConfiguration"]
    c.set_risk_configuration(UserPoolId=pool)
    reset = c.describe_risk_configuration(UserPoolId=pool)["RiskConfiguration"]
    assert reset["CompromisedCredentialsRiskConfiguration"]["Actions"]["EventAction"] == "BLOCK"
    assert "RiskExceptionConfiguration" not in reset


def test_configuration_errors(svc, pool):
    c = client(svc)
    with pytest.raises(ClientError) as e:
        c.set_risk_configuration(UserPoolId=pool, RiskExceptionConfiguration={"BlockedIPRangeList": ["10.0.0.1/8"]})
    assert code(e) == "InvalidParameterException" and "the network is '10.0.0.0/8'" in str(e.value)
    with pytest.raises(ClientError) as e:
        c.set_risk_configuration(UserPoolId=pool, AccountTakeoverRiskConfiguration={"Actions": {
            "LowAction": {"Notify": False, "EventAction": "BLOCK"},
            "HighAction": {"Notify": False, "EventAction": "NO_ACTION"}}})
    assert code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        c.describe_risk_configuration(UserPoolId="eu-west-1_Nowhere1")
    assert code(e) == "ResourceNotFoundException"


def test_admin_list_user_auth_events_pages_through_everything(svc, pool):
    from risk.auth_events import list_user_auth_events

    c = client(svc)
    user = svc.worker.call(lambda con: con.execute(
        "SELECT username FROM events GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchall()[0][0]).result(30)
    all_ids = [r[0] for r in svc.worker.call(lambda con: con.execute(
        "SELECT event_id FROM events WHERE username = ? ORDER BY creation_date DESC, event_id DESC",
        [user]).fetchall()).result(30)]
    assert len(all_ids) > 20
    first_page = svc.worker.call(lambda con: list_user_auth_events(con, user)).result(30)["AuthEvents"]
    seen, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        page = c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=7, **kw)
        assert len(page["AuthEvents"]) <= 7
        seen += page["AuthEvents"]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert [e["EventId"] for e in seen] == all_ids and pages == -(-len(all_ids) // 7)
    default = c.admin_list_user_auth_events(UserPoolId=pool, Username=user)  # MaxResults absent: 60
    assert len(default["AuthEvents"]) == min(60, len(all_ids)) and ("NextToken" in default) == (len(all_ids) > 60)
    first = seen[0]
    assert {"EventId", "EventType", "CreationDate", "EventResponse", "ChallengeResponses", "EventContextData"} <= set(first)
    assert first["CreationDate"] == datetime.fromisoformat(first_page[0]["CreationDate"])
    assert first["EventContextData"] == first_page[0]["EventContextData"]
    assert first["ChallengeResponses"] == first_page[0]["ChallengeResponses"]
    assert set(first["EventContextData"]) <= {"IpAddress", "DeviceName", "Timezone", "City", "Country"}
    with pytest.raises(ClientError) as e:
        c.admin_list_user_auth_events(UserPoolId=pool, Username="nobody-at-all")
    assert code(e) == "UserNotFoundException"
    with pytest.raises(ClientError) as e:
        c.admin_list_user_auth_events(UserPoolId=pool, Username=user, NextToken="bm90IGEgdG9rZW4")
    assert code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=61)
    assert code(e) == "InvalidParameterException"


def test_feedback_from_the_admin_and_from_the_user(svc, pool, monkeypatch):
    from risk.notify import make_token

    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", "f" * 32)
    c = client(svc)
    user = svc.worker.call(lambda con: con.execute("SELECT min(username) FROM events").fetchall()[0][0]).result(30)
    e2, e1 = [r[0] for r in svc.worker.call(lambda con: con.execute(
        "SELECT event_id FROM events WHERE username = ? ORDER BY creation_date DESC, event_id DESC LIMIT 2",
        [user]).fetchall()).result(30)]
    c.admin_update_auth_event_feedback(UserPoolId=pool, Username=user, EventId=e1, FeedbackValue="Invalid")
    token = make_token(e2, user)
    public = boto3.client("cognito-idp", endpoint_url=svc.url, region_name=REGION, aws_access_key_id="anyone",
                          aws_secret_access_key="anything")  # the user's call: the token authorises it
    public.update_auth_event_feedback(UserPoolId=pool, Username=user, EventId=e2, FeedbackToken=token, FeedbackValue="Valid")
    events = c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=2)["AuthEvents"]
    assert [e["EventId"] for e in events] == [e2, e1]
    assert events[0]["EventFeedback"]["FeedbackValue"] == "Valid" and events[0]["EventFeedback"]["Provider"] == "User"
    assert events[1]["EventFeedback"]["FeedbackValue"] == "Invalid" and events[1]["EventFeedback"]["Provider"] == "Admin"
    assert events[1]["EventFeedback"]["FeedbackDate"].year >= 2026
    rows = svc.worker.call(lambda con: con.execute(
        "SELECT event_id, feedback_value, provider FROM feedback WHERE event_id IN (?, ?) ORDER BY seq",
        [e1, e2]).fetchall()).result(30)
    assert rows == [(e1, "Invalid", "Admin"), (e2, "Valid", "User")]
    with pytest.raises(ClientError) as e:
        public.update_auth_event_feedback(UserPoolId=pool, Username=user, EventId=e1, FeedbackToken=token,
                                          FeedbackValue="Valid")
    assert code(e) == "NotAuthorizedException"
    with pytest.raises(ClientError) as e:
        public.update_auth_event_feedback(UserPoolId=pool, Username=user, EventId=e2, FeedbackToken=token + "x",
                                          FeedbackValue="Valid")
    assert code(e) == "NotAuthorizedException"
    with pytest.raises(ClientError) as e:
        c.admin_update_auth_event_feedback(UserPoolId=pool, Username=user, EventId="no-such-event", FeedbackValue="Valid")
    assert code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        c.admin_update_auth_event_feedback(UserPoolId=pool, Username="nobody-at-all", EventId=e1, FeedbackValue="Valid")
    assert code(e) == "UserNotFoundException"
    # the one-click link of the emails: its page (GET) records nothing, its button (POST) does
    link_token = make_token(e1, user)
    r = httpx.get(svc.url + "/v1/feedback", params={"token": link_token, "value": "valid"})
    assert r.status_code == 200 and "recorded" not in r.text and "Yes, this was me" in r.text, r.text
    r = httpx.post(svc.url + "/v1/feedback", data={"token": link_token, "value": "valid"})
    assert r.status_code == 200 and "recorded" in r.text
    assert httpx.get(svc.url + "/v1/feedback", params={"token": "x.y", "value": "valid"}).status_code == 400
    assert httpx.post(svc.url + "/v1/feedback", data={"token": "x.y", "value": "valid"}).status_code == 400


@pytest.mark.parametrize("event_id", ["a b", "a/b", "\u00fc", "x" * 51])
def test_an_event_id_off_cognitos_pattern_is_an_invalid_parameter_of_both_feedback_operations(svc, pool, monkeypatch,
                                                                                               event_id):
    """Cognito's EventId is 1..50 characters of [\\w+-]; only the length was checked, so "a b" was looked up and
    not found (ResourceNotFoundException), where ingest and /v1/evaluate refuse such an id. Refused as a parameter,
    in ingest's words (the user's call: also with a token issued for that id)."""
    from risk.notify import make_token

    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", "f" * 32)
    user = svc.worker.call(lambda con: con.execute("SELECT min(username) FROM events").fetchall()[0][0]).result(30)
    public = boto3.client("cognito-idp", endpoint_url=svc.url, region_name=REGION, aws_access_key_id="anyone",
                          aws_secret_access_key="anything", config=Config(retries={"max_attempts": 1}))
    said = (f"EventId must be 1 to 50 characters, got {len(event_id)}" if len(event_id) > 50 else
            f"EventId {json.dumps(event_id, ensure_ascii=False)} must be 1 to 50 characters of letters, digits, _, "
            "+ or -")
    calls = {"AdminUpdateAuthEventFeedback": lambda: client(svc).admin_update_auth_event_feedback(
                 UserPoolId=pool, Username=user, EventId=event_id, FeedbackValue="Valid"),
             "UpdateAuthEventFeedback": lambda: public.update_auth_event_feedback(
                 UserPoolId=pool, Username=user, EventId=event_id, FeedbackToken=make_token(event_id, user),
                 FeedbackValue="Valid")}
    for op, call in calls.items():
        with pytest.raises(ClientError) as e:
            call()
        assert (code(e), e.value.response["Error"]["Message"]) == ("InvalidParameterException", said), op


def test_authentication_and_protocol_errors(svc, pool):
    with pytest.raises(ClientError) as e:
        client(svc, secret="not-the-key").describe_risk_configuration(UserPoolId=pool)
    assert code(e) == "InvalidSignatureException"
    with pytest.raises(ClientError) as e:
        client(svc, key_id="AKIDEXAMPLE").describe_risk_configuration(UserPoolId=pool)
    assert code(e) == "UnrecognizedClientException"
    # signed right, with the key, but scoped to another service (s3): refused, as AWS refuses it
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json.dumps({"UserPoolId": pool})
    for service, status in (("s3", 403), ("cognito-idp", 200)):
        req = AWSRequest("POST", svc.url + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AWSCognitoIdentityProviderService.DescribeRiskConfiguration"})
        SigV4Auth(Credentials("riskgate", API_KEY), service, REGION).add_auth(req)
        r = httpx.post(svc.url + "/", content=body, headers=dict(req.headers.items()))
        assert r.status_code == status, (service, r.text)
        if status == 403:
            assert r.json()["__type"] == "InvalidSignatureException" and "'s3'" in r.json()["message"]
    target = "AWSCognitoIdentityProviderService."
    h = {"Content-Type": "application/x-amz-json-1.1", "X-Api-Key": API_KEY}
    r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + "DescribeRiskConfiguration"},
                   content=json.dumps({"UserPoolId": pool}))
    assert r.status_code == 200 and r.json()["RiskConfiguration"]["UserPoolId"] == pool
    r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + "DescribeRiskConfiguration"})
    assert r.status_code == 400 and r.json()["__type"] == "InvalidParameterException"
    r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + "AdminDeleteUser"}, content="{}")
    assert r.status_code == 400 and r.json()["__type"] == "UnknownOperationException"
    r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + "DescribeRiskConfiguration"}, content="{nope")
    assert r.status_code == 400 and r.json()["__type"] == "SerializationException"
    # nesting beyond what Python's parser can recurse through: a SerializationException, not a 500 (the feedback
    # operation needs no key); also nested inside a parameter's value
    for t, body in (("UpdateAuthEventFeedback", "[" * 1000 + "]" * 1000),
                    ("DescribeRiskConfiguration", '{"UserPoolId": ' + "[" * 980 + "]" * 980 + "}"),
                    ("DescribeRiskConfiguration", "{" * 600 + "}" * 600)):
        r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + t}, content=body)
        assert r.status_code == 400 and r.json()["__type"] == "SerializationException", (t, r.text)
        assert "more than 512 levels deep (line 1 column " in r.json()["message"], r.text
    r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + "DescribeRiskConfiguration"},
                   content=json.dumps({"UserPoolId": pool, "Colour": "blue"}))
    assert r.json()["__type"] == "InvalidParameterException" and "Colour" in r.json()["message"]
    r = httpx.post(svc.url + "/", headers={"X-Amz-Target": target + "DescribeRiskConfiguration"},
                   content=json.dumps({"UserPoolId": pool}))
    assert r.status_code == 403 and r.json()["__type"] == "MissingAuthenticationTokenException"
    # a wrong key is named as such (it said "carries no X-Api-Key")
    r = httpx.post(svc.url + "/", headers={"X-Amz-Target": target + "DescribeRiskConfiguration", "X-Api-Key": "nope"},
                   content=json.dumps({"UserPoolId": pool}))
    assert r.status_code == 403 and r.json() == {"__type": "UnrecognizedClientException",
                                                 "message": "the X-Api-Key is not this service's API key"}


def test_a_username_is_one_user_per_pool(tmp_path_factory):
    """Cognito's usernames are unique within a pool: the same name in another pool is another user, whose events
    the operations neither list nor take feedback for."""
    from risk import store as rstore
    from service import cognito
    from service.cognito import CognitoError
    from tests.service_support import rest_events, rg

    base = trained_base(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("pools")
    db = copy_store(base, tmp / "p.duckdb")
    con = rstore.connect(db, read_only=True)
    try:
        from risk.config import known_pools

        pool = known_pools(con)[0]
        user = con.execute("SELECT min(username) FROM events").fetchall()[0][0]
        mine = [r[0] for r in con.execute(
            "SELECT event_id FROM events WHERE username = ? ORDER BY creation_date DESC, event_id DESC", [user]).fetchall()]
    finally:
        con.close()
    other = "eu-west-1_OtherPool"
    late = [{**e, "UserPoolId": other, "Username": name, "EventId": f"other-{k}"}
            for k, (e, name) in enumerate(zip(rest_events(base)[:2], (user, "only-in-the-other-pool")))]
    (tmp / "other.jsonl").write_text("".join(json.dumps(e) + "\n" for e in late))
    rg("ingest", tmp / "other.jsonl", db=db)
    con = rstore.connect(db)
    try:
        listed = cognito.admin_list_user_auth_events(con, {"UserPoolId": pool, "Username": user})["AuthEvents"]
        assert [e["EventId"] for e in listed] == mine[:60]  # not other-0, though it is the newest of that name
        theirs = cognito.admin_list_user_auth_events(con, {"UserPoolId": other, "Username": user})["AuthEvents"]
        assert [e["EventId"] for e in theirs] == ["other-0"]
        with pytest.raises(CognitoError) as e:
            cognito.admin_list_user_auth_events(con, {"UserPoolId": pool, "Username": "only-in-the-other-pool"})
        assert e.value.code == "UserNotFoundException"
        with pytest.raises(CognitoError) as e:  # the other pool's event, asked for under this pool
            cognito.admin_update_auth_event_feedback(
                con, {"UserPoolId": pool, "Username": user, "EventId": "other-0", "FeedbackValue": "Invalid"})
        assert e.value.code == "ResourceNotFoundException"
        cognito.admin_update_auth_event_feedback(
            con, {"UserPoolId": other, "Username": user, "EventId": "other-0", "FeedbackValue": "Invalid"})
        assert con.execute("SELECT event_id, feedback_value FROM feedback").fetchall() == [("other-0", "Invalid")]
    finally:
        con.close()


def test_a_lone_surrogate_or_no_feedback_secret_is_a_refusal_not_a_fault(svc, pool, monkeypatch):
    """``"\\ud800"`` is valid JSON but no text: the store refused it and the operation answered 500 (with no key
    needed for UpdateAuthEventFeedback, where the error message itself then failed and the connection dropped).
    And UpdateAuthEventFeedback without RISKGATE_FEEDBACK_SECRET answered 500, telling anyone the setting."""
    h = {"Content-Type": "application/x-amz-json-1.1", "X-Api-Key": API_KEY}
    target = "AWSCognitoIdentityProviderService."
    for op, body in (("AdminListUserAuthEvents", '{"UserPoolId": "%s", "Username": "\\ud800"}' % pool),
                     ("UpdateAuthEventFeedback", '{"UserPoolId": "%s", "Foo\\udc00": 1}' % pool),
                     ("SetRiskConfiguration", '{"UserPoolId": "%s", "\\ud800": 1}' % pool)):
        r = httpx.post(svc.url + "/", headers={**h, "X-Amz-Target": target + op}, content=body)
        assert (r.status_code, r.json()["__type"]) == (400, "SerializationException"), (op, r.text)
        assert "lone surrogate" in r.json()["message"]
    monkeypatch.delenv("RISKGATE_FEEDBACK_SECRET", raising=False)
    with pytest.raises(ClientError) as e:
        boto3.client("cognito-idp", endpoint_url=svc.url, region_name=REGION, aws_access_key_id="x",
                     aws_secret_access_key="y", config=Config(retries={"max_attempts": 1})).update_auth_event_feedback(
            UserPoolId=pool, Username="alice", EventId="e1", FeedbackToken="x.y", FeedbackValue="Valid")
    assert code(e) == "NotAuthorizedException" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "RISKGATE_FEEDBACK_SECRET" not in e.value.response["Error"]["Message"]


def test_a_pool_id_the_store_knows_is_taken_whatever_its_shape(tmp_path):
    """The CLI configured `mypool` (1..55 characters, as every way in checks); DescribeRiskConfiguration refused
    it for not matching AWS's region_id pattern."""
    from typer.testing import CliRunner

    from cli import app
    from risk import store as rstore
    from service import cognito
    from service.cognito import CognitoError

    db = tmp_path / "s.duckdb"
    doc = tmp_path / "c.json"
    doc.write_text(json.dumps({"UserPoolId": "mypool", "AccountTakeoverRiskConfiguration": {"Actions": {
        "LowAction": {"EventAction": "NO_ACTION", "Notify": False},
        "MediumAction": {"EventAction": "MFA_IF_CONFIGURED", "Notify": False},
        "HighAction": {"EventAction": "BLOCK", "Notify": False}}}}))
    assert CliRunner().invoke(app, ["config", "set", str(doc), "--db", str(db)]).exit_code == 0
    con = rstore.connect(db)
    try:
        got = cognito.describe_risk_configuration(con, {"UserPoolId": "mypool"})["RiskConfiguration"]
        assert got["UserPoolId"] == "mypool"
        assert got["AccountTakeoverRiskConfiguration"]["Actions"]["HighAction"]["EventAction"] == "BLOCK"
        for bad, why in (("x" * 56, "1 to 55 characters"), ("  ", "is blank")):
            with pytest.raises(CognitoError, match=why):
                cognito.describe_risk_configuration(con, {"UserPoolId": bad})
    finally:
        con.close()
