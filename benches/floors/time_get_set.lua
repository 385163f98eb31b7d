-- Floor B of benches/script_cost.sh: the least a stateful algorithm on Redis's clock does for
-- one key: read the clock, read the state, write the new state with its expiry. KEYS[1] the
-- state, ARGV[1] its time to live in milliseconds.
local time = redis.call('TIME')
local stored = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], time[1], 'PX', ARGV[1])
return stored and 1 or 0
