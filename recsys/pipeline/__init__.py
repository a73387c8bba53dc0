"""The embedding engine below the use cases: plan, run (decode workers, batches, writes), snapshot refresh."""
