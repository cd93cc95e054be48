"""thumbnail-webhook (lang: python3-http): takes an upload notification and answers with a
summary of what it received, as JSON."""

import hashlib
import json


def handle(event, context):
    summary = {
        "method": event.method,
        "path": event.path,
        "query": dict(event.query),
        "content_type": event.headers.get("Content-Type", ""),
        "bytes": len(event.body),
        "sha256": hashlib.sha256(event.body).hexdigest(),
        "hostname": context.hostname,
    }
    if summary["content_type"].startswith("application/json") and event.body:
        try:
            payload = json.loads(event.body)
        except ValueError as e:
            return {"statusCode": 400, "body": {"error": f"invalid JSON: {e}"}}
        if isinstance(payload, dict):
            summary["fields"] = sorted(payload)
            summary["object"] = payload.get("key") or payload.get("Key")
    return {"statusCode": 200, "body": summary}
