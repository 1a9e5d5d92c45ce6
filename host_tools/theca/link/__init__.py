"""The link to a pump: the client (frames, keys, counters, replies) and the request bodies."""
