"""The original's FileKnowledgeBackend writing or reading a knowledge base, for
crates/knowledge-store/tests/interop.rs. Prints one JSON document on stdout.

    python knowledge_files.py write BASE DOMAIN   # writes the fixture below, prints what it reads back
    python knowledge_files.py read  BASE DOMAIN   # prints what it reads
"""

import asyncio
import hashlib
import json
import sys

from dataknobs_bots.knowledge.storage import FileKnowledgeBackend

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


async def main(mode, base, domain):
    b = FileKnowledgeBackend(base)
    await b.initialize()
    try:
        if mode == "write":
            await b.create_kb(domain, metadata={"n": 1, "f": 2.5, "tags": ["a", "b"], "nested": {"k": None}})
            for path, body in FILES.items():
                await b.put_file(domain, path, body, metadata={"origin": "python", "n": 7})
            await b.delete_file(domain, "to-delete.md")
            await b.set_ingestion_status(domain, "error", "embedding service unreachable: 503")
        print(json.dumps(await describe(b, domain)))
    finally:
        await b.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
