"""Planning layer: tile plans from device budgets, boundary modes and halos, argument checks."""
