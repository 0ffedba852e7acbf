#!/usr/bin/env python3
"""PyTorch peers for bench_cuda: torch.matmul (BF16), torch._weight_int4pack_mm (int4 g128),
torch._int_mm (int8) and torch._scaled_mm (FP8 row-wise), same shapes and timing method as
bench_cuda (median of >= 100 launches, CUDA events per launch, inputs rotated beyond L2)."""
import sys

import torch

REPS = 100
L2 = torch.cuda.get_device_properties(0).L2_cache_size


def copies(nbytes):
    return max(1, min(16, -(-2 * L2 // max(nbytes, 1))))


def bench(fn, n_rot):
    for i in range(10):
        fn(i % n_rot)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(REPS)]
    for i, (a, b) in enumerate(ev):
        a.record()
        fn(i % n_rot)
        b.record()
    torch.cuda.synchronize()
    t = sorted(a.elapsed_time(b) for a, b in ev)
    return 1000.0 * t[REPS // 2]


def fmt(v):
    return f"{v:9.1f}" if v is not None else "      n/a"


def main():
    quick = "--quick" in sys.argv
    shapes = [(4096, 4096), (11008, 4096), (4096, 11008), (28672, 8192)]
    ms = [1, 4, 16, 64, 256, 1024, 4096]
    if quick:
        shapes, ms = [(4096, 4096), (28672, 8192)], [1, 16, 4096]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    print(f"{'N x K':12} {'M':>5} | {'matmul':>9} | {'int4pack':>9} | {'_int_mm':>9} | {'_scaled_mm':>10}")
    errors = {}
    for n, k in shapes:
        g = torch.Generator(device="cuda").manual_seed(n + k)
        w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
        nw = copies(w.numel() * 2)
        ws = [w.clone() for _ in range(nw)]
        # int4 g128 packed for tinygemm: codes 0..15 as int32 [N, K], scales_and_zeros [K/128, N, 2].
        int4 = None
        try:
            q = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.int32)
            try:
                packed = torch._convert_weight_to_int4pack(q, 8)
            except Exception:
                qu8 = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
                packed = torch._convert_weight_to_int4pack(qu8, 8)
            sz = torch.rand(k // 128, n, 2, device="cuda").to(torch.bfloat16)
            int4 = ([packed.clone() for _ in range(copies(n * k // 2))], sz)
        except Exception as e:  # noqa: BLE001
            errors["int4pack"] = repr(e)
        w8 = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8)
        w8s = [w8.clone().t() for _ in range(copies(n * k))]  # [K, N] column-major view
        w8f = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
        wfs = [w8f.clone().t() for _ in range(copies(n * k))]
        sw = torch.rand(1, n, device="cuda", dtype=torch.float32)
        for m in ms:
            x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
            nx = copies(x.numel() * 2)
            xs = [x.clone() for _ in range(nx)]
            nr = max(nw, nx)
            t_mm = bench(lambda i: torch.matmul(xs[i % nx], ws[i % nw].t()), nr)
            t_i4 = None
            if int4 is not None:
                try:
                    t_i4 = bench(lambda i: torch._weight_int4pack_mm(xs[i % nx], int4[0][i % len(int4[0])], 128, int4[1]), nr)
                except Exception as e:  # noqa: BLE001
                    errors["int4pack"] = repr(e)
            t_i8 = None
            try:
                xq = [torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8) for _ in range(min(nx, 4))]
                t_i8 = bench(lambda i: torch._int_mm(xq[i % len(xq)], w8s[i % len(w8s)]), nr)
            except Exception as e:  # noqa: BLE001
                errors[f"_int_mm M={m}"] = repr(e)[:160]
            t_f8 = None
            try:
                xf = [torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn) for _ in range(min(nx, 4))]
                sx = torch.rand(m, 1, device="cuda", dtype=torch.float32)
                t_f8 = bench(lambda i: torch._scaled_mm(xf[i % len(xf)], wfs[i % len(wfs)], scale_a=sx, scale_b=sw,
                                                        out_dtype=torch.bfloat16, use_fast_accum=True), nr)
            except Exception as e:  # noqa: BLE001
                errors[f"_scaled_mm M={m}"] = repr(e)[:160]
            print(f"{n}x{k:<7} {m:5d} | {fmt(t_mm)} | {fmt(t_i4)} | {fmt(t_i8)} | {fmt(t_f8):>10}", flush=True)
    for key, v in errors.items():
        print(f"note: {key}: {v}")
    print("int8/fp8 peers exclude activation quantization (inputs pre-quantized); times in us.")


if __name__ == "__main__":
    main()
