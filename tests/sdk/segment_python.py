"""Sends one event of each type to ferry through the official Segment
Python SDK (segment-analytics-python), plain and gzipped. Used by
tests/sdk_compat.rs; exits non-zero if the SDK reports any error.

usage: segment_python.py HOST WRITE_KEY
"""
import datetime
import sys

from segment.analytics import Client

host, write_key = sys.argv[1], sys.argv[2]
errors = []


def on_error(error, items):
    errors.append(f"{error!r} for {len(items)} item(s)")


plain = Client(write_key, host=host, on_error=on_error, max_retries=2)
plain.track(
    user_id="u-py",
    event="Order Completed",
    properties={"revenue": 9.5, "items": [{"sku": "a-1", "qty": 2}]},
    context={"ip": "10.0.0.1"},
    message_id="py-track",
)
plain.identify(user_id="u-py", traits={"email": "py@example.com", "plan": "pro"}, message_id="py-identify")
plain.page(user_id="u-py", category="Docs", name="Install", properties={"url": "https://example.com/install"}, message_id="py-page")
plain.group(user_id="u-py", group_id="g-py", traits={"name": "Acme"}, message_id="py-group")
plain.alias(previous_id="anon-py", user_id="u-py", message_id="py-alias")
plain.track(
    user_id="u-py",
    event="Backfilled",
    timestamp=datetime.datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc),
    message_id="py-timestamp",
)
plain.flush()
plain.join()

zipped = Client(write_key, host=host, on_error=on_error, gzip=True, max_retries=2)
zipped.track(anonymous_id="anon-gz", event="Gzipped", properties={"n": 1}, message_id="py-gzip")
zipped.flush()
zipped.join()

if errors:
    print("SDK errors:", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("sent 7 events")
