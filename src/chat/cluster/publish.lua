-- One chat event into a room's order, atomically: the dedup check, the room's next sequence
-- number, the stream entry under that number and the publish to the room's channel. Redis runs
-- a script alone, so the numbers of a room are dense and the channel carries them in order.
--
-- KEYS[1] the room's meta hash {epoch, seq}, KEYS[2] its stream, KEYS[3] the event's dedup key
-- ARGV[1] the room's channel, ARGV[2] the record (JSON), ARGV[3] the stream's MAXLEN (0: none),
-- ARGV[4] an epoch to use if the room has none, ARGV[5] the dedup key's lifetime in seconds
-- Returns {epoch, seq, 1 if it was a retry of an event already stored}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local dup = redis.call('GET', KEYS[3])
if dup and epoch then
  return {epoch, tonumber(dup), 1}
end
if not epoch then
  -- A new room, or Redis lost the counter: a new epoch tells every node not to trust what it
  -- knew of the room, and numbering goes on above what the stream still holds.
  epoch = ARGV[4]
  local seq = 0
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    seq = tonumber(string.match(last[1][1], '^(%d+)'))
  end
  -- base: the number the epoch starts above, so a node can tell what is new in it.
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', seq, 'base', seq)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'r', ARGV[2])
else
  redis.call('XADD', KEYS[2], seq .. '-0', 'r', ARGV[2])
end
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. seq .. ' ' .. ARGV[2])
redis.call('SET', KEYS[3], seq, 'EX', ARGV[5])
return {epoch, seq, 0}
