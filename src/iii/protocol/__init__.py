"""The iii wire protocol: typed messages, codec, error and close codes, channel refs. Pure: no I/O."""
