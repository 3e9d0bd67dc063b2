"""Public message contracts: envelope, dossier lifecycle events, results, topics, schemas."""
