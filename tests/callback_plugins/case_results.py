"""Per-host results of a batched validation run, as JSON (tests/rolecheck.py enables it).

Each inventory host of such a run is one test case: this writes, for every host, the
ordered list of what its tasks did (play, task, status, message, the error the default
output shows for a failure, where the task lives) and
its recap counts, so that each case can be judged on its own host alone.
"""

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: case_results
type: aggregate
short_description: per-host task results of a test run, as JSON
description:
  - Writes every host's task results in order, and its recap counts, to one JSON file.
options:
  path:
    description: The JSON file to write.
    env:
      - name: CASE_RESULTS_FILE
    required: true
"""


def _text(value):
    """A result's message as text: strings as they are, anything else (lists, dicts) as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _error(result):
    """What the default output's "[ERROR]: ..." line says of a failure: the messages of the error
    and of its causes ("Task failed: Action failed: <the task's own message>"). Shown even for
    a no_log task, whose result holds only `censored`."""
    event = getattr(getattr(result, "exception", None), "event", None)
    parts = []
    while event is not None:
        parts.append(str(event.msg))
        event = event.chain.event if event.chain else None
    return ": ".join([part.rstrip(".") for part in parts[:-1]] + parts[-1:])


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "case_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._play = ""
        self._hosts = {}

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name().strip()

    def _record(self, result, status, item=False):
        res = result.result
        if not item and status == "ok" and res.get("changed", False):
            status = "changed"
        entry = {
            "play": self._play,
            "task": result.task.get_name().strip(),
            "status": status,
            # A no_log result holds only `censored` (what the default output shows in its place).
            "msg": _text(res.get("msg", res.get("censored"))),
            "origin": result.task.get_path() or "",
        }
        if status in ("failed", "ignored", "unreachable"):
            entry["error"] = _error(result)
        if item:
            entry["item"] = _text(self._get_item_label(res))
        self._hosts.setdefault(result.host.get_name(), {"results": []})["results"].append(entry)

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_item_on_ok(self, result):
        self._record(result, "changed" if result.result.get("changed", False) else "ok", item=True)

    def v2_runner_item_on_failed(self, result):
        self._record(result, "failed", item=True)

    def v2_runner_item_on_skipped(self, result):
        self._record(result, "skipped", item=True)

    def v2_playbook_on_stats(self, stats):
        for host in stats.processed:
            self._hosts.setdefault(host, {"results": []})["stats"] = stats.summarize(host)
        path = self.get_option("path")
        with open(path + ".part", "w", encoding="utf-8") as out:
            json.dump(self._hosts, out, indent=1, default=str, ensure_ascii=False)
        os.replace(path + ".part", path)
