"""The closed-loop demo: simulated users, the real processes, a report of the uplift per round."""
