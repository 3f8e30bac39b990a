"""The practice catalogue (PlanDefinitions with tiers and themes) and the coordinated care plan profile."""
