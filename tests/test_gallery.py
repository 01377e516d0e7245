"""The adversarial-example gallery: capture in the runners, the choice at the merge, the .npz download.

The models are the golden test's tiny CNNs (float64 inside: exact on any CPU). At eps 0.1 FGSM breaks
most digits, PGD-100 and CW some that PGD-20 missed, so every rule of the choice is exercised.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers_eval import golden_models, standard_model, without_timings
from helpers_training import one_torch_thread  # noqa: F401  (a fixture)

import robaudit
from robaudit.cli import main
from robaudit.evaluation import MemoryStore, build_spec, evaluate, evaluate_shard, merge, prepare
from robaudit.evaluation import gallery as G
from robaudit.evaluation.registry import ATTACKS
from robaudit.evaluation.results import decode_bits
from robaudit.models import CheckpointMetadata, save_checkpoint

EPS = 0.1
N = 30   # the gallery's points: the batch [24, 32) is cut at 30


@pytest.fixture(scope="module")
def audited():
    torch.set_num_threads(1)
    model, surrogate = golden_models()
    x, y = robaudit.load_dataset("mnist10k", "test")
    spec = build_spec(attacks="fgsm,rs-fgsm,pgd,cw,noise,transfer,apgd-ce", steps="20,100", eps=(EPS,),
                      dataset="mnist10k", n_examples=40, surrogate=True, batch_size=8, restarts=3,
                      autoattack_examples=16, noise_draws=20, gallery_examples=N)
    store = MemoryStore()
    found: list[G.Gallery] = []
    results = evaluate(model, x, y, spec, surrogate=surrogate, store=store, on_gallery=found.append)
    return model, surrogate, x, y, spec, store, results, found[0]


def _bits(results, key):
    return decode_bits(results["per_sample"]["bits"][key], results["n"])


def test_every_example_fools_the_model_inside_its_ball(audited):
    model, _, x, y, _, _, results, gallery = audited
    assert len(gallery) > 10 and set(gallery.index) <= set(range(N))
    # Stored exactly (float32): the model still gets each one wrong, as the stored prediction says.
    with torch.no_grad():
        predicted = model(torch.as_tensor(gallery.adversarial)).argmax(1).numpy()
    assert (predicted == gallery.predictions).all() and (predicted != gallery.labels).all()
    assert np.array_equal(gallery.clean, x[gallery.index].numpy())
    assert np.array_equal(gallery.labels, y[gallery.index].numpy())
    change = np.abs(gallery.adversarial - gallery.clean).reshape(len(gallery), -1).max(1)
    assert (change <= gallery.attack_eps + 1e-6).all() and (change > 0).all()
    assert gallery.adversarial.min() >= 0 and gallery.adversarial.max() <= 1
    # The broken points among the first N are exactly those the worst case lost (clean-correct ones).
    worst = G.worst_bits(results, EPS)
    clean = decode_bits(results["per_sample"]["clean"], results["n"])
    assert set(gallery.index) == set(np.flatnonzero(clean[:N] & ~worst[:N]))


def test_each_point_shows_the_first_attack_in_the_ladder_that_broke_it(audited):
    *_, results, gallery = audited
    rows = [r for r in results["summary"] if r["attack"] in ATTACKS and "subset" not in r]
    for i, point in enumerate(gallery.index):
        name = gallery.attack[i]
        order = ATTACKS[name.split(":")[-1]].order
        earlier = [r for r in rows if ATTACKS[r["attack"]].order < order]
        assert all(_bits(results, r["key"])[point] for r in earlier), (point, name)
        if name == "pgd" and gallery.detail[i] == "":
            assert _bits(results, f"pgd@eps={EPS:g}/steps=100/restarts=1")[point] == 0
            for k in (1, 2, 5, 10, 20, 50, 100):   # the step is where the steps curve lost the point
                robust = _bits(results, f"pgd-steps-curve@eps={EPS:g}/steps={k}/restarts=1")[point]
                assert robust == (gallery.step[i] > k)
    assert {"fgsm", "pgd"} <= set(gallery.attack)


def test_missed_by_pgd20_is_exactly_what_the_bitsets_say(audited):
    *_, results, gallery = audited
    pgd20 = _bits(results, f"pgd@eps={EPS:g}/steps=20/restarts=1")
    worst = _bits(results, f"worst-case@eps={EPS:g}")
    sub = results["per_sample"]["subset_bits"][f"worst-case@eps={EPS:g}/first=16"]
    worst[:16] &= decode_bits(sub["bits"], 16)
    expected = np.flatnonzero(pgd20 & ~worst)
    assert len(expected) > 0            # else this test proves nothing: PGD-100, CW or restarts broke some
    assert results["gallery"]["missed_by_pgd20"] == [int(p) for p in expected if p < N]
    assert list(gallery.index[gallery.missed_pgd20]) == [p for p in expected if p < N]
    for i in np.flatnonzero(gallery.missed_pgd20):   # shown with the attack that got past PGD-20
        assert not (gallery.attack[i] == "pgd" and gallery.detail[i] == "" and gallery.step[i] <= 20)


def test_sharded_runs_build_the_same_gallery(audited):
    model, surrogate, x, y, spec, _, results, gallery = audited
    prepared = prepare(model, x, y, spec, surrogate)
    store = MemoryStore()
    outcomes = [evaluate_shard(prepared, shard=s, store=store) for s in [(24, 40), (8, 24), (0, 8)]]
    found: list[G.Gallery] = []
    merged = merge(spec, prepared.n, prepared.fingerprint, store, outcomes, on_gallery=found.append)
    assert without_timings(merged) == without_timings(results)
    for name in G.NPZ_FIELDS:
        ours, theirs = getattr(found[0], name if name != "eps" else "attack_eps"), \
            getattr(gallery, name if name != "eps" else "attack_eps")
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)), name


def test_records_without_images_still_merge(audited):
    """A store whose records have no images (an older version's) merges into the same results, no gallery."""
    model, surrogate, x, y, spec, store, results, _ = audited
    stripped = MemoryStore()
    for key, record in store.data.items():
        stripped.put(key, {k: v for k, v in record.items() if k not in ("adv", "gallery")})
    prepared = prepare(model, x, y, spec, surrogate)
    shard = evaluate_shard(prepared, store=stripped)
    assert shard.computed_batches == 0
    found: list[G.Gallery] = []
    merged = merge(spec, prepared.n, prepared.fingerprint, stripped, [shard], on_gallery=found.append)
    assert merged["gallery"]["count"] == 0 and found == []
    assert without_timings({**merged, "gallery": None}) == without_timings({**results, "gallery": None})


def test_the_gallery_size_is_part_of_the_batch_keys(audited):
    """Batches stored without images are recomputed for a gallery, not reused silently without them."""
    model, surrogate, x, y, spec, _, _, _ = audited
    spec = replace(spec, attacks=("fgsm",), restarts=1, steps=(20,))
    store = MemoryStore()
    none = evaluate(model, x, y, replace(spec, gallery_examples=0), store=store)
    assert "gallery" not in none
    prepared = prepare(model, x, y, spec)
    shard = evaluate_shard(prepared, store=store)
    # clean + fgsm on the 4 batches holding the first 30 points; the last batch and the probes are reused
    assert shard.computed_batches == 8
    assert any(key.endswith("/clean/gallery=6/24-32") for key in store.data)
    assert any(key.endswith("/clean/32-40") for key in store.data)
    found: list[G.Gallery] = []
    merge(spec, prepared.n, prepared.fingerprint, store, [shard], on_gallery=found.append)
    assert len(found[0]) > 0 and set(found[0].attack) == {"fgsm"}


def test_npz_round_trip_and_pictures(audited, tmp_path):
    *_, gallery = audited
    G.save_npz(gallery, tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz", allow_pickle=False) as data:   # no pickles: plain arrays
        assert {"index", "clean", "adversarial", "labels", "predictions", "attack", "eps", "step"} <= set(data)
    back = G.load_npz(tmp_path / "g.npz")
    assert np.array_equal(back.adversarial, gallery.adversarial) and back.attack == gallery.attack
    pixels = G.panels(gallery)
    assert pixels.shape == (len(gallery), 3, 28, 28, 1) and pixels.dtype == np.uint8
    # The magnified perturbation reaches full range in every example.
    assert (pixels[:, 2].reshape(len(gallery), -1).max(1) == 255).any()
    assert (np.minimum(pixels[:, 2].reshape(len(gallery), -1).min(1),
                       255 - pixels[:, 2].reshape(len(gallery), -1).max(1)) == 0).all()
    assert G.png(pixels[0, 0]).startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, one_torch_thread):
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard")
    return save_checkpoint(tmp_path_factory.mktemp("gallery") / "standard.safetensors",
                           standard_model(n_train=2000), meta)


def test_cli_saves_the_adversarial_examples(checkpoint, tmp_path):
    out, npz = tmp_path / "r.json", tmp_path / "adv" / "g.npz"
    assert main(["evaluate", str(checkpoint), "--attacks", "fgsm,pgd", "--steps", "10", "--eps", "0.1",
                 "--n-examples", "16", "--batch-size", "16", "--gallery", "12", "--no-progress",
                 "--out", str(out), "--save-adversarial", str(npz)]) == 0
    results = json.loads(out.read_text())
    with np.load(npz, allow_pickle=False) as data:
        assert list(data["index"]) == results["gallery"]["points"]["index"]
        assert all(i < 12 for i in data["index"]) and len(data["index"]) > 0
        model, _ = robaudit.models.load_checkpoint(checkpoint)
        with torch.no_grad():
            predicted = model(torch.as_tensor(data["adversarial"])).argmax(1).numpy()
        assert (predicted == data["predictions"]).all() and (predicted != data["labels"]).all()
        assert set(data["attack"]) <= {"fgsm", "pgd"}


def test_python_audit_saves_the_adversarial_examples(tmp_path):
    """robaudit.audit(save_adversarial=) writes the same .npz as the CLI, and refuses without a gallery."""
    model = standard_model()
    x, y = robaudit.load_dataset("mnist10k", "test", limit=16)
    npz = tmp_path / "audit.npz"
    results = robaudit.audit(model, x, y, attacks="fgsm", eps=0.2, batch_size=16, gallery=10,
                             save_adversarial=npz)
    gallery = G.load_npz(npz)
    assert list(gallery.index) == results["gallery"]["points"]["index"] and 0 < len(gallery) <= 10
    with torch.no_grad():
        assert (model(torch.as_tensor(gallery.adversarial)).argmax(1).numpy() != gallery.labels).all()
    with pytest.raises(robaudit.RobauditError, match="needs a gallery"):
        robaudit.audit(model, x, y, attacks="fgsm", eps=0.2, gallery=0, save_adversarial=tmp_path / "none.npz")
    assert not (tmp_path / "none.npz").exists()


def test_cli_refuses_to_save_without_a_gallery(checkpoint, tmp_path, capsys):
    assert main(["evaluate", str(checkpoint), "--attacks", "fgsm", "--n-examples", "8", "--gallery", "0",
                 "--no-progress", "--out", str(tmp_path / "r.json"), "--save-adversarial",
                 str(tmp_path / "g.npz")]) == 2
    assert "--save-adversarial needs a gallery" in capsys.readouterr().err
    assert main(["evaluate", str(checkpoint), "--attacks", "fgsm", "--n-examples", "8", "--gallery", "-1",
                 "--no-progress", "--out", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("attack, eps", [("noise", 0.6), ("transfer", 0.1), ("rs-fgsm", 0.1), ("apgd-ce", 0.1)])
def test_each_attack_alone_keeps_examples_that_fool_the_model(attack, eps):
    """Every runner's capture on its own: AutoAttack's examples come from pyautoattack, noise keeps its
    fooling draw, transfer the surrogate's last iterate."""
    torch.set_num_threads(1)
    model, surrogate = golden_models()
    x, y = robaudit.load_dataset("mnist10k", "test")
    spec = build_spec(attacks=attack, eps=(eps,), dataset="mnist10k", n_examples=16, batch_size=8,
                      surrogate=attack == "transfer", noise_draws=20, gallery_examples=16)
    found: list[G.Gallery] = []
    results = evaluate(model, x, y, spec, surrogate=surrogate if attack == "transfer" else None,
                       on_gallery=found.append)
    gallery = found[0]
    row = next(r for r in results["summary"] if r["attack"] == attack)
    robust = decode_bits(results["per_sample"]["bits"][row["key"]], 16)
    clean = decode_bits(results["per_sample"]["clean"], 16)
    assert list(gallery.index) == list(np.flatnonzero(clean & ~robust)) and len(gallery) > 0
    assert set(gallery.attack) == {attack}
    with torch.no_grad():
        predicted = model(torch.as_tensor(gallery.adversarial)).argmax(1).numpy()
    assert (predicted == gallery.predictions).all() and (predicted != gallery.labels).all()
    change = np.abs(gallery.adversarial - gallery.clean).reshape(len(gallery), -1).max(1)
    assert (change <= eps + 1e-6).all()
