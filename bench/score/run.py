"""Benchmark: the score stage on Spark vs a bare open_clip loop over the same shards, same device, one run.

    nice .venv/bin/python bench/score/run.py                       # CPU, tiny-clip, 6k images
    .venv/bin/python bench/score/run.py --model ViT-B-32 --precision fp16 --device cuda --images 100000
    .venv/bin/python bench/score/run.py --model ViT-L-14 --precision fp16 --device cuda --images 100000

Both arms read the same webdataset shards (img2dataset layout, 256 px JPEGs made from the
shared photos plus generated images), decode, preprocess, embed images and captions, and
compute the similarity. The bare arm is what one would write by hand (clip-retrieval style):
a torch DataLoader with one worker process per core over the tar shards, open_clip's own
preprocess, the model in the main process. The Spark arm is `crawlpairs score` on
local[N] (embedded Spark, N = cores), writing every output (scored Parquet, embeddings).
Arms alternate (bare, spark, bare, spark, ...) so that load on a shared machine hits both.
Writes results.json and RESULTS.md beside this file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHARED = Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", REPO.parent / "shared" / "data"))


# -- data ----------------------------------------------------------------------------


def make_shards(folder: Path, n_images: int, per_shard: int, size: int) -> list[Path]:
    """Shards of `size`-px JPEGs: the shared photos (random crops) and generated pictures."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    marker = folder / f".done-{n_images}-{per_shard}-{size}"
    if marker.exists():
        return sorted(folder.glob("*.tar"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    photos = []
    for p in sorted((SHARED / "images").glob("*/*")):
        if p.suffix.lower() in (".png", ".jpg"):
            with Image.open(p) as im:
                photos.append((p.stem, im.convert("RGB").copy()))
    rng = np.random.default_rng(0)
    words = ["a photo of", "a picture of", "an image of", "close-up of", "a view of"]
    shards = []
    for s in range(0, n_images, per_shard):
        sid = f"{s // per_shard:05d}"
        rows = []
        with tarfile.open(folder / f"{sid}.tar", "w") as tar:
            for i in range(s, min(n_images, s + per_shard)):
                name, im = photos[i % len(photos)]
                w, h = im.size
                cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                crop = im.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BICUBIC)
                if i % 3 == 0:  # some colour jitter so images differ
                    arr = np.asarray(crop).astype(np.int16) + rng.integers(-30, 30, size=(1, 1, 3))
                    crop = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
                buf = io.BytesIO()
                crop.save(buf, "JPEG", quality=90)
                key = f"{sid}{i % per_shard:04d}"
                text = f"{words[i % len(words)]} {name.replace('_', ' ')} number {i}"
                meta = {"key": key, "uid": f"u{i}", "url": f"http://img.test/{i}.jpg", "text": text,
                        "language": "en", "status": "success", "width": size, "height": size}
                for ext, data in (("jpg", buf.getvalue()), ("txt", text.encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append(meta)
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{sid}.parquet")
        shards.append(folder / f"{sid}.tar")
    marker.write_text("ok")
    return shards


# -- bare arm ----------------------------------------------------------------------------


def bare_arm(shards: list[Path], args, threads: int) -> dict:
    """open_clip by hand: DataLoader workers decode + preprocess, the model batches in the main process."""
    import open_clip
    import torch
    from PIL import Image

    from crawlpairs.udfs.score.clip import register_model_configs

    t0 = time.perf_counter()
    register_model_configs()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.pretrained:
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=args.pretrained)
    else:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    if device == "cpu":
        torch.set_num_threads(threads)

    class Shards(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = shards if info is None else shards[info.id:: info.num_workers]
            for path in mine:
                with tarfile.open(path, "r|*") as tar:
                    sample: dict = {}
                    for m in tar:
                        key, ext = m.name.split(".", 1)
                        if sample and sample["key"] != key:
                            yield self.convert(sample)
                            sample = {}
                        sample["key"] = key
                        sample[ext] = tar.extractfile(m).read()
                    if sample:
                        yield self.convert(sample)

        @staticmethod
        def convert(sample):
            img = preprocess(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
            return img, tokenizer([sample["txt"].decode()])[0]

    loader = torch.utils.data.DataLoader(Shards(), batch_size=args.batch_size, num_workers=args.cores,
                                         pin_memory=device.startswith("cuda"))
    autocast = (torch.autocast(device_type="cuda", dtype=torch.float16) if device.startswith("cuda") and
                args.precision in ("auto", "fp16") else torch.autocast("cpu", enabled=False))
    n = 0
    wait = model_s = transfer = 0.0
    sims = []
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    with torch.inference_mode(), autocast:
        tw = time.perf_counter()
        for images, tokens in loader:
            wait += time.perf_counter() - tw
            tt = time.perf_counter()
            images = images.to(device, non_blocking=True)
            tokens = tokens.to(device, non_blocking=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            tm = time.perf_counter()
            transfer += tm - tt
            ie = torch.nn.functional.normalize(model.encode_image(images).float(), dim=-1)
            te = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
            sims.append((ie * te).sum(-1).cpu())
            model_s += time.perf_counter() - tm
            n += images.shape[0]
            tw = time.perf_counter()
    total = time.perf_counter() - t0
    return {"images": n, "seconds": round(total, 2), "images_per_s": round(n / total, 1),
            "steady_images_per_s": round(n / (time.perf_counter() - t1), 1),
            "breakdown_s": {"model_load": round(t_load, 2), "waiting_for_decode": round(wait, 2),
                            "transfer": round(transfer, 2), "model": round(model_s, 2)}}


# -- spark arm -----------------------------------------------------------------------


def warm_workers(spark, args) -> float:
    """Load the model in every Spark Python worker first, as a long-running executor already has.

    Python workers outlive tasks but are dropped after a minute idle, which the bare arms
    between two Spark arms always exceed; the cold cost is reported separately (`warmup_s`).
    """
    model, pretrained, device, precision = args.model, args.pretrained, args.device, args.precision

    def load(_):
        from crawlpairs.udfs.score import clip

        clip.get_encoder(model, pretrained, clip.pick_device(device), precision, None)
        time.sleep(1)  # keep every slot busy so each worker process gets one task
        yield 1

    t0 = time.perf_counter()
    spark.sparkContext.parallelize(range(args.cores), args.cores).mapPartitions(load).count()
    return round(time.perf_counter() - t0, 2)


def spark_arm(shards: list[Path], args, spark, out: Path, text_trim: bool = True) -> dict:
    from crawlpairs.config import Config, ScoreConfig
    from crawlpairs.jobs.score import ScoreStage
    from crawlpairs.stage import run_stage

    shutil.rmtree(out, ignore_errors=True)
    cfg = Config()
    cfg.input = [str(shards[0].parent)]
    cfg.output = str(out)
    cfg.score = ScoreConfig(model=args.model, pretrained=args.pretrained, device=args.device,
                            precision=args.precision, batch_size=args.batch_size,
                            language_thresholds={}, default_threshold=-1.0, force=True, text_trim=text_trim,
                            profile=args.device.startswith("cuda"))
    t0 = time.perf_counter()
    stats = run_stage(ScoreStage, cfg, spark=spark)
    total = time.perf_counter() - t0
    c = stats.counts
    n = c["rows_in"]
    ms = {k[3:]: round(v / 1000, 2) for k, v in sorted(c.items()) if k.startswith("ms_")}
    # Python workers load torch + the model once each (a long job pays it once per executor):
    # the steady rate takes that out, spread over the tasks that ran side by side.
    parallel = max(1, min(args.cores, len(shards)))
    steady = n / max(1e-9, total - ms.get("model_load", 0.0) / parallel)
    return {"images": n, "seconds": round(total, 2), "images_per_s": round(n / total, 1),
            "steady_images_per_s": round(steady, 1), "task_seconds_summed": ms, "rows_out": c.get("rows_out", 0), "device": stats.extra.get("device")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=256, help="stored JPEG side (img2dataset's default: 256)")
    ap.add_argument("--model", default="tiny-clip")
    ap.add_argument("--pretrained", default=None, help="tag or path; none: random weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shards", type=int, default=0, help="use only the first N shards (0: all)")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite RESULTS.md from results.json")
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(summarize(json.loads((HERE / "results.json").read_text())))
        return

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    work = Path(args.work)
    t = time.perf_counter()
    shards = make_shards(work / "images", args.images, args.per_shard, args.image_size)
    if args.shards:
        shards = shards[: args.shards]
        sub = work / f"images-{args.shards}"
        sub.mkdir(parents=True, exist_ok=True)
        for p in shards:  # the Spark arm reads a folder: link the chosen shards into one
            for src in (p, p.with_suffix(".parquet")):
                if not (sub / src.name).exists():
                    (sub / src.name).symlink_to(src)
        shards = sorted(sub.glob("*.tar"))
    print(f"shards ready: {len(shards)} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)

    from crawlpairs.config import Config
    from crawlpairs.spark import get_spark

    cfg = Config()
    cfg.spark.master = f"local[{args.cores}]"
    cfg.spark.conf.update({"spark.ui.enabled": "false", "spark.driver.memory": "4g"})
    spark = get_spark(cfg)
    spark.range(1).count()  # session warm before either arm is timed

    runs = []
    for r in range(args.repeats):
        for arm in ("bare", "bare_1thread", "spark", "spark_no_trim"):
            load = os.getloadavg()[0]
            if arm.startswith("bare"):
                # two thread settings for torch beside the DataLoader workers: the better one counts
                res = bare_arm(shards, args, threads=1 if arm == "bare_1thread" else args.cores)
            else:
                warm = warm_workers(spark, args)
                res = spark_arm(shards, args, spark, work / "out", text_trim=arm == "spark")
                res["warmup_s"] = warm
            res.update({"arm": arm, "repeat": r, "loadavg_1m_before": round(load, 1)})
            print(json.dumps(res), file=sys.stderr)
            runs.append(res)
    spark.stop()

    import torch

    result = {
        "machine": {"cpu_count": os.cpu_count(), "cores_used": args.cores, "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "loadavg_1m_end": round(os.getloadavg()[0], 1)},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "params": vars(args),
        "runs": runs,
    }
    result = summarize(result)
    (HERE / "results.json").write_text(json.dumps(result, indent=2))
    write_markdown(result)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("best_", "spark_"))}))


def summarize(result: dict) -> dict:
    """Best run of each arm (end to end, and steady: without the workers' one-time model load)."""
    runs = result["runs"]
    p = result["params"]
    for x in runs:  # results written before steady rates were recorded: derive them
        if "steady_images_per_s" not in x and "task_seconds_summed" in x:
            parallel = max(1, min(p["cores"], p.get("shards") or p["images"] // p["per_shard"]))
            load = x["task_seconds_summed"].get("model_load", 0.0) / parallel
            x["steady_images_per_s"] = round(x["images"] / max(1e-9, x["seconds"] - load), 1)

    def best(arm: str, key: str) -> float:
        return max(x.get(key, x["images_per_s"]) for x in runs
                   if (x["arm"].startswith("bare") if arm == "bare" else x["arm"] == arm))

    for key, suffix in (("images_per_s", ""), ("steady_images_per_s", "_steady")):
        b = best("bare", key)
        result[f"best_bare{suffix}_images_per_s"] = b
        for arm in ("spark", "spark_no_trim"):
            v = best(arm, key)
            result[f"best_{arm}{suffix}_images_per_s"] = v
            result[f"{arm}{suffix}_vs_bare"] = round(v / b, 3)
    return result


def write_markdown(r: dict) -> None:
    m, p = r["machine"], r["params"]
    used = f"; only the first {p['shards']} shards used" if p.get("shards") else ""
    lines = [
        "# score benchmark: Spark job vs bare open_clip loop",
        "",
        f"- machine: {m['cpu_count']} CPUs ({m['cores_used']} used), {m['platform']}, torch {m['torch']}, "
        f"GPU: {m['cuda'] or 'none'}; 1-min load average at the end: {m['loadavg_1m_end']}",
        f"- command: `{r['command']}`",
        f"- data: {p['images']} JPEGs of {p['image_size']} px in shards of {p['per_shard']} (img2dataset layout"
        f"{used}), "
        f"model `{p['model']}` ({'random weights' if not p['pretrained'] else p['pretrained']}), batch {p['batch_size']}",
        "",
        "| arm | repeat | images | seconds | images/s | steady images/s | load before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["runs"]:
        lines.append(f"| {x['arm']} | {x['repeat']} | {x['images']} | {x['seconds']} | {x['images_per_s']} | "
                     f"{x.get('steady_images_per_s', '')} | {x['loadavg_1m_before']} |")
    lines += ["", "Each Spark arm starts after a warm-up job that loads the model in every Python worker (as on a",
              "long-running executor); `model_load` in its task times is then ~0 and the cold cost is the",
              "`warmup_s` of each run in results.json. Steady = images / (seconds - model load summed over",
              "tasks / tasks side by side).", "",
              "Best of each arm (bare: the better of its two thread settings):", "",
              "| | end to end | steady (no model load) |", "| --- | --- | --- |",
              f"| bare open_clip loop, images/s | {r['best_bare_images_per_s']} | {r['best_bare_steady_images_per_s']} |",
              f"| Spark job, images/s | {r['best_spark_images_per_s']} | {r['best_spark_steady_images_per_s']} |",
              f"| **Spark / bare** | **{r['spark_vs_bare']:.2f}** | **{r['spark_steady_vs_bare']:.2f}** |",
              f"| Spark `--no-text-trim` / bare | {r['spark_no_trim_vs_bare']:.2f} | {r['spark_no_trim_steady_vs_bare']:.2f} |",
              "", "Bare: the bench process has torch imported already, so its model load is ~0.", "",
              "Where the time goes (last run of each arm):", ""]
    last_b = [x for x in r["runs"] if x["arm"].startswith("bare")][-1]
    last_s = [x for x in r["runs"] if x["arm"] == "spark"][-1]
    last_s0 = [x for x in r["runs"] if x["arm"] == "spark_no_trim"][-1]
    lines.append(f"- bare (wall seconds in the main process): {json.dumps(last_b['breakdown_s'])}")
    lines.append(f"- spark (seconds summed over tasks; decode_cpu is summed over decode threads): "
                 f"{json.dumps(last_s['task_seconds_summed'])}")
    lines.append(f"- spark --no-text-trim: {json.dumps(last_s0['task_seconds_summed'])}")
    lines += [
        "",
        "What bounds them:",
        "",
        "- Both arms do the same work per image: read the tar, decode the JPEG, resize + centre-crop,",
        "  embed image and caption, cosine. The Spark arm also writes everything (rows Parquet per shard,",
        "  `.npy` + metadata triple, the partitioned `scored/` Parquet) and pays Spark's job start and one",
        "  model load per Python worker (`model_load`, summed over tasks); the bare arm writes nothing.",
        "- With the tiny model the text tower over 77 padded tokens costs more than the image tower over",
        "  16 patches: the bare loop spends most of its time there. The job cuts each token batch to its",
        "  longest caption (exact for CLIP's causal text tower; verified at load) - that is the gap between",
        "  `spark` and `spark_no_trim`. The bare loop runs with torch using all cores (`bare`) and one",
        "  thread (`bare_1thread`, less contention with its decode workers); the better one is the baseline.",
        "  The Spark tasks use one torch thread each (the task's core), so on 2 cores two tasks run the",
        "  model side by side in two processes; the bare loop's single model process is the ceiling there",
        "  (`model` is most of its wall time) - why Spark beats it even without trimming, on CPU. On one",
        "  GPU the model is shared and that advantage goes away: there the target is >= 90% of bare.",
        "  Per-image work outside the model is small: decoding runs in threads beside the model (`decode_wait` is the time",
        "  the model waited for pixels).",
        "- The machine is 2 cores shared with other jobs (see the load column): absolute numbers are far",
        "  below an idle machine and vary run to run; arms alternate so load hits both.",
        "- GPU (ViT-B-32 / ViT-L-14, fp16, real-size images): not measured - no GPU was available to this",
        "  run. The same script takes `--device cuda --model ViT-B-32 --precision fp16` (and",
        "  `--pretrained` for real weights, else random); the Spark arm then reports decode, resize,",
        "  transfer (the bench turns `profile` on for CUDA so phase times are synchronised) and model time per phase.",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
