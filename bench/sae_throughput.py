"""SAE-only training throughput: alignlab architectures vs SAELens on the same activations, same process.

    python bench/sae_throughput.py --quick                 # ~1 minute on a 2-core CPU
    python bench/sae_throughput.py --d 576 --expansion 16 --batch 4096 --steps 10 --json out.json
    python bench/sae_throughput.py --acts cache/resid_post.6/shard_00000.safetensors

Every alignlab number comes from the real trainer (``train_saes``: NaN guard, schedules, dead-latent tracking,
projected Adam + renormalisation). SAELens (when ``sae-lens`` is importable) runs its own per-step training
code (``SAETrainer._train_step``: training_forward_pass, dead-feature tracking, clip, Adam, schedulers) on the
same batches in the same process; its gated and standard SAEs are interleaved with ours and the best of the
repeats is kept, to damp noise from other users of the machine.

"% of floor" = (floor FLOPs/token x tokens/s) / peak, with the spec §9.1 floors (10dn dense ReLU family,
14dn gated, 2dn + 10kd TopK family) and as peak the card's dense bf16 datasheet rate on GPUs or, on CPU, the
fp32 GEMM rate measured in this process. The LAST line is ``gated_vs_saelens=<ratio>`` (or ``=n/a``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignlab.sae import SAEConfig, build_sae  # noqa: E402
from alignlab.sae.trainer import TrainConfig, train_saes  # noqa: E402

OURS = ["standard", "gated", "lp", "topk", "batchtopk", "jumprelu"]
GPU_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def floor_flops(arch: str, d: int, n: int, k: int) -> float:
    """Per-token FLOP floor of spec §9.1."""
    if arch == "gated":
        return 14.0 * d * n
    if arch in ("topk", "batchtopk", "matryoshka"):
        return 2.0 * d * n + 10.0 * k * d
    return 10.0 * d * n


def peak_flops(device: torch.device, d: int, n: int, batch: int) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, val in GPU_BF16_PEAK.items():
            if key in name:
                return val, f"{name} (datasheet dense bf16)"
    a = torch.randn(min(batch, 512), d, device=device)
    b = torch.randn(d, n, device=device)
    best = min(_gemm_seconds(a, b, 10, 1, device))  # best of 10: on a shared CPU most trials are slowed by others
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return 2.0 * a.shape[0] * d * n / best, f"{label} (measured fp32 GEMM, best of 10)"


def measured_bf16_peak(device: torch.device) -> float | None:
    """Median bf16 GEMM rate (8192^3) on a GPU, the ceiling gpu_anchor.py reports; None on CPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    times = sorted(_gemm_seconds(a, torch.randn_like(a), 10, 3, device))
    return 2 * 8192**3 / times[len(times) // 2]


def _gemm_seconds(a: torch.Tensor, b: torch.Tensor, trials: int, warm: int, device: torch.device) -> list[float]:
    """Wall seconds of ``a @ b`` in each of ``trials`` timed runs after ``warm`` untimed ones."""
    times = []
    for i in range(warm + trials):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        if i >= warm:
            times.append(time.perf_counter() - t)
    return times


def profile_step(arch: str, batches: list[torch.Tensor], args: argparse.Namespace, device: torch.device) -> None:
    """Print the torch.profiler kernel table of three training steps of ``arch`` (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sub = argparse.Namespace(**{**vars(args), "warmup": 1, "steps": min(3, len(batches) - 1)})
    ours_tps(arch, batches, sub, device)  # warm the allocator and kernels
    with profile(activities=acts) as prof:
        ours_tps(arch, batches, sub, device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(args: argparse.Namespace, device: torch.device) -> list[torch.Tensor]:
    n_batches = args.warmup + args.steps
    if args.acts:
        from safetensors import safe_open

        with safe_open(args.acts, framework="pt") as f:
            acts = f.get_tensor("activations").float()
        rows = n_batches * args.batch
        reps = -(-rows // acts.shape[0])
        acts = acts.repeat(reps, 1)[:rows]
        return [b.to(device) for b in acts.split(args.batch)]
    g = torch.Generator(device=device).manual_seed(0)  # drawn where they are used (fast on a GPU)
    mix = torch.randn(args.d, args.d, generator=g, device=device) / args.d**0.5
    return [torch.randn(args.batch, args.d, generator=g, device=device) @ mix + 0.1 for _ in range(n_batches)]


def ours_tps(arch: str, batches: list[torch.Tensor], args: argparse.Namespace, device: torch.device) -> float:
    d, n = batches[0].shape[1], args.expansion * batches[0].shape[1]
    kw = {"k": args.k} if arch in ("topk", "batchtopk") else {}
    if arch == "lp":  # the sqrt penalty (p = 1/2) at a fixed p: the per-step cost of the L_p family
        kw.update(p=0.5, recipe="fixed", allow_fixed_p=True)
    sae = build_sae(SAEConfig(architecture=arch, d_in=d, d_sae=n, l1_coefficient=1e-3, **kw))
    total = args.warmup + args.steps
    cfg = TrainConfig(total_steps=total, batch_size=args.batch, lr=3e-4, lr_warmup_steps=1, device=str(device),
                      resample=False, autocast_bf16=args.bf16, norm_estimate_batches=1, log_every=total,
                      compile_kernels=args.compile)
    marks: dict[str, float] = {}

    def stream():
        for i, b in enumerate(batches[:total]):
            if i == args.warmup:  # the warm-up steps are done: start the clock
                _sync(device)
                marks["t0"] = time.perf_counter()
            yield b

    def on_log(rec: dict) -> None:  # runs right after the last step
        _sync(device)
        marks["t1"] = time.perf_counter()

    train_saes([sae], stream(), cfg, progress=False, on_log=on_log)
    return args.steps * args.batch / (marks["t1"] - marks["t0"])


def saelens_tps(arch: str, batches: list[torch.Tensor], args: argparse.Namespace, device: torch.device) -> float:
    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d, n = batches[0].shape[1], args.expansion * batches[0].shape[1]
    if arch == "gated":
        sae = sae_lens.GatedTrainingSAE(sae_lens.GatedTrainingSAEConfig(d_in=d, d_sae=n, l1_coefficient=1e-3))
    elif arch == "standard":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in=d, d_sae=n, l1_coefficient=1e-3))
    else:
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=d, d_sae=n, k=args.k))
    sae = sae.to(device)
    total = (args.warmup + args.steps) * args.batch
    tcfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=args.batch, lr=3e-4, lr_end=3e-5,
                            device=str(device), autocast=args.bf16)
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(batches))
    for b in batches[: args.warmup]:
        trainer._train_step(sae, b)
        trainer.n_training_steps += 1
    _sync(device)
    t = time.perf_counter()
    for b in batches[args.warmup:]:
        trainer._train_step(sae, b)
        trainer.n_training_steps += 1
    _sync(device)
    return args.steps * args.batch / (time.perf_counter() - t)


def _import_saelens(extra_path: str | None) -> bool:
    """True when sae_lens imports; ``extra_path`` is appended to sys.path (after installed packages) and a
    ``slstub.py`` shim there, if any, is imported first (inert stand-ins for SAELens's unused heavy imports)."""
    if extra_path:
        sys.path.append(extra_path)
        if (Path(extra_path) / "slstub.py").is_file():
            import slstub  # noqa: F401
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=576, help="input width (ignored with --acts)")
    ap.add_argument("--expansion", type=int, default=16, help="d_sae = expansion * d")
    ap.add_argument("--batch", type=int, default=4096, help="tokens per step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the gated/standard comparison")
    ap.add_argument("--k", type=int, default=32, help="k of the TopK family")
    ap.add_argument("--acts", type=str, default=None, help="safetensors file with an 'activations' [N, d] tensor")
    ap.add_argument("--archs", nargs="+", default=OURS, help="alignlab architectures to time")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for both libraries")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--json", type=str, default=None, help="write the §9.3 JSON records here")
    ap.add_argument("--saelens-path", type=str, default=None, help="extra folder to import sae_lens from")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="eager gated elementwise kernels on CUDA (default: torch.compile, as the trainer does)")
    ap.add_argument("--profile", default=None, help="print a torch.profiler table of this architecture's step")
    ap.add_argument("--quick", action="store_true",
                    help="batch 512, 3 timed steps, 1 thread unless --threads: about a minute on this CPU")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.quick:  # one thread: on a shared 2-core machine a 2-thread GEMM stalls whenever either core is taken
        args.batch, args.steps, args.warmup = 512, 3, 1
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    batches = make_batches(args, device)
    d = batches[0].shape[1]
    n = args.expansion * d
    peak, card = peak_flops(device, d, n, args.batch)
    have_sl = _import_saelens(args.saelens_path)
    gemm = measured_bf16_peak(device)
    if gemm is not None:
        print(f"# measured bf16 GEMM 8192^3: {gemm / 1e12:.0f} TFLOP/s (the second % column uses it)")
    print(f"# {card}: peak {peak / 1e9:.1f} GFLOP/s | d={d} n={n} batch={args.batch} steps={args.steps} "
          f"threads={torch.get_num_threads()} dtype={'bf16-autocast' if args.bf16 else 'fp32'}")
    records, best = [], {}
    for arch in args.archs:
        if arch in ("gated", "standard"):
            continue  # timed below, interleaved with SAELens
        best[("alignlab", arch)] = ours_tps(arch, batches, args, device)
    for _ in range(max(1, args.repeats)):
        for arch in ("gated", "standard"):
            if arch in args.archs:
                key = ("alignlab", arch)
                best[key] = max(best.get(key, 0.0), ours_tps(arch, batches, args, device))
            if have_sl:
                key = ("saelens", arch)
                best[key] = max(best.get(key, 0.0), saelens_tps(arch, batches, args, device))
    if have_sl and "topk" in args.archs:
        best[("saelens", "topk")] = saelens_tps("topk", batches, args, device)
    if device.type == "cpu":  # measure the peak again after the runs and keep the better reading
        peak = max(peak, peak_flops(device, d, n, args.batch)[0])
    mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        mem = torch.cuda.max_memory_allocated(device) / 2**20
    print(f"{'library':<9} {'arch':<10} {'tokens/s':>10} {'% floor':>8} {'% GEMM':>7} {'floor/token':>12}")
    for (lib, arch), tps in best.items():
        fl = floor_flops(arch, d, n, args.k)
        frac = fl * tps / peak
        vs_gemm = 100 * fl * tps / gemm if gemm else None
        col = f"{vs_gemm:>6.1f}%" if vs_gemm is not None else f"{'-':>7}"
        print(f"{lib:<9} {arch:<10} {tps:>10.0f} {100 * frac:>7.2f}% {col} {fl / 1e6:>9.1f} MF")
        records.append({"library": lib, "architecture": arch, "card": card, "dtype": "bf16" if args.bf16 else "fp32",
                        "d": d, "n": n, "k": args.k if arch in ("topk", "batchtopk") else None, "tokens_per_s": tps,
                        "peak_memory_mib": mem, "pct_flop_floor": 100 * frac, "pct_of_measured_gemm": vs_gemm})
    ratios = {}
    for arch in ("gated", "standard", "topk"):
        if ("saelens", arch) in best and ("alignlab", arch) in best:
            ratios[arch] = best[("alignlab", arch)] / best[("saelens", arch)]
            print(f"{arch}_vs_saelens_ratio={ratios[arch]:.2f}")
    if args.profile:
        profile_step(args.profile, batches, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps({"records": records, "ratios": ratios}, indent=2) + "\n")
    print(f"gated_vs_saelens={ratios['gated']:.2f}" if "gated" in ratios else "gated_vs_saelens=n/a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
