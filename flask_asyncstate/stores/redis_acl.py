"""The least-privilege Redis ACL rule for a flask-asyncstate user: its keys, its two channels,
and only the commands the store runs (scripts included: Redis checks their commands too)."""

from __future__ import annotations

#: Every command the Redis store sends or runs inside its Lua scripts, plus what redis-py
#: sends on connect (its ``CLIENT SETINFO``, Redis 7.2+, may be refused: it ignores that).
#: RQ's and Flask-Session's own keys and commands are not covered.
COMMANDS = (
    "hello", "auth", "ping", "select", "client|setname",
    "eval", "evalsha", "script|load", "script|exists",
    "del", "exists", "scan",
    "hget", "hmget", "hset", "hincrby", "pexpire",
    "sadd", "srem", "scard", "smembers", "sismember",
    "zadd", "zrem", "zcard", "zrange", "zrevrange", "zremrangebyrank", "zremrangebyscore",
    "publish", "subscribe", "unsubscribe",
    "cluster|slots", "cluster|shards", "command",  # what redis-py's cluster client asks first
)  # fmt: skip


def acl_rules(key_prefix: str) -> list[str]:
    """The ``ACL SETUSER`` rules for a user limited to ``key_prefix`` keys and channels."""
    return [
        "resetkeys",
        f"~{key_prefix}*",
        "resetchannels",
        f"&{key_prefix}cancel",
        f"&{key_prefix}changed:*",
        "-@all",
        *(f"+{c}" for c in COMMANDS),
    ]


def acl_setuser(user: str, key_prefix: str, password: str = "<password>") -> str:
    """The whole ``ACL SETUSER`` command, as ``flask asyncstate acl`` prints it."""
    return " ".join(["ACL SETUSER", user, "on", f">{password}", *acl_rules(key_prefix)])
