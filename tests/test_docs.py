"""The documentation site builds with warnings as errors, and its pages render in a real
browser (headless Chromium, Debian's ``chromium``, which ``.ci/run`` installs): the index
and op pages show their pictures, and search finds a page.

The site is built here (``python -m sphinx -W``) unless ``JAXPOOL_DOCS_HTML`` names a
site already built that way (``.ci/run`` builds it once and points here).
"""

import functools
import html
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A page on the same origin that loads a site page in an iframe and, once it has loaded
# and its scripts have run, writes what a reader would see into #result as JSON.
PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="page" src="{page}" width="1200" height="1600"></iframe>
<script>
const frame = document.getElementById("page");
frame.addEventListener("load", () => setTimeout(() => {{
  const doc = frame.contentDocument;
  const h1 = doc.querySelector("h1");
  document.getElementById("result").textContent = JSON.stringify({{
    title: doc.title,
    h1: h1 ? h1.textContent : null,
    images: Array.from(doc.images).map(i => ({{
        src: i.getAttribute("src"), width: i.naturalWidth, height: i.naturalHeight}})),
    results: Array.from(doc.querySelectorAll("#search-results li a")).map(a => a.textContent),
  }});
}}, 4000));
</script></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  built = os.environ.get("JAXPOOL_DOCS_HTML")
  if built:
    path = pathlib.Path(built)
    assert (path / "index.html").exists(), f"JAXPOOL_DOCS_HTML={built} holds no index.html"
    return path
  for name in ("sphinx", "myst_parser", "furo"):
    pytest.importorskip(name)
  out = tmp_path_factory.mktemp("html")
  run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                        "html", str(ROOT / "docs"), str(out)], capture_output=True, text=True,
                       timeout=600, check=False, cwd=ROOT)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def server(site):
  requests = []

  class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server hook
      url = urllib.parse.urlparse(self.path)
      if url.path == "/__probe__.html":
        page = urllib.parse.parse_qs(url.query)["page"][0]
        body = PROBE.format(page=html.escape(page, quote=True)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return
      super().do_GET()

    def log_request(self, code="-", size="-"):
      requests.append((urllib.parse.urlparse(self.path).path, int(code)))

  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture(scope="module")
def chromium():
  path = shutil.which("chromium") or shutil.which("chromium-browser")
  if path is None:
    pytest.skip("headless Chromium is not installed (apt-get install chromium)")
  return path


def _open(chromium, server, page):
  """What the browser shows for ``page`` (a site path with an optional query)."""
  base, _ = server
  probe = f"{base}/__probe__.html?page={urllib.parse.quote('/' + page, safe='')}"
  run = subprocess.run(
      [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
       "--virtual-time-budget=20000", "--dump-dom", probe],
      capture_output=True, text=True, timeout=120, check=False)
  found = re.search(r'<pre id="result">(.*?)</pre>', run.stdout, flags=re.S)
  assert found and found.group(1) != "pending", run.stdout[-2000:] + run.stderr[-2000:]
  return json.loads(html.unescape(found.group(1)))


def test_index_renders(chromium, server):
  shown = _open(chromium, server, "index.html")
  assert shown["title"].startswith("jaxpool")
  assert shown["h1"].startswith("jaxpool")


@pytest.mark.parametrize("page,title,picture", [
    ("ops/adaptive.html", "Adaptive pooling", "adaptive_bins.png"),
    ("ops/indices_unpool.html", "Argmax indices and max-unpooling", "unpool.png"),
])
def test_op_page_renders_with_its_picture(chromium, server, site, page, title, picture):
  shown = _open(chromium, server, page)
  assert shown["h1"].startswith(title)
  images = {pathlib.PurePosixPath(i["src"]).name: i for i in shown["images"]}
  assert picture in images, shown["images"]
  # decoded by the browser, at the size the PNG on disk has
  image = images[picture]
  assert image["width"] > 300 and image["height"] > 100, image
  with open(site / "_images" / picture, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n"
  assert int.from_bytes(head[16:20], "big") == image["width"]
  _, requests = server
  assert (f"/_images/{picture}", 200) in requests


def test_search_finds_a_page(chromium, server):
  shown = _open(chromium, server, "search.html?q=unpool")
  assert "Argmax indices and max-unpooling" in shown["results"], shown["results"]
