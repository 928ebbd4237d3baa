"""Every speed trick the service keeps, in one place, each with the gain that earned it its place.

A trick stays only where ``bench/serve.py``'s setup (two live services on one registry, alternating ``wrk``
runs, 2 shared cores) showed it buys at least 10% of requests/s at some concurrency, or removes a latency
stall. The code that uses each constant says where; nothing outside the service needs to know about them.

Kept, with their figures (requests/s, trick on over off, median of alternating rounds):

- ``INLINE_MAX_INSTANCES``: small ONNX requests are called on the event loop, not the model thread: a thread
  hop each way cost more than the ~10 us ONNX Runtime call (``serving.batcher``).
- ``GATHER_PASSES``: requests read together share one model call, gathered over two passes of the event loop:
  7.8 requests a call instead of 4.0 at concurrency 8, 1.12x (``serving.batcher``).
- ``ALONE_AFTER`` / ``PROBE_EVERY``: a lone client is answered at once instead of waiting for a gather that
  finds nobody: 1.16x at concurrency 1 (0.80 -> 0.93 of the previous service) (``serving.batcher``).
- One answer step per model call (ids drawn together, one pass over the outputs, one store record, one metrics
  update): 1.13x at concurrency 8, 1.09x at 32 (``serving.batcher``, ``serving.answers.answer_requests``).
- ``RECORD_PASSES``: the records of one event-loop pass stored together, two passes later, once their
  responses went out (``serving.recorder``): 1.16x at concurrency 8, 1.23x at 32, over a record per request
  before its response.
- The store's writer in its own process (``LIFECYCLE_STORE_WRITER=process``, ``serving.store.process``):
  its SQL never holds the service's GIL; 1.13-1.24x at concurrency 8, 1.09x at 1 and 32.
- ``WRITER_NICE``: the store's writer thread (and process) below the event loop's priority: 1.12x at
  concurrency 32 (1.02x at 8).
- ``PIPE_BYTES``, ``ROWS_PER_STATEMENT``, ``LINGER_SECONDS``: one pipe write, few SQL statements and one
  transaction per batch of records; each replaced hand-offs of the GIL per prediction (strace: ~450 futex
  calls a second) and per-row statements, which cost the service more than the model call.
- The heap frozen after a model loads (``serving.service.settle_heap``): full collections no longer walk
  TensorFlow's ~400,000 objects, which were 300-400 ms p99 stalls.
- The predict routes take no FastAPI dependencies: resolving them cost ~130 us a request (``serving.routes``).
"""

INLINE_MAX_INSTANCES = 16  # a batch this small, on ONNX Runtime, is called on the event loop
GATHER_PASSES = 2  # event-loop passes a gather stays open
RECORD_PASSES = 2  # event-loop passes between an answer step and its record: after the responses went out
ALONE_AFTER = 8  # gathers in a row that found one request: then answer small requests at once...
PROBE_EVERY = 32  # ...except every 32nd, which gathers again to notice concurrent clients returning
WRITER_NICE = 15  # the store's writer thread and process run this much below the service
PIPE_BYTES = 1 << 20  # the writer process's pipe: one write per batch (Linux's most, unprivileged)
ROWS_PER_STATEMENT = (
    20  # SQLite: multi-row INSERTs of 20 rows (10-20 measured fastest: 5 us a row, 9 for one)
)
LINGER_SECONDS = 0.05  # a batch of records gathers this long before its transaction (or pipe write)
BATCH_ENTRIES = 1000  # records per batch at most
