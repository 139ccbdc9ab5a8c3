"""Serving every task's prompt from one frozen model: `softprompt serve --prompts DIR`.

engine.py holds the model and a bank of task prompts (hot-loaded from DIR) and runs mixed-task batches;
batching.py gathers concurrent requests into such batches on one worker thread; app.py is the HTTP app (FastAPI);
server.py starts it from the command line; client.py is a small Python client.
"""
