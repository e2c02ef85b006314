"""Openclipart drawings as a graph source (issue #27): the name-to-synset rule on real WordNet,
SVGs drawn by cairosvg, the rendered ImageFolder and the coverage count. The SVGs are written
here, so no test needs the Debian package (the benchmark uses it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mll_registry.demo import clipart as K
from mll_registry.graph import wordnet as W

CIRCLE = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" viewBox="0 0 40 20">'
          '<circle cx="10" cy="10" r="10" fill="#ff0000"/>'
          '<rect x="30" y="0" width="10" height="20" fill="#0000ff"/></svg>')


@pytest.mark.parametrize(("stem", "folder", "synset"), [
    ("az-lizard_benji_park_01", "animals", "lizard.n.01"),  # author's name after the title
    ("chemistry_flask_matthew__02", "science", "flask.n.01"),  # the first noun is no thing
    ("tenor_trombone_ganson", "recreation", "trombone.n.01"),  # the head noun comes last
    ("bat_flying_01", "animals", "bat.n.01"),  # the folder picks the mammal ...
    ("baseball_bat_01", "recreation", "baseball_bat.n.01"),  # ... a two-word noun the bat
    ("two_cats_tess_brady_01", "animals", "cat.n.01"),  # plural, and "two" is no animal
    ("apple_logo_01", "logos", None),  # folders of symbols map nothing
    ("qwzx_01", "unsorted", None),  # no noun at all
])
def test_a_file_name_maps_to_the_synset_it_depicts(stem: str, folder: str,
                                                    synset: str | None) -> None:
    assert K.synset_for(stem, folder) == synset


def test_icons_and_cards_inside_other_folders_map_nothing(tmp_path: Path) -> None:
    for rel in ("computer/icons/printer.svg", "recreation/games/cards/dog.svg",
                "computer/hardware/printer.svg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(CIRCLE)
    got = {d.path.relative_to(tmp_path).as_posix(): d.synset for d in K.drawings(tmp_path)}
    assert got["computer/icons/printer.svg"] is None
    assert got["recreation/games/cards/dog.svg"] is None
    assert got["computer/hardware/printer.svg"] == W.lookup_word("printer")[1].name()  # device


def test_an_svg_is_drawn_cropped_and_centred_on_white(tmp_path: Path) -> None:
    img = K.render_svg(_svg(tmp_path / "a.svg"), 48)
    a = np.asarray(img, np.int32)
    assert img.size == (48, 48) and img.mode == "RGB"
    assert (a[0, 0] == 255).all() and (a[-1, -1] == 255).all()  # white margin
    # 40 x 20 content scaled to 86 % of 48: 41 px wide, centred; the circle's centre is red,
    # the bar at the right is blue
    row = a[24]
    assert row[24 - 20 + 10][0] > 200 and row[24 - 20 + 10][2] < 60
    assert row[24 + 16][2] > 200 and row[24 + 16][0] < 60
    with pytest.raises(ValueError, match="not a drawable SVG"):
        K.render_svg(_svg(tmp_path / "b.svg", "<svg><broken"), 48)


def _svg(path: Path, text: str = CIRCLE) -> Path:
    path.write_text(text)
    return path


def test_rendered_drawings_form_an_imagefolder_of_covered_concepts(tmp_path: Path) -> None:
    svg = tmp_path / "svg"
    for name in ("dog_a_01", "dog_b_01", "poodle_c_01", "cat_a_01", "cat_b_01", "dog_broken"):
        (svg / "animals" / f"{name}.svg").parent.mkdir(parents=True, exist_ok=True)
        (svg / "animals" / f"{name}.svg").write_text(CIRCLE if "broken" not in name
                                                     else "<svg><broken")
    found = K.drawings(svg)
    assert {d.path.stem: d.synset for d in found}["poodle_c_01"] == "poodle.n.01"
    # coverage counts kinds of a class: 3 dogs + a poodle cover dog, 2 cats do not cover cat
    cov = K.coverage({"dog.n.01": "dog", "cat.n.01": "cat", "poodle.n.01": "poodle"}, found)
    assert cov.covered == ["dog"] and cov.mapped == 6 and cov.classes == 3
    out = K.ensure_clipart_images({"dog.n.01", "cat.n.01"}, root=tmp_path / "data",
                                  svg_root=svg, workers=1)
    dog = Path(out.path) / W.wnid(W.synset("dog.n.01"))
    assert sorted(p.name for p in dog.iterdir()) == ["dog_a_01.png", "dog_b_01.png"]
    assert out.failed == 1 and out.images == 2 and out.concepts == 1 and out.rendered
    assert not (Path(out.path) / W.wnid(W.synset("cat.n.01"))).exists()  # 2 drawings: too few
    assert json.loads((Path(out.path) / "manifest.json").read_text())["images"] == 2
    again = K.ensure_clipart_images({"dog.n.01", "cat.n.01"}, root=tmp_path / "data",
                                    svg_root=svg, workers=1)
    assert not again.rendered and again.images == 2


def test_a_missing_package_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(K.ClipartMissing, match="apt-get install openclipart-svg"):
        K.drawings(tmp_path / "nowhere")
