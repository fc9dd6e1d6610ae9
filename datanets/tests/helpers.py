"""Small helpers shared by the datanets tests."""
import gzip
import io
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from datanets import services

DATA_DIR = Path(settings.SHARED_DATA_DIR)
PHRASEBANK = DATA_DIR / "financial_phrasebank.csv"
SHAKESPEARE = DATA_DIR / "tinyshakespeare.txt"


def upload(datanet, user, name: str, content: bytes, **kwargs):
    return services.contribution_upload(datanet=datanet, contributor=user, file=SimpleUploadedFile(name, content),
                                        file_name=name, **kwargs)


def ingest(result):
    return services.contribution_ingest(contribution_id=result.contribution.id)


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()
