"""The paper's mechanism: prompt bank, join, placement, template, initialisers, next-token window, attention
kernels. Imports nothing of softprompt's but its errors."""
