"""Shards in object storage or behind HTTP: `http(s)://`, `s3://` and `gs://` URLs wherever a data.yaml, a split or
`yolotr data shard --out` takes a path.

The I/O goes through fsspec: one API serves HTTP (aiohttp), S3 (s3fs) and GCS (gcsfs), each with its usual
credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE / instance roles, AWS_ENDPOINT_URL for S3-compatible stores such as MinIO
or Ceph, Google's application default credentials), so yolotr has no HTTP or S3 client of its own. Shards are read
from a node-local cache of whole, verified shard files (cache.py); local paths never come here and keep plain `open`.

    location.py  what a URL is, which filesystem serves it, and the error when none does
    fetch.py     requests with retries and backoff within a time budget; the errors that name URL and cause
    cache.py     the node-local shard cache: one download per node, sha256-verified, LRU eviction
    prefetch.py  a thread that downloads the next shards of the deterministic order
    upload.py    `yolotr data shard --out s3://...`: shards, then the index
"""
