"""What softprompt writes and reads: atomic writes, prompt files, state files, YAML recipes, integrity checks."""
