"""Where ALIKED weights come from: explicit path, $ALIKED_WEIGHTS_DIR, the cache, a download (served here from
the shared models over HTTP on 127.0.0.1), and the errors for missing, corrupt and mismatched files."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from aliked_ros.features.aliked_net import AlikedNet
from aliked_ros.features.weights import (OFFICIAL_SHA256, WEIGHTS_DIR_ENV, WeightsError, cache_path, load_weights,
                                         resolve_weights, sha256_of)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh torch hub cache and no $ALIKED_WEIGHTS_DIR."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    return tmp_path / "torch" / "hub"


@pytest.fixture
def weights_server(weights_dir):
    """An HTTP server on 127.0.0.1 serving the shared model files; yields a URL template."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(weights_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{{name}}.pth"
    server.shutdown()
    server.server_close()


def test_explicit_path_wins(weights_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, "/nonexistent")
    assert resolve_weights("aliked-t16", weights_dir / "aliked-t16.pth") == weights_dir / "aliked-t16.pth"
    with pytest.raises(WeightsError, match="weights file not found: /nonexistent/x.pth"):
        resolve_weights("aliked-t16", "/nonexistent/x.pth")


def test_env_dir_then_cache(weights_dir, empty_cache, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(weights_dir))
    assert resolve_weights("aliked-n16", download=False) == weights_dir / "aliked-n16.pth"
    monkeypatch.delenv(WEIGHTS_DIR_ENV)
    cached = cache_path("aliked-n16")
    assert cached.is_relative_to(empty_cache)
    cached.parent.mkdir(parents=True)
    shutil.copy(weights_dir / "aliked-n16.pth", cached)
    assert resolve_weights("aliked-n16", download=False) == cached


def test_download_into_cache(empty_cache, weights_server, weights_dir):
    path = resolve_weights("aliked-t16", url_template=weights_server)
    assert path == cache_path("aliked-t16") and path.read_bytes() == (weights_dir / "aliked-t16.pth").read_bytes()
    load_weights(AlikedNet("aliked-t16"), path, "aliked-t16")
    # second time from the cache, even with the server unreachable
    assert resolve_weights("aliked-t16", url_template="http://127.0.0.1:9/{name}.pth") == path


@pytest.fixture
def truncating_server(weights_dir):
    """An HTTP server on 127.0.0.1 that announces each model's full length but closes after 5000 bytes (a dropped
    connection: Python's HTTP client then reads a short body without an error)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (weights_dir / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:5000])
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{{name}}.pth"
    server.shutdown()
    server.server_close()


def test_official_files_are_checked_cut_downloads_never_cached(empty_cache, weights_server, truncating_server,
                                                                weights_dir):
    """The official SHA-256 (the shared models are the official files): a download cut short is refused and leaves
    no cache file; a bad cached copy (from an earlier cut download) is refused, kept while nothing better comes
    (offline it may be all the user has), and replaced by a download that hashes right."""
    official = OFFICIAL_SHA256["aliked-t16"]
    assert sha256_of(weights_dir / "aliked-t16.pth") == official
    with pytest.raises(WeightsError, match="download failed"):
        resolve_weights("aliked-t16", url_template=truncating_server, sha256=official)
    assert not cache_path("aliked-t16").exists()
    cache_path("aliked-t16").parent.mkdir(parents=True, exist_ok=True)
    cut = (weights_dir / "aliked-t16.pth").read_bytes()[:5000]
    cache_path("aliked-t16").write_bytes(cut)
    with pytest.raises(WeightsError, match="is not the official file .*downloads are disabled"):
        resolve_weights("aliked-t16", download=False, sha256=official)
    with pytest.raises(WeightsError, match="is not the official file .*download failed"):
        resolve_weights("aliked-t16", url_template=truncating_server, sha256=official)
    assert cache_path("aliked-t16").read_bytes() == cut  # refused, not deleted
    path = resolve_weights("aliked-t16", url_template=weights_server, sha256=official)
    assert sha256_of(path) == official
    load_weights(AlikedNet("aliked-t16"), path, "aliked-t16")
    assert resolve_weights("aliked-t16", url_template="http://127.0.0.1:9/{name}.pth", sha256=official) == path


def test_missing_offline_error_names_file_url_and_settings(empty_cache):
    with pytest.raises(WeightsError) as error:
        resolve_weights("aliked-n32", url_template="http://127.0.0.1:9/{name}.pth")
    text = str(error.value)
    for expected in ("aliked-n32", "http://127.0.0.1:9/aliked-n32.pth", str(cache_path("aliked-n32")),
                     WEIGHTS_DIR_ENV, "--weights", "download failed"):
        assert expected in text
    assert not cache_path("aliked-n32").exists()  # no partial file left behind


def test_corrupt_and_mismatched_files(weights_dir, tmp_path):
    truncated = tmp_path / "aliked-t16.pth"
    truncated.write_bytes((weights_dir / "aliked-t16.pth").read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="corrupt or not a PyTorch state dict"):
        load_weights(AlikedNet("aliked-t16"), truncated, "aliked-t16")
    with pytest.raises(WeightsError, match=r"does not hold aliked-t16 weights: .* of another shape"):
        load_weights(AlikedNet("aliked-t16"), weights_dir / "aliked-n16.pth", "aliked-t16")
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(AlikedNet("aliked-t16"), text, "aliked-t16")
