"""Flow runs whose runner is gone: marked CRASHED when `make serve` starts a new runner.

A runner killed with -9 cannot report its run's end, so the run stays RUNNING on the server and
holds the deployment's only concurrency slot: the next trigger then waits (about 5.5 min here)
before Prefect's own lease expires. `make serve` only starts a runner when none serves this
workspace (server.running_runner), and a flow run takes the workspace lock for its whole life; so
when no runner is alive and the lock is free, no run of this deployment can still be running
here, and each one the server calls RUNNING, PENDING or CANCELLING is an orphan.
"""

from __future__ import annotations

from pathlib import Path

ORPHAN_STATES = ("RUNNING", "PENDING", "CANCELLING")


def orphan_message(deployment: str) -> str:
    return f"its runner is gone (killed or crashed); marked crashed when `make serve` started a new runner for {deployment}"


def crash_orphaned_runs(root: Path, api_url: str, deployment: str) -> list[str]:
    """Mark the deployment's unfinished flow runs CRASHED on the server at `api_url`; returns
    their names. Does nothing while another process holds the workspace lock (a run may be live).

    deployment: "<flow name>/<deployment name>", as `prefect deployment run` takes it.
    """
    import os

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    from pipeline.workspace import WorkspaceError, workspace_lock

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url  # this server, not an ephemeral one
    try:
        with workspace_lock(root), get_client(sync_client=True) as client:
            try:
                found = client.read_deployment_by_name(deployment)
            except ObjectNotFound:
                return []  # never served here: nothing to clean
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in ORPHAN_STATES]))),
            )
            for run in runs:
                client.set_flow_run_state(run.id, Crashed(message=orphan_message(deployment)), force=True)
            return [run.name for run in runs]
    except WorkspaceError:
        return []  # a flow holds the workspace: its run is alive, leave it
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
