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


def test_atomic_dir_replaces_a_directory_without_ever_exposing_a_partial_one(tmp_path, monkeypatch):
    import os
    import shutil

    from alignlab.io import atomic_dir

    target = tmp_path / "model"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (target / name).write_text("old " + name)
    seen: list[set[str]] = []
    real_rmtree = shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):  # a reader looking at the target as soon as a tree is deleted
        real_rmtree(path, *args, **kwargs)
        seen.append(set(os.listdir(target)) if target.exists() else {"<absent>"})

    monkeypatch.setattr(shutil, "rmtree", watching_rmtree)
    with atomic_dir(target) as tmp:
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            (tmp / name).write_text("new " + name)
        assert (target / "tokenizer.json").read_text() == "old tokenizer.json"  # untouched until the body ends
    assert seen and all(s == {"config.json", "tokenizer.json", "model.safetensors"} for s in seen), seen
    assert (target / "tokenizer.json").read_text() == "new tokenizer.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary or old directory left


def test_atomic_dir_keeps_a_directory_another_writer_completed_first(tmp_path, monkeypatch):
    import errno
    import os

    from alignlab.io import atomic_dir

    target = tmp_path / "cache"
    real_replace = os.replace

    def racing_replace(src, dst):  # another process renames its finished copy in just before us
        if str(dst) == str(target) and not target.exists():
            (tmp_path / "theirs").mkdir()
            (tmp_path / "theirs" / "config.json").write_text("theirs")
            real_replace(tmp_path / "theirs", target)
            raise OSError(errno.ENOTEMPTY, "Directory not empty")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", racing_replace)
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("ours")
    assert (target / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    with pytest.raises(ValueError), atomic_dir(target) as tmp:  # a failing body leaves the target alone
        (tmp / "config.json").write_text("broken")
        raise ValueError("boom")
    assert (target / "config.json").read_text() == "theirs"
