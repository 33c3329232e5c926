"""clip-retrieval's own back end serves an index `crawlpairs index` built, unchanged.

The real `clip_back` of clip-retrieval 2.45.0 (PyPI) runs in its own venv (tests/support/peers.py,
cached in ~/.cache/crawlpairs-peers/clip-retrieval) as an HTTP server on 127.0.0.1, loads the index
folder through an `indices_paths` JSON exactly as a user would, and answers /knn-service and
/metadata requests. The index is built by the index stage's code from real photos embedded by
score's encoder (crawlpairs' tiny-clip, seeded random weights).

Three stand-ins, and why:
- clip_back gets its CLIP model from `all_clip.load_clip`. A shim `all_clip` module (written by
  this test) returns tiny-clip with the very weights score used, through open_clip, so queries are
  encoded in the index's space; real users give `--clip_model` a model all_clip knows.
- The venv installs clip-retrieval and the small packages clip_back imports (flask, h5py, pandas,
  pyarrow<16, ...) with --no-deps, and sees torch, open_clip, faiss and numpy from the project's
  venv through a .pth file: clip-retrieval's own requirements pull a multi-GB CUDA torch, wandb,
  transformers, sentence-transformers and img2dataset, none of which serving an index needs.
- `clip_retrieval/__init__.py` imports every tool of the package (clip_inference needs braceexpand
  and wandb at import time); the test registers the package without running that file, then imports the
  unchanged `clip_retrieval.clip_back`. `Flask.run` is told to bind 127.0.0.1 instead of 0.0.0.0.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from crawlpairs.config import IndexConfig
from crawlpairs.udfs.index import knn
from support.peers import peer_python
from support.photos import CAPTIONS

pytestmark = pytest.mark.integration

# clip-retrieval 2.45.0 and what clip_back imports that the project's venv does not give it, pinned
# inside clip-retrieval's own ranges (pyarrow<16, pandas<3, fire<0.6). --no-deps: see the docstring.
CLIP_RETRIEVAL = [
    "--no-deps", "clip-retrieval==2.45.0",
    "flask==3.1.3", "werkzeug==3.1.9", "jinja2==3.1.6", "itsdangerous==2.2.0", "click==8.1.8", "blinker==1.9.0",
    "markupsafe==3.0.2", "flask-restful==0.3.10", "aniso8601==10.0.1", "pytz==2025.2", "six==1.17.0",
    "flask-cors==4.0.2", "h5py==3.13.0", "prometheus-client==0.21.1", "fire==0.5.0", "termcolor==2.5.0",
    "pandas==2.2.3", "pyarrow==15.0.2", "python-dateutil==2.9.0.post0", "tzdata==2025.2",
]

SHIM = '''"""Test stand-in for all_clip (clip_back's CLIP loader): crawlpairs' tiny-clip with score's weights."""
import os

import open_clip


def load_clip(clip_model="ViT-B/32", use_jit=True, device="cpu", **_):
    open_clip.add_model_config(os.environ["CRAWLPAIRS_CLIP_CONFIG_DIR"])
    model, _, preprocess = open_clip.create_model_and_transforms(
        clip_model, pretrained=os.environ["CRAWLPAIRS_CLIP_WEIGHTS"], device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(clip_model)
'''

SERVER = '''
import importlib.util, sys, types
shim_dir, indices_paths, port = sys.argv[1:4]
sys.path.insert(0, shim_dir)
spec = importlib.util.find_spec("clip_retrieval")
pkg = types.ModuleType("clip_retrieval")  # the package without its __init__ (braceexpand, wandb)
pkg.__path__, pkg.__file__ = list(spec.submodule_search_locations), spec.origin
sys.modules["clip_retrieval"] = pkg
import flask
run = flask.Flask.run
flask.Flask.run = lambda self, host=None, port=None, **kw: run(self, host="127.0.0.1", port=port, **kw)
from clip_retrieval.clip_back import clip_back
clip_back(indices_paths=indices_paths, port=int(port), clip_model="tiny-clip", enable_mclip_option=False,
          provide_aesthetic_embeddings=False)
'''


def _clip_retrieval_python() -> Path:
    python = peer_python("clip-retrieval", CLIP_RETRIEVAL)
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    pth = Path(out) / "crawlpairs-project-site.pth"  # after the venv's own packages on sys.path
    ours = sysconfig.get_paths()["purelib"] + "\n"
    if not pth.exists() or pth.read_text() != ours:
        pth.write_text(ours)
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, body: dict) -> list:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 180) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"clip_back exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/indices-list", timeout=2) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)  # polling a starting server; no assertion depends on time
    raise AssertionError("clip_back did not start")


def test_clip_back_serves_the_index_unchanged(tmp_path, photo_embeddings):
    pytest.importorskip("faiss")
    torch = pytest.importorskip("torch")
    pytest.importorskip("open_clip")

    from crawlpairs.udfs.score import clip

    python = _clip_retrieval_python()
    root, images, urls = photo_embeddings
    out = tmp_path / "out" / "index"
    info = knn.build(str(root), str(out), IndexConfig(nb_cores=1))  # defaults: both kinds, autofaiss chooses
    assert info["clip_back_loadable"]
    # what clip_back reads: image.index, text.index, metadata/*.parquet in id order with url + caption
    assert (out / "image.index").is_file() and (out / "text.index").is_file()
    for name in ("image.json", "text.json"):
        assert json.loads((out / name).read_text())["index_path"] == name.replace(".json", ".index")
    # the weights score used, for the shim
    enc = clip.get_encoder("tiny-clip", None, "cpu", "fp32")
    weights = tmp_path / "tiny-clip.pt"
    torch.save({"state_dict": enc.model.state_dict()}, weights)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "all_clip.py").write_text(SHIM)
    indices = tmp_path / "indices_paths.json"
    indices.write_text(json.dumps({"crawlpairs": str(out)}))
    port = _free_port()
    env = {**os.environ, "CRAWLPAIRS_CLIP_CONFIG_DIR": clip.tiny_config_dir(),
           "CRAWLPAIRS_CLIP_WEIGHTS": str(weights), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    log = tmp_path / "clip_back.log"
    with log.open("w") as log_fh:
        proc = subprocess.Popen([str(python), "-c", SERVER, str(shim), str(indices), str(port)], env=env,
                                stdout=log_fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert _wait_ready(proc, port, log) == ["crawlpairs"]
        # text -> caption index: each caption finds its own row, with url and caption from metadata/
        for i, caption in enumerate(CAPTIONS):
            hits = _post(port, "/knn-service", {"text": caption, "modality": "text", "num_images": 4,
                                                "indice_name": "crawlpairs"})
            assert hits[0]["id"] == i and hits[0]["caption"] == caption and hits[0]["url"] == urls[i]
            assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
        # an uploaded photo -> image index: the photo's own row comes first
        photo = base64.b64encode(images[3].read_bytes()).decode()
        hits = _post(port, "/knn-service", {"image": photo, "modality": "image", "num_images": 4,
                                            "indice_name": "crawlpairs"})
        assert hits[0]["url"] == urls[3] and hits[0]["caption"] == "a cat"
        assert hits[0]["similarity"] > 0.99 and len(hits) == 4
        # text -> image search (clip-retrieval's main use) answers with rows of the image index
        hits = _post(port, "/knn-service", {"text": "a cat", "modality": "image", "num_images": 4,
                                            "indice_name": "crawlpairs"})
        assert sorted(h["id"] for h in hits) == [0, 1, 2, 3] and {h["url"] for h in hits} == set(urls)
        # faiss id i is metadata row i
        metas = _post(port, "/metadata", {"ids": [3, 0], "indice_name": "crawlpairs"})
        assert [(m["id"], m["metadata"]["caption"], m["metadata"]["url"]) for m in metas] == [
            (3, CAPTIONS[3], urls[3]), (0, CAPTIONS[0], urls[0])]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    meta = pd.concat(pd.read_parquet(p) for p in sorted((out / "metadata").glob("*.parquet")))
    assert list(meta["caption"]) == CAPTIONS
