"""Model cards of saved bundles and bases read back through huggingface_hub's own ModelCard."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import TinyDenoiser
from huggingface_hub import ModelCard

from lorun_peft.persistence.fingerprint import fingerprint
from lorun_peft.operators import BlockCS
from lorun_peft.unfold import unfold


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return unfold(TinyDenoiser(), BlockCS(0.25, block=8), K=2)


def test_a_bundles_card_parses_with_its_metadata(net, tmp_path):
    folder = net.save_adapters(tmp_path / "b", metrics={"psnr": 30.5, "dataset": "Set11"}, base_model="user/base")
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "image-to-image"
    assert {"lorun_peft", "peft", "lora", "deep-unfolding", "compressive-sensing"} <= set(data["tags"])
    assert data["base_model"] == "user/base" and data["metrics"] == ["psnr"]
    assert data["base_fingerprint"] == fingerprint(net) == net.base_fingerprint()
    assert "# LoRun task bundle: BlockCS" in card.text and "| PSNR (dB) | 30.5 |" in card.text


def test_a_bundle_card_without_base_model_or_metrics(net, tmp_path):
    data = ModelCard.load(net.save_adapters(tmp_path / "b") / "README.md").data.to_dict()
    assert "base_model" not in data and "metrics" not in data and data["base_fingerprint"] == fingerprint(net)


def test_a_bases_card_parses_with_its_metadata(net, tmp_path):
    card = ModelCard.load(net.save_base(tmp_path / "base") / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "lorun_peft" and {"lorun_peft", "denoiser"} <= set(data["tags"])
    assert data["base_fingerprint"] == fingerprint(net)
    assert "TinyDenoiser" in card.text


def test_building_cards_does_not_import_huggingface_hub_early():
    code = "import sys, lorun_peft.persistence.cards; print('huggingface_hub' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
