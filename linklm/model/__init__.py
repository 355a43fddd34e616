"""The model district: the default model and its number tokens, Gemma, prompt formats,
tokenised examples, training and run folders. Imports from ``linklm.data`` only."""
