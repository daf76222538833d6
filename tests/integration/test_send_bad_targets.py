"""Bad targets on a send request are named on it, never dropped silently (issue 19, item 5).

Against the Dataverse and Marketing Cloud sandboxes: each invalid entry of
``cesp_targets`` is named on the request with what is wrong; by default the request
fails and nothing is sent; ``[sends] invalid_targets = skip`` sends to the valid rest
and names the left-out targets on the Sent request.
"""

from __future__ import annotations

import io
import json
import threading

import pytest

from connector.commands.send_now import ProgressBar, run_one
from connector.config import load_config

PENDING, SENT, FAILED = 100000000, 100000002, 100000003


def request_with(sb, targets: str) -> str:
    org = sb.seeded
    return sb.crm.store.insert("cesp_sendrequests", {
        "cesp_name": "Bad targets", "cesp_status": PENDING, "cesp_targets": targets,
        "ownerid": org.users["mia"], "ownerid__type": "systemuser"})


def run(sb, tmp_path, rid: str, **overrides) -> dict:
    ini = sb.write_service_ini(tmp_path / "service.ini", logging__console="off", tracking__mode="none", **overrides)
    run_one(load_config(ini), rid, threading.Event(), ProgressBar(io.StringIO(), tty=False), 0.1)
    return sb.crm.store.get("cesp_sendrequests", rid)


def test_an_unknown_kind_next_to_a_valid_list_fails_the_request_naming_it(sandbox, tmp_path) -> None:
    vip = sandbox.seeded.lists["vip"]
    rid = request_with(sandbox, json.dumps([{"kind": "list", "id": vip}, {"kind": "segment", "id": vip}]))
    row = run(sandbox, tmp_path, rid)
    assert row["cesp_status"] == FAILED
    reason = row["cesp_reason"]
    assert "target 2" in reason and "unknown kind 'segment'" in reason and "nothing was sent" in reason
    assert "invalid_targets = skip" in reason
    assert not sandbox.esp.store.sends_for(f"cesp-send-{rid}")
    assert not sandbox.esp.store.subscribers


def test_with_skip_the_valid_rest_is_sent_and_the_left_out_target_named(sandbox, tmp_path) -> None:
    vip = sandbox.seeded.lists["vip"]
    rid = request_with(sandbox, json.dumps([{"kind": "list", "id": vip}, {"kind": "segment", "id": vip},
                                            {"kind": "contact"}]))
    row = run(sandbox, tmp_path, rid, sends__invalid_targets="skip")
    assert row["cesp_status"] == SENT, row["cesp_reason"]
    reason = row["cesp_reason"]
    assert "2 target(s) left out" in reason and "unknown kind 'segment'" in reason
    assert "target 3" in reason and 'no "id"' in reason
    assert len(sandbox.esp.store.sends_for(f"cesp-send-{rid}")) == 1
    assert row["cesp_handedover"] > 0


@pytest.mark.parametrize("targets, words", [
    ('[{"kind": "list", "id": ', "is not valid JSON (Expecting value at line 1 column 25)"),
    ("null", "is JSON null"),
    ('"a list"', "is a JSON string, not a list of targets"),
    ('[{"kind": "list"}]', 'target 1 {"kind": "list"}: no "id"'),
    ('[{"id": "5e0bd7a8-0e3a-4d0e-9d49-0e8b0d0c0b0a"}]', 'no "kind"'),
    ('[{"kind": "contact", "id": "42"}]', "id '42' is not a GUID"),
    ('[{"kind": "contact", "id": "x) or 1 eq 1 or (x"}]', "is not a GUID"),
    ('["list"]', 'not an object with "kind" and "id"'),
])
def test_each_kind_of_bad_target_gets_its_own_reason(sandbox, tmp_path, targets: str, words: str) -> None:
    rid = request_with(sandbox, targets)
    row = run(sandbox, tmp_path, rid)
    assert row["cesp_status"] == FAILED
    assert words in row["cesp_reason"] and "no targets" not in row["cesp_reason"]
    assert not sandbox.esp.store.subscribers


def test_with_skip_and_nothing_valid_the_request_fails_naming_the_targets(sandbox, tmp_path) -> None:
    rid = request_with(sandbox, '[{"kind": "segment", "id": "5e0bd7a8-0e3a-4d0e-9d49-0e8b0d0c0b0a"}]')
    row = run(sandbox, tmp_path, rid, sends__invalid_targets="skip")
    assert row["cesp_status"] == FAILED
    assert "unknown kind 'segment'" in row["cesp_reason"] and "no valid target is left" in row["cesp_reason"]


def test_an_empty_target_list_still_says_no_targets(sandbox, tmp_path) -> None:
    rid = request_with(sandbox, "[]")
    row = run(sandbox, tmp_path, rid)
    assert row["cesp_status"] == FAILED and "has no targets" in row["cesp_reason"]
