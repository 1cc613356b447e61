"""The seam every deployment backend fills: what the API, the CLI and the HTTP server may call.

``engine.deployment.Deployment`` (threads on this machine's cores) satisfies it, and so must any
other backend (a Ray deployment spread over replicas). The server types its registry against this
protocol, never against a concrete class, so a backend is swappable without touching a dialect.

Semantics (ELASTIC_REFERENCE.md §5.5, §6), which a backend must keep:

* ``infer``/``ainfer``: one result dict per text, in order; errors are ``engine.errors`` classes
  (``QueueFull`` 429, ``InferenceTimeout`` 408, ``InferenceFailed`` 500, ``DeploymentStopped`` 409,
  ``NotDeployed`` 409, ``InvalidInput`` 400). ``priority`` is ``high``, ``normal`` or ``low``;
  ``**config`` are the task's inference_config update keys.
* ``update``: change the allocation count, or the adaptive settings, while requests keep running.
* ``stats``: Elasticsearch's deployment stats names (``deployment_id``, ``model_id``, ``state``,
  ``number_of_allocations``, ``threads_per_allocation``, ``queue_capacity``, ``cache_size``,
  ``priority``, ``allocation_status``, ``inference_count``, ...), see ``Deployment.stats``.
* ``stop``: every pending caller gets its result or an error; ``drain`` runs what is queued first.
* ``clear_cache``: empty the inference cache (``deployment/cache/_clear``).
* ``package``: the :class:`engine.package.LoadedPackage` served (path, manifest, tokenizer, runner).
* ``state``: ``starting``, ``started``, ``stopping`` or ``stopped`` (the server's health check reads it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .adaptive import AdaptiveAllocations
    from .package import LoadedPackage


@runtime_checkable
class DeploymentLike(Protocol):
    """A started model that answers inference requests; see the module docstring for the contract."""

    @property
    def package(self) -> LoadedPackage:
        """The package being served: ``path``, ``manifest``, ``tokenizer``, ``runner``."""
        ...

    @property
    def state(self) -> str:
        """``starting``, ``started``, ``stopping`` or ``stopped``."""
        ...

    def infer(self, texts: str | Sequence[str], timeout: float | None = None, priority: str = "normal",
              **config: Any) -> list[dict[str, Any]]:
        """Run the task on texts and wait for the results (one dict per text, in order)."""
        ...

    async def ainfer(self, texts: str | Sequence[str], timeout: float | None = None, priority: str = "normal",
                     **config: Any) -> list[dict[str, Any]]:
        """``infer`` for asyncio; cancelling the awaiting task withdraws the queued texts."""
        ...

    def update(self, number_of_allocations: int | None = None,
               adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None = None) -> None:
        """Change the allocation count or the adaptive settings live."""
        ...

    def stats(self) -> dict[str, Any]:
        """Deployment stats under Elasticsearch's names (ELASTIC_REFERENCE.md §6.5)."""
        ...

    def stop(self, drain: bool = True) -> None:
        """Stop; every pending caller gets its result or an error."""
        ...

    def clear_cache(self) -> None:
        """Empty the inference cache."""
        ...
