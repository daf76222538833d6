"""Contract suite of the ``EspClient`` interface.

Tests taking ``peer`` run twice: ``sandbox`` is the real MarketingCloudEspClient against the
Marketing Cloud sandbox over HTTPS; ``double`` is ``tests.doubles.esp.FakeEsp``, the unit tests'
stand-in. They are written against the interface (and a small seeding/inspection handle,
``EspPeer``), so the double is held to what the real adapter does and refuses. Tests taking
``esp`` and ``mc`` are the adapter's own (SOAP faults, lost replies, TLS, tokens, chunking) and
run against the sandbox only.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from pydantic import SecretStr

from connector.config import Config, EspSettings, ServiceSettings, TimeoutSettings
from connector.errors import AuthError, PeerSetupError, PermanentPeerError, ThrottledError, TransientPeerError
from connector.esp.base import EspClient
from connector.esp.events import CST
from connector.esp.marketing_cloud import MarketingCloudEspClient
from connector.models import EventType, Subscriber, SubscriberStatus, SubscriberUpdate
from connector.sandbox.marketing_cloud import Latency

UTC = timezone.utc


@pytest.fixture
def mc_ca(sandbox_ca):  # noqa: ANN001, ANN201 - the session CA of tests/fixtures/sandbox.py
    return sandbox_ca


@pytest.fixture
def mc(esp_sandbox):  # noqa: ANN001, ANN201 - the Marketing Cloud sandbox of tests/fixtures/sandbox.py
    return esp_sandbox


def _config(mc, tmp_path: Path, ca_file: Path, *, auth: str = "oauth", **esp) -> Config:  # noqa: ANN001
    settings = dict(
        wsdl=mc.wsdl_url, auth=auth, auth_url=mc.auth_url, client_id=mc.client_id,
        client_secret=SecretStr(mc.client_secret), account_id=mc.account_id, username=mc.username,
        password=SecretStr(mc.password), ca_bundle=ca_file, max_retries=3,
    )
    settings.update(esp)
    return Config(esp=EspSettings(**settings), service=ServiceSettings(data_dir=tmp_path / "data"),
                  timeouts=TimeoutSettings(esp_seconds=10))


@pytest.fixture
def esp(mc, mc_ca, tmp_path: Path) -> Iterator[MarketingCloudEspClient]:
    client = MarketingCloudEspClient.from_config(_config(mc, tmp_path, mc_ca.ca_file))
    client._soap._sleep = lambda seconds: None  # noqa: SLF001 - no real waiting in tests
    try:
        yield client
    finally:
        client.close()


class EspPeer:
    """The ESP account behind a client: seeding and inspection, outside the interface."""

    def __init__(self, client: EspClient, account) -> None:  # noqa: ANN001 - EspSandbox or FakeEsp
        self.client = client
        self.account = account

    @property
    def sandbox(self):  # noqa: ANN201
        return getattr(self.account, "store", None)

    def list_id(self, customer_key: str) -> str:
        if self.sandbox is not None:
            return str(self.sandbox.list_by_key(customer_key).id)
        return self.account.lists[customer_key]

    def subscriber_email(self, key: str) -> str:
        if self.sandbox is not None:
            return self.sandbox.subscriber(key).email
        return self.account.subscribers[key].email

    def add_subscriber(self, key: str, email: str, status: str) -> None:
        (self.sandbox or self.account).add_subscriber(key, email, status=status)

    def write_import_file(self, name: str, text: str) -> None:
        folder = self.account.import_root / "Import" if self.sandbox is not None else self.account.drop_folder
        (folder / name).write_text(text, encoding="utf-8")

    def settle(self) -> None:
        """Background work done and the ESP's visibility delays over."""
        assert self.account.wait_idle(10)
        self.account.advance_past_delays()

    def advance(self, hours: float) -> None:
        self.account.wait_idle(10)
        self.account.advance(hours=hours)

    def now(self) -> datetime:
        """The account's clock (aware UTC)."""
        return self.sandbox.now() if self.sandbox is not None else self.account.now()

    def seed(self, key: str, email: str, attributes: dict[str, str] | None = None) -> None:
        (self.sandbox or self.account).add_subscriber(key, email, attributes=attributes)

    def edit(self, key: str, **changes):  # noqa: ANN003, ANN201 - a marketer's edit at the ESP
        return (self.sandbox or self.account).edit_subscriber(key, **changes)

    def state(self, key: str) -> tuple | None:
        """(email, attributes, status, modified) of a subscriber as the account holds it."""
        if self.sandbox is not None:
            rec = self.sandbox.subscriber(key)
            return None if rec is None else (rec.email, rec.attributes, rec.status, rec.modified)
        sub = self.account.subscribers.get(key)
        return None if sub is None else (sub.email, dict(sub.attributes), self.account.statuses[key].value,
                                         self.account.modified[key])

    def runs_for(self, customer_key: str) -> int:
        return len((self.sandbox or self.account).runs_for(customer_key))

    def send_ids(self, customer_key: str) -> list[str]:
        if self.sandbox is not None:
            return [str(s.id) for s in self.sandbox.sends_for(customer_key)]
        return [s.job_id for s in self.account.sends_for(customer_key)]

    def email_id(self, customer_key: str) -> str:
        if self.sandbox is not None:
            return str(self.sandbox.email_by_key(customer_key).id)
        return self.account.emails[customer_key]

    def generate_events(self, n: int, **kw) -> str:  # noqa: ANN003
        return str((self.sandbox or self.account).generate_events(n, **kw))


@pytest.fixture(params=["sandbox", "double"])
def peer(request, tmp_path: Path) -> Iterator[EspPeer]:
    if request.param == "double":
        from tests.doubles.esp import FakeEsp

        (tmp_path / "drop").mkdir()
        fake = FakeEsp(tmp_path / "drop")
        yield EspPeer(fake, fake)
        return
    yield EspPeer(request.getfixturevalue("esp"), request.getfixturevalue("mc"))


def _subs(n: int, prefix: str = "crm") -> list[Subscriber]:
    return [Subscriber(f"{prefix}-{i:04d}", f"{prefix}{i}@example.com", {"First Name": f"Ann{i}"}) for i in range(n)]


# -- lists and subscribers ----------------------------------------------------------------


def test_ensure_list_creates_once_and_then_finds(peer) -> None:
    first = peer.client.ensure_list("cesp-list-s1", "Spring newsletter")
    assert first and peer.client.ensure_list("cesp-list-s1", "Spring newsletter") == first
    assert peer.list_id("cesp-list-s1") == first and int(first)


def test_upsert_reports_per_subscriber_failures_and_is_repeatable(peer) -> None:
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-s2", "s2")
    subs = _subs(3) + [Subscriber("crm-bad", "not-an-address", {})]
    results = esp.upsert_subscribers(subs, list_id)
    assert [r.key for r in results] == [s.subscriber_key for s in subs]
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[3].message  # the ESP's own words, for the send record
    again = esp.upsert_subscribers(_subs(3), list_id)  # UpdateAdd, already on the list: fine
    assert all(r.ok for r in again)
    assert peer.subscriber_email("crm-0001") == "crm1@example.com"
    moved = esp.upsert_subscribers([Subscriber("crm-0000", "moved0@example.com", {"First Name": "Ann0"})], list_id)
    assert moved[0].ok
    assert peer.subscriber_email("crm-0000") == "moved0@example.com"  # the update really lands


def test_a_write_the_esp_refuses_is_a_failed_result_not_an_exception(peer) -> None:
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-s5", "s5")
    odd = [Subscriber("crm-odd", "odd@example.com", {"Shoe Size": "44"}), Subscriber("crm-odd2", "", {})]
    results = esp.upsert_subscribers(odd + _subs(1, "s5"), list_id)
    assert [r.ok for r in results] == [False, False, True]  # no such attribute; a new one without address
    assert results[0].code == "12004" and "Shoe Size" in results[0].message  # no such attribute
    unknown_list = esp.upsert_subscribers(_subs(2, "s5"), "999999")
    assert [r.ok for r in unknown_list] == [False, False] and all("999999" in r.message for r in unknown_list)
    with pytest.raises(ValueError):  # a list id is the ESP's number: nothing else leaves the adapter
        esp.upsert_subscribers(_subs(1, "s5"), "L1")


def test_has_errors_partial_failure_is_not_an_exception(esp, mc) -> None:
    list_id = esp.ensure_list("cesp-list-s3", "s3")
    mc.faults.set("has_errors", next_n=1)
    results = esp.upsert_subscribers(_subs(10, "he"), list_id)
    assert len(results) == 10
    assert any(not r.ok for r in results)
    assert all(r.message for r in results if not r.ok)


def test_the_profile_attributes_are_the_account_s(peer) -> None:
    names = peer.client.profile_attributes()
    assert {"Email Address", "First Name", "Last Name", "Country"} <= names and "Shoe Size" not in names


def test_subscriber_statuses_in_filter_over_many_keys(peer) -> None:
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-s4", "s4")
    subs = _subs(40, "st")
    for start in range(0, 40, 20):
        esp.upsert_subscribers(subs[start:start + 20], list_id)
    peer.add_subscriber("st-held", "held@example.com", status="Held")
    peer.add_subscriber("st-unsub", "unsub@example.com", status="Unsubscribed")
    keys = [s.subscriber_key for s in subs] + ["st-held", "st-unsub", "st-new"]
    statuses = esp.subscriber_statuses(keys)
    assert statuses["st-held"] is SubscriberStatus.HELD
    assert statuses["st-unsub"] is SubscriberStatus.UNSUBSCRIBED
    assert statuses["st-0039"] is SubscriberStatus.ACTIVE
    assert "st-new" not in statuses and len(statuses) == 42


# -- imports ------------------------------------------------------------------------------


def _write_batch(peer, name: str, rows: list[tuple[str, str]]) -> None:  # noqa: ANN001
    lines = ["SubscriberKey,EmailAddress,First Name"] + [f"{k},{e},Bo" for k, e in rows]
    peer.write_import_file(name, "\r\n".join(lines) + "\r\n")


def test_import_starts_once_and_reports_counts(peer) -> None:
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-i1", "i1")
    _write_batch(peer, "cesp_i1_1.csv", [("imp-1", "a1@example.com"), ("imp-2", "bad address"), ("imp-3", "a3@example.com")])
    task = esp.start_import("cesp-import-i1-1", "cesp_i1_1.csv", list_id)
    assert task
    assert peer.account.wait_idle(10)
    # the ESP shows an import's results only a while after its start (the step's start guard covers that gap)
    assert not esp.import_status("cesp-import-i1-1").found
    peer.account.advance_past_delays()
    assert esp.start_import("cesp-import-i1-1", "cesp_i1_1.csv", list_id) == task  # already ran: not again
    status = esp.import_status("cesp-import-i1-1")
    assert status.finished and status.state == "completed"
    assert (status.rows_total, status.rows_ok, status.rows_error) == (3, 2, 1)
    assert peer.runs_for("cesp-import-i1-1") == 1


def test_import_status_before_start_is_queued(peer) -> None:
    status = peer.client.import_status("cesp-import-none-1")
    assert status.state == "queued" and not status.finished


def test_an_import_of_a_missing_file_or_onto_no_list_fails(peer) -> None:
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-i2", "i2")
    esp.start_import("cesp-import-i2-1", "cesp_i2_1.csv", list_id)  # the file was never uploaded
    peer.settle()
    status = esp.import_status("cesp-import-i2-1")
    assert status.state == "error" and status.finished and "Error" in status.message
    with pytest.raises(PermanentPeerError, match="List"):
        esp.start_import("cesp-import-i2-2", "cesp_i2_2.csv", "999999")


def test_an_import_file_s_header_and_columns_decide_its_rows(peer) -> None:
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-i4", "i4")
    peer.write_import_file("cesp_i4_1.csv", "Key,Mail\r\nimp4-1,c1@example.com\r\n")  # no SubscriberKey/EmailAddress
    peer.write_import_file("cesp_i4_2.csv", "SubscriberKey,EmailAddress,Shoe Size\r\nimp4-2,c2@example.com,44\r\n"
                                            "imp4-3,c3@example.com,45\r\n")  # a column that names no attribute
    peer.write_import_file("cesp_i4_3.csv", "SubscriberKey,EmailAddress,First Name\r\nimp4-4,c4@example.com,Al\r\n"
                                            "imp4-5,c5@example.com\r\n")  # a row short of a field
    for n in (1, 2, 3):
        esp.start_import(f"cesp-import-i4-{n}", f"cesp_i4_{n}.csv", list_id)
    peer.settle()
    assert esp.import_status("cesp-import-i4-1").state == "error"
    second, third = esp.import_status("cesp-import-i4-2"), esp.import_status("cesp-import-i4-3")
    assert (second.state, second.rows_total, second.rows_ok, second.rows_error) == ("completed", 2, 0, 2)
    assert (third.state, third.rows_total, third.rows_ok, third.rows_error) == ("completed", 2, 1, 1)
    assert set(esp.subscriber_statuses(["imp4-1", "imp4-2", "imp4-3", "imp4-4", "imp4-5"])) == {"imp4-4"}


def test_a_second_start_before_the_first_shows_starts_again(peer) -> None:
    """The ESP does not guard a start it does not show yet: the step's durable start mark must."""
    esp = peer.client
    list_id = esp.ensure_list("cesp-list-i3", "i3")
    _write_batch(peer, "cesp_i3_1.csv", [("imp3-1", "b1@example.com")])
    esp.start_import("cesp-import-i3-1", "cesp_i3_1.csv", list_id)
    esp.start_import("cesp-import-i3-1", "cesp_i3_1.csv", list_id)
    list_id = _list_with_subscribers(esp, "cesp-list-x6", 2)
    esp.start_send("cesp-send-x6", list_id, "welcome", "Default Commercial", "X6")
    esp.start_send("cesp-send-x6", list_id, "welcome", "Default Commercial", "X6")
    peer.settle()
    assert peer.runs_for("cesp-import-i3-1") == 2 and len(peer.send_ids("cesp-send-x6")) == 2


# -- sends --------------------------------------------------------------------------------


def _list_with_subscribers(esp, key: str, n: int = 5) -> str:  # noqa: ANN001
    list_id = esp.ensure_list(key, key)
    esp.upsert_subscribers(_subs(n, key), list_id)
    return list_id


def test_find_send_before_start_and_a_second_start_finds(peer) -> None:
    esp = peer.client
    list_id = _list_with_subscribers(esp, "cesp-list-x1")
    assert esp.find_send("cesp-send-x1") is None
    started = esp.start_send("cesp-send-x1", list_id, "cesp-demo-email", "Default Commercial", "X1")
    assert started.job_id
    # a started send is retrievable only after a delay (the step's start guard covers that gap)
    assert esp.find_send("cesp-send-x1") is None
    peer.account.advance_past_delays()
    again = esp.start_send("cesp-send-x1", list_id, "cesp-demo-email", "Default Commercial", "X1")
    assert again.job_id == started.job_id
    assert esp.find_send("cesp-send-x1").job_id == started.job_id
    assert len(peer.send_ids("cesp-send-x1")) == 1


def _lose_perform_replies(esp) -> None:
    """Every Perform reaches the ESP, but its reply is lost on the way back (a read time-out)."""
    real_call = esp._soap.call  # noqa: SLF001

    def lose_perform_reply(operation: str, **kwargs):  # noqa: ANN003, ANN202
        reply = real_call(operation, **kwargs)
        if operation == "Perform":
            raise TransientPeerError("read timed out", peer="esp", operation=operation)
        return reply

    esp._soap.call = lose_perform_reply  # noqa: SLF001


def test_lost_perform_reply_is_looked_up_not_repeated(esp, mc) -> None:
    """The send started at the ESP but its reply was lost: the adapter must find it, not send twice."""
    list_id = _list_with_subscribers(esp, "cesp-list-x2")
    _lose_perform_replies(esp)
    mc.store.latency = Latency.none()  # the send is retrievable at once: the look-up after the error finds it
    found = esp.start_send("cesp-send-x2", list_id, "cesp-demo-email", "Default Commercial", "X2")
    assert found.job_id
    assert len(mc.store.sends_for("cesp-send-x2")) == 1


def test_lost_perform_reply_before_the_send_is_visible_raises_and_does_not_repeat(esp, mc) -> None:
    """Reply lost and the send not retrievable yet: a transient error saying so, still one send (the
    step's durable start mark then makes the next run wait for it instead of starting it again)."""
    list_id = _list_with_subscribers(esp, "cesp-list-x4")
    _lose_perform_replies(esp)
    with pytest.raises(TransientPeerError, match="does not show a send"):
        esp.start_send("cesp-send-x4", list_id, "cesp-demo-email", "Default Commercial", "X4")
    assert len(mc.store.sends_for("cesp-send-x4")) == 1
    mc.advance_past_delays()
    assert esp.find_send("cesp-send-x4").job_id == str(mc.store.sends_for("cesp-send-x4")[0].id)


def test_dropped_perform_is_not_retried_and_the_next_attempt_sends_once(esp, mc) -> None:
    list_id = _list_with_subscribers(esp, "cesp-list-x3")
    real_call = esp._soap.call  # noqa: SLF001

    def drop_perform(operation: str, **kwargs):  # noqa: ANN003, ANN202
        if operation == "Perform":
            mc.faults.set("drop", next_n=1)
        return real_call(operation, **kwargs)

    esp._soap.call = drop_perform  # noqa: SLF001
    with pytest.raises(TransientPeerError, match="looks again"):
        esp.start_send("cesp-send-x3", list_id, "cesp-demo-email", "Default Commercial", "X3")
    assert mc.store.sends_for("cesp-send-x3") == []
    esp._soap.call = real_call  # noqa: SLF001
    esp.start_send("cesp-send-x3", list_id, "cesp-demo-email", "Default Commercial", "X3")
    assert len(mc.store.sends_for("cesp-send-x3")) == 1


def test_unknown_email_key_names_the_config_key(peer) -> None:
    esp = peer.client
    list_id = _list_with_subscribers(esp, "cesp-list-x4", 1)
    with pytest.raises(Exception, match="default_email_key"):
        esp.start_send("cesp-send-x4", list_id, "no-such-email", "Default Commercial", "X4")


def test_a_send_needs_a_known_classification_and_list(peer) -> None:
    esp = peer.client
    list_id = _list_with_subscribers(esp, "cesp-list-x7", 1)
    with pytest.raises(PermanentPeerError, match="SendClassification"):
        esp.start_send("cesp-send-x7", list_id, "welcome", "No Such Classification", "X7")
    with pytest.raises(PermanentPeerError, match="List"):
        esp.start_send("cesp-send-x8", "999999", "welcome", "Default Commercial", "X8")
    peer.settle()
    assert peer.send_ids("cesp-send-x7") == [] and peer.send_ids("cesp-send-x8") == []


def test_find_email_by_customer_key(peer) -> None:
    esp = peer.client
    assert esp.find_email("welcome") == peer.email_id("welcome")
    assert esp.find_email("no-such-email") is None


def test_iter_emails_lists_the_whole_catalogue(peer) -> None:
    emails = {e.customer_key: e for e in peer.client.iter_emails()}
    assert {"welcome", "cesp-demo-email"} <= set(emails)
    for key, email in emails.items():  # the id find_email gives, a name, a status
        assert email.esp_id == peer.email_id(key) and email.name and email.status


def test_a_ca_bundle_that_does_not_trust_the_esp_is_a_setup_error(mc, tmp_path: Path) -> None:
    from connector.errors import OperatorError, PeerSetupError
    from connector.sandbox.tls import SandboxCA

    other = SandboxCA(tmp_path / "other-ca")
    with pytest.raises(PeerSetupError, match="ca_bundle") as caught:
        MarketingCloudEspClient.from_config(_config(mc, tmp_path, other.ca_file)).find_email("welcome")
    assert isinstance(caught.value, OperatorError)


def test_send_summary_counts(peer) -> None:
    esp = peer.client
    list_id = _list_with_subscribers(esp, "cesp-list-x5", 8)
    job = esp.start_send("cesp-send-x5", list_id, "cesp-demo-email", "Default Commercial", "X5").job_id
    assert esp.send_summary(job) is None  # not retrievable yet
    peer.advance(hours=72)
    summary = esp.send_summary(job)
    assert summary.job_id == job and summary.status
    assert summary.counts.get("sent") == 8


# -- tracking -----------------------------------------------------------------------------


def test_event_pages_over_many_pages_without_loss_or_duplicates(peer) -> None:
    esp = peer.client
    job = peer.generate_events(6_000, event_types=("SentEvent",), hours=10)
    since = datetime.now(UTC) - timedelta(days=2)
    pages = list(esp.iter_event_pages(EventType.SENT, since))
    assert len(pages) >= 3 and all(len(p) <= 2500 for p in pages)
    events = [e for page in pages for e in page if e.job_id == str(job)]
    assert len(events) == 6_000
    assert len({e.natural_key for e in events}) == 6_000
    assert all(e.event_time.utcoffset() == timedelta(0) for e in events)


def test_a_continuation_whose_reply_was_lost_is_not_repeated_so_no_page_is_skipped(esp, mc) -> None:
    """The result set keeps one RequestID and each ContinueRequest moves on: a blind retry of a lost
    continuation would get page 3 in place of page 2. The adapter raises instead; the caller starts over."""
    mc.store.generate_events(6_000, event_types=("SentEvent",), hours=10)
    pages = esp.iter_event_pages(EventType.SENT, datetime.now(UTC) - timedelta(days=2))
    assert len(next(pages)) == 2500
    mc.faults.set("drop", next_n=1)  # the reply of the first continuation is lost
    with pytest.raises(TransientPeerError, match="next page"):
        for _page in pages:
            pass


def test_event_times_cross_the_cst_day_boundary_correctly(peer) -> None:
    esp = peer.client
    # 23:59:50 CST on 31 March is 05:59:50 UTC on 1 April
    start = datetime(2026, 3, 31, 23, 59, 50, tzinfo=CST)
    job = peer.generate_events(5, event_types=("OpenEvent",), hours=0.002, start=start)
    window = list(esp.iter_event_pages(EventType.OPEN, start - timedelta(seconds=1), start + timedelta(seconds=30)))
    events = [e for page in window for e in page if e.job_id == job]
    assert len(events) == 5
    for event in events:
        assert datetime(2026, 4, 1, 5, 59, 49, tzinfo=UTC) < event.event_time <= datetime(2026, 4, 1, 6, 0, 20, tzinfo=UTC)
    # the window is honoured on both sides
    later = [e for page in esp.iter_event_pages(EventType.OPEN, start + timedelta(minutes=5)) for e in page
             if e.job_id == job]
    assert later == []
    earlier = [e for page in esp.iter_event_pages(EventType.OPEN, start - timedelta(days=1), start - timedelta(seconds=1))
               for e in page if e.job_id == job]
    assert earlier == []


def test_click_and_bounce_details_come_through(peer) -> None:
    esp = peer.client
    job = peer.generate_events(50, event_types=("ClickEvent", "BounceEvent"), hours=1)
    since = datetime.now(UTC) - timedelta(days=3)
    clicks = [e for p in esp.iter_event_pages(EventType.CLICK, since) for e in p if e.job_id == job]
    bounces = [e for p in esp.iter_event_pages(EventType.BOUNCE, since) for e in p if e.job_id == job]
    assert clicks and all(e.url for e in clicks)
    assert bounces and all(e.bounce_category for e in bounces)


def test_event_windows_take_aware_datetimes_only(peer) -> None:
    with pytest.raises(ValueError, match="naive"):
        next(iter(peer.client.iter_event_pages(EventType.OPEN, datetime(2026, 1, 1))), None)


# -- auth and faults ----------------------------------------------------------------------


def test_expired_token_is_renewed_once(esp, mc) -> None:
    from structlog.testing import capture_logs

    first = esp.ensure_list("cesp-list-t1", "t1")
    mc.expire_tokens()
    with capture_logs() as logs:
        assert esp.ensure_list("cesp-list-t1", "t1") == first
    assert [(e["event"], e.get("peer")) for e in logs].count(("token_renewed", "esp")) == 1


def test_throttling_and_dropped_connections_are_retried_for_reads(esp, mc) -> None:
    list_id = esp.ensure_list("cesp-list-f1", "f1")
    mc.faults.set("http500", next_n=2)
    assert esp.subscriber_statuses(["nobody"]) == {}
    assert mc.faults.taken("http500") == 2
    mc.faults.set("drop", next_n=1)
    assert esp.upsert_subscribers(_subs(2, "f1"), list_id)[0].ok
    assert mc.faults.taken("drop") == 1
    mc.faults.set("throttle", next_n=1)
    assert esp.ensure_list("cesp-list-f1", "f1") == list_id
    assert mc.faults.taken("throttle") == 1


def test_throttling_beyond_the_retries_is_a_throttled_error(esp, mc) -> None:
    for kind in ("http500", "throttle"):  # a plain 500 page, and the documented "Rate Limited" fault (17)
        mc.faults.set(kind, next_n=10)
        with pytest.raises(ThrottledError):
            esp.subscriber_statuses(["nobody"])
        mc.faults.clear()


def test_wsse_auth(mc, mc_ca, tmp_path: Path) -> None:
    client = MarketingCloudEspClient.from_config(_config(mc, tmp_path, mc_ca.ca_file, auth="wsse"))
    try:
        assert client.ensure_list("cesp-list-w1", "w1")
    finally:
        client.close()


def test_bad_credentials_are_an_auth_error_without_the_secret(mc, mc_ca, tmp_path: Path) -> None:
    for auth, kwargs in (("oauth", {"client_secret": SecretStr("wrong-secret-1")}),
                         ("wsse", {"password": SecretStr("wrong-secret-1")})):
        client = MarketingCloudEspClient.from_config(_config(mc, tmp_path, mc_ca.ca_file, auth=auth, **kwargs))
        try:
            with pytest.raises(AuthError) as caught:
                client.ensure_list("cesp-list-a1", "a1")
            assert "wrong-secret-1" not in str(caught.value)
        finally:
            client.close()


def test_batch_file_uploaded_over_sftp_is_imported_onto_the_list(esp, mc, sftp_sandbox, tmp_path: Path) -> None:
    """The file-drop path end to end: SftpFileDrop -> sandbox Import folder -> ImportDefinition."""
    from connector.transfer.sftp import SftpFileDrop

    server = sftp_sandbox
    assert server.root.resolve() == mc.import_root.resolve()
    drop = SftpFileDrop(server.host, server.port, server.username, password=server.password,
                        known_hosts=server.known_hosts, folder="/Import", timeout=10)
    try:
        list_id = esp.ensure_list("cesp-list-e2e", "e2e")
        local = tmp_path / "cesp_e2e_1.csv"
        rows = [f"e2e-{i},e2e{i}@example.com,Zoë" for i in range(250)]
        local.write_text("SubscriberKey,EmailAddress,First Name\r\n" + "\r\n".join(rows) + "\r\n", encoding="utf-8")
        drop.upload(local, "cesp_e2e_1.csv")
        esp.start_import("cesp-import-e2e-1", "cesp_e2e_1.csv", list_id)
        assert mc.wait_idle(10)
        mc.advance_past_delays()
        status = esp.import_status("cesp-import-e2e-1")
        assert (status.state, status.rows_ok, status.rows_error) == ("completed", 250, 0)
        assert len(esp.subscriber_statuses([f"e2e-{i}" for i in range(250)])) == 250
    finally:
        drop.close()


def test_large_upserts_are_chunked_and_no_log_line_carries_a_secret(esp, mc) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        list_id = esp.ensure_list("cesp-list-big", "big")
        mc.expire_tokens()
        results = esp.upsert_subscribers(_subs(120, "big"), list_id)
    assert len(results) == 120 and all(r.ok for r in results)
    assert mc.app.calls.get("Create", 0) >= 4  # 1 list + 3 chunks of at most 50
    text = repr(logs)
    for secret in (mc.client_secret, mc.password, esp._soap._auth.token()):  # noqa: SLF001
        assert secret not in text
    assert any((entry["event"], entry.get("peer")) == ("token_renewed", "esp") for entry in logs)


def test_a_slow_reply_times_out_and_a_read_is_retried(mc, mc_ca, tmp_path: Path) -> None:
    config = _config(mc, tmp_path, mc_ca.ca_file)
    config = config.model_copy(update={"timeouts": TimeoutSettings(esp_seconds=0.5)})
    client = MarketingCloudEspClient.from_config(config)
    client._soap._sleep = lambda seconds: None  # noqa: SLF001
    try:
        client.ensure_list("cesp-list-slow", "slow")  # token and WSDL in hand
        mc.faults.set("slow", next_n=1, seconds=1.5)
        assert client.subscriber_statuses(["nobody"]) == {}
        assert mc.faults.taken("slow") == 1
    finally:
        client.close()
        mc.faults.clear()


# -- subscriber sync ------------------------------------------------------------------------
#
# Optional capabilities of EspClient: a peer without them is skipped, not failed. Edits "at the
# ESP" (a marketer, a journey) go through the peer's account (``EspPeer.edit``).


def _offers(peer, method: str, *, sandbox: bool = False):  # noqa: ANN001, ANN202
    """The peer's client when it implements ``method`` (and is the sandbox, if asked); else skip."""
    if getattr(type(peer.client), method) is getattr(EspClient, method):
        pytest.skip(f"{type(peer.client).__name__} does not offer {method}")
    if sandbox and peer.sandbox is None:
        pytest.skip("needs the sandbox's store")
    return peer.client


def _changed(esp, since, attributes=("First Name",), until=None) -> list:  # noqa: ANN001
    return list(esp.iter_subscribers_modified_since(since, list(attributes), until))


def test_subscribers_modified_since_finds_attribute_status_and_email_changes(peer) -> None:
    esp = _offers(peer, "iter_subscribers_modified_since")
    list_id = esp.ensure_list("cesp-sync", "sync")
    esp.upsert_subscribers(_subs(4, "sy"), list_id)
    since = peer.now()
    peer.advance(0.01)
    peer.edit("sy-0001", attributes={"first name": "Bea"})  # names compare without case
    peer.edit("sy-0002", status="Unsubscribed")
    peer.edit("sy-0003", email="new3@example.com", status="Held")
    held = peer.state("sy-0003")[3]
    pages = _changed(esp, since, ("First Name", "Last Name"))
    changed = {s.subscriber_key: s for page in pages for s in page}
    assert sorted(changed) == ["sy-0001", "sy-0002", "sy-0003"]
    assert changed["sy-0001"].attributes == {"First Name": "Bea", "Last Name": ""}
    assert changed["sy-0001"].status is SubscriberStatus.ACTIVE and changed["sy-0001"].email == "sy1@example.com"
    assert changed["sy-0002"].status is SubscriberStatus.UNSUBSCRIBED
    assert changed["sy-0003"].status is SubscriberStatus.HELD and changed["sy-0003"].email == "new3@example.com"
    assert abs(changed["sy-0003"].modified - held) < timedelta(milliseconds=1)
    assert changed["sy-0003"].modified.tzinfo is not None and changed["sy-0003"].modified > since
    # nothing changed after the last edit: an empty answer, not an error
    assert [s for page in _changed(esp, held) for s in page] == []
    # until bounds the window
    later = peer.now()
    peer.advance(0.01)
    peer.edit("sy-0000", attributes={"Last Name": "Late"})
    window = [s.subscriber_key for page in _changed(esp, since, until=later) for s in page]
    assert sorted(window) == ["sy-0001", "sy-0002", "sy-0003"]


def test_bounced_and_deleted_statuses_come_and_a_subscriber_deleted_at_the_esp_is_gone(peer) -> None:
    esp = _offers(peer, "iter_subscribers_modified_since", sandbox=True)
    from connector.sandbox.marketing_cloud.soap import Obj

    for i in range(3):
        peer.seed(f"st-{i}", f"st{i}@example.com")
    since = peer.now()
    peer.advance(0.01)
    peer.edit("st-0", status="Bounced")
    peer.edit("st-1", status="Deleted")
    peer.edit("st-2", attributes={"City": "Wels"})
    assert peer.sandbox.delete_subscriber(Obj("Subscriber", {"SubscriberKey": ["st-2"]}))["StatusCode"] == "OK"
    changed = {s.subscriber_key: s.status for page in _changed(esp, since) for s in page}
    assert changed == {"st-0": SubscriberStatus.BOUNCED, "st-1": SubscriberStatus.DELETED}
    assert esp.subscriber_statuses(["st-2"]) == {}  # a full run finds deletions by absence


def test_subscribers_modified_since_pages_through_more_than_2500(peer) -> None:
    esp = _offers(peer, "iter_subscribers_modified_since")
    for i in range(2600):
        peer.seed(f"bulk-{i:05d}", f"b{i}@example.com", attributes={"City": "Graz"})
    since = peer.now()
    peer.advance(0.01)
    for i in range(2600):
        peer.edit(f"bulk-{i:05d}", attributes={"City": "Wien"})
    pages = _changed(esp, since, ("City",))
    assert [len(p) for p in pages] == [2500, 100]
    keys = [s.subscriber_key for p in pages for s in p]
    assert len(set(keys)) == 2600 and {s.attributes["City"] for p in pages for s in p} == {"Wien"}


def test_subscribers_modified_since_names_an_attribute_the_account_lacks(peer) -> None:
    esp = _offers(peer, "iter_subscribers_modified_since")
    with pytest.raises(PeerSetupError, match="'Shoe Size'"):
        _changed(esp, peer.now(), ("First Name", "Shoe Size"))


def test_update_subscribers_reports_each_subscriber_and_moves_its_modified_date(peer) -> None:
    esp = _offers(peer, "update_subscribers")
    list_id = esp.ensure_list("cesp-sync-upd", "sync")
    esp.upsert_subscribers(_subs(3, "up"), list_id)
    before = peer.state("up-0000")[3]
    peer.advance(0.01)
    updates = [
        SubscriberUpdate("up-0000", {"First Name": "Cleo", "Country": "Austria"}),
        SubscriberUpdate("nobody-here", {"First Name": "X"}),
        SubscriberUpdate("up-0001", email="not-an-address"),
        SubscriberUpdate("up-0002", status=SubscriberStatus.UNSUBSCRIBED),
        SubscriberUpdate("up-0001", {"Birthday": "soon"}),
    ]
    results = esp.update_subscribers(updates)
    assert [r.key for r in results] == [u.subscriber_key for u in updates]
    assert [r.ok for r in results] == [True, False, False, True, False]
    assert results[1].code == "12001" and "nobody-here" in results[1].message
    assert results[2].code == "12000" and "not-an-address" in results[2].message
    assert results[4].code == "12004" and "Birthday" in results[4].message
    email, attributes, _status, modified = peer.state("up-0000")
    assert attributes["First Name"] == "Cleo" and attributes["Country"] == "Austria" and modified > before
    assert peer.state("up-0002")[2] == "Unsubscribed"
    assert peer.state("up-0001")[0] == "up1@example.com"
    assert peer.state("nobody-here") is None  # an update never creates
    assert all(r.ok for r in esp.update_subscribers(updates[:1]))  # safe to repeat


# -- data extensions --------------------------------------------------------------------------


def _members_de(mc) -> None:  # noqa: ANN001
    from connector.sandbox.marketing_cloud.dataext import DEFieldRec

    mc.store.add_data_extension("cesp-members", "Members", [
        DEFieldRec("ContactId", "Text", 36, is_primary_key=True, is_required=True),
        DEFieldRec("Email", "EmailAddress"), DEFieldRec("Tier", "Text", 10), DEFieldRec("Points", "Number"),
        DEFieldRec("ChangedOn", "Date")], sendable_field="ContactId")


def test_data_extension_definition_with_fields_key_and_sendable_relationship(peer) -> None:
    esp, mc = _offers(peer, "data_extension", sandbox=True), peer.account
    _members_de(mc)
    info = esp.data_extension("cesp-members")
    assert info.name == "Members" and info.primary_key == ("ContactId",)
    assert [(f.name, f.field_type) for f in info.fields] == [
        ("ContactId", "Text"), ("Email", "EmailAddress"), ("Tier", "Text"), ("Points", "Number"), ("ChangedOn", "Date")]
    assert info.fields[2].max_length == 10 and info.fields[0].is_required
    assert info.is_sendable and info.sendable_field == "ContactId" and info.sendable_subscriber_field == "Subscriber Key"
    assert esp.data_extension("no-such-de") is None


def test_data_extension_rows_upsert_read_by_date_and_delete(peer) -> None:
    esp, mc = _offers(peer, "iter_data_extension_rows", sandbox=True), peer.account
    _members_de(mc)
    rows = [{"ContactId": f"c{i}", "Email": f"m{i}@example.com", "Points": str(i),
             "ChangedOn": "2026-03-01T12:00:00Z"} for i in range(3)]
    bad = [{"Email": "x@example.com"}, {"ContactId": "c9", "Tier": "far-too-long-tier"},
           {"ContactId": "c8", "Points": "lots"}]
    results = esp.upsert_data_extension_rows("cesp-members", rows + bad)
    assert [r.ok for r in results] == [True, True, True, False, False, False]
    assert [r.key for r in results][:3] == ["c0", "c1", "c2"] and results[4].key == "c9"
    assert "ContactId" in results[3].message and "MaxLength" in results[4].message and results[5].code == "310007"
    assert all(r.ok for r in esp.upsert_data_extension_rows("cesp-members", rows))  # safe to repeat
    # a journey changes one row later; a read by the Date field finds only it
    mc.store.edit_row("cesp-members", {"ContactId": "c1", "Tier": "gold", "ChangedOn": "2026-03-02T08:00:00Z"})
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    pages = list(esp.iter_data_extension_rows("cesp-members", ["ContactId", "Tier"], modified_field="ChangedOn",
                                              since=since))
    assert [r for p in pages for r in p] == [{"ContactId": "c1", "Tier": "gold", "ChangedOn": "2026-03-02T08:00:00Z"}]
    every = [r for p in esp.iter_data_extension_rows("cesp-members", ["ContactId", "Points"]) for r in p]
    assert sorted((r["ContactId"], r["Points"]) for r in every) == [("c0", "0"), ("c1", "1"), ("c2", "2")]
    with pytest.raises(PermanentPeerError, match="'Nope'"):
        list(esp.iter_data_extension_rows("cesp-members", ["ContactId", "Nope"]))
    with pytest.raises(PermanentPeerError, match="no-such-de"):
        list(esp.iter_data_extension_rows("no-such-de", ["ContactId"]))
    gone = esp.delete_data_extension_rows("cesp-members", [{"ContactId": "c0"}, {"ContactId": "c0"}])
    assert [r.ok for r in gone] == [True, True]  # the second: already gone, still ok
    assert sorted(r["ContactId"] for r in mc.store.de_rows(mc.store.data_extensions["cesp-members"])) == ["c1", "c2"]


def test_data_extension_rows_page_through_more_than_2500(peer) -> None:
    esp, mc = _offers(peer, "iter_data_extension_rows", sandbox=True), peer.account
    _members_de(mc)
    for i in range(2700):
        mc.store.edit_row("cesp-members", {"ContactId": f"p{i:05d}", "Points": str(i)})
    pages = list(esp.iter_data_extension_rows("cesp-members", ["ContactId", "Points"]))
    assert [len(p) for p in pages] == [2500, 200]
    assert len({r["ContactId"] for p in pages for r in p}) == 2700


def _members(peer, list_key: str) -> set[str]:  # noqa: ANN001
    if peer.sandbox is not None:
        return set(peer.sandbox.list_by_key(list_key).members)
    return set(peer.account.members[peer.account.lists[list_key]])


def test_remove_from_lists_takes_subscribers_off_the_lists_only(peer) -> None:
    esp = _offers(peer, "remove_from_lists")
    for key in ("cesp-sync-rm-a", "cesp-sync-rm-b", "cesp-sync-rm-keep"):
        esp.upsert_subscribers(_subs(3, "rm"), esp.ensure_list(key, key))
    keys = ["rm-0000", "rm-0001", "nobody-here"]
    results = esp.remove_from_lists(keys, ["cesp-sync-rm-a", "cesp-sync-rm-b"])
    assert [r.key for r in results] == keys and all(r.ok for r in results), results
    assert _members(peer, "cesp-sync-rm-a") == _members(peer, "cesp-sync-rm-b") == {"rm-0002"}
    assert _members(peer, "cesp-sync-rm-keep") == {"rm-0000", "rm-0001", "rm-0002"}
    assert peer.state("rm-0000")[2] == "Active"  # still a subscriber of the account, status untouched
    assert all(r.ok for r in esp.remove_from_lists(keys, ["cesp-sync-rm-a"]))  # safe to repeat
    with pytest.raises(PeerSetupError, match="no-such-list"):
        esp.remove_from_lists(keys, ["no-such-list"])


def test_find_lists_names_the_lists_the_account_has(peer) -> None:
    esp = _offers(peer, "find_lists")
    esp.ensure_list("cesp-find-news", "News")
    assert esp.find_lists(["cesp-find-news", "no-such-list"]) == {"cesp-find-news": "News"}
    assert esp.find_lists(["no-such-list"]) == {}
