"""seqio task registrations, installed as `ptune.tasks`."""
