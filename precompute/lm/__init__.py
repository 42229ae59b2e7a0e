"""Language models: the weight-sparse GPT, its corpus, tokenizer, tasks and training."""
