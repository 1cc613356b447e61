"""One Serve replica = one Elasticsearch allocation: an engine deployment of 1 allocation inside an actor.

The replica builds everything where it runs: it reads the package from its node's disk (a shared path,
or the copy Ray shipped as the actor's working directory), verifies every file's sha256 against the
manifest as a local deployment does, and opens its ONNX Runtime session there (sessions do not
pickle). Requests then go through the engine's own scheduler (queue, token-budget batching, cache,
timeouts), so a replica answers exactly as ``engine.load`` on that node would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import DeploymentConfig
from ..deployment import Deployment
from ..package import load_package

SHIPPED = "shipped"  # package_path value meaning "the package is this actor's working directory"


class Allocation:
    """The Serve deployment class (wrapped by ``serve.deployment`` in :func:`engine.ray.deploy`).

    Args:
        package_path: the package directory on the replica's node, or :data:`SHIPPED`.
        replica_config: :class:`DeploymentConfig` keyword arguments (1 allocation, unpinned).
        deployment_id: the id reported in stats.
    """

    def __init__(self, package_path: str, replica_config: Mapping[str, Any], deployment_id: str) -> None:
        import ray  # deferred: this module is importable (and its docs readable) without Ray

        path = Path(os.getcwd()) if package_path == SHIPPED else Path(package_path)
        package = load_package(path, verify=True)
        config = DeploymentConfig(**dict(replica_config), deployment_id=deployment_id)
        self._deployment = Deployment(package, config)
        context = ray.get_runtime_context()
        self._node_id = context.get_node_id()
        self._replica_id = self._own_replica_id()

    @staticmethod
    def _own_replica_id() -> str:
        from ray import serve

        try:
            return str(serve.get_replica_context().replica_id.unique_id)
        except Exception:  # outside a replica (unit use of the class): no Serve context
            return f"pid-{os.getpid()}"

    async def infer(self, texts: Sequence[str], timeout: float | None, priority: str,
                    config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One caller's texts through this replica's scheduler; errors are ``engine.errors`` classes."""
        return await self._deployment.ainfer(list(texts), timeout=timeout, priority=priority, **dict(config))

    def stats(self) -> dict[str, Any]:
        """This replica's engine stats plus where it runs (one ``nodes[]`` entry of the deployment)."""
        stats = self._deployment.stats()
        stats["node_id"] = self._node_id
        stats["replica_id"] = self._replica_id
        stats["pid"] = os.getpid()
        return stats

    def clear_cache(self) -> None:
        self._deployment.clear_cache()

    def check_health(self) -> None:
        """Serve's health probe: a replica whose deployment stopped is replaced."""
        if self._deployment.state != "started":
            raise RuntimeError(f"engine deployment is {self._deployment.state}")

    def __del__(self) -> None:
        deployment = getattr(self, "_deployment", None)
        if deployment is not None:
            deployment.stop(drain=False)
