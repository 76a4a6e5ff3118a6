"""Host: the PNG writer (tools/sim/png.py) and the gallery of the main screens
(tools/sim/gallery.py, run under micropython), each PNG read back by Pillow and by our
own reader and compared with the panel model's glass pixel for pixel.
"""

import io
import json

import pytest

from tools.sim import gallery, png

PIL = pytest.importorskip("PIL.Image")


def _bit(glass, x, y):
    return (glass[(y >> 3) * 128 + x] >> (y & 7)) & 1


def test_encode_is_a_png_other_readers_agree_with():
    rows8 = [[(x * 16 + y * 40) & 0xFF for x in range(13)] for y in range(5)]
    data = png.encode(13, 5, rows8, 8)
    img = PIL.open(io.BytesIO(data))
    assert img.mode == "L" and img.size == (13, 5)
    assert [[img.getpixel((x, y)) for x in range(13)] for y in range(5)] == rows8
    assert png.decode(data) == (13, 5, 8, rows8)
    rows1 = [[(x ^ y) & 1 for x in range(11)] for y in range(3)]  # not a multiple of 8
    data = png.encode(11, 3, rows1, 1)
    img = PIL.open(io.BytesIO(data))
    assert img.mode == "1" and img.size == (11, 3)
    assert [[1 if img.getpixel((x, y)) else 0 for x in range(11)] for y in range(3)] == rows1
    assert png.decode(data) == (11, 3, 1, rows1)
    with pytest.raises(ValueError):
        png.encode(3, 1, [[0, 1]], 8)
    bad = bytearray(data)
    bad[20] ^= 1  # inside IHDR: its CRC no longer holds
    with pytest.raises(ValueError, match="CRC"):
        png.decode(bytes(bad))


def test_the_panel_picture_scaled_with_a_grid_and_the_contrast():
    glass = bytearray(1024)
    glass[0] = 0x01  # (0, 0)
    glass[7 * 128 + 127] = 0x80  # (127, 63)
    rows = png.panel_rows(glass, contrast=0xFF, scale=4, grid=True)
    assert len(rows) == 256 and len(rows[0]) == 512
    assert rows[0][:4] == [255, 255, 255, png.GRID] and rows[3][0] == png.GRID
    assert rows[0][4] == png.OFF and rows[255][508] == png.GRID and rows[254][508] == 255
    dim = png.panel_rows(glass, contrast=0, scale=2, grid=True)  # scale 2: no grid
    assert dim[0][:3] == [png.lit_level(0), png.lit_level(0), png.OFF]
    assert png.lit_level(0) < png.lit_level(0x7F) < png.lit_level(0xFF) == 255
    assert png.pixels(glass) == png.pixels(bytes(sum(png.pixels(glass), [])))


def test_the_gallery_writes_the_main_screens_as_the_glass_shows_them(tmp_path):
    shots = gallery.render(str(tmp_path))
    names = [s[0] for s in shots]
    assert names == [s[0] for s in gallery.SHOTS]
    for name in ("balance", "kwh_left", "power", "state", "meter_id", "low_credit"):
        assert name in names
    for name, path, glass, contrast in shots:
        img = PIL.open(path)
        assert img.size == (512, 256) and img.mode == "L", name
        on = png.lit_level(contrast)
        lit = 0
        for y in range(64):
            for x in range(128):
                v = img.getpixel((4 * x + 1, 4 * y + 1))
                assert v == (on if _bit(glass, x, y) else png.OFF), (name, x, y)
                assert img.getpixel((4 * x + 3, 4 * y + 1)) == png.GRID
                lit += _bit(glass, x, y)
        # every screen has its inverted title bar (rows 0-10 mostly lit) and some text
        bar = sum(_bit(glass, x, y) for y in range(11) for x in range(128))
        assert bar > 128 * 11 * 3 // 4, name
        assert lit > bar + 40, name
        assert (tmp_path / (name + ".png")).stat().st_size < 4096
    glass = {n: g for n, _, g, _ in shots}
    assert glass["low_credit"] != glass["balance"] and glass["typing"] != glass["accepted"]


SCENARIO = {
    "start": "2026-01-05T12:00:00",
    "duration_s": 600,
    "meter": "ideal",
    "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
    "balance": "2.10",
    "low_credit": "2.00",
    "load": [{"at_s": 0, "watts": 36000}],
    "topups": [{"at_s": 300, "amount": "5.00"}],
    "screens": [{"at_s": 5, "name": "start"}, {"at_s": 9, "name": "energy"}],
}


def _glass_rows(path):
    w, h, depth, rows = png.decode(open(path, "rb").read())
    assert (w, h, depth) == (512, 256, 8)
    return [
        [1 if rows[4 * y + 1][4 * x + 1] > png.OFF else 0 for x in range(128)] for y in range(64)
    ]


def test_the_simulator_writes_the_display_at_steps_events_and_answers(tmp_path):
    from tools.sim import host
    from tools.sim.__main__ import main

    report = host.run(SCENARIO, screens=str(tmp_path))
    got = [(s["t_s"], s["name"]) for s in report["screens"]]
    assert got == [
        (5, "start"),
        (9, "energy"),
        (45, "low_credit"),  # a second after the event at 44 s
        (301, "topup+token_accepted"),  # the top-up's events and its answer: one picture
        (600, "end"),
    ]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(s["file"] for s in report["screens"])
    assert files[3] == "000d000501_topup+token_accepted.png"
    pics = {s["name"]: _glass_rows(tmp_path / s["file"]) for s in report["screens"]}
    for name, rows in pics.items():
        assert sum(rows[1]) == 128, name  # the title bar
    assert pics["start"] != pics["energy"]  # the cycle moved on
    assert sum(pics["low_credit"][52]) == 128  # the status line's rule: LOW CREDIT
    assert sum(pics["start"][52]) == 0  # in credit: no status line
    assert sum(pics["topup+token_accepted"][52]) == 0  # back in credit
    # the same from the command line
    out = tmp_path / "cli"
    sc = tmp_path / "sc.json"
    sc.write_text(json.dumps(dict(SCENARIO, duration_s=20, topups=[])))
    assert main([str(sc), "--screens", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "000d000005_start.png",
        "000d000009_energy.png",
        "000d000020_end.png",
    ]
    assert "screens" not in host.run(dict(SCENARIO, duration_s=10, screens=[], topups=[]))


def test_a_screens_label_names_a_file():
    from tools.sim.scenario import ScenarioError, normalise

    base = {k: SCENARIO[k] for k in ("start", "duration_s", "meter", "load")}
    norm = normalise(dict(base, screens=[{"at_s": 3, "name": "after-topup_1"}]))
    assert norm["screens"] == [[3, "after-topup_1"]]
    for bad in ("a/b", "", "x" * 41, 7, "../up"):
        with pytest.raises(ScenarioError, match=r"screens\[0\]\.name"):
            normalise(dict(base, screens=[{"at_s": 3, "name": bad}]))
    with pytest.raises(ScenarioError, match=r"screens\[0\]\.at_s"):
        normalise(dict(base, screens=[{"at_s": 601, "name": "late"}]))
