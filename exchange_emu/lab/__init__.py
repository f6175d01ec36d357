"""Running an organization's servers as processes (the lab supervisor's building blocks)."""
