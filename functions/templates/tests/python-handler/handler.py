"""Example handler for the python3-http shim (OpenFaaS python3-http template style), used by
functions/templates/tests/test_shims.py and Fjord's end-to-end tests.

  GET|POST /anything  201, X-Fjord-Example: python, JSON echo of the request
  /text               200, text/plain "hello <body>"
  /fail               raises: 500 with the error text
  /sleep?ms=N         waits N ms, then echoes (for concurrency)
"""

import base64
import json
import time


def handle(event, context):
    if event.path == "/fail":
        raise RuntimeError("handler failed on purpose")
    if event.path == "/text":
        text = event.body.decode("utf-8") or "world"
        return {"statusCode": 200, "body": f"hello {text}", "headers": {"Content-Type": "text/plain"}}
    if event.path == "/sleep":
        time.sleep(int(event.query.get("ms", "100")) / 1000)

    content_type = event.headers.get("Content-Type", "")
    if content_type.startswith("application/json") and event.body:
        body, body_type = json.loads(event.body), "json"
    else:
        try:
            body, body_type = event.body.decode("utf-8"), "text"
        except UnicodeDecodeError:
            body, body_type = base64.b64encode(event.body).decode(), "base64"
    return {
        "statusCode": 201,
        "headers": {"X-Fjord-Example": "python"},
        "body": {
            "method": event.method,
            "path": event.path,
            "query": dict(event.query),
            "headers": dict(event.headers),
            "body": body,
            "bodyType": body_type,
            "hostname": context.hostname,
        },
    }
