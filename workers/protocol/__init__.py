"""batchyard's Redis protocol: everything producers and workers agree on about Redis.

Imports only `schemas` (and redis, orjson, pydantic, tenacity) — never dramatiq, aiohttp or an
adapter — so producers and the gateway reach Redis through it without loading a worker.

- `keys`: every key name;        `lanes`: queues, lanes, actors, priorities;
- `gateway`: the HTTP gateway's own key names, under `<namespace>:gw:`;
- `scripts` + `lua/`: the Lua scripts (the gateway's too), every key through KEYS;
- `batch_record`: the batch hash; `envelope`: the dramatiq message of a `Job`;
- `dead_letter`: a failed request kept for `retry --failed`;
- `blob`: messages packed for the enqueue scripts; `results`: result writes and the stream;
- `health`: an endpoint's shared health, read back; `connection`: `wait_for_redis`, `safe_url`.
"""
