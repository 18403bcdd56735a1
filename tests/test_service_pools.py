"""A pool the store does not know, named to the service: refused. One request with a mistyped UserPoolId (a
sign-in, or a SetRiskConfiguration) made the store know two pools, so that its users without a pool id belonged to
none: their own MFA then counted for nobody (a user with SMS MFA was allowed without a challenge), and every later
event without a pool id was refused. Over real HTTP on loopback, on a real store."""

from __future__ import annotations

import httpx
import pytest

from tests.service_support import Service, copy_store, headers, rest_events, trained_base


@pytest.fixture
def svc(tmp_path_factory, tmp_path, monkeypatch):
    from risk import config as rc

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    service = Service(copy_store(trained_base(tmp_path_factory), tmp_path / "p.duckdb"))
    yield service
    service.stop()


def _store(svc, sql, params=None):
    return svc.worker.call(lambda con: con.execute(sql, params or []).fetchall()).result(30)


def _mfa_user_event(svc, tmp_path_factory) -> dict:
    """A later sign-in (not stored yet) of a user with MFA of their own, without a UserPoolId."""
    mfa = {r[0] for r in _store(svc, "SELECT username FROM users WHERE len(mfa_settings) > 0")}
    event = next(e for e in rest_events(trained_base(tmp_path_factory)) if e["Username"] in mfa
                 and e["EventType"] == "SignIn" and e["EventResponse"] == "Pass")
    event = {k: v for k, v in event.items() if k not in ("Labels", "UserPoolId")}
    return event


def test_an_event_of_an_unknown_pool_is_refused_and_changes_nothing(svc, tmp_path_factory):
    from risk.config import known_pools

    pools = svc.worker.call(known_pools).result(30)
    assert len(pools) == 1
    event = _mfa_user_event(svc, tmp_path_factory)
    before = _store(svc, "SELECT count(*) FROM events")
    typo = {**event, "EventId": "typo-1", "UserPoolId": pools[0] + "x"}
    r = httpx.post(svc.url + "/v1/evaluate", json=typo, headers=headers(), timeout=30)
    assert r.status_code == 422, r.text
    assert (f"User pool {pools[0]}x does not exist in this store (it knows {pools[0]})"
            in r.json()["detail"][0]["msg"]), r.text
    assert _store(svc, "SELECT count(*) FROM events") == before
    assert svc.worker.call(known_pools).result(30) == pools
    # the user's own MFA still counts, and events without a pool id are still the pool's
    r = httpx.post(svc.url + "/v1/evaluate", json={**event, "EventId": "after-1"}, headers=headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["Action"] == "MfaChallenge", r.json()
    # the same event under its own pool's id is served
    r = httpx.post(svc.url + "/v1/evaluate", json={**event, "EventId": "after-2", "UserPoolId": pools[0]},
                   headers=headers(), timeout=30)
    assert r.status_code == 200 and r.json()["Action"] == "MfaChallenge", r.text


def test_a_batch_refuses_only_its_requests_of_unknown_pools(svc, tmp_path_factory):
    """Requests arriving together are assessed together: the one naming an unknown pool is refused, the others
    answered."""
    import concurrent.futures as cf

    from risk.config import known_pools

    pool = svc.worker.call(known_pools).result(30)[0]
    event = _mfa_user_event(svc, tmp_path_factory)
    bodies = [{**event, "EventId": f"b-{i}", "UserPoolId": pool if i % 2 else "eu-west-1_Other"} for i in range(8)]
    with cf.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda b: httpx.post(svc.url + "/v1/evaluate", json=b, headers=headers(),
                                                 timeout=30).status_code, bodies))
    assert codes == [422, 200] * 4
    assert _store(svc, "SELECT count(*) FROM events WHERE event_id LIKE 'b-%'") == [(4,)]


def test_set_risk_configuration_of_an_unknown_pool_is_resource_not_found(svc):
    from risk.config import known_pools

    pool = svc.worker.call(known_pools).result(30)[0]
    versions = _store(svc, "SELECT count(*) FROM risk_config_versions")
    target = {"X-Amz-Target": "AWSCognitoIdentityProviderService.SetRiskConfiguration",
              "Content-Type": "application/x-amz-json-1.1", **headers()}
    body = {"UserPoolId": pool + "x", "RiskExceptionConfiguration": {"BlockedIPRangeList": ["203.0.113.0/24"]}}
    r = httpx.post(svc.url + "/", json=body, headers=target, timeout=30)
    assert r.status_code == 400 and r.json()["__type"] == "ResourceNotFoundException", r.text
    assert f"User pool {pool}x does not exist in this store" in r.json()["message"]
    assert _store(svc, "SELECT count(*) FROM risk_config_versions") == versions
    assert svc.worker.call(known_pools).result(30) == [pool]
    r = httpx.post(svc.url + "/", json={**body, "UserPoolId": pool}, headers=target, timeout=30)
    assert r.status_code == 200, r.text


def test_the_pool_of_the_environment_and_a_stores_first_pool_are_served(monkeypatch):
    from risk import config as rc

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    assert rc.served_pool_problem([], "eu-west-1_First") is None  # a store that knows no pool takes its first
    assert rc.served_pool_problem(["eu-west-1_A"], "eu-west-1_A") is None
    assert rc.served_pool_problem(["eu-west-1_A"], "eu-west-1_B").startswith(
        "User pool eu-west-1_B does not exist in this store (it knows eu-west-1_A)")
    monkeypatch.setenv(rc.POOL_ENV, "eu-west-1_B")
    assert rc.served_pool_problem(["eu-west-1_A"], "eu-west-1_B") is None


def test_an_event_without_a_pool_in_a_store_of_several_pools_is_an_invalid_event(svc, tmp_path_factory):
    """The store knows two pools and $RISKGATE_USER_POOL_ID is unset: an event without a UserPoolId has no pool to
    be decided under. It was a 400 (the README says refused events are 422, with the reason); now 422, and an event
    of the same batch naming its pool is served."""
    from risk import config as rc

    pool = svc.worker.call(rc.known_pools).result(30)[0]
    svc.worker.call(lambda con: rc.set_mode(con, "AUDIT", "us-east-1_Second")).result(30)
    event = _mfa_user_event(svc, tmp_path_factory)
    r = httpx.post(svc.url + "/v1/evaluate", json={**event, "EventId": "nopool-1"}, headers=headers(), timeout=30)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"].startswith(
        f"events without a UserPoolId cannot be assessed: the store knows several pools ({pool}, us-east-1_Second)")
    r = httpx.post(svc.url + "/v1/evaluate", json={**event, "EventId": "pool-1", "UserPoolId": pool},
                   headers=headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert _store(svc, "SELECT count(*) FROM events WHERE event_id = 'nopool-1'") == [(0,)]
