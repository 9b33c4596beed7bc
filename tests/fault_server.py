"""A fault-injecting OpenAI-compatible chat server for the teacher's tests and benchmark.

Plain asyncio streams speaking just enough HTTP/1.1, so faults can be injected at every level:
500s, 429 with Retry-After, answers slower than the client's timeout, malformed JSON, empty
answers, and connections dropped without a reply. Answers are a pure function of the request's
messages, so a run with faults must end with the same output as a clean run.

    with FaultServer(fault_rate=0.2, delay_s=0.05) as server:
        server.base_url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections import Counter

import orjson

from convdistill.teacher.request_cache import request_key

FAULTS = ("500", "429", "slow", "malformed", "drop", "empty")


def answer_for(messages: list[dict]) -> str:
    """A deterministic answer: teacher reply, simulated user turn, or ranking by the prompt."""
    last = messages[-1]["content"]
    digest = int(hashlib.sha256(last.encode()).hexdigest(), 16)
    if "Rank the candidate replies" in last:
        count = int(last.split("followed by ")[1].split(" ")[0])
        order = list(range(1, count + 1))
        random.Random(digest).shuffle(order)
        return "Ranking: " + " > ".join(map(str, order))
    if "You are now the USER" in last:
        turns = last.count("\n\nUser: ") + last.count("User: ", 0, 10)
        if turns >= 3 and digest % 3 == 0:
            return "[END]"
        return f"User: Could you tell me more about point {digest % 97}? (turn {turns})"
    return f"Teacher answer {digest % 10007} to: {last[:40]}"


class FaultServer:
    def __init__(
        self,
        fault_rate: float = 0.0,
        delay_s: float = 0.0,
        slow_s: float = 3.0,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
    ):
        self.fault_rate = fault_rate
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.faults = faults
        self.rng = random.Random(seed)
        self.requests = 0
        self.fault_counts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # request key -> successful answers sent
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-server")
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512), self._loop
        )
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            # Cancel open connections' handlers while the loop still runs, so they close cleanly.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _pick_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.fault_rate and self.rng.random() < self.fault_rate:
                fault = self.rng.choice(self.faults)
                self.fault_counts[fault] += 1
                return fault
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: several requests may come on one connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._respond(method, path, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if method != "POST" or path != "/v1/chat/completions":
            self._send(
                writer,
                404,
                orjson.dumps({"error": {"message": "not found", "type": "invalid_request_error"}}),
            )
            return True
        fault = self._pick_fault()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault == "drop":
            return False  # close the connection with no reply
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if fault == "500":
            self._send(
                writer,
                500,
                orjson.dumps({"error": {"message": "injected", "type": "server_error"}}),
            )
            return True
        if fault == "429":
            self._send(
                writer,
                429,
                orjson.dumps({"error": {"message": "slow down", "type": "rate_limit"}}),
                extra={"Retry-After": "0.05"},
            )
            return True
        if fault == "malformed":
            self._send(writer, 200, b'{"id": "x", "choices": [{"message": {"content": "trunc')
            return True
        request = orjson.loads(body)
        text = "" if fault == "empty" else answer_for(request["messages"])
        if fault is None:
            key = request_key(
                {k: request.get(k) for k in ("model", "messages", "max_tokens", "temperature", "top_p", "seed")}
            )
            with self._lock:
                self.answered[key] += 1
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", "m"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(str(request["messages"])) // 4,
                "completion_tokens": len(text) // 4,
                "total_tokens": len(str(request["messages"])) // 4 + len(text) // 4,
            },
        }
        self._send(writer, 200, orjson.dumps(payload))
        return True

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        reason = {
            200: "OK",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
        }[status]
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def main() -> None:
    """Serve in a process of its own (benchmarks): prints the base URL, runs until killed."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="fault-injecting OpenAI-compatible test server")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    with FaultServer(fault_rate=args.fault_rate, delay_s=args.delay) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin or kills us


if __name__ == "__main__":
    main()
