"""A report as a JSON POST to a webhook (the stdlib's urllib.request): the
report's JSON document, with the report id in `Idempotency-Key` and
`X-Farm-Report-Id` so a receiver dedupes a report sent twice. Accepted
means a 2xx answer; anything else is tried again later."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from farm.notify.settings import Webhook
from farm.notify.smtp import DeliveryError


def request(cfg: Webhook, row) -> urllib.request.Request:
    body = json.dumps(row.document, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "farm-reports/1",
               "Idempotency-Key": row.report_id, "X-Farm-Report-Id": row.report_id}
    auth = cfg.auth_header()
    if auth:
        headers[auth[0]] = auth[1]
    return urllib.request.Request(cfg.url, data=body, headers=headers, method="POST")


def send(cfg: Webhook, row) -> None:
    try:
        with urllib.request.urlopen(request(cfg, row), timeout=cfg.timeout_s) as answer:
            status = answer.status
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"webhook {cfg.url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DeliveryError(f"webhook {cfg.url}: {getattr(e, 'reason', e)}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook {cfg.url}: HTTP {status}")
