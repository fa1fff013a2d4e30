"""The champion's history: every promotion and rollback, append-only, on the registered model.

Each event is one registered-model tag `raincheck.history.NNNNNN` holding a small JSON object
({seq, action, version, from, reason, at}), so the history survives any alias move and never
outgrows a tag's size limit. Replaying it gives the champion stack: a promotion (`gate`,
`promote`) pushes its version, a `rollback` pops one; rollback moves `champion` to the version
under the top. Callers hold the registry lock (client.registry_lock).
"""

from __future__ import annotations

import json
import time

from pipeline.tracking import CHAMPION, RegistryError, alias_version

PREFIX = "raincheck.history."
PUSH_ACTIONS = ("adopted", "gate", "promote")  # `adopted`: a champion found before history existed


def events(client, model_name: str) -> list[dict]:
    """The history, oldest first (empty when the model or its history does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model_name).tags
    except MlflowException:
        return []
    return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(PREFIX))]


def champion_stack(history: list[dict]) -> list[str]:
    """The champions in the order they took over, with rolled-back ones popped."""
    stack: list[str] = []
    for event in history:
        if event["action"] in PUSH_ACTIONS:
            stack.append(str(event["version"]))
        elif event["action"] == "rollback" and stack:
            stack.pop()
    return stack


def append(client, model_name: str, action: str, version: str, previous: str | None, reason: str = "") -> dict:
    """Record one champion change. A champion that predates the history is adopted first, so a
    rollback can return to it."""
    history = events(client, model_name)
    if not history and previous is not None:
        history.append(_write(client, model_name, 1, "adopted", previous, None, "champion before the history began"))
    return _write(client, model_name, len(history) + 1, action, version, previous, reason)


def _write(client, model_name: str, seq: int, action: str, version: str, previous: str | None, reason: str) -> dict:
    event = {"seq": seq, "action": action, "version": str(version), "from": None if previous is None else str(previous),
             "reason": reason[:500], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    client.set_registered_model_tag(model_name, f"{PREFIX}{seq:06d}", json.dumps(event, sort_keys=True))
    return event


def rollback_target(client, model_name: str) -> tuple[str, str]:
    """(current champion, the version a rollback returns to); RegistryError when there is none."""
    current = alias_version(client, model_name, CHAMPION)
    if current is None:
        raise RegistryError(f"{model_name} has no champion to roll back")
    stack = champion_stack(events(client, model_name))
    if not stack:  # registered before the history existed: the one step the old tag remembers
        previous = current.tags.get("previous_champion")
        if not previous:
            raise RegistryError(f"{model_name} version {current.version} replaced no earlier champion: nothing to roll back to")
        return str(current.version), previous
    if stack[-1] != str(current.version):
        raise RegistryError(f"{model_name}: champion is version {current.version} but the history's last champion is "
                            f"{stack[-1]} (moved outside raincheck?); use `raincheck registry promote VERSION --reason ...`")
    if len(stack) < 2:
        raise RegistryError(f"{model_name}: version {current.version} is the first champion in the history: nothing to roll back to")
    return str(current.version), stack[-2]
