"""The original's knowledge backends (file or S3) writing or reading a knowledge base, for
crates/knowledge-store/tests/interop.rs. Prints one JSON document on stdout.

    python knowledge_files.py write STORE DOMAIN   # writes the fixture below, prints what it reads back
    python knowledge_files.py read  STORE DOMAIN   # prints what it reads

STORE is a folder (the file backend) or a JSON object of S3KnowledgeBackend.from_config keys.
"""

import asyncio
import hashlib
import json
import sys

from dataknobs_bots.knowledge.storage import FileKnowledgeBackend
from dataknobs_bots.knowledge.storage.s3 import S3KnowledgeBackend

FILES = {
    "docs/日本語 guide.md": "# ガイド\n\nUnicode and a space in the path.\n".encode(),
    "deep/a/b/c/d/e/f.txt": b"deeply nested\n",
    "space name.json": b'{"a": [1, 2.5, null]}',
    "to-delete.md": b"gone soon\n",
}


async def describe(b, domain):
    info = await b.get_info(domain)
    files = {}
    for f in await b.list_files(domain):
        body = await b.get_file(domain, f.path)
        files[f.path] = {
            "checksum": f.checksum,
            "size_bytes": f.size_bytes,
            "content_type": f.content_type,
            "md5": hashlib.md5(body).hexdigest(),
            "metadata": f.metadata,
        }
    return {
        "checksum": await b.get_checksum(domain),
        "files": files,
        "info": {
            "file_count": info.file_count,
            "total_size_bytes": info.total_size_bytes,
            "version": info.version,
            "ingestion_status": info.ingestion_status.value,
            "ingestion_error": info.ingestion_error,
            "metadata": info.metadata,
        },
    }


async def main(mode, store, domain):
    if store.startswith("{"):
        b = S3KnowledgeBackend.from_config(json.loads(store))
    else:
        b = FileKnowledgeBackend(store)
    await b.initialize()
    try:
        if mode == "write":
            await b.create_kb(domain, metadata={"n": 1, "f": 2.5, "tags": ["a", "b"], "nested": {"k": None}})
            # S3 object metadata holds only ASCII strings (the original's S3 backend stores file
            # metadata there), so the S3 run uses a string.
            n = "7" if store.startswith("{") else 7
            for path, body in FILES.items():
                await b.put_file(domain, path, body, metadata={"origin": "python", "n": n})
            await b.delete_file(domain, "to-delete.md")
            await b.set_ingestion_status(domain, "error", "embedding service unreachable: 503")
        print(json.dumps(await describe(b, domain)))
    finally:
        await b.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
