"""Robot-side control client: control loop, safety, backends, durable outbox to the learner."""
