"""`farm web`: the lab at a glance in a browser. Hosts (health, lease, job,
heartbeat, health history; quarantine and release), queues, a submission's
live progress and results, the triage views of `farm report` rendered live
from the database, a submit form for the jobs in jobs/, and /metrics.

Starlette under uvicorn, Jinja2 templates. Loopback by default; beyond it a
login (a generated password in a 0600 file). Every change is a POST with a
CSRF token, and goes through the same functions as the command line
(farm/queue/operator.py)."""
