"""A deployment of one model package on this machine's cores: allocations, the worker loop, scaling.

The queue, the requests, the batching policy and how a request ends are in :mod:`engine.scheduler`
(whose lock this class shares), the settings and their rules in :mod:`engine.config`. A deployment
owns a bounded priority queue of texts and ``number_of_allocations`` worker threads.
Each worker (an *allocation*) owns one ONNX Runtime session pinned to its own cores and loops: take
a batch from the queue under a token budget, run it, hand every text its outputs. The caller's
thread does the task's ``parse_config`` and ``prepare`` before anything is queued and ``finish``
after, so the workers only ever run graphs. One exception, for latency: a blocking ``infer`` without
a timeout whose one text is all that is queued, while an allocation is idle, borrows that allocation
and runs the batch on its own thread (the worker takes nothing meanwhile): no hand-off to the worker
and back, two thread wake-ups that on a busy host each wait for a core. ``ainfer`` never does (the
event loop must not block on a graph). Semantics follow Elasticsearch (ELASTIC_REFERENCE.md §5.5,
§6): queue capacity counts texts, a full queue answers 429, an expired timer 408, a failed batch 500
for the requests in that batch only, a stop cancels with 409.

Threads and cores
-----------------
Who runs where, and why the cores are never oversubscribed by the engine:

* ONNX Runtime: each allocation has ``threads_per_allocation`` intra-op threads, the worker thread
  itself (or the caller that borrowed the allocation) plus ``threads - 1`` pool threads, all pinned
  to that allocation's own cores, disjoint from every other allocation's and taken from
  ``os.sched_getaffinity`` (a caller borrowing a one-thread allocation stays where the OS put it:
  :meth:`Deployment._run_lent`). ``inter_op_num_threads`` is 1 with the sequential executor (no
  inter-op pool) and spinning is off, so an idle allocation sleeps.
  The ES clamping rules keep ``allocations × threads`` within the allowed set except where they
  round up (engine/cores.py); then the allocations that find no free cores run unpinned.
* Tokenizer: ``task.prepare`` runs in the *caller's* thread, one text at a time. ``tokenizers`` only
  uses its Rust (rayon) pool for batch encoding; we set ``TOKENIZERS_PARALLELISM=false`` unless the
  user set it, so a batch encode can never start a second pool of ``cpu_count`` threads next to
  ORT's. With parallelism off the pool is never used, so ``RAYON_NUM_THREADS`` needs no setting.
* C kernels: run in the caller's thread inside ``task.finish``, single-threaded, GIL released; they
  start no threads (STYLE.md §13).
So the engine starts exactly ``allocations × threads_per_allocation`` compute threads; the work done
in callers' threads is bounded by how many callers there are, which the application (or the HTTP
server's worker pool) decides.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .adaptive import AdaptiveAllocations, AdaptiveScaler
from .batch import collate, split_outputs
from .cache import InferenceCache, cache_key
from .config import DeploymentConfig, check_update
from .cores import CoreAllocator, allowed_cpus, clamp_allocations, clamp_thread_settings, pin_current_thread
from .errors import (
    DeploymentStopped,
    EngineError,
    InferenceFailed,
    InvalidInput,
    ModelError,
    NotDeployed,
)
from .scheduler import QUEUE_FULL_MESSAGE as QUEUE_FULL_MESSAGE  # re-exported: other backends answer alike
from .scheduler import (
    REQUEST_PRIORITIES,
    STOPPING_MESSAGE,
    Entry,
    Outputs,
    Request,
    RequestQueue,
    Scheduler,
    check_request,
)
from .session import arena_priming_shapes, create_session, prime_arena
from .stats import DeploymentStats, allocation_state

if TYPE_CHECKING:
    from .package import LoadedPackage

log = logging.getLogger(__name__)

LOW_PRIORITY_NICE = 19
# ``ainfer`` tokenises and post-processes a request of at most this many characters on the event loop.
INLINE_CHARS = 2048

SessionFactory = Callable[..., Any]


def _characters(texts: str | Sequence[str]) -> int:
    """The characters of an ``infer`` call's texts (what its tokenising costs grow with); what is not a
    string counts as nothing here: ``check_request`` refuses it."""
    if isinstance(texts, str):
        return len(texts)
    return sum(len(text) for text in texts if isinstance(text, str))


class _Allocation:
    """One worker thread with its session and cores."""

    def __init__(self, number: int, cores: tuple[int, ...] | None) -> None:
        self.number = number
        self.cores = cores
        self.retiring = False
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.session: Any = None  # set once the worker opened it
        self.busy = False  # its worker holds a batch (guarded by the deployment's lock)
        self.lent = False  # a caller runs a batch on its session and cores; its worker takes nothing


class Deployment:
    """A started model: allocations on pinned cores behind a bounded priority queue.

    Create it with a loaded package and a :class:`DeploymentConfig`; it starts its allocations before
    returning. Use ``infer``/``ainfer`` from any number of threads or tasks, ``update`` to change the
    allocation count live, ``stats`` for Elasticsearch's deployment stats, and ``stop`` (or a ``with``
    block) to end it.

    Raises:
        InvalidInput: ``cpus`` outside this process's allowed CPU set.
        ModelError: an allocation could not open the graph.
    """

    def __init__(self, package: LoadedPackage, config: DeploymentConfig | None = None, *,
                 session_factory: SessionFactory = create_session) -> None:
        config = config if config is not None else DeploymentConfig()
        self.package = package
        self.config = config
        self._session_factory = session_factory
        manifest = package.manifest
        self._input_names = list(manifest.inputs)
        self._output_names = manifest.output_names
        self._names_axes = [(output["name"], output["axes"]) for output in manifest.outputs]
        self._pad_id = package.tokenizer.pad_token_id
        self.model_id = package.path.name
        self.deployment_id = config.deployment_id or self.model_id
        cpus = config.cpus if config.cpus is not None else allowed_cpus()
        if config.pin_threads and config.cpus is not None:
            outside = sorted(set(cpus) - set(allowed_cpus()))
            if outside:
                raise InvalidInput(f"[cpus] {outside} are not in this process's allowed CPU set {list(allowed_cpus())}")
        self._cores = CoreAllocator(cpus)
        allocations, threads = clamp_thread_settings(len(cpus), config.initial_allocations,
                                                     config.threads_per_allocation)
        self.threads_per_allocation = threads
        cache_bytes = package.size_bytes if config.cache_bytes is None else config.cache_bytes
        self.cache_size = cache_bytes
        self._cache = InferenceCache(cache_bytes) if cache_bytes > 0 else None
        # tokenizers starts a rayon pool as big as the host for batch encodes; see the module comment.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._stats = DeploymentStats(config.stats_period_s)
        self._scheduler = Scheduler(RequestQueue(config.queue_capacity, config.max_batch_tokens,
                                                 config.grouping_window, config.max_batch_rows), self._stats)
        self._cond = self._scheduler.cond  # one lock for the queue, the requests, the allocations, the state
        self._scale_lock = threading.Lock()
        self._allocations: list[_Allocation] = []
        self._allocation_numbers = itertools.count()
        self._restarts = 0  # allocations replaced after their worker died (stats "allocation_restarts")
        self._lent_runs = 0  # batches callers run on lent allocations now (see _lend_held)
        self._target_allocations = 0
        self._state = "starting"
        self._drain = True
        self.start_time = int(time.time() * 1000)
        self._adaptive: AdaptiveAllocations | None = None
        self._adaptive_stop = threading.Event()
        self._adaptive_thread: threading.Thread | None = None
        try:
            self._scale_to(allocations)
        except BaseException:
            self.stop(drain=False)
            raise
        with self._cond:
            self._state = "started"
        adaptive = config.adaptive_allocations
        if isinstance(adaptive, AdaptiveAllocations):
            self._set_adaptive(adaptive)

    # -- requests -----------------------------------------------------------------------------

    def infer(self, texts: str | Sequence[str], timeout: float | None = None, priority: str = "normal",
              *, wait_for_room: bool = False, **config: Any) -> list[dict[str, Any]]:
        """Run the task on texts and wait for the results.

        Args:
            texts: one string or a list; one result per text, in order.
            timeout: seconds from queueing until the results must be back; None waits as long as it
                takes (Elasticsearch's REST default is 10 s, its ingest processor waits for hours).
                With ``wait_for_room`` it applies to each window from the moment that window is queued.
            priority: ``high`` (served first, like ES search-time inference), ``normal`` or ``low``.
            wait_for_room: the blocking mode for batch callers (``engine.run`` uses it). False (the
                default, as Elasticsearch): all texts are queued at once or the call fails with
                QueueFull. True: texts of any number stream through the bounded queue in windows of
                half its capacity, each window prepared (tokenised) only when the previous one is
                queued and waiting for room instead of failing, so memory stays bounded and the
                results still come back in input order. Other callers arriving while the queue is
                full still get QueueFull.
            **config: the task's inference_config update keys.

        Returns:
            The task's result dicts.

        Raises:
            InvalidInput: bad config or text (before anything of its window is queued).
            QueueFull: the queue cannot take all the texts (429; never with ``wait_for_room``).
            InferenceTimeout: the results did not come back in time (408).
            InferenceFailed: the graph failed on a batch holding one of the texts (500).
            DeploymentStopped: the deployment stopped before the texts ran (409).
            NotDeployed: the deployment was already stopped.
        """
        if wait_for_room:
            return self._infer_in_windows(check_request(texts, timeout, priority), timeout, priority, config)
        # Without a timeout a lone request may run on this thread (see _lend_held): it is never cut short.
        request, cfg, prepared = self._submit(texts, timeout, priority, config,
                                              run_here=timeout is None and self.config.priority != "low")
        return self._collect(request, cfg, prepared)

    def _lend_held(self, request: Request) -> tuple[_Allocation, list[tuple[Entry, int]]] | None:
        """An idle allocation and ``request``'s batch, when its one text is all that is queued (lock
        held): the caller runs it itself (:meth:`_run_lent`), with no hand-off to a worker and back (two
        thread wake-ups, each waiting for a core on a busy host). None: the workers serve it."""
        allocation = next((candidate for candidate in self._allocations
                           if candidate.session is not None and not candidate.busy and not candidate.lent
                           and not candidate.retiring), None)
        if allocation is None or self._state != "started":
            return None
        rows = self._scheduler.take_lone_batch_held(request)
        if not rows:
            return None
        allocation.lent = True
        self._lent_runs += 1
        return allocation, rows

    def _run_lent(self, allocation: _Allocation, rows: list[tuple[Entry, int]]) -> None:
        """Run a batch on a lent allocation's session from the caller's thread; its worker takes
        nothing until the allocation is given back. Only for calls without a timeout (the run cannot
        be cut short to answer 408) and not on a low-priority deployment (the caller's thread keeps
        its own priority).

        With several threads the caller is pinned to the allocation's cores for the run, beside the
        session's pool threads on the others. A one-thread run is left where the OS put the caller:
        lending only happens when the deployment is idle, so there is no allocation to keep apart,
        and moving the thread onto the allocation's core costs a migration and, when another process
        holds that core, a wait for it (one short query on a shared 2-core host, medians of 1,800:
        2.26 ms bare session, 2.63 ms lent unpinned, 3.83 ms lent pinned; bench/RESULTS.md)."""
        pinned = allocation.cores if (allocation.cores is not None and self.config.pin_threads
                                      and len(allocation.cores) > 1) else None
        own_cores = os.sched_getaffinity(0) if pinned is not None and hasattr(os, "sched_getaffinity") else None
        try:
            if pinned is not None:
                try:
                    pin_current_thread(pinned)
                except OSError:  # the batch is taken: it must run, pinned or not (the worker pinned itself)
                    log.warning("deployment [%s]: could not pin a caller to %s", self.deployment_id, pinned)
            self._run_batch(allocation.session, rows)
        finally:
            if own_cores is not None:
                os.sched_setaffinity(0, own_cores)
            with self._cond:
                allocation.lent = False
                self._lent_runs -= 1
                if self._scheduler.queue.live or self._state != "started":
                    self._cond.notify_all()  # its worker may take what was queued meanwhile; a stop may go on

    def _infer_in_windows(self, texts: list[str], timeout: float | None, priority: str,
                          config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``infer(wait_for_room=True)``: two windows in flight, so the workers run one while this
        thread prepares the next and finishes the last; each window waits for room in the queue."""
        size = max(1, self.config.queue_capacity // 2)
        in_flight: collections.deque[tuple[Request, Any, list[Any]]] = collections.deque()
        results: list[dict[str, Any]] = []
        try:
            for start in range(0, len(texts), size):
                window = texts[start:start + size]
                in_flight.append(self._submit(window, timeout, priority, config, wait_for_room=True))
                while len(in_flight) > 1:
                    results.extend(self._collect(*in_flight.popleft()))
            while in_flight:
                results.extend(self._collect(*in_flight.popleft()))
        except BaseException as error:
            withdrawn = error if isinstance(error, EngineError) else InvalidInput("inference call interrupted")
            for request, _, _ in in_flight:
                self._scheduler.end(request, withdrawn)
            raise
        return results

    def _collect(self, request: Request, cfg: Any, prepared: list[Any]) -> list[dict[str, Any]]:
        self._scheduler.wait(request)
        return self._finish(request, cfg, prepared)

    async def ainfer(self, texts: str | Sequence[str], timeout: float | None = None, priority: str = "normal",
                     **config: Any) -> list[dict[str, Any]]:
        """``infer`` for asyncio: the wait does not block the event loop. Cancelling the awaiting task
        withdraws the queued texts.

        Tokenising and post-processing a request of up to :data:`INLINE_CHARS` characters run on the
        event loop itself (a short query takes tens of microseconds, less than the two hops to an
        executor thread and back, which on a busy machine each wait for a core); bigger requests run
        them in the default executor so that they cannot stall the loop."""
        results, _ = await self._ainfer(texts, timeout, priority, config)
        return results

    async def ainfer_with_usage(self, texts: str | Sequence[str], timeout: float | None = None,
                                priority: str = "normal", **config: Any) -> tuple[list[dict[str, Any]], list[int]]:
        """``ainfer``, and how many tokens each text ran as (its rows' lengths after truncation, special
        tokens included): OpenAI's ``usage`` without tokenising the texts a second time."""
        results, prepared = await self._ainfer(texts, timeout, priority, config)
        return results, [sum(len(window.input_ids) for window in item.windows) for item in prepared]

    async def _ainfer(self, texts: str | Sequence[str], timeout: float | None, priority: str,
                      config: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
        loop = asyncio.get_running_loop()
        if not isinstance(texts, (str, list, tuple)):
            texts = list(texts)  # counted below, then read again by _submit
        inline = _characters(texts) <= INLINE_CHARS
        if inline:
            request, cfg, prepared = self._submit(texts, timeout, priority, config)
        else:
            request, cfg, prepared = await loop.run_in_executor(None, self._submit, texts, timeout, priority,
                                                                config)
        if request.state == "pending":  # not already answered (every text cached, or no text at all)
            await self._until_done(loop, request)
        self._scheduler.raise_if_failed(request)
        if inline:
            return self._finish(request, cfg, prepared), prepared
        return await loop.run_in_executor(None, self._finish, request, cfg, prepared), prepared

    async def _until_done(self, loop: asyncio.AbstractEventLoop, request: Request) -> None:
        """Wait for a queued request without blocking the loop: the worker that settles it wakes the
        loop once; its deadline expires it; a cancel withdraws it."""
        finished = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

        self._scheduler.when_done(request, wake)
        remaining = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        try:
            await asyncio.wait_for(finished, remaining)
        except asyncio.TimeoutError:
            self._scheduler.expire(request)
        except asyncio.CancelledError:
            self._scheduler.end(request, InvalidInput("inference task cancelled"))
            raise

    def _submit(self, texts: str | Sequence[str], timeout: float | None, priority: str,
                config: Mapping[str, Any], wait_for_room: bool = False,
                run_here: bool = False) -> tuple[Request, Any, list[Any]]:
        """Tokenise and queue; with ``run_here``, a lone request's batch runs on this thread before
        this returns (see :meth:`_lend_held`)."""
        texts = check_request(texts, timeout, priority)
        self._check_running()
        runner = self.package.runner
        cfg = runner.parse_config(dict(config))
        prepared = [runner.prepare(text, cfg) for text in texts]
        request = Request(len(texts), timeout)
        rank = REQUEST_PRIORITIES.index(priority)
        config_key = cfg.cache_key() if self._cache is not None else None
        entries = []
        for index, item in enumerate(prepared):
            key = None
            if self._cache is not None and item.windows:
                started = time.perf_counter()
                key = cache_key(item.windows, config_key)
                hit = self._cache.get(key)
                if hit is not None:
                    request.outputs[index] = hit
                    self._stats.record_inference((time.perf_counter() - started) * 1000, cache_hit=True)
                    continue
            if not item.windows:
                request.outputs[index] = []
                continue
            entries.append(Entry(request, index, item.windows, rank, key))
        if not run_here:
            self._scheduler.admit(request, entries, timeout, wait_for_room, self._check_started)
            return request, cfg, prepared
        with self._cond:
            self._scheduler.admit(request, entries, timeout, wait_for_room, self._check_started, wake_workers=False)
            lent = self._lend_held(request) if request.state == "pending" else None
            if lent is None:
                self._cond.notify_all()  # what admit left to do: the workers serve it
        if lent is not None:
            self._run_lent(*lent)
        return request, cfg, prepared

    def _check_running(self) -> None:
        if self._state == "stopping":
            raise DeploymentStopped(STOPPING_MESSAGE)
        if self._state == "stopped":
            raise NotDeployed(f"Trained model deployment [{self.deployment_id}] is not deployed")

    def _check_started(self) -> None:
        """Whether requests may still be queued (lock held): not once a stop has begun."""
        if self._state != "started":
            self._check_running()

    def _finish(self, request: Request, cfg: Any, prepared: list[Any]) -> list[dict[str, Any]]:
        runner = self.package.runner
        return [runner.finish(item, outputs or [], cfg)
                for item, outputs in zip(prepared, request.outputs, strict=True)]

    # -- workers -------------------------------------------------------------------------------

    def _serve(self, allocation: _Allocation) -> None:
        try:
            if allocation.cores is not None and self.config.pin_threads:
                pin_current_thread(allocation.cores)
            if self.config.priority == "low" and sys.platform.startswith("linux"):
                # Like ml-cpp's --lowPriority; pool threads ORT starts from here inherit the nice value.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY_NICE)
            cores = allocation.cores if self.config.pin_threads else None
            session = self._session_factory(self.package.graph_path, self.threads_per_allocation, cores,
                                            self.config.session_options)
            # the arena's high-water mark now, not in steps while serving (engine/session.py says why)
            prime_arena(session, self._input_names, self._pad_id, arena_priming_shapes(
                self.config.max_batch_tokens, self.config.max_batch_rows,
                self.package.manifest.tokenization.max_sequence_length))
        except BaseException as error:
            allocation.error = error
            with self._cond:
                self._allocations.remove(allocation)
            self._cores.release(allocation.cores)
            allocation.ready.set()
            return
        allocation.session = session
        allocation.ready.set()
        def done() -> bool:  # checked under the lock
            return allocation.retiring or (
                self._state == "stopping" and (not self._drain or self._scheduler.queue.live == 0))

        died = False
        try:
            while True:
                with self._cond:  # so a caller never sees the allocation idle while it holds a batch
                    allocation.busy = False
                    rows = self._scheduler.next_batch(done, lambda: allocation.lent)
                    allocation.busy = bool(rows)
                if not rows:
                    return
                self._run_batch(session, rows)
        except BaseException:  # the worker died (its batch was answered in _run_batch): replace it below
            died = True
            log.exception("deployment [%s]: allocation %d died", self.deployment_id, allocation.number)
        finally:
            with self._cond:
                self._allocations.remove(allocation)
                restart = died and not allocation.retiring and self._state == "started"
                if restart:
                    self._restarts += 1
                self._scheduler.wake_all_held()
            self._cores.release(allocation.cores)
            if restart:
                self._launch()

    def _run_batch(self, session: Any, rows: list[tuple[Entry, int]]) -> None:
        started = time.perf_counter()
        error: EngineError | None = None
        per_row: Outputs = []
        try:
            batch = collate([entry.windows[row] for entry, row in rows], self._input_names, self._pad_id)
            raw = session.run(self._output_names, batch.inputs)
            per_row = split_outputs(raw, self._names_axes, batch.lengths)
        except EngineError as engine_error:
            error = engine_error
        except Exception as exc:
            error = InferenceFailed(f"Error in inference process: [{exc}]")
        except BaseException as exc:  # the worker thread is being killed: its batch still gets an answer
            self._scheduler.complete(rows, [], InferenceFailed(f"Error in inference process: allocation died [{exc!r}]"),
                                     time.perf_counter() - started)
            raise
        to_cache = self._scheduler.complete(rows, per_row, error, time.perf_counter() - started)
        if self._cache is not None:
            for key, outputs in to_cache:
                self._cache.put(key, outputs)

    # -- allocations ---------------------------------------------------------------------------

    def _hardware_threads(self) -> int:
        return len(self._cores.cpus)

    def _launch(self) -> _Allocation:
        """Start one allocation's worker thread (it opens its session; ``ready`` tells when it did).
        Also how a dead allocation is replaced, from its own thread's exit (counted in ``restarts``)."""
        allocation = _Allocation(next(self._allocation_numbers), self._cores.acquire(self.threads_per_allocation))
        thread = threading.Thread(target=self._serve, args=(allocation,), daemon=True,
                                  name=f"engine-{self.deployment_id}-allocation-{allocation.number}")
        allocation.thread = thread
        with self._cond:
            self._allocations.append(allocation)
        thread.start()
        return allocation

    def _scale_to(self, wanted: int) -> None:
        """Start or retire allocations until ``wanted`` (already clamped) are serving."""
        with self._scale_lock:
            with self._cond:
                self._target_allocations = wanted
                serving = [allocation for allocation in self._allocations if not allocation.retiring]
                retiring = serving[wanted:]
                for allocation in retiring:
                    allocation.retiring = True
                self._scheduler.wake_all_held()
            for allocation in retiring:
                if allocation.thread is not None:
                    allocation.thread.join()
            started = [self._launch() for _ in range(max(0, wanted - len(serving)))]
            failures = []
            for allocation in started:
                allocation.ready.wait()
                if allocation.error is not None:
                    failures.append(allocation.error)
            if failures:
                with self._cond:
                    self._target_allocations = len(self._allocations)
                first = failures[0]
                if isinstance(first, EngineError):
                    raise first
                raise ModelError(f"could not start an allocation: {first}") from first

    def _set_adaptive(self, settings: AdaptiveAllocations | None) -> None:
        self._adaptive = settings if settings is not None and settings.enabled else None
        if self._adaptive is not None:
            current = self._target_allocations
            wanted = min(max(current, self._adaptive.minimum), self._adaptive.maximum)
            wanted = clamp_allocations(self._hardware_threads(), self.threads_per_allocation, wanted)
            if wanted != current:
                self._scale_to(wanted)
            if self._adaptive_thread is None:
                self._adaptive_stop.clear()
                self._adaptive_thread = threading.Thread(target=self._adapt, daemon=True,
                                                         name=f"engine-{self.deployment_id}-adaptive")
                self._adaptive_thread.start()
        elif self._adaptive_thread is not None:
            self._adaptive_stop.set()
            if self._adaptive_thread is not threading.current_thread():
                self._adaptive_thread.join()
            self._adaptive_thread = None

    def _adapt(self) -> None:
        scaler: AdaptiveScaler | None = None
        self._stats.take_load_sample()
        while True:
            settings = self._adaptive
            if settings is None:
                return
            if scaler is None or scaler.settings is not settings:
                scaler = AdaptiveScaler(settings)
            if self._adaptive_stop.wait(settings.evaluation_interval_s):
                return
            scaler.observe(self._stats.take_load_sample())
            ceiling = clamp_allocations(self._hardware_threads(), self.threads_per_allocation,
                                        scaler.settings.maximum)
            current = self._target_allocations
            wanted = scaler.decide(current, ceiling)
            if wanted != current and self._state == "started":
                log.info("deployment [%s]: load %.2f, scaling from %d to %d allocations",
                         self.deployment_id, scaler.load or 0.0, current, wanted)
                try:
                    self._scale_to(wanted)
                except EngineError:
                    log.exception("deployment [%s]: adaptive scaling failed", self.deployment_id)

    def update(self, number_of_allocations: int | None = None,
               adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None = None) -> None:
        """Change the allocation count, or the adaptive settings, while requests keep running.

        A new count is clamped to ``[1, ceil(cpus / threads_per_allocation)]`` as ml-cpp does; retired
        allocations finish their current batch first, so no request is lost.

        Raises:
            InvalidInput: a bad count, or a count while adaptive allocations are (or become) enabled.
            NotDeployed / DeploymentStopped: the deployment is stopping or stopped.
            ModelError: a new allocation could not open the graph.
        """
        adaptive = check_update(self.config, self._adaptive is not None, number_of_allocations,
                                adaptive_allocations)
        with self._cond:
            self._check_running()
        if adaptive is not None:
            self._set_adaptive(adaptive)
        if number_of_allocations is not None:
            self._scale_to(clamp_allocations(self._hardware_threads(), self.threads_per_allocation,
                                             number_of_allocations))

    # -- lifecycle and stats -------------------------------------------------------------------

    def stop(self, drain: bool = True) -> None:
        """Stop the deployment; every pending caller gets its result or an error.

        Args:
            drain: run everything already queued first (True), or fail queued requests at once with
                DeploymentStopped (False); batches already running finish either way.
        """
        with self._cond:
            already = self._state in ("stopping", "stopped")
            self._state = "stopping" if self._state != "stopped" else "stopped"
            self._drain = self._drain and drain  # a later stop(drain=False) cuts a drain short
            if not self._drain:
                self._scheduler.cancel_held(DeploymentStopped(STOPPING_MESSAGE), queued_only=True)
            self._scheduler.wake_all_held()  # workers see the stop, callers waiting for room are refused
        if already:
            self._join_workers()
            return
        self._adaptive = None
        self._adaptive_stop.set()
        adaptive_thread = self._adaptive_thread
        if adaptive_thread is not None and adaptive_thread is not threading.current_thread():
            adaptive_thread.join()
        self._join_workers()
        with self._cond:
            while self._lent_runs:  # a batch a caller runs is a running batch: it finishes either way
                self._cond.wait()
            # nothing is left to serve them
            self._scheduler.cancel_held(DeploymentStopped(STOPPING_MESSAGE), queued_only=False)
            self._state = "stopped"
            self._target_allocations = 0
        if self._cache is not None:
            self._cache.clear()

    def _join_workers(self) -> None:
        with self._scale_lock:
            while True:
                with self._cond:
                    threads = [allocation.thread for allocation in self._allocations
                               if allocation.thread is not None and allocation.thread is not threading.current_thread()]
                if not threads:
                    return
                for thread in threads:
                    thread.join()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clear_cache(self) -> None:
        """Empty the inference cache (Elasticsearch's ``deployment/cache/_clear``)."""
        if self._cache is not None:
            self._cache.clear()

    @property
    def state(self) -> str:
        return self._state

    @property
    def number_of_allocations(self) -> int:
        """Allocations serving now (started, not retiring)."""
        with self._cond:
            return self._serving_count()

    def _serving_count(self) -> int:
        return sum(1 for allocation in self._allocations
                   if allocation.ready.is_set() and allocation.error is None and not allocation.retiring)

    def stats(self) -> dict[str, Any]:
        """Deployment stats under Elasticsearch's names (ELASTIC_REFERENCE.md §6.5).

        Counts are per text; ``number_of_pending_requests`` = texts queued or running;
        ``threads_per_allocation`` and ``number_of_allocations`` are the effective (clamped) values.
        Also reports ``thread_settings`` (as ml-cpp does) with each allocation's cores (None: unpinned).
        """
        counters = self._stats.snapshot()
        with self._cond:
            serving = self._serving_count()
            target = self._target_allocations
            pending = self._scheduler.pending_texts
            cores = [list(allocation.cores) if allocation.cores is not None and self.config.pin_threads else None
                     for allocation in self._allocations if not allocation.retiring]
            state = self._state
            restarts = self._restarts
        result: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "model_id": self.model_id,
            "state": state,
            "start_time": self.start_time,
            "threads_per_allocation": self.threads_per_allocation,
            "number_of_allocations": serving,
            "queue_capacity": self.config.queue_capacity,
            "cache_size": self.cache_size,
            "priority": self.config.priority,
            "allocation_status": {
                "allocation_count": serving,
                "target_allocation_count": target,
                "state": allocation_state(target, serving),
            },
            "number_of_pending_requests": pending,
            "allocation_restarts": restarts,
            "thread_settings": {
                "num_threads_per_allocation": self.threads_per_allocation,
                "num_allocations": serving,
                "cores": cores,
            },
        }
        adaptive = self._adaptive or self.config.adaptive_allocations
        if isinstance(adaptive, AdaptiveAllocations):
            result["adaptive_allocations"] = adaptive.to_json()
        result.update(counters)
        return result

