"""One-screen summaries printed at the end of a command (rich tables on stdout)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

out = Console(highlight=False)


def _fmt_s(s: float | None) -> str:
    return "-" if s is None else (f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s")


def print_train_summary(r: dict) -> None:
    t = Table(title=f"edgetl train  ·  run {r['run_id']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    m, c, tm, d = r["metrics"], r["cache"], r["timing"], r["data"]
    t.add_row("data", f"{d['source']}: {len(r['classes'])} classes, {d['train']} train / {d['val']} val ({d['split']})")
    if d["skipped"]:
        t.add_row("skipped", f"{len(d['skipped'])} files or rows (listed in run.json data.skipped)")
    t.add_row("backbone", f"{r['backbone']['name']}  (weights sha256 {r['backbone']['weights_sha256'][:12]}…)")
    t.add_row("preprocess", preprocess_line(r["preprocess"]))
    q = r.get("quantize")
    unit = "texts" if r["preprocess"].get("kind") == "text" else "images"
    if q:
        t.add_row(
            "quantize",
            f"INT8 for {q['target']} ({q['method']}, {q['calib_size']} calib {unit}, "
            f"{len(q['ignored'])} layers kept FP), run by {q['engine']}",
        )
    t.add_row("head", _head_line(r["head"]))
    acc = f"[bold green]{m['val_acc']:.4f}[/]"
    if "val_acc_fp32" in m:
        acc += f"  (FP32 model {m['val_acc_fp32']:.4f}; the INT8 model keeps {m['int8_agreement']:.4f} of its labels)"
    t.add_row("val accuracy", acc)
    for row in r.get("layouts", []):
        t.add_row(
            f"layout {row['target']}",
            f"val {row['val_acc']:.4f}, agreement with FP32 {row['int8_agreement']:.4f}, {row['status']}  ({row['dir']})",
        )
    if q and "feature_cosine" in m:
        t.add_row("INT8 fidelity", _fidelity_line(m, q))
    for label, line in _finetune_rows(r.get("finetune")):
        t.add_row(label, line)
    audit = _audit_line(d.get("audit") or {})
    if audit:
        t.add_row("data audit", audit)
    if c["enabled"]:
        t.add_row("feature cache", f"{c['hits']} hits, {c['misses']} misses  ({c['dir']})")
    else:
        t.add_row("feature cache", "off (backbone in the loop at every solver step)")
    timing = f"extract {_fmt_s(tm.get('extract_s'))}, train {_fmt_s(tm.get('train_s'))}, total {_fmt_s(tm['total_s'])}"
    rate = "texts/s" if unit == "texts" else "img/s"
    if tm.get("extract_images_per_s"):
        timing += f"  ·  {tm['extract_images_per_s']:.0f} {rate}"
    if tm.get("extract_images_per_s_fp32_eager"):
        timing += f" vs PyTorch FP32 eager {tm['extract_images_per_s_fp32_eager']:.0f} {rate}"
    t.add_row("time", timing)
    t.add_row("output", f"{r['config']['out'] or 'runs/' + r['run_id']}  (head.safetensors, run.json)")
    out.print(t)
    for line in r.get("warnings", []):
        out.print(f"[bold red]![/] {line}")


def _fidelity_line(m: dict, q: dict) -> str:
    line = f"features cosine {m['feature_cosine']:.4f} to FP32"
    fid = q.get("fidelity") or {}
    if fid:
        line += f"; features from {fid['features_from']}, checked on {fid['probe']} images against onnx.reference"
    return line


def _audit_line(a: dict) -> str:
    parts = []
    if a.get("label_conflicts"):
        parts.append(f"{a['label_conflicts']} label conflicts left out")
    if a.get("duplicates_in_class"):
        parts.append(f"{a['duplicates_in_class']} duplicates counted once")
    if a.get("exact_leakage"):
        parts.append(f"[bold red]{a['exact_leakage']} val images copied from train[/]")
    near = a.get("near_duplicates") or {}
    if near.get("count"):
        parts.append(
            f"[yellow]{near['count']} val images near-duplicate a train image[/] (feature cosine > "
            f"{near['threshold_cosine']}; examples in run.json)"
        )
    return ", ".join(parts)


def preprocess_line(pre: dict) -> str:
    if pre.get("kind") == "text":
        return (
            f"{pre['tokenizer']} tokenizer (sha256 {pre['tokenizer_sha256'][:12]}…), max {pre['max_length']} tokens, "
            f"truncation on, {pre['pooling']} pooling, {pre['normalize']} normalised"
        )
    return f"{pre['size'][0]}x{pre['size'][1]} {pre['interpolation']}, mean {pre['mean']}, std {pre['std']}"


def _head_line(h: dict) -> str:
    if h.get("solver") == "lbfgs":
        return f"{h['kind']}, logistic regression (L-BFGS, {h['epochs_run']} iterations)"
    return f"{h['kind']}, AdamW, best epoch {h['best_epoch']} of {h['epochs_run']}"


def print_cache_table(root: Path, contexts: list[dict]) -> None:
    t = Table(title=f"feature cache: {root}", title_justify="left")
    for col in ("key", "backbone", "input", "engine", "segments", "entries", "MB", "last used"):
        t.add_column(col)
    for c in contexts:
        ctx = c["context"]
        pre = ctx.get("preprocess", {})
        size = pre.get("size") or [f"text/{pre.get('max_length', '?')}", "tok"]
        engine = f"{ctx.get('engine', '?')} {ctx.get('precision', '')}".strip()
        age = (time.time() - c["last_used"]) / 86400
        t.add_row(
            c["key"][:12],
            str(ctx.get("backbone", "?")),
            f"{size[0]}x{size[1]}",
            engine,
            str(c["segments"]),
            str(c["entries"]),
            f"{c['bytes'] / 1e6:.1f}",
            f"{age:.1f} d ago",
        )
    out.print(t if contexts else f"feature cache {root} is empty")


def _finetune_rows(ft: dict | None) -> list[tuple[str, str]]:
    """`--unfreeze`: what trained, on what, and what it cost the backbone's ImageNet predictions."""
    if not ft:
        return []
    cache = ft["cache"]
    where = f"cut at {cache['cut']}, {cache['bytes_per_image']} B/image cached" if cache.get("cached") else cache["why"]
    kept = " (never beat the linear probe: pretrained blocks kept)" if ft["best_epoch"] == 0 else ""
    line = (
        f"{', '.join(ft['trained'])}: frozen {ft['val_acc_frozen']:.4f} -> {ft['val_acc_ft_head']:.4f}{kept}; "
        f"{where}; {ft['seconds_per_epoch']:.2f} s/epoch; WiSE alpha {ft['wise']['alpha']}"
    )
    f = ft["forgetting"]
    if "agreement" in f:
        forget = (
            f"ImageNet top-1 kept on {f['agreement']:.3f} of {f['images']} probe photos, mean KL {f['mean_kl']:.3g} "
            "(1.0 / 0: the backbone still sees ImageNet as before)"
        )
    elif "mean_cosine" in f:
        forget = (
            f"probe-sentence embeddings kept a mean cosine of {f['mean_cosine']:.4f} (lowest {f['min_cosine']:.4f}) "
            f"over {f['sentences']} sentences (1.0: the encoder embeds general text as before)"
        )
    else:
        forget = f"not measured ({f.get('why')})"
    return [("fine-tune", line), ("forgetting", forget)]


def print_extract_summary(r: dict) -> None:
    where = f"Ray ({r['ray']})" if r["ray"] else "this process"
    shard = "" if r["shard"] == "0/1" else f", shard {r['shard']}"
    t = Table(title=f"edgetl extract  ·  {r['images']} images of {r['data']} on {where}{shard}", title_justify="left")
    for col in ("features", "context", "cached before", "computed", "images/s"):
        t.add_column(col)
    for row in r["rows"]:
        if "skipped" in row:
            t.add_row(row["what"], "-", "-", "-", row["skipped"])
            continue
        rate = f"{row['images_per_s']:.1f}" if row["images_per_s"] else "-"
        t.add_row(row["what"], row["context"][:12], str(row["hits"]), str(row["computed"]), rate)
    out.print(t)
    if r["skipped"]:
        out.print(f"skipped {len(r['skipped'])} files (reasons above)")
    out.print(f"cache: {r['cache_dir']} ({_fmt_s(r['seconds'])} in all)")
