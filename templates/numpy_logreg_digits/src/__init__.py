"""Model, data and task code of this workspace (the numpy_logreg_digits template)."""
