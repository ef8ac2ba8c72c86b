"""`RedisBackplane`: the backplane on Redis, shared by every gateway instance.

- history: one stream per user (`ws:{user}:history`); an append is one Lua script that checks the
  idempotency key, XADDs, trims (count and age), records the newest trimmed id in the stream's
  `max-deleted-entry-id` (XSETID; plain trimming does not), refreshes the expiry and PUBLISHes, so
  the published order is the id order and nothing is published that is not in the history.
- live feed: one pub/sub channel for all users; each instance keeps the frames of its own sockets.
  Cheap at notification rates, and it needs no subscription bookkeeping per user.
- slots: one sorted set per user, connection id scored by its expiry (Redis time), renewed by pings.

Keys carry the user id in a hash tag, so one user's keys live in one cluster slot.
"""

import asyncio
from collections.abc import AsyncGenerator, Sequence

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from huleedu.messaging.retry import backoff_seconds
from huleedu.websocket.backplane import RESYNC, Replay, Resync, judge, judge_missing
from huleedu.websocket.messages import Message, Outgoing, StreamId

log = structlog.get_logger(__name__)

_LISTEN_POLL_SECONDS = 1.0

# KEYS: history, idempotency key. ARGV: event, data, max messages, history ms, channel, user id.
_APPEND = """
local history_ms = tonumber(ARGV[4])
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', history_ms) then return false end
local function parse(text)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function as_id(ms, seq) return string.format('%.0f-%.0f', ms, seq) end
local function newer(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end
local created = redis.call('EXISTS', KEYS[1]) == 0
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1], 'data', ARGV[2])
local ms = parse(id)
local trimmed = nil
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  trimmed = oldest[#oldest][1]
end
local stale = redis.call('XREVRANGE', KEYS[1], '(' .. as_id(ms - history_ms, 0), '-', 'COUNT', 1)
if #stale > 0 and (trimmed == nil or newer(stale[1][1], trimmed)) then trimmed = stale[1][1] end
-- A stream created now may replace one that expired after history_ms of silence: whatever it
-- held is older than that, so cursors from before then cannot be known complete.
local max_deleted = nil
if created then max_deleted = as_id(math.max(ms - history_ms + 1, 0), 0) end
if trimmed then
  local tms, tseq = parse(trimmed)
  redis.call('XTRIM', KEYS[1], 'MINID', as_id(tms, tseq + 1))
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' and (max_deleted == nil or newer(info[i + 1], max_deleted)) then
      max_deleted = info[i + 1]
    end
  end
  if newer(trimmed, max_deleted) then max_deleted = trimmed end
end
if max_deleted then redis.call('XSETID', KEYS[1], id, 'MAXDELETEDID', max_deleted) end
redis.call('PEXPIRE', KEYS[1], history_ms)
redis.call('PUBLISH', ARGV[5], cjson.encode({user_id = ARGV[6], id = id, event = ARGV[1], data = ARGV[2]}))
return id
"""

# KEYS: history. ARGV: since ('' for none). -> {now_ms} if there is no history, else
# {now_ms, last id, max deleted id, entries newer than since}; one atomic read.
_READ = """
local t = redis.call('TIME')
local now_ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if redis.call('EXISTS', KEYS[1]) == 0 then return {now_ms} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, max_deleted
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then max_deleted = info[i + 1] end
end
local newer = {}
if ARGV[1] ~= '' then newer = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+') end
return {now_ms, last, max_deleted, newer}
"""

# KEYS: slots. ARGV: connection id, limit (0 = renew only), ttl ms. -> 1 taken/renewed, 0 refused.
_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[2] == '0' then
  if not held then return 0 end
elseif not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(user_id: str, raw: Sequence[Sequence[object]]) -> list[Message]:
    messages = []
    for entry_id, fields in raw:
        assert isinstance(entry_id, bytes | str)
        assert isinstance(fields, list)
        values = {_text(fields[i]): _text(fields[i + 1]) for i in range(0, len(fields), 2)}
        messages.append(Message(user_id, StreamId.parse(_text(entry_id)), values["event"], values["data"]))
    return messages


def decode_published(payload: bytes) -> Message:
    # `data` travels as a string holding the JSON, so the frame carries it byte for byte.
    raw = orjson.loads(payload)
    return Message(raw["user_id"], StreamId.parse(raw["id"]), raw["event"], raw["data"])


class RedisBackplane:
    """Raises RedisError when Redis fails (the consumer retries appends; the endpoint closes 1011)."""

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "",
        history_max_messages: int,
        history_seconds: int,
        slot_ttl_seconds: float,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._max_messages = history_max_messages
        self._history_ms = history_seconds * 1000
        self._slot_ttl_ms = max(int(slot_ttl_seconds * 1000), 1)
        self.channel = f"{key_prefix}ws:live"
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)
        self._slot = client.register_script(_SLOT)

    def _key(self, user_id: str, kind: str) -> str:
        return f"{self._prefix}ws:{{{user_id}}}:{kind}"

    async def append(self, message: Outgoing) -> Message | None:
        result = await self._append(
            keys=[self._key(message.user_id, "history"), self._key(message.user_id, f"key:{message.key}")],
            args=[
                message.event,
                message.data_json,
                self._max_messages,
                self._history_ms,
                self.channel,
                message.user_id,
            ],
        )
        if result is None:
            return None
        return Message(message.user_id, StreamId.parse(_text(result)), message.event, message.data_json)

    async def read(self, user_id: str, since: StreamId | None) -> Replay:
        result = await self._read(keys=[self._key(user_id, "history")], args=[str(since) if since else ""])
        now_ms = int(_text(result[0]))
        if len(result) == 1:
            return judge_missing(since, now_ms=now_ms, history_ms=self._history_ms)
        _, last, max_deleted, newer = result
        return judge(
            since,
            last=StreamId.parse(_text(last)),
            max_deleted=StreamId.parse(_text(max_deleted)),
            newer=_entries(user_id, newer),
        )

    async def live(self) -> AsyncGenerator[Message | Resync, None]:
        failures = 0
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while (await pubsub.get_message(timeout=_LISTEN_POLL_SECONDS)) is None:
                    pass  # the subscription's confirmation: from here on nothing published is missed
                failures = 0
                yield RESYNC
                while True:
                    item = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_LISTEN_POLL_SECONDS
                    )
                    if item is None or item["type"] != "message":
                        continue
                    try:
                        message = decode_published(item["data"])
                    except (ValueError, KeyError, TypeError) as exc:  # not ours: skip, do not die
                        log.warning("ignoring a malformed message on the live channel", error=repr(exc))
                        continue
                    yield message
            except (RedisError, OSError) as exc:
                failures += 1
                delay = backoff_seconds(failures, initial_seconds=0.1, max_seconds=5.0)
                log.warning(
                    "websocket live feed lost; resubscribing", error=repr(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                except (RedisError, OSError) as exc:
                    log.debug("closing the pub/sub connection failed", error=repr(exc))

    async def take_slot(self, user_id: str, connection_id: str, limit: int) -> bool:
        taken = await self._slot(
            keys=[self._key(user_id, "slots")], args=[connection_id, limit, self._slot_ttl_ms]
        )
        return bool(taken)

    async def renew_slot(self, user_id: str, connection_id: str) -> None:
        await self._slot(keys=[self._key(user_id, "slots")], args=[connection_id, 0, self._slot_ttl_ms])

    async def renew_slots(self, slots: Sequence[tuple[str, str]]) -> None:
        if not slots:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, connection_id in slots:
                await self._slot(
                    keys=[self._key(user_id, "slots")],
                    args=[connection_id, 0, self._slot_ttl_ms],
                    client=pipe,
                )
            await pipe.execute()

    async def release_slot(self, user_id: str, connection_id: str) -> None:
        await self._client.zrem(self._key(user_id, "slots"), connection_id)
