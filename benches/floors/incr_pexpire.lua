-- Floor A of benches/script_cost.sh: the original example's job, counting in a window, made
-- atomic. KEYS[1] the counter, ARGV[1] the window in milliseconds.
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
