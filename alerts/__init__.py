"""Alert rules on closed windows: the rules file (rules.py) and the pure rule engine (engine.py)."""
