"""The shared job store: every replica pointing at one Redis sees, and finishes, the same jobs.

Keys (all under `prefix`): a hash per job `<id>` (fields `data`: the record's JSON, `state`,
`owner`, `created_at`, `idem`; a tombstone keeps only id/owner/state/created_at plus `tomb`),
sorted sets `idx:all` and `idx:owner:<owner>` (score created_at; equal scores order by id, as
Redis orders members) for listing, `idx:unfinished` (score created_at), `idx:expiring` (score
expires_at), `idx:tombs` (score: when the tombstone goes), result bytes `out:<id>:<name>` with
their names in the set `outs:<id>`, and idempotency keys `idem:<owner>:<key>` → id.

Every multi-key change is one Lua script, so it is atomic across replicas: two replicas racing on
an idempotency key agree on one job, and only one `finish` moves a job to a terminal state. The
scripts compute some key names (outputs, owner index), which a single Redis (or a replicated
primary) allows; Redis Cluster would need hash tags. Redis errors propagate: unlike the result
cache, a job store that cannot write must fail the request.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from imagine.jobs.record import JobRecord
from imagine.jobs.sqlite_store import (
    check_name,
    decode_cursor,
    encode_cursor,
    expired_error,
    merge_mutable,
    valid_name,
)

# KEYS: job, idx:all, idx:owner, idx:unfinished, idx:expiring, idem key (or "")
# ARGV: id, data, state, owner, created_at, expires_at (or ""), live (1/0), prefix
_CREATE = """
if KEYS[6] ~= '' then
  local other = redis.call('GET', KEYS[6])
  if other then
    local f = redis.call('HMGET', ARGV[8] .. other, 'data', 'tomb')
    if f[1] and not f[2] then return f[1] end
    redis.call('DEL', KEYS[6])  -- stale: its job expired or vanished
  end
end
-- Checked before any write: a script's writes stay even when it then returns an error.
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('job exists') end
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[1], 'NX') end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'state', ARGV[3], 'owner', ARGV[4],
           'created_at', ARGV[5], 'idem', KEYS[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
if ARGV[7] == '1' then redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1]) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1]) end
return false
"""

# KEYS: job, idx:unfinished, idx:expiring, outs:<id>
# ARGV: id, data, state, expires_at (or ""), finishing (1/0), output ttl ms (or ""), out prefix
_UPDATE = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'tomb', 'created_at')
if not cur[1] or cur[2] then return 0 end
local terminal = {succeeded = true, failed = true, canceled = true}
if terminal[cur[1]] and (ARGV[5] == '1' or cur[1] ~= ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'state', ARGV[3])
if terminal[ARGV[3]] then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], cur[3], ARGV[1])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if ARGV[6] ~= '' then
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    redis.call('PEXPIRE', ARGV[7] .. name, ARGV[6])
  end
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
return 1
"""

# KEYS: job, out key, outs:<id>.  ARGV: name, data
_PUT_OUTPUT = """
if redis.call('HEXISTS', KEYS[1], 'tomb') == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: idx:expiring, idx:unfinished, idx:all, idx:tombs
# ARGV: now, prefix, batch size, tombstone ttl ms, tombstone removal score
_EXPIRE = """
local p = ARGV[2]
local n = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  local job = p .. id
  local f = redis.call('HMGET', job, 'owner', 'idem', 'tomb')
  for _, name in ipairs(redis.call('SMEMBERS', p .. 'outs:' .. id)) do
    redis.call('DEL', p .. 'out:' .. id .. ':' .. name)
  end
  redis.call('DEL', p .. 'outs:' .. id)
  if f[2] and f[2] ~= '' and redis.call('GET', f[2]) == id then redis.call('DEL', f[2]) end
  if f[1] then redis.call('ZREM', p .. 'idx:owner:' .. f[1], id) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  if f[1] and not f[3] then
    redis.call('HDEL', job, 'data', 'idem')
    redis.call('HSET', job, 'tomb', '1', 'expired_at', ARGV[1])
    redis.call('PEXPIRE', job, ARGV[4])
    redis.call('ZADD', KEYS[4], ARGV[5], id)
    n = n + 1
  end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(gone) do
  redis.call('DEL', p .. id)
  redis.call('ZREM', KEYS[4], id)
end
return {n, #due, #gone}
"""

_BATCH = 200  # jobs per expire script run: bounds how long one script blocks Redis


def _s(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


class RedisJobStore:
    """JobStore over redis.asyncio (see the module docstring)."""

    def __init__(
        self,
        *,
        url: str,
        prefix: str = "imagine:job:",
        tombstone_ttl_s: float = 7 * 24 * 3600,
        socket_timeout_s: float = 2.0,
    ) -> None:
        self._p = prefix
        self._tombstone_ttl_s = tombstone_ttl_s
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )
        self._create = self._client.register_script(_CREATE)
        self._update = self._client.register_script(_UPDATE)
        self._put = self._client.register_script(_PUT_OUTPUT)
        self._expire = self._client.register_script(_EXPIRE)

    def _owner_key(self, owner: str) -> str:
        return f"{self._p}idx:owner:{owner}"

    async def _load_many(self, ids: list[bytes]) -> list[JobRecord]:
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self._p + job_id.decode(), "data")
            blobs = await pipe.execute()
        # An index entry whose job vanished in between (expired meanwhile) is skipped.
        return [JobRecord.from_dict(json.loads(b)) for b in blobs if b is not None]

    async def create(self, record: JobRecord) -> JobRecord:
        check_name(record.id, "job id")
        key = record.idempotency_key
        idem = "" if key is None else f"{self._p}idem:{record.owner}:{key}"
        keys = [self._p + record.id, self._p + "idx:all", self._owner_key(record.owner)]
        keys += [self._p + "idx:unfinished", self._p + "idx:expiring", idem]
        args = [record.id, json.dumps(record.to_dict(), separators=(",", ":")), str(record.state)]
        args += [record.owner, repr(record.created_at), _s(record.expires_at)]
        args += ["0" if record.state.terminal else "1", self._p]
        try:
            existing = await self._create(keys=keys, args=args)
        except ResponseError as exc:
            if "job exists" not in str(exc):
                raise
            raise ValueError(f"job {record.id} already exists") from exc
        if existing is None:
            return record
        found = JobRecord.from_dict(json.loads(existing))
        # The key format is ambiguous when owner or key contain ":"; never hand another
        # owner's job back.
        if found.owner != record.owner or found.idempotency_key != key:
            raise ValueError("idempotency key collides with another owner's key")
        return found

    async def save(self, record: JobRecord) -> None:
        await self._write(record, finishing=False)

    async def finish(self, record: JobRecord) -> bool:
        if not record.state.terminal:
            raise ValueError(f"finish needs a terminal state, got {record.state}")
        return await self._write(record, finishing=True)

    async def _write(self, record: JobRecord, *, finishing: bool) -> bool:
        check_name(record.id, "job id")
        blob = await self._client.hget(self._p + record.id, "data")
        if blob is None:
            return False  # unknown or expired
        # Only mutable fields come from `record`; the rest never changes, so reading it before
        # the atomic conditional write below loses nothing.
        merged = merge_mutable(JobRecord.from_dict(json.loads(blob)), record)
        out_ttl_ms = ""
        if merged.state.terminal and merged.expires_at is not None:
            # Safety net should `expire` never run: outputs outlive expires_at by a minute,
            # and never vanish before `expire` could tombstone the job.
            out_ttl_ms = str(int(max(60.0, merged.expires_at - time.time() + 60) * 1000))
        changed = await self._update(
            keys=[
                self._p + record.id,
                self._p + "idx:unfinished",
                self._p + "idx:expiring",
                f"{self._p}outs:{record.id}",
            ],
            args=[
                record.id,
                json.dumps(merged.to_dict(), separators=(",", ":")),
                str(merged.state),
                _s(merged.expires_at),
                "1" if finishing else "0",
                out_ttl_ms,
                f"{self._p}out:{record.id}:",
            ],
        )
        return bool(changed)

    async def get(self, job_id: str) -> JobRecord | None:
        if not valid_name(job_id):  # e.g. "idx:all" names an index, not a job
            return None
        data, tomb = await self._client.hmget(self._p + job_id, ["data", "tomb"])
        if tomb is not None:
            raise expired_error(job_id)
        return None if data is None else JobRecord.from_dict(json.loads(data))

    async def list(
        self, *, owner: str | None, before: str | None, limit: int
    ) -> tuple[list[JobRecord], str | None]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        index = self._p + "idx:all" if owner is None else self._owner_key(owner)
        if before is None:
            ids = await self._client.zrevrangebyscore(index, "+inf", "-inf", start=0, num=limit + 1)
        else:
            created_at, last_id = decode_cursor(before)
            score = repr(created_at)
            # Same created_at as the cursor: only the ids after it (the set orders them by id,
            # descending here); then strictly older ones.
            ties = await self._client.zrevrangebyscore(index, score, score)
            ids = [i for i in ties if i.decode() < last_id][: limit + 1]
            if len(ids) <= limit:
                ids += await self._client.zrevrangebyscore(
                    index, "(" + score, "-inf", start=0, num=limit + 1 - len(ids)
                )
        records = await self._load_many(ids)
        page = records[:limit]
        return page, encode_cursor(page[-1]) if len(ids) > limit and page else None

    async def unfinished(self) -> list[JobRecord]:
        return await self._load_many(await self._client.zrange(self._p + "idx:unfinished", 0, -1))

    async def put_output(self, job_id: str, name: str, data: bytes) -> None:
        check_name(job_id, "job id")
        check_name(name, "name")
        keys = [self._p + job_id, f"{self._p}out:{job_id}:{name}", f"{self._p}outs:{job_id}"]
        if not await self._put(keys=keys, args=[name, data]):
            raise expired_error(job_id)

    async def get_output(self, job_id: str, name: str) -> bytes | None:
        if not (valid_name(job_id) and valid_name(name)):
            return None
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hexists(self._p + job_id, "tomb")
            pipe.get(f"{self._p}out:{job_id}:{name}")
            tomb, data = await pipe.execute()
        if tomb:
            raise expired_error(job_id)
        return data

    async def expire(self, now: float) -> int:
        ttl_ms = max(1, math.ceil(self._tombstone_ttl_s * 1000))
        keys = [self._p + k for k in ("idx:expiring", "idx:unfinished", "idx:all", "idx:tombs")]
        args = [repr(now), self._p, _BATCH, ttl_ms, repr(now + self._tombstone_ttl_s)]
        total = 0
        while True:
            expired, due, purged = await self._expire(keys=keys, args=args)
            total += int(expired)
            if due < _BATCH and purged < _BATCH:  # a full batch may hide more
                return total
            await asyncio.sleep(0)  # let other requests reach Redis between batches

    async def close(self) -> None:
        await self._client.aclose()
