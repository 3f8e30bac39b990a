"""careplan: coordinated care management for people living with mental-health and addictions conditions."""
