"""Real Redis: hashes, TTLs and a latest-N index read in one round trip."""

from __future__ import annotations

import redis

from devstack.stack import Endpoints


def test_hash_ttl_and_latest_index(stack: Endpoints, unique_name: str) -> None:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        index = f"{unique_name}:index"
        with client.pipeline(transaction=True) as pipe:
            for minute in range(5):
                key = f"{unique_name}:w:{minute}"
                pipe.hset(key, mapping={"count": minute + 1, "sum": minute * 1.5})
                pipe.pexpire(key, 60_000)
                pipe.zadd(index, {key: minute * 60_000})
            pipe.zremrangebyrank(index, 0, -4)  # keep the latest 3
            pipe.execute()

        latest = client.zrevrange(index, 0, -1, withscores=True)
        assert latest == [(f"{unique_name}:w:{m}", m * 60_000.0) for m in (4, 3, 2)]
        assert client.hgetall(f"{unique_name}:w:4") == {"count": "5", "sum": "6.0"}
        assert 0 < client.pttl(f"{unique_name}:w:4") <= 60_000
    finally:
        client.close()
