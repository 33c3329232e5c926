"""The three kinds of error every stage tells apart (docs/errors.md).

- bad data: a corrupt record, a lying length, an oversized member. Counted in `Stats`
  with the input and offset, skipped; reading goes on. Never an exception out of a udf.
- transient I/O: resets, timeouts, 5xx / SlowDown, throttling, DNS failures. Retried
  with back-off; when the retries are spent, `TransientIOError` reaches the task, which
  does not commit that unit of work: it is reported as pending and read by the next run.
- configuration: an unreadable model, missing credentials, an unwritable output. Found
  on the driver before any work (`crawlpairs.stage.UsageError`, exit status 2).
"""

from __future__ import annotations


class TransientIOError(OSError):
    """I/O that may well succeed later, after the configured retries were spent.

    Work that hit it is never committed as done: the job reports it as pending and a
    re-run picks it up where the last complete unit ended.
    """
