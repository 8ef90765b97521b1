"""The readhistory service: history queries on a worker-thread pool.

``call`` has the contract of every service (``MatchEngineService.call``): the reply body bytes.
Like the original, a request is refused with code 3 "service unavailable" while
``10 x worker_num`` jobs are pending (queued or running), before its params are even looked at;
then params are validated (code 1); the query and the result building run on one of
``worker_num`` threads (default 10), so the event loop never waits for the database; a database
error answers code 2 "internal error".  The service only reads: any number of instances can
share one database with the writer.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exchange_server.common import jsonfmt
from exchange_server.common.errors import (
    RpcError,
    internal_error,
    method_not_found,
    service_unavailable,
)
from exchange_server.common.jsondepth import check_params_depth
from exchange_server.readhistory.methods import ReadHistoryMethods
from exchange_server.readhistory.reader import HistoryReader

log = logging.getLogger("exchange_server.readhistory")

DEFAULT_WORKER_NUM = 10
#: The original's MAX_PENDING_JOB: jobs allowed per worker before code 3.
MAX_PENDING_JOB = 10


class ReadHistoryService:
    def __init__(self, reader: HistoryReader, *, worker_num: int = DEFAULT_WORKER_NUM,
                 debug: bool = False) -> None:
        self.reader = reader
        self.methods = ReadHistoryMethods(reader)
        self.worker_num = worker_num
        self.max_pending = MAX_PENDING_JOB * worker_num
        self.debug = debug
        self.pending = 0
        self._executor = ThreadPoolExecutor(max_workers=worker_num,
                                            thread_name_prefix="readhistory")

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        try:
            result = await self.execute(method, params)
            return jsonfmt.reply_body(result, req_id, self.debug)
        except RpcError as e:
            return jsonfmt.error_body(e.code, e.message, req_id, self.debug)
        except Exception:
            log.exception("%s failed: params %r", method, params)
            error = internal_error()
            return jsonfmt.error_body(error.code, error.message, req_id, self.debug)

    async def execute(self, method: str, params: list[Any]) -> Any:
        """The result of one call, or RpcError."""
        prepare = self.methods.table.get(method)
        if prepare is None:
            raise method_not_found()
        check_params_depth(params)
        if self.pending >= self.max_pending:
            log.error("pending jobs: %d, service unavailable", self.pending)
            raise service_unavailable()
        job = prepare(params)
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except Exception as e:
            log.error("%s %r failed: %s", method, params, e)
            raise internal_error() from None
        finally:
            self.pending -= 1

    def close(self) -> None:
        """Stop the workers (after their current jobs) and close the connections."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.reader.close()
