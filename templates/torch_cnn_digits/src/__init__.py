"""Model, data and task code of this workspace (the torch_cnn_digits template)."""
