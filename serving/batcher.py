"""`Batcher`: group concurrent requests into one model call."""

import asyncio

import anyio.to_thread

_CLOSE = object()  # queued by close(): the collector stops once it reaches it


class QueueFull(Exception):
    """`submit` found `max_queued` items already waiting (HTTP 503, as TF
    Serving answers when its batch queue is full)."""


class Batcher:
    """Dynamic batching for an asyncio server, like TF Serving's batcher.

    Requests submitted while a batch is being collected join it: a batch is
    run when it holds `max_batch_size` items or `timeout_s` after its first
    item arrived, whichever comes first (with `timeout_s=0`, at once with
    whatever has queued), by `run_batch(items) -> results` in
    a worker thread (the TensorFlow call releases the GIL). At most
    `max_concurrent_batches` batches run at once; while they run, new
    requests queue and form the next batch, so under load batches grow
    instead of queues.

    A caller that stops waiting (its request's deadline passed: the task
    awaiting `submit` is cancelled) takes its item out: an item still queued
    is never run, and the result of one already running is dropped.

    Args:
        run_batch: Callable taking a list of items and returning a list of
            results of the same length, or raising (every caller then gets
            the exception). A result that is an `Exception` instance is
            raised to that item's caller alone.
        max_batch_size: Most items in one call.
        timeout_s: Longest wait for a batch to fill, in seconds.
        max_concurrent_batches: Batches allowed to run at the same time.
        max_queued: Most items waiting for a batch; `submit` raises
            `QueueFull` beyond it. None: no limit.
    """

    def __init__(self, run_batch, *, max_batch_size=32, timeout_s=0.0, max_concurrent_batches=2, max_queued=None):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self._slots = None
        self._max_concurrent = max_concurrent_batches
        self._max_queued = max_queued
        self._queue = None
        self._collector = None
        self._loop = None
        self._closed = False
        self.batches_run = 0  # statistics: model calls made and items they held
        self.items_run = 0

    def _start(self):
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self._max_concurrent)
        self._collector = self._loop.create_task(self._collect())
        if self._closed:  # a late request: run it, then stop again
            self._queue.put_nowait((_CLOSE, None))

    def close(self):
        """Stop the collector once no request is queued (thread-safe).

        Called when the model version it serves is replaced, so the old
        version can be freed. Requests submitted before the collector
        stops (also after this call) are still run; a later `submit`
        starts a collector that stops again once it has run it.
        """
        self._closed = True
        if self._collector is not None and not self._collector.done():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (_CLOSE, None))

    @property
    def running(self):
        """Whether the collector task is alive."""
        return self._collector is not None and not self._collector.done()

    async def submit(self, item):
        """Run `item` in a batch and return its result."""
        if self._collector is None or self._collector.done():
            self._start()
        if self._max_queued is not None and self._queue.qsize() >= self._max_queued:
            raise QueueFull(f"The batch scheduling queue to which this task was submitted is full "
                            f"({self._max_queued} requests waiting; max_enqueued_batches).")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self):
        closing = False
        while True:
            # After close(), the requests queued behind it (they held this
            # batcher before it was closed) are still run; the collector
            # ends once none is left, so none waits forever.
            if closing and self._queue.empty():
                return
            first = await self._queue.get()
            if first[0] is _CLOSE:
                closing = True
                continue
            await self._slots.acquire()
            batch = [first] if not first[1].done() else []  # done: its caller gave up waiting
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    if remaining <= 0:
                        entry = self._queue.get_nowait()
                    else:
                        entry = await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if entry[0] is _CLOSE:
                    closing = True
                    continue
                if not entry[1].done():
                    batch.append(entry)
            # Callers may have given up while the batch filled.
            batch = [entry for entry in batch if not entry[1].done()]
            if not batch:
                self._slots.release()
                continue
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch):
        try:
            items = [item for item, _ in batch]
            self.batches_run += 1
            self.items_run += len(items)
            try:
                results = await anyio.to_thread.run_sync(self.run_batch, items)
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._slots.release()
