"""The emulated gateway: HELLO, IDENTIFY/READY, heartbeats, RESUME with replay, dispatches, zlib-stream.

discord.py connects to `{gateway}?v=10&encoding=json&compress=zlib-stream` (zstd-stream when the
`zstandard` package is installed). The emulator compresses with zlib-stream when asked; for any other
compression it sends plain text frames, which discord.py parses as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .host import Host
from .model import Intent, Json

REPLAY_BUFFER = 5000


@dataclass
class _Close:
    code: int
    message: str


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class Connection:
    """One websocket; a writer task sends queued frames in order (and compresses them as one stream)."""

    def __init__(self, ws: web.WebSocketResponse, compression: str | None, requested: str | None) -> None:
        self.ws = ws
        self.compression = compression
        self.requested_compression = requested
        self._compressor = zlib.compressobj() if compression == "zlib-stream" else None
        self._queue: asyncio.Queue[str | _Close] = asyncio.Queue()
        self.session: Session | None = None
        self.identified = False
        self.finished = asyncio.Event()
        self.heartbeats = 0
        self.closed_by_server = False
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, text: str) -> None:
        self._queue.put_nowait(text)

    def send_json(self, data: Any) -> None:
        self.send(_dumps(data))

    def close(self, code: int, message: str = "") -> None:
        self.closed_by_server = True
        self._queue.put_nowait(_Close(code, message))

    async def _write(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    await self.ws.close(code=item.code, message=item.message.encode())
                    return
                if self._compressor is not None:
                    frame = self._compressor.compress(item.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(item)
        except (ConnectionError, RuntimeError):
            return

    async def stop_writer(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


@dataclass
class Session:
    """A gateway session: survives a dropped connection and replays what was missed on RESUME."""

    id: str
    token: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    buffer: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    conn: Connection | None = None
    ready: bool = False
    dead: bool = False
    created_at: float = field(default_factory=time.monotonic)

    def dispatch(self, event: str, data: Json) -> int:
        self.seq += 1
        text = _dumps({"op": 0, "t": event, "s": self.seq, "d": data})
        self.buffer.append((self.seq, text))
        if self.conn is not None:
            self.conn.send(text)
        return self.seq


class Gateway:
    def __init__(self, emulator: Host) -> None:
        self.emulator = emulator
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self.handle)
        app.router.add_get("/gateway/", self.handle)

    # -------------------------------------------------------------- queries used by the emulator

    def has_live_session(self) -> bool:
        return any(s.ready and not s.dead and s.conn is not None for s in self.sessions.values())

    @staticmethod
    def shard_has_guild(shard: list[int] | None, guild_id: int | None) -> bool:
        if shard is None:
            return True
        shard_id, count = shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % count == shard_id

    def dispatch(
        self, event: str, data: Json, *, guild_id: int | None = None, intent: int = 0, single: bool = False
    ) -> int:
        """Send an event to every session that should get it (`single`: only the newest one, as Discord
        delivers an interaction once). Sessions whose connection dropped buffer it for RESUME."""
        targets = [
            s
            for s in self.sessions.values()
            if s.ready
            and not s.dead
            and self.shard_has_guild(s.shard, guild_id)
            and (intent == 0 or s.intents & intent)
        ]
        if single and targets:
            targets = [max(targets, key=lambda s: s.created_at)]
        for session in targets:
            session.dispatch(event, data)
        if targets:
            self.emulator.record("gateway.dispatch", {"t": event, "sessions": len(targets)})
        return len(targets)

    # -------------------------------------------------------------- faults and shutdown

    async def disconnect(self, resume: bool) -> None:
        live = [s for s in self.sessions.values() if s.conn is not None and not s.dead]
        if not live:
            raise RuntimeError("no gateway connection to drop")
        waits = []
        for session in live:
            conn = session.conn
            assert conn is not None
            waits.append(conn.finished.wait())
            if resume:
                conn.close(4000, "Emulated disconnect")
            else:
                session.dead = True
                conn.send_json({"op": 9, "s": None, "t": None, "d": False})
        self.emulator.record("gateway.fault", {"resume": resume, "sessions": len(live)})
        await asyncio.wait_for(asyncio.gather(*waits), timeout=10)

    async def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close(1001, "Emulator stopping")
        waits = [c.finished.wait() for c in list(self.connections)]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout=5)
        for session in self.sessions.values():
            session.dead = True

    # -------------------------------------------------------------- the websocket

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        requested = request.query.get("compress")
        compression = "zlib-stream" if requested == "zlib-stream" and self.emulator.gateway_compression else None
        conn = Connection(ws, compression, requested)
        self.connections.add(conn)
        self.emulator.record(
            "gateway.connect",
            {"v": request.query.get("v"), "encoding": request.query.get("encoding"), "compress": requested},
        )
        if request.query.get("encoding", "json") != "json":
            conn.close(4002, "Error while decoding payload.")
        else:
            conn.send_json(
                {
                    "op": 10,
                    "s": None,
                    "t": None,
                    "d": {"heartbeat_interval": self.emulator.heartbeat_interval_ms, "_trace": ["kf2v-emulator"]},
                }
            )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    text = str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    text = bytes(msg.data).decode("utf-8", "replace")
                else:
                    break
                try:
                    payload = json.loads(text)
                except ValueError:
                    conn.close(4002, "Error while decoding payload.")
                    continue
                if isinstance(payload, dict):
                    self._handle_op(conn, payload)
                else:
                    conn.close(4002, "Error while decoding payload.")
        finally:
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                if ws.close_code in (1000, 1001) and not conn.closed_by_server:
                    # A client closing normally ends its session, as on Discord.
                    session.dead = True
            await conn.stop_writer()
            self.connections.discard(conn)
            conn.finished.set()
            self.emulator.record("gateway.disconnect", {"code": ws.close_code})
        return ws

    def _handle_op(self, conn: Connection, payload: Json) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:
            conn.heartbeats += 1
            conn.send_json({"op": 11, "s": None, "t": None, "d": None})
        elif op == 2 and isinstance(data, dict):
            self._identify(conn, data)
        elif op == 6 and isinstance(data, dict):
            self._resume(conn, data)
        elif op == 8 and isinstance(data, dict):
            self._request_members(conn, data)
        elif op in (3, 4):
            self.emulator.record("gateway.op", {"op": op, "d": data})
        else:
            conn.close(4001, "Unknown opcode.")

    def _identify(self, conn: Connection, data: Json) -> None:
        emulator = self.emulator
        if conn.identified:
            conn.close(4005, "Already authenticated.")
            return
        token = data.get("token")
        if not isinstance(token, str) or not emulator.token_ok(token):
            conn.close(4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0:
            conn.close(4013, "Invalid intent(s).")
            return
        if intents & Intent.PRIVILEGED & ~emulator.allowed_privileged_intents:
            conn.close(4014, "Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None and (
            not isinstance(shard, list) or len(shard) != 2 or not 0 <= int(shard[0]) < int(shard[1])
        ):
            conn.close(4010, "Invalid shard.")
            return
        session = Session(secrets.token_hex(16), token.removeprefix("Bot "), intents, shard)
        self.sessions[session.id] = session
        conn.identified = True
        conn.session = session
        session.conn = conn
        session.dispatch("READY", emulator.ready_payload(session.id, shard))
        for guild in emulator.guilds.values():
            if not guild.removed and self.shard_has_guild(shard, guild.id) and intents & Intent.GUILDS:
                session.dispatch("GUILD_CREATE", emulator.guild_create_payload(guild))
        session.ready = True
        emulator.record(
            "gateway.identify",
            {"session_id": session.id, "intents": intents, "shard": shard, "compression": conn.compression},
        )

    def _resume(self, conn: Connection, data: Json) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        token = str(data.get("token") or "").removeprefix("Bot ")
        seq = data.get("seq") or 0
        if session is None or session.dead or session.token != token or not isinstance(seq, int):
            conn.send_json({"op": 9, "s": None, "t": None, "d": False})
            self.emulator.record("gateway.resume_refused", {"session_id": data.get("session_id")})
            return
        if session.buffer and seq < session.buffer[0][0] - 1:
            session.dead = True
            conn.send_json({"op": 9, "s": None, "t": None, "d": False})
            self.emulator.record("gateway.resume_refused", {"session_id": session.id, "seq": seq})
            return
        old = session.conn
        if old is not None and old is not conn:
            old.close(4000, "Session resumed elsewhere")
        conn.identified = True
        conn.session = session
        session.conn = conn
        replayed = 0
        for number, text in session.buffer:
            if number > seq:
                conn.send(text)
                replayed += 1
        session.dispatch("RESUMED", {"_trace": ["kf2v-emulator"]})
        self.emulator.record("gateway.resume", {"session_id": session.id, "seq": seq, "replayed": replayed})

    def _request_members(self, conn: Connection, data: Json) -> None:
        session = conn.session
        if session is None or not session.intents & Intent.GUILD_MEMBERS:
            conn.close(4013, "Invalid intent(s).")
            return
        raw_ids = data.get("guild_id")
        guild_ids: list[Any] = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        for raw in guild_ids:
            guild = self.emulator.guilds.get(int(raw)) if str(raw).isdigit() else None
            if guild is None:
                continue
            members = [self.emulator.member_payload(guild, uid) for uid in guild.members]
            chunk: Json = {
                "guild_id": str(guild.id),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if data.get("nonce") is not None:
                chunk["nonce"] = data["nonce"]
            session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
