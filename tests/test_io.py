"""alignlab.io: atomic writes get the usual file mode; ensure_dir names the flag on every failure."""

import os

import pytest

from alignlab.errors import AlignlabError
from alignlab.io import ensure_dir, write_text_atomic


def test_atomic_write_follows_umask(tmp_path):
    import torch

    from alignlab.io import save_tensors_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        save_tensors_atomic(tmp_path / "t.safetensors", {"x": torch.zeros(2)})  # the writer recreates the file
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "t.safetensors"]


def test_ensure_dir_creates_and_refuses_files(tmp_path):
    assert ensure_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(AlignlabError, match="--out .* is an existing file"):
        ensure_dir(tmp_path / "f")
    with pytest.raises(AlignlabError, match="--cache .* cannot be created"):
        ensure_dir(tmp_path / "f" / "sub", flag="--cache")
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == []  # the write probe is gone


def test_cli_turns_stray_oserror_into_one_line(monkeypatch, capsys):
    import argparse

    from alignlab import cli

    def boom(_args: argparse.Namespace) -> int:
        raise PermissionError(13, "Permission denied", "/some/where")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["data", "list"])
    monkeypatch.setattr(parser, "parse_args", lambda _argv=None: argparse.Namespace(**{**vars(args), "func": boom}))
    assert cli.main(["data", "list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["alignlab: error: Permission denied: /some/where (check the path and its permissions; --debug "
                   "shows the traceback)"]
