"""Using trained prompts: loading them with their model, ensembles, interpretation, similar prompts."""
