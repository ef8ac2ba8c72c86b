"""The WebSocket gateway: teachers' live feed of their own batches, with per-user history and resume,
fanned out across any number of gateway instances."""
