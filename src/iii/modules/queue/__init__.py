"""The queue module: named queues (``enqueue``), durable topics, retries, FIFO groups and dead letters."""
