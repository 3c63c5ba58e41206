"""Weights by URL: file:// URLs, a prepared cache folder, and real downloads from an http server
on 127.0.0.1 (in a thread) with checksum checks; MODEL.WEIGHTS and MODEL.BACKBONE.PRETRAINED
through them. Nothing leaves this machine: any other download attempt fails the test."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import logging
import os
import socket
import threading
import urllib.request

import pytest
import torch
import torchvision

from uper_parsing.checkpoint import Checkpointer, download, paths
from uper_parsing.checkpoint.download import cache_dir, cache_path, expected_sha256_prefix
from uper_parsing.checkpoint.paths import OPEN_MMLAB_MODEL_ZOO, resolve_weights_path
from uper_parsing.modeling import ResNet


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets an empty cache folder; urlopen only reaches 127.0.0.1."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("UPER_PARSING_CACHE", str(folder))
    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        assert url.startswith("http://127.0.0.1:"), f"tried to download {url}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """An http server on 127.0.0.1 serving tmp_path/www; yields (base URL, folder, requests)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _torchvision_resnet18_bytes() -> tuple[bytes, dict[str, torch.Tensor]]:
    state = torchvision.models.resnet18().state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def _publish(root, name: str, data: bytes) -> None:
    (root / name).write_bytes(data)


# ----------------------------------------------------------------------------- names and folders


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    assert cache_dir() == str(tmp_path / "cache")
    monkeypatch.delenv("UPER_PARSING_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == str(tmp_path / "xdg" / "uper_parsing")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "uper_parsing")


def test_cached_file_names_keep_the_real_name_and_extension(tmp_path):
    root = str(tmp_path)
    plain = cache_path("https://example.org/models/m-1234abcd.pth", root)
    assert plain == os.path.join(root, "example.org", "models", "m-1234abcd.pth")
    queried = cache_path(
        "https://hf.co/org/repo/resolve/main/model.safetensors?download=true", root
    )
    assert os.path.basename(queried) == "model.safetensors"
    other = cache_path("https://hf.co/org/repo/resolve/main/model.safetensors?revision=2", root)
    assert other != queried and os.path.basename(other) == "model.safetensors"
    with pytest.raises(ValueError, match="names no file"):
        cache_path("https://example.org/models/", root)
    with pytest.raises(ValueError, match="names no file"):
        cache_path("https://example.org/a/../../etc/passwd", root)


def test_checksum_comes_from_torch_hub_style_names():
    url = OPEN_MMLAB_MODEL_ZOO["resnet50_v1c"]
    assert expected_sha256_prefix(url) == "2cccc1ad"
    mmseg = "https://x/upernet_swin_tiny_20210531_112542-e380ad3e.pth?v=1"
    assert expected_sha256_prefix(mmseg) == "e380ad3e"
    for unhashed in ("https://x/R-50.pkl", "https://x/model_final_dbfeb4.pkl", "https://x/m.pth"):
        assert expected_sha256_prefix(unhashed) is None


# ----------------------------------------------------------------------------- resolving


def test_paths_and_file_urls_resolve_to_local_files(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(1)}, path)
    assert resolve_weights_path(str(path)) == str(path)
    assert resolve_weights_path(path.as_uri()) == str(path)
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.PRETRAINED='/no/such.pth'"):
        resolve_weights_path("/no/such.pth", setting="MODEL.BACKBONE.PRETRAINED")


def test_a_prepared_cache_is_read_without_downloading(cache):
    url = "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"
    cached = cache_path(url)
    os.makedirs(os.path.dirname(cached))
    torch.save({"stem.0.weight": torch.ones(1)}, cached)
    assert resolve_weights_path(url) == cached  # the autouse fixture forbids any real download
    assert resolve_weights_path("open-mmlab://resnet50_v1c") == cached


def test_open_mmlab_names_are_mmcvs_and_unknown_names_are_errors():
    assert OPEN_MMLAB_MODEL_ZOO["resnet101_v1c"].endswith("/resnet101_v1c-e67eebb6.pth")
    with pytest.raises(ValueError, match="resnet50_v1d.*resnet101_v1c.*resnet50_v1c"):
        resolve_weights_path("open-mmlab://resnet50_v1d")


# ----------------------------------------------------------------------------- downloading


def test_download_once_with_a_verified_checksum(server, cache):
    base, root, requests = server
    data, _ = _torchvision_resnet18_bytes()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / "models").mkdir()
    _publish(root / "models", name, data)
    url = f"{base}/models/{name}"
    first = resolve_weights_path(url)
    second = resolve_weights_path(url)
    assert first == second == cache_path(url)
    with open(first, "rb") as f:
        assert f.read() == data
    assert requests == [f"/models/{name}"]  # fetched once
    assert not [p for p in os.listdir(os.path.dirname(first)) if p.endswith(".tmp")]


def test_checksum_mismatch_keeps_nothing_and_names_url_and_hashes(server, cache):
    base, root, _ = server
    data = b"not the published file"
    _publish(root, "weights-0123abcd.pth", data)
    url = f"{base}/weights-0123abcd.pth"
    with pytest.raises(ValueError) as error:
        resolve_weights_path(url)
    message = str(error.value)
    assert url in message and "0123abcd" in message
    assert hashlib.sha256(data).hexdigest() in message
    assert not os.path.exists(cache_path(url))
    assert not os.path.exists(cache_path(url) + ".tmp")


def test_urls_with_a_query_keep_their_file_name(server):
    base, root, _ = server
    from safetensors.torch import save_file

    save_file({"w": torch.arange(3.0)}, str(root / "model.safetensors"))
    local = resolve_weights_path(f"{base}/model.safetensors?download=true")
    assert local.endswith("model.safetensors")
    from safetensors.torch import load_file

    assert torch.equal(load_file(local)["w"], torch.arange(3.0))


def test_only_local_rank_0_downloads_and_every_process_waits(server, monkeypatch):
    base, root, requests = server
    _publish(root, "w.pth", b"x")
    barriers = []
    monkeypatch.setattr(download.comm, "synchronize", lambda: barriers.append("sync"))
    monkeypatch.setattr(download.comm, "get_local_rank", lambda: 1)
    with pytest.raises(FileNotFoundError, match="see the first process"):
        download.cached_download(f"{base}/w.pth")  # rank 1 never downloads
    assert requests == [] and barriers == ["sync"]
    monkeypatch.setattr(download.comm, "get_local_rank", lambda: 0)
    with open(download.cached_download(f"{base}/w.pth"), "rb") as f:
        assert f.read() == b"x"
    assert requests == ["/w.pth"] and barriers == ["sync", "sync"]


# ----------------------------------------------------------------------------- through the config


def test_backbone_pretrained_and_model_weights_by_url(server, caplog):
    base, root, requests = server
    data, state = _torchvision_resnet18_bytes()
    _publish(root, "resnet18.pth", data)
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        backbone = ResNet(depth=18, norm="BN", pretrained=f"{base}/resnet18.pth")
    assert "Backbone tensors" not in caplog.text  # every tensor placed
    assert torch.equal(backbone.res4[1].conv2.weight, state["layer3.1.conv2.weight"])

    other = ResNet(depth=18, norm="BN")
    Checkpointer(other).load(f"{base}/resnet18.pth")  # MODEL.WEIGHTS: torchvision, converted
    assert torch.equal(other.stem.bn1.running_var, state["bn1.running_var"])
    assert requests == ["/resnet18.pth"]  # the second load read the cache


def test_nothing_is_downloaded_without_a_url(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("downloaded without a configured URL")

    monkeypatch.setattr(paths, "cached_download", refuse)
    ResNet(depth=18, norm="BN")
    Checkpointer(ResNet(depth=18, norm="BN")).resume_or_load("", resume=False)


def test_unreachable_url_names_the_setting_url_and_cache_path(cache):
    """No network (here: nothing listens on the port): the error says which key, which URL and
    where to put the file by hand."""
    with socket.socket() as s:  # a free port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights/resnet50_v1c-2cccc1ad.pth"
    with pytest.raises(ConnectionError) as info:
        resolve_weights_path(url, setting="MODEL.BACKBONE.PRETRAINED")
    message = str(info.value)
    assert "MODEL.BACKBONE.PRETRAINED" in message and url in message
    assert cache_path(url) in message
    assert not os.path.exists(cache_path(url))
