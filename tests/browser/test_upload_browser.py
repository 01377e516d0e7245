"""Bringing a published model through the upload page, in headless Chromium against `robaudit serve`
(SQLite, embedded broker, one embedded worker).

1. For every catalogue architecture, a bare state_dict in its original layout (tests/published_nets.py)
   is chosen in the form: the page reads only the .safetensors header, the server recognises it, and
   the architecture and a dataset it fits are pre-selected. The files are sparse (a real header, then
   a hole where the weights would be), so a 1 GB WideResNet-70-16 costs nothing to write.
2. One small model goes the whole way: the preprocessing is required, a wrong one gets the near-chance
   warning, the right one shows its clean accuracy, and "Run an audit" leads to an evaluation that
   finishes with the clean check at its top.
"""
from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import pytest
from browser_support import assert_clean, open_tab
from serve_process import ServeProcess

pytestmark = pytest.mark.browser

TOKEN = "browser-upload-token-91ae"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
N_POINTS = 32

# --------------------------------------------------------------------------- files

_DTYPES = {"torch.float32": ("F32", 4), "torch.int64": ("I64", 8)}


def write_sparse_safetensors(path: Path, net) -> Path:
    """A .safetensors file of ``net``'s state_dict whose header is exact and whose data is a hole:
    the page reads only the header, and the file system stores no zeros."""
    header, offset = {}, 0
    for key, tensor in net.state_dict().items():
        dtype, size = _DTYPES[str(tensor.dtype)]
        nbytes = size * tensor.numel()
        header[key] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        fh.truncate(8 + len(text) + offset)
    return path


def expected_datasets(input_size: int, num_classes: int, in_channels: int) -> set[str]:
    from robaudit.data import DATASETS

    return {d.name for d in DATASETS.values()
            if (d.size, d.num_classes, d.in_channels) == (input_size, num_classes, in_channels)}


def _shape_for(input_size: int) -> tuple[int, int]:
    """(classes, input channels) of the dataset family an entry is defined for."""
    return {28: (10, 1), 32: (10, 3), 224: (1000, 3)}[input_size]


def train_bare_smallcnn():
    """A SmallCNN trained for a moment on [0, 1] MNIST digits (~85% clean), as a bare network:
    what a user would publish, with no robaudit wrapper or metadata (its preprocessing is "none")."""
    import torch
    import torch.nn.functional as F

    import robaudit
    from robaudit.models.registry import build_network

    torch.manual_seed(0)
    net = build_network("smallcnn", num_classes=10, in_channels=1)
    x, y = robaudit.load_dataset("mnist10k", "train")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for i in range(0, 2048, 64):
        opt.zero_grad()
        F.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
    return net.eval()


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`robaudit serve` on a free port; no torchvision datasets on disk (mnist10k is bundled)."""
    data = tmp_path_factory.mktemp("robaudit-data")
    empty = tmp_path_factory.mktemp("no-datasets")
    env = {"ROBAUDIT_PROGRESS_INTERVAL": "0.3", "ROBAUDIT_DATASETS_DIR": str(empty)}
    with ServeProcess(data, data_dir=data, token=TOKEN, env=env) as serve:
        yield serve.base_url, serve.client


@pytest.fixture(scope="module")
def page(browser, server):
    base, _ = server
    ctx, pg = open_tab(browser, timeout_ms=30_000)
    pg.goto(base + "/checkpoints")
    pg.click("#token-open")                     # recognition asks the server: it needs the token
    pg.fill("#token-input", TOKEN)
    pg.click("#token-save")
    pg.wait_for_selector("#token-state[data-set='1']", state="attached")
    yield pg
    ctx.close()


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def choose_file(pg, path: Path) -> None:
    """Pick a file and wait until the page has finished reading and recognising it."""
    pg.set_input_files("#ck-file", str(path))
    pg.wait_for_function("name => { const t = document.getElementById('ck-file-info').textContent;"
                         " return t.includes(name) && !t.includes('…'); }", arg=path.name)


# --------------------------------------------------------------------------- tests

def test_every_catalogue_architecture_is_recognised_from_its_header(page, tmp_path):
    import torch

    from robaudit.models.registry import CATALOGUE

    sys.path.insert(0, str(ROOT / "tests"))
    from published_nets import PUBLISHED  # the independent definitions, in each code base's own key layout

    names = [n for n in PUBLISHED if n in CATALOGUE]
    assert {"smallcnn", "resnet18", "preactresnet18", "wrn-70-16", "torchvision:resnet50"} <= set(names)
    for name in names:
        classes, channels = _shape_for(CATALOGUE[name].input_size)
        with torch.device("meta"):
            net = PUBLISHED[name](classes, channels)
        path = write_sparse_safetensors(tmp_path / f"{name.replace(':', '_')}.safetensors", net)
        choose_file(page, path)
        page.wait_for_function("() => document.getElementById('ck-inspect').textContent !== ''")
        assert page.get_attribute("#ck-inspect", "data-arch") == name, page.inner_text("#ck-inspect")
        assert page.input_value("#ck-arch") == name
        fits = expected_datasets(CATALOGUE[name].input_size, classes, channels)
        assert fits and page.input_value("#ck-dataset") in fits, (name, page.input_value("#ck-dataset"))
        # Recognised: the architecture is no longer asked for; the preprocessing is.
        assert not page.locator("#ck-arch").evaluate("el => el.required")
        assert page.locator("#ck-preprocessing").evaluate("el => el.required")
    shot(page, "upload-recognised")

    # Keys that match nothing: the one line names the file's own key.
    odd = write_sparse_safetensors(tmp_path / "odd.safetensors", torch.nn.Linear(3, 2))
    choose_file(page, odd)
    page.wait_for_selector("#ck-inspect.error")
    assert "weight" in page.inner_text("#ck-inspect") and page.get_attribute("#ck-inspect", "data-arch") is None
    assert page.locator("#ck-arch").evaluate("el => el.required")
    assert_clean(page)


def test_a_small_model_goes_from_upload_to_audit(page, server, tmp_path):
    import torch
    from safetensors.torch import save_file

    base, api = server
    net = train_bare_smallcnn()
    good = tmp_path / "my-smallcnn.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(good))
    wrong = tmp_path / "my-smallcnn.pt"
    torch.save(net.state_dict(), wrong)

    # The same network as a .pt (recognised from the uploaded file), given the wrong normalisation.
    page.goto(base + "/checkpoints")
    choose_file(page, wrong)
    page.wait_for_selector("#ck-inspect[data-arch='smallcnn']")
    assert page.input_value("#ck-dataset") == "mnist10k"
    page.click("#upload-submit")
    assert "is required" in page.inner_text("#ck-preprocessing-error")   # no silent default
    page.select_option("#ck-preprocessing", "custom")
    page.fill("#ck-mean", "[0]")      # as if the network took [0, 255] pixels: it sees blank images
    page.fill("#ck-std", "[255]")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.success", timeout=120_000)
    page.wait_for_selector("#upload-clean.error")
    assert "wrong preprocessing, class order or dataset?" in page.inner_text("#upload-clean")
    shot(page, "upload-near-chance")

    # The right preprocessing: clean accuracy, and the way to an audit.
    choose_file(page, good)
    page.wait_for_selector("#ck-inspect[data-arch='smallcnn']")
    page.select_option("#ck-preprocessing", "none")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-clean.success", timeout=120_000)
    text = page.inner_text("#upload-clean")
    accuracy = float(re.search(r"Clean accuracy ([\d.]+) %", text).group(1))
    assert accuracy > 60 and "500 test points of mnist10k" in text
    listing = api.get("/checkpoints").json()["data"]
    ids = {ck["filename"]: ck["id"] for ck in listing}
    good_id = ids[good.name]
    row = page.locator(f"#ck-rows tr[data-checkpoint='{good_id}']")
    row.wait_for()
    assert "smallcnn (recognised)" in row.inner_text() and "none" in row.inner_text()
    assert "near chance" in page.locator(f"#ck-rows tr[data-checkpoint='{ids[wrong.name]}']").inner_text()
    shot(page, "upload-clean-accuracy")

    page.click("#upload-audit")
    page.wait_for_url(re.compile(rf"/evaluations/new\?checkpoint={good_id}$"))
    box = page.locator(f"#ev-checkpoints input[value='{good_id}']")
    box.wait_for()
    assert box.is_checked()
    page.select_option("#ev-preset", "quick")
    page.fill("#ev-eps", "0.1")
    page.fill("#ev-n", str(N_POINTS))
    page.click("#eval-submit")
    page.wait_for_url(re.compile(r"/evaluations/\d+$"))
    # The page reloads itself with the results when the worker finishes.
    page.wait_for_selector(".kpis", timeout=180_000)
    assert "Clean accuracy at upload" in page.inner_text("#clean-check")
    assert page.get_attribute("#clean-check", "data-suspect") == "0"
    shot(page, "upload-audit-finished")
    assert_clean(page)
