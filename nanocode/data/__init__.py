"""Data: tokenizer, pretraining sources and downloaders, the embedded corpus, mixtures, packing and loaders."""
