"""Sparse probing of the study (issue 17 item 5): tokenize labels, token mapping, latent selection, probes."""

from __future__ import annotations

import torch

from alignlab.sae import study_probe as sp

SNIPPET = """def f(x):
    # note
    if x > 10:
        return "a"
    return 2
"""


def _label_of(text: str, cats: list[int], depths: list[int], needle: str) -> tuple[str, int]:
    i = text.index(needle)
    name = "other" if cats[i] == sp.OTHER else sp.CATEGORIES[cats[i]]
    return name, depths[i]


def test_tokenize_labels_of_a_known_snippet():
    cats, depths = sp.label_chars(SNIPPET)
    assert len(cats) == len(SNIPPET)
    expect = {
        "def": ("keyword", 0),
        "f(": ("name", 0),
        "(x": ("operator", 0),
        "# note": ("comment", 0),
        "if": ("keyword", 1),
        ">": ("operator", 1),
        "10": ("number", 1),
        '"a"': ("string", 2),
        "return 2": ("keyword", 1),
        "2\n": ("number", 1),
    }
    for needle, want in expect.items():
        assert _label_of(SNIPPET, cats, depths, needle) == want, needle
    assert _label_of(SNIPPET, cats, depths, "    if")[0] == "other"  # indentation whitespace


def test_lm_tokens_take_the_label_under_their_first_non_space_character():
    cats, depths = sp.label_chars(SNIPPET)
    a = SNIPPET.index('return "a"')
    offsets = [(a - 1, a + 6), (a + 6, a + 8), (a + 8, a + 10), (0, 0)]  # " return", ' "', 'a"', empty
    labels = sp.label_tokens(SNIPPET, offsets, cats, depths)
    names = [sp.CATEGORIES[c] if c >= 0 else "other" for c, _ in labels]
    assert names == ["keyword", "string", "string", "other"]
    assert [d for _, d in labels[:3]] == [2, 2, 2]


def test_unparseable_source_is_skipped():
    assert sp.label_chars("def f(:\n  '''open") is None


def test_tiny_tokenizer_offsets_map_to_labels():
    from alignlab.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    enc = tok(SNIPPET, add_special_tokens=False, return_offsets_mapping=True)
    labels = sp.label_tokens(SNIPPET, enc["offset_mapping"], *sp.label_chars(SNIPPET))
    hash_at = next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if "#" in SNIPPET[a:b])
    assert sp.CATEGORIES[labels[hash_at][0]] == "comment"


def test_mean_difference_picks_the_planted_latent_and_the_probe_separates():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(400, 50, generator=g)
    y = torch.arange(400) % 2 == 0
    f[y, 17] += 3.0
    assert sp.top_k_by_mean_diff(f, y, 1).tolist() == [17]
    acc = sp.fit_logreg(f[:200, [17]], y[:200], f[200:, [17]], y[200:])
    assert acc == 1.0
    noise = sp.fit_logreg(f[:200, [3]], y[:200], f[200:, [3]], y[200:])
    assert noise < 0.75


def test_balanced_split_is_by_file_and_balanced():
    files = torch.arange(100) // 10  # 10 files of 10 tokens
    y = torch.arange(100) % 3 == 0
    tr, te = sp.balanced_split(torch.ones(100, dtype=torch.bool), y, files, seed=0)
    assert set(files[tr].tolist()).isdisjoint(files[te].tolist())
    assert int(y[tr].sum()) * 2 == len(tr) and int(y[te].sum()) * 2 == len(te)


def test_collect_on_a_tiny_model(tiny_llama):
    from alignlab.sae.activations import Hook

    model, tok = tiny_llama
    data = sp.collect(
        model,
        tok,
        Hook("block_out", 1),
        [SNIPPET * 4, "x = (1 +\n", SNIPPET],
        120,
        context_size=16,
        batch_contexts=2,
        min_files=1,
    )
    assert data.acts.shape == (120, 64) and data.cats.shape == (120,)
    assert set(data.files.tolist()) <= {0, 2}  # the unparseable text (file 1) is skipped
    assert (data.cats == sp.CATEGORIES.index("keyword")).any() and (
        data.cats == sp.CATEGORIES.index("comment")
    ).any()


def test_k_sparse_probe_accuracy_rises_with_k_when_the_class_is_spread_over_latents():
    g = torch.Generator().manual_seed(1)
    n, width, informative = 1200, 64, 16
    y = torch.arange(n) % 2 == 0
    f = torch.rand(n, width, generator=g)
    shift = torch.linspace(0.25, 0.4, informative)  # 16 latents each weakly tied to the class
    f[:, :informative] += y[:, None].float() * shift
    files = torch.arange(n, dtype=torch.int32) // 40
    data = sp.ProbeData(f, torch.where(y, 0, 1).to(torch.int8), torch.zeros(n, dtype=torch.int16), files)
    task_splits = {"comment": (*sp.balanced_split(torch.ones(n, dtype=torch.bool), y, files, seed=0), y)}
    acc = sp.sparse_probes(data.acts, task_splits, (1, 4, 16))["comment"]
    assert acc["1"] < acc["4"] < acc["16"]
    assert acc["1"] < 0.8 and acc["16"] > 0.95
    assert set(sp.top_k_by_mean_diff(f, y, informative).tolist()) == set(range(informative))
