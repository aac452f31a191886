"""The domain: the job config, the row formats and the rules that every layer reads."""
