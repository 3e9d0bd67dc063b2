"""Load generator standing in for the provincial one-stop system: realistic, seeded dossier journeys."""
