"""The preview's pure parts: the audience-change rule and the sample writer (no sockets)."""

from __future__ import annotations

from connector.models import SendRequest, SendStatus, Subscriber
from connector.steps.send.audience import audience_change
from connector.steps.send.preview import SampleWriter


def _request(would_send: int | None) -> SendRequest:
    return SendRequest(id="r", name="n", status=SendStatus.PENDING, owner_id="u", targets=(),
                       preview_would_send=would_send)


def test_audience_change_is_the_share_of_the_previewed_audience() -> None:
    assert audience_change(_request(None), 50) is None  # never previewed: no rule
    assert audience_change(_request(40), 50) == 0.25
    assert audience_change(_request(40), 30) == 0.25
    assert audience_change(_request(40), 40) == 0.0
    assert audience_change(_request(0), 0) == 0.0 and audience_change(_request(0), 3) == 1.0


def test_the_sample_writer_counts_everyone_and_keeps_the_first_few() -> None:
    writer = SampleWriter(2)
    for i in range(5):
        assert writer.write(Subscriber(f"k{i}", f"a{i}@example.com")) is None
    assert writer.rows == 5 and [s.subscriber_key for s in writer.sample] == ["k0", "k1"]
    assert writer.checkpoint().rows == 5
