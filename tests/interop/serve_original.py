"""The original's reference registry server: create_registry_router(InMemoryBackend()) mounted at
/api/v1, under uvicorn on 127.0.0.1:PORT.

Run by crates/server/tests/interop_http.rs:  python serve_original.py PORT
"""

import sys

import uvicorn
from fastapi import FastAPI

from dataknobs_bots.registry import InMemoryBackend, create_registry_router

app = FastAPI()
app.include_router(create_registry_router(InMemoryBackend()), prefix="/api/v1")

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
