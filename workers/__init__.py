"""Workers: dramatiq broker setup, the execute actor, result writing and process supervision."""
