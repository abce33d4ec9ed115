"""Reports a maintainer can act on: for every new kernel signature and
every confirmed regression, one report (compose), queued once per channel
in the results database (outbox), delivered by e-mail (smtp) and/or a JSON
webhook POST (webhook) by a sender that retries with backoff (sender).
What a stored result brings to report: trigger. Where reports go: the
farm config's `reports:` (settings). docs/reports.md."""
