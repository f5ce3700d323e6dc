"""Publishing: VOEvents and their provenance, the outbox, the senders and the Comet child."""
