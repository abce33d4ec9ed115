"""A host lost mid-job: the one host-lost result for its run, and the
orphaned task put back on its queue."""
from __future__ import annotations

import base64
import json

from farm.result import Finding, Result, now_iso
from farm.queue.registry import Registry


def lost_result(run: dict, facts: dict, why: str, crash: list[Finding] = ()) -> dict:
    """The result of a run whose host went away: one host-lost finding,
    after the crash reports that explain it (a guest's console, say)."""
    r = Result(run_id=run["run_id"], job=run.get("job", "?"), host=facts, started=run.get("started", now_iso()))
    r.findings.extend(crash)
    r.findings.append(Finding("host-lost", "host-lost", f"{facts.get('hostname', '?')} lost during "
                              f"{r.job}: {why}", detail={"submission": run.get("submission"),
                                                          "task_id": run.get("task_id"),
                                                          "crash": [f.signature for f in crash]}))
    r.settle_verdict()
    d = r.to_dict()
    d["submission"] = run.get("submission")
    return d


def sweep_unacked(app, pick) -> int:
    """Messages delivered and never acknowledged (kombu Redis keeps them in
    its `unacked` hash, and gives them back only after visibility_timeout,
    8 days): pick(message, queue) says "restore" (back on its queue),
    "drop" (nothing is waiting for it any more) or None. Returns how many."""
    done = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        for tag, payload in client.hgetall(channel.unacked_key).items():
            try:
                message, _exchange, queue = json.loads(payload)
            except (ValueError, TypeError):
                continue
            what = pick(message, queue)
            if what == "restore":
                channel.qos.restore_by_tag(tag, client=client, leftmost=True)
            elif what == "drop":
                client.pipeline().zrem(channel.unacked_index_key, tag).hdel(channel.unacked_key, tag).execute()
            else:
                continue
            done += 1
    return done


def task_payload(message: dict) -> dict | None:
    """A farm.run message's payload (its first argument), or None."""
    try:
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return args[0] if args and isinstance(args[0], dict) else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def restore_orphan(app, task_id: str) -> bool:
    """Put the unacked message of task_id back on its queue (kombu Redis)."""
    return sweep_unacked(app, lambda m, _q: "restore" if m.get("headers", {}).get("id") == task_id else None) > 0


def declare_lost(reg: Registry, app, host: str, run: dict, why: str, deliver, crash: list[Finding] = ()) -> bool:
    """Record the loss exactly once (whoever calls first); deliver(result)
    hands the host-lost result to the store."""
    if reg.result_sent(run["run_id"]):
        # It died after handing its result over, before its task was acked:
        # nothing is lost, and its orphaned task has nothing left to do.
        if run.get("task_id"):
            sweep_unacked(app, lambda m, _q: "drop" if m.get("headers", {}).get("id") == run["task_id"] else None)
        return False
    if not reg.mark_lost(run["run_id"]):
        return False
    facts = reg.hosts().get(host, {}).get("facts", {"hostname": host})
    deliver(lost_result(run, facts, why, crash))
    reg.note_loss(host)
    reg.set_run_state(run["run_id"], "lost")
    reg.keep_unrecovered(host, run)  # for the host's return
    if run.get("task_id"):
        restore_orphan(app, run["task_id"])
    return True
