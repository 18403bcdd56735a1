import pytest

from ingest.agent import AgentParser, parse_agent

CASES = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
     "Chrome", "Windows", "Desktop", "Chrome 126, Windows 10"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
     "Mobile Safari", "iOS", "Mobile", "Mobile Safari 17, iOS 17"),
    ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
     "Mobile Safari", "iOS", "Tablet", "Mobile Safari 16, iOS 16"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36",
     "Chrome Mobile", "Android", "Mobile", "Chrome Mobile 125, Android 14"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:127.0) Gecko/20100101 Firefox/127.0",
     "Firefox", "Mac OS X", "Desktop", "Firefox 127, Mac OS X 10"),
    ("python-requests/2.31.0", "Python Requests", "Other", "Bot", "Python Requests 2, Other"),
    ("curl/8.5.0", "curl", "Other", "Bot", "curl 8, Other"),
    ("Googlebot/2.1 (+http://www.google.com/bot.html)", "Googlebot", "Other", "Bot", "Googlebot 2, Other"),
    ("", "Other", "Other", "Other", "Other, Other"),
    ("\x00garbage agent \u2603", "Other", "Other", "Other", "Other, Other"),
]


@pytest.mark.parametrize("ua, browser, os_family, dtype, name", CASES)
def test_agents(ua, browser, os_family, dtype, name):
    a = parse_agent(ua)
    assert (a.browser_family, a.os_family, a.device_type, a.device_name) == (browser, os_family, dtype, name)


def test_none_agent_is_other():
    assert parse_agent(None).device_name == "Other, Other"


def test_parser_parses_each_distinct_string_once(monkeypatch):
    import ingest.agent as mod

    calls = []
    real = mod.parse_agent
    monkeypatch.setattr(mod, "parse_agent", lambda ua: calls.append(ua) or real(ua))
    p = AgentParser()
    out = p.parse_many([CASES[0][0], CASES[0][0], CASES[5][0], CASES[0][0]])
    assert [a.browser_family for a in out] == ["Chrome", "Chrome", "Python Requests", "Chrome"]
    assert len(calls) == 2
    p.parse_many([CASES[5][0]])
    assert len(calls) == 2  # cached across batches


def test_very_long_agent_is_parsed_on_its_first_2kb():
    a = parse_agent(CASES[0][0] + " x" * 50_000)
    assert a.device_name == "Chrome 126, Windows 10"
