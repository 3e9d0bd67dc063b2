"""The national service index (Decision 766/QĐ-TTg) as far as the gateway can see it: rows, figures, metrics."""
