"""The seed's payment scenario through a Python client generated from the
daemon's OpenAPI document by openapi-python-client (package
``eventlogs_client``; ``scripts/clients`` generates and installs it).

    python payment_scenario.py URL [TOKEN]

Each step checks what the daemon answered; the first that does not hold
stops the run with its reason. Prints one line when every step held.
"""

import sys
import uuid

from eventlogs_client import AuthenticatedClient
from eventlogs_client.api.logs import (
    logs_aggregate,
    logs_append,
    logs_create,
    logs_events,
)
from eventlogs_client.models import AppendEvents, CreateLog, Problem, Written


def expect(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"python: payment scenario failed: {what}")


def main() -> None:
    url = sys.argv[1]
    token = sys.argv[2] if len(sys.argv) > 2 else ""
    client = AuthenticatedClient(base_url=url, token=token)
    key = f"create-payment-{uuid.uuid4()}"

    # Create with an Idempotency-Key; the retry replays the original.
    create = CreateLog(
        reducer="payment",
        event={"Requested": {"request": {"amount_requested": 10000}}},
    )
    created = logs_create.sync_detailed(client=client, body=create, idempotency_key=key)
    expect(created.status_code == 201, f"create answered {created.status_code}")
    expect(isinstance(created.parsed, Written), "create returned no Written")
    log_id = created.parsed.log_id
    expect(created.headers["location"] == f"/v1/logs/{log_id}", "Location header")
    expect(not created.parsed.replayed, "a first create marked replayed")
    retry = logs_create.sync_detailed(client=client, body=create, idempotency_key=key)
    expect(retry.status_code == 201, f"the retry answered {retry.status_code}")
    expect(retry.parsed.replayed and retry.parsed.log_id == log_id, "the retry did not replay")
    expect(retry.headers.get("idempotent-replayed") == "true", "Idempotent-Replayed header")

    # Append with If-Match: the log must end at index 0.
    authorized = logs_append.sync_detailed(
        log_id,
        client=client,
        body=AppendEvents(event={"Authorized": {"amount": 10000, "approval_code": "xyz123"}}),
        if_match='"0"',
    )
    expect(authorized.status_code == 200, f"authorize answered {authorized.status_code}")
    expect(authorized.parsed.last_index == 1, "authorize stored at the wrong index")

    # The aggregate; its ETag is the next append's If-Match.
    reduced = logs_aggregate.sync_detailed(log_id, client=client)
    expect(reduced.status_code == 200, f"aggregate answered {reduced.status_code}")
    etag = reduced.headers["etag"]
    expect(etag == '"1"', f"ETag {etag}")
    expect(reduced.parsed.aggregate["amount_outstanding"] == 10000, "outstanding after authorize")

    captured = logs_append.sync_detailed(
        log_id,
        client=client,
        body=AppendEvents(event={"Captured": {"amount": 4000, "statement_descriptor": "Widgets, Inc"}}),
        if_match=etag,
    )
    expect(captured.status_code == 200, f"capture answered {captured.status_code}")

    # A second writer with the same If-Match loses: 412 with current_index.
    late = logs_append.sync_detailed(
        log_id,
        client=client,
        body=AppendEvents(event={"Captured": {"amount": 4000}}),
        if_match=etag,
    )
    expect(late.status_code == 412, f"a stale If-Match answered {late.status_code}")
    expect(isinstance(late.parsed, Problem), "the 412 is not a problem document")
    expect(late.parsed.type_ == "urn:eventlogs:problem:concurrent-append", f"412 type {late.parsed.type_}")
    expect(late.parsed.current_index == 2, f"current_index {late.parsed.current_index}")

    # Refunding more than is outstanding is refused; nothing is stored.
    too_much = logs_append.sync_detailed(
        log_id, client=client, body=AppendEvents(event={"Refunded": {"amount": 7000}})
    )
    expect(too_much.status_code == 422, f"an over-refund answered {too_much.status_code}")
    expect(too_much.parsed.type_ == "urn:eventlogs:problem:reducer-rejected-event", "422 type")
    expect(too_much.parsed.index == 3, "422 index")

    # Without If-Match: appended at the end.
    refunded = logs_append.sync_detailed(
        log_id,
        client=client,
        body=AppendEvents(event={"Refunded": {"amount": 6000, "reference_number": "abc789"}}),
    )
    expect(refunded.status_code == 200, f"refund answered {refunded.status_code}")
    last = logs_aggregate.sync_detailed(log_id, client=client).parsed
    expect(last.aggregate["amount_outstanding"] == 0, "outstanding after refund")
    expect(last.aggregate["amount_refunded"] == 6000, "refunded")
    expect(last.through_index == 3, f"through_index {last.through_index}")

    # The events, a page of 3 with a Link to the rest.
    page = logs_events.sync_detailed(log_id, client=client, limit=3)
    expect(page.status_code == 200, f"events answered {page.status_code}")
    expect([e.index for e in page.parsed] == [0, 1, 2], "the first page")
    expect(page.parsed[1].event["Authorized"]["approval_code"] == "xyz123", "an event as sent")
    expect('rel="next"' in page.headers.get("link", ""), "no Link to the next page")

    print("python: payment scenario passed")


if __name__ == "__main__":
    main()
